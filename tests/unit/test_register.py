"""What trainer.register creates: deployments (schedules, versions, heartbeats), an automation."""

import ast
from pathlib import Path

import trainer
from common.contract import FLOW_ENTRYPOINT_ENV, HEARTBEAT_SECONDS, RUN_ENVIRONMENT, RUN_MODULES
from testkit.imports import modules_after
from trainer.register import (
    _automation_spec,
    deployments,
    spec_version,
    zombie_automation,
)
from trainer.settings import TrainerSettings

TRAINER_DIR = Path(trainer.__file__).parent


def _versions(settings: TrainerSettings) -> list[str]:
    return [spec_version(d, settings.work_pool_name) for d in deployments(settings)]


def test_deployment_defaults_follow_the_seed() -> None:
    train, load, send, probe = deployments(TrainerSettings())
    assert (train.flow_name, train.name) == ("train-model", "monthly")
    assert train.schedules[0].schedule.cron == "0 9 15 * *"
    assert train.schedules[0].schedule.timezone == "America/New_York"
    assert set(train.tags) == {"ml"}
    assert train.entrypoint == "trainer.flows.train_model"
    assert (load.flow_name, load.schedules[0].schedule.cron) == ("load-data", "0 9 1 * *")
    # The seed's slot: after load-data on the 1st.
    assert (send.flow_name, send.schedules[0].schedule.cron) == ("send-requests", "0 11 1 * *")
    # The probe runs on demand only.
    assert (probe.flow_name, probe.schedules) == ("probe", [])


def test_spec_version_is_stable_and_tracks_every_setting() -> None:
    base = TrainerSettings()
    assert _versions(base) == _versions(TrainerSettings())
    assert len(set(_versions(base))) == 4
    changed_cron = TrainerSettings(train_cron="0 9 16 * *")
    assert _versions(changed_cron)[0] != _versions(base)[0]
    assert _versions(changed_cron)[1] == _versions(base)[1]
    assert _versions(TrainerSettings(work_pool_name="other")) != _versions(base)
    assert _versions(TrainerSettings(default_data_source="synthetic"))[1] != _versions(base)[1]


def test_runs_get_heartbeats_and_retries_that_outlast_an_outage() -> None:
    for deployment in deployments(TrainerSettings()):
        env = deployment.job_variables["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS) == "30"
        retries = int(env["PREFECT_CLIENT_MAX_RETRIES"])
        assert sum(2**n for n in range(1, retries + 1)) > 200  # seconds of back-off in all
        assert env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500"


def test_each_deployment_s_runs_are_told_its_entrypoint_and_it_loads_its_flow() -> None:
    from prefect.flows import load_flow_from_entrypoint

    made = deployments(TrainerSettings())
    for deployment in made:
        env = deployment.job_variables["env"]
        assert env == {**RUN_ENVIRONMENT, FLOW_ENTRYPOINT_ENV: deployment.entrypoint}
        # What the engine does with it (prefect.flow_engine.load_flow): the deployment's flow.
        flow = load_flow_from_entrypoint(env[FLOW_ENTRYPOINT_ENV], use_placeholder_flow=False)
        assert flow.name == deployment.flow_name
    assert len({d.job_variables["env"][FLOW_ENTRYPOINT_ENV] for d in made}) == len(made)


def test_the_zombie_automation_is_never_forced() -> None:
    automation = zombie_automation()
    [action] = automation.actions
    assert action.force is False  # a heartbeat after completion must not crash a run
    assert automation.trigger.within.total_seconds() == 3 * HEARTBEAT_SECONDS
    assert _automation_spec(automation) == _automation_spec(zombie_automation())
    assert _automation_spec(zombie_automation(within_seconds=60)) != _automation_spec(automation)


def _trainer_imports(path: Path, *, top_level: bool) -> set[str]:
    """The trainer modules that the module at `path` imports: at its top level (what
    importing it runs), or inside its functions (what it imports only when called)."""
    tree = ast.parse(path.read_text())
    if top_level:
        nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    else:
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        nodes = [n for f in functions for n in ast.walk(f)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "trainer":
            found |= {f"trainer.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer."):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("trainer.")}
    return found


def _module_file(name: str) -> Path:
    return TRAINER_DIR.joinpath(*name.split(".")[1:]).with_suffix(".py")


def _preloaded() -> tuple[str, ...]:
    """trainer.preload's LAZY_IMPORTS, read from its source: importing it imports them."""
    for node in ast.parse(_module_file("trainer.preload").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "LAZY_IMPORTS":
            return ast.literal_eval(node.value)
    raise AssertionError("trainer.preload has no LAZY_IMPORTS")


def test_registering_imports_neither_scikit_learn_nor_mlflow() -> None:
    # trainer.register runs at every start of the stack and needs only the flows'
    # signatures: their 2 s of imports were a third of Compose's registration.
    modules = modules_after("import trainer.register")
    assert "trainer.flows" in modules
    heavy = {"sklearn", "mlflow", "scipy"}
    assert not heavy & modules, sorted(heavy & modules)


def test_the_run_modules_warm_what_the_flows_import_when_they_run() -> None:
    # The agent's fork server imports RUN_MODULES before it forks a run (trainer.preload
    # imports its LAZY_IMPORTS): whatever the flows import only in their bodies must come
    # with them, or every run pays for it again. Read from the source: importing all of it
    # takes seconds.
    lazy = _trainer_imports(_module_file("trainer.flows"), top_level=False)
    assert {"trainer.reports", "trainer.registry", "trainer.training"} <= lazy, lazy
    warm = {*RUN_MODULES, *(m for m in _preloaded() if m.startswith("trainer."))}
    todo = list(warm)
    while todo:
        for module in _trainer_imports(_module_file(todo.pop()), top_level=True) - warm:
            warm.add(module)
            todo.append(module)
    assert lazy <= warm, sorted(lazy - warm)
