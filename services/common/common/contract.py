"""The names the services agree on, written once: each is set by one service and looked up by
another (or by the compose files and manifests, which tests/unit/test_contract.py holds to
these). A service that needs one imports it from here, never from the service that sets it.
"""

from typing import Final, Literal, get_args

# -- Prefect: where runs go ---------------------------------------------------------------

# The work pool: trainer.register creates it and puts the deployments on it, the agents poll
# it, the autoscaler scales its agents, the API lists and starts its deployments
# (WORK_POOL_NAME in each service's settings; this is the default all of them share).
DEFAULT_WORK_POOL = "training"
# The name of every flow's deployment (`<flow>/monthly`): trainer.register creates them, the
# API and `make run` start runs of them (DEPLOYMENT_NAME).
DEFAULT_DEPLOYMENT = "monthly"

# The flows, by the names their deployments carry: the trainer defines them (`@flow(name=)`);
# the API, `make run` and the benchmarks start them by these names.
LOAD_DATA = "load-data"
TRAIN_MODEL = "train-model"
SEND_REQUESTS = "send-requests"
PROBE = "probe"
FLOWS = (LOAD_DATA, TRAIN_MODEL, SEND_REQUESTS, PROBE)

# -- How a run's process starts -----------------------------------------------------------

# Each run's job command, set on the deployments by trainer.register: the agent's launcher,
# which forks a warm engine from the agent's fork server (`python -m prefect.engine` when
# there is none). The agent image must hold this module.
JOB_COMMAND = "python -m agent.launch"

# Prefect's variable (its runner sets it for served flows) that names the flow a run's engine
# imports. A deployment's runs carry their entrypoint in it (trainer.register), so the engine
# imports the flow at once instead of first reading the deployment from the server to learn
# it (about 60 ms between PENDING and RUNNING: an event loop, a client and a request). The
# deployments have no storage or pull steps, for which that read would be needed.
FLOW_ENTRYPOINT_ENV = "PREFECT__FLOW_ENTRYPOINT"
# What the agent's fork server imports before it forks any run: the trainer's flows (and the
# modules they would load lazily), so that a run starts with them warm. The agent image
# carries the trainer's package for this.
RUN_MODULES = ("trainer.flows", "trainer.preload")

# Flow-run heartbeats every 30 s, Prefect's minimum (its default is 180 s); the zombie
# automation (trainer.register) crashes a run that misses three in a row.
HEARTBEAT_SECONDS = 30
# What each run's engine needs to ride out an outage of the database or the server: set on
# the deployments by trainer.register, and in the agent's own environment (its fork server's
# engines import Prefect's settings before a run's variables arrive). While Postgres is down
# the server answers 500, which Prefect's client does not retry by default: a run that ended
# then stayed Running for good. 7 retries back off 2, 4, ... 128 s: 254 s.
RUN_ENVIRONMENT = {
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    "PREFECT_CLIENT_MAX_RETRIES": "7",
    "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
}

# The global concurrency limit (of 1) that serialises promotions in the model registry:
# trainer.register creates it, train-model holds it while it moves the aliases.
PROMOTION_LOCK = "model-promotion"

# -- The model registry (MLflow) ----------------------------------------------------------

# The aliases train-model gives a version; serving answers with each dataset's champion, the
# API reports which one a run's version took.
# `Alias` is the type the API's schemas use (a Literal takes no variables, so the two
# strings are written once here and the constants are typed by it).
Alias = Literal["champion", "challenger"]
CHAMPION: Final[Alias] = "champion"
CHALLENGER: Final[Alias] = "challenger"
ALIASES: tuple[Alias, ...] = get_args(Alias)
# The registered model of a dataset: train-model registers versions of it, serving loads its
# champion, the API links to it.
MODEL_NAME_PATTERN = "trip-duration-{dataset}"


def model_name(dataset: str) -> str:
    """The registered model of `dataset`'s trip-duration models."""
    return MODEL_NAME_PATTERN.format(dataset=dataset)


# -- Events the flows emit (Prefect events), which the API's webhooks tell ------------------

# Our own events' names start with this (Prefect's own: `prefect.`).
STACK_EVENTS = "training-stack."
# train-model, when a version takes `champion`; its payload: model, version, previous
# (the champion it replaced, or null), decision.
MODEL_PROMOTED = f"{STACK_EVENTS}model.promoted"
# send-requests, when the served model has drifted; its payload: model, version, month,
# live_rmse, validation_rmse, reason, retrain (the train-model run it started).
DRIFT_DETECTED = f"{STACK_EVENTS}drift.detected"
