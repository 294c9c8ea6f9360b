"""The HTTP edge the API and serving share: keys and callers, rate limits, problem details,
the edge middleware (request ids, body limit, metrics, access log), strict JSON bodies, JSON
logs and the settings of every service that checks keys."""
