"""`python -m api`: serve the API with uvicorn, configured from ApiSettings."""

import os
import sys

import uvicorn

from api.settings import ApiSettings
from common.web.logs import configure_logging
from common.web.settings import settings_or_report

# Prefect's client retries an unreachable server 5 times with exponential back-off (about a
# minute); callers of the API are better served by a prompt 503 with Retry-After.
DEFAULT_PREFECT_CLIENT_MAX_RETRIES = "1"


def main() -> int:
    configure_logging()
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", DEFAULT_PREFECT_CLIENT_MAX_RETRIES)
    settings = settings_or_report(ApiSettings, "api")
    if settings is None:
        return 2
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        # Behind the front door at /api (prefix stripped): links in /docs name /api/...
        root_path=settings.api_root_path,
        # On SIGTERM uvicorn stops accepting, then waits this long for in-flight requests.
        # Typed int, but a timeout of asyncio.wait_for, which takes seconds as a float.
        timeout_graceful_shutdown=settings.api_shutdown_grace_seconds,  # type: ignore[arg-type]
        access_log=False,  # our middleware logs each request as JSON, with its request id
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
