"""Serving: the champion of each dataset's registered model, over HTTP."""
