"""agent.recent_reads: the worker's second read of a deployment (or flow) within a second is
answered from the first, as a copy of its own; older or failed reads are asked again."""

import asyncio
import uuid

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import Flow
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectNotFound

from agent import recent_reads
from agent.recent_reads import RecentReads


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def deployment(deployment_id: uuid.UUID) -> DeploymentResponse:
    return DeploymentResponse(
        id=deployment_id,
        name="monthly",
        flow_id=uuid.uuid4(),
        job_variables={"command": "python -m agent.launch", "env": {"A": "1"}},
    )


def test_a_read_within_the_window_is_the_first_s_copy_and_a_later_one_is_asked_again() -> None:
    clock = Clock()
    reads = RecentReads(seconds=1.0, clock=clock)
    deployment_id = uuid.uuid4()
    asked: list[uuid.UUID] = []

    async def read() -> DeploymentResponse:
        asked.append(deployment_id)
        return deployment(deployment_id)

    async def scenario() -> None:
        first = await reads.get("read_deployment", deployment_id, read)
        # Prefect's worker merges a run's env into the deployment's, in place.
        first.job_variables["env"]["RUN"] = "first run's"
        clock.now += 0.5
        second = await reads.get("read_deployment", deployment_id, read)
        assert len(asked) == 1
        assert second.id == deployment_id and second.job_variables["env"] == {"A": "1"}
        second.job_variables["env"]["RUN"] = "second run's"
        third = await reads.get("read_deployment", deployment_id, read)
        assert third.job_variables["env"] == {"A": "1"} and len(asked) == 1
        # Another object, or the same one once the window has passed: read again.
        await reads.get("read_flow", deployment_id, read)
        assert len(asked) == 2
        clock.now += 1.0
        await reads.get("read_deployment", deployment_id, read)
        assert len(asked) == 3

    asyncio.run(scenario())


def test_a_failed_read_is_not_kept() -> None:
    reads = RecentReads(seconds=1.0, clock=Clock())
    calls = 0

    async def gone() -> DeploymentResponse:
        nonlocal calls
        calls += 1
        raise ObjectNotFound(http_exc=Exception("404"))

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(ObjectNotFound):
                await reads.get("read_deployment", uuid.uuid4(), gone)

    asyncio.run(scenario())
    assert calls == 2


def test_install_answers_the_client_s_reads_from_recent_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, uuid.UUID]] = []

    async def read_deployment(self: PrefectClient, deployment_id: uuid.UUID) -> DeploymentResponse:
        asked.append(("deployment", deployment_id))
        return deployment(deployment_id)

    async def read_flow(self: PrefectClient, flow_id: uuid.UUID) -> Flow:
        asked.append(("flow", flow_id))
        return Flow(id=flow_id, name="load-data")

    # Stand-ins for the server's answers; Prefect's own methods again after the test.
    monkeypatch.setattr(PrefectClient, "read_deployment", read_deployment)
    monkeypatch.setattr(PrefectClient, "read_flow", read_flow)
    monkeypatch.delattr(PrefectClient, "_agent_recent_reads", raising=False)
    monkeypatch.setattr(PrefectClient, "_agent_recent_reads", None, raising=False)
    reads = recent_reads.install(RecentReads(seconds=60))
    assert recent_reads.install() is reads  # once
    client = PrefectClient("http://127.0.0.1:1/api")
    deployment_id, flow_id = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        for _ in range(3):
            assert (await client.read_deployment(deployment_id)).id == deployment_id
            assert (await client.read_flow(flow_id)).name == "load-data"

    asyncio.run(scenario())
    assert asked == [("deployment", deployment_id), ("flow", flow_id)]
