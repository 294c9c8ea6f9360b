"""deploy/kubernetes: the values and manifests say what docs/autoscaling.md promises."""

import yaml

from devstack.stack import REPO, SERVICE_COMMANDS

DEPLOY = REPO / "deploy" / "kubernetes"


def _load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def test_prefect_server_is_highly_available_on_redis() -> None:
    [values] = _load("prefect-server.values.yaml")
    assert values["server"]["replicaCount"] >= 2
    assert values["backgroundServices"]["runAsSeparateDeployment"] is True
    env = {e["name"]: e["value"] for e in values["global"]["prefect"]["env"]}
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert env["PREFECT_SERVER_DOCKET_URL"].startswith("redis://")
    server_env = {e["name"]: e["value"] for e in values["server"]["env"]}
    assert server_env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    assert values["global"]["prefect"]["image"]["repository"].endswith("training-stack/server")
    assert values["postgresql"]["enabled"] is False  # no chart default password


def test_keda_scales_the_agents_on_the_backlog_by_runs_per_agent() -> None:
    agent, autoscaler, _service = _load("agents.yaml")
    [scaled] = _load("keda-scaledobject.yaml")
    assert scaled["spec"]["scaleTargetRef"]["name"] == agent["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "autoscaler_waiting_runs" in trigger["metadata"]["query"]

    def env(deployment: dict) -> dict[str, str]:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e["value"] for e in container["env"]}

    assert trigger["metadata"]["threshold"] == env(agent)["AGENT_LIMIT"]
    assert env(autoscaler)["AUTOSCALER_BACKEND"] == "metrics-only"
    for deployment in (agent, autoscaler):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["containers"][0]["image"].split(":")[0].endswith("training-stack/agent")
    # Each runs the command it runs in Compose and in local mode.
    for deployment, service in ((agent, "agent"), (autoscaler, "autoscaler")):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == SERVICE_COMMANDS[service]


def test_the_kubernetes_work_pool_option() -> None:
    [values] = _load("prefect-worker.values.yaml")
    assert values["worker"]["config"]["type"] == "kubernetes"
    assert values["worker"]["image"]["prefectTag"].startswith("3.8.8-")
