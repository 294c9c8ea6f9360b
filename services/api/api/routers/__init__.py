"""The API's routes, one router per resource."""

from typing import Any

from common.web import problems

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = problems.responses(
    {
        400: "The body could not be parsed",
        401: "No or unknown API key",
        404: "Unknown run or flow",
        413: "Body too large",
        422: "Invalid request, with per-field errors",
        429: "Rate limited (see Retry-After)",
        503: "Prefect or the database is unavailable (see Retry-After)",
    }
)
