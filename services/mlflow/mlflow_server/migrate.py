"""`python -m mlflow_server.migrate`: `mlflow db upgrade` on MLflow's database, for
`make upgrade` (devstack.backup), run in the mlflow image or `.venv-mlflow`.

In-process, so that the URL (with its password) is on no command line `ps` shows. A database
that does not exist yet is left alone: the server creates it, current, at its first start.
"""

import logging
import sys

from mlflow.cli import cli
from sqlalchemy.engine import make_url

from mlflow_server.__main__ import ensure_database, sqlalchemy_url
from mlflow_server.settings import get_settings

logger = logging.getLogger("mlflow_server.migrate")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    url = get_settings().mlflow_backend_store_uri
    if not ensure_database(url, create=False):
        logger.info("no database %s yet: the server creates it at start", make_url(url).database)
        return 0
    cli.main(["db", "upgrade", sqlalchemy_url(url)], standalone_mode=False)
    logger.info("MLflow's database %s is at the current schema", make_url(url).database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
