"""What a training run would otherwise load on first use, at a cost of seconds: the agent's
fork server imports this module once, before it forks any run (agent.forkserver.PRELOAD).

MLflow's `log_model` imports skops (which imports all of scikit-learn), pyfunc and git
lazily, and maps every installed module to its package to check the model's requirements
(1.2 s); done here, each forked run starts with them warm. So do the flows' own modules
that `trainer.flows` imports only where a run uses them (scikit-learn and MLflow: 2 s).
"""

import importlib

LAZY_IMPORTS = (
    "trainer.reports",  # models, registry, traffic and training with it
    "trainer.promotion_lock",
    "skops.io",
    "mlflow.pyfunc",
    "mlflow.pyfunc.scoring_server",
    "mlflow.models.utils",
    "mlflow.models.display_utils",
    "mlflow.store.artifact.mlflow_artifacts_repo",
    "git",
    "email.policy",
    "netrc",
)

for name in LAZY_IMPORTS:
    importlib.import_module(name)

try:  # a private helper: if a later MLflow drops it, runs only lose the head start
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    _init_modules_to_packages_map()
except ImportError:
    pass
