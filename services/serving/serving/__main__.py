"""`python -m serving`: serve the champions with uvicorn, configured from ServingSettings."""

import sys

import uvicorn

from common.web.logs import configure_logging
from common.web.settings import settings_or_report
from serving.settings import ServingSettings


def main() -> int:
    configure_logging()
    settings = settings_or_report(ServingSettings, "serving")
    if settings is None:
        return 2
    uvicorn.run(
        "serving.main:create_app",
        factory=True,
        host=settings.serving_host,
        port=settings.serving_port,
        # Behind the front door at /serving (prefix stripped): links in /docs name /serving/...
        root_path=settings.serving_root_path,
        timeout_graceful_shutdown=10,
        access_log=False,
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
