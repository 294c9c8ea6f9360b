"""The API's only contact with Prefect: a thin async wrapper over one PrefectClient.

Prefect being away becomes a 503 problem; a missing object becomes a 404.
"""

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelling

from api.problems import Problem, unavailable

T = TypeVar("T")
FLOWS = ("train-model", "load-data", "send-requests")
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


class PrefectGateway:
    def __init__(self, client: PrefectClient, deployment_name: str) -> None:
        self.client = client
        self.deployment_name = deployment_name
        self._flow_names: dict[uuid.UUID, str] = {}

    async def _call(self, call: Awaitable[T], missing: str | None = None) -> T:
        try:
            return await call
        except ObjectNotFound:
            raise Problem(404, "not-found", missing or "not found") from None
        except PrefectHTTPStatusError as error:
            if error.response.status_code == 404:
                raise Problem(404, "not-found", missing or "not found") from None
            if error.response.status_code >= 500:
                raise unavailable("the Prefect API", error) from error
            raise
        except (httpx.TransportError, OSError) as error:
            raise unavailable("the Prefect API", error) from error

    async def ready(self) -> str | None:
        """None when the Prefect API answers, else why not."""
        try:
            error = await self.client.api_healthcheck()
        except Exception as caught:  # any failure to reach it means "not ready"
            error = caught
        return None if error is None else f"{type(error).__name__}: {error}"

    async def deployment(self, flow: str) -> DeploymentResponse:
        name = f"{flow}/{self.deployment_name}"
        return await self._call(
            self.client.read_deployment_by_name(name),
            missing=f"deployment {name} is not registered (is the trainer's registration done?)",
        )

    async def create_run(
        self,
        deployment: DeploymentResponse,
        parameters: dict[str, Any],
        tags: list[str],
        idempotency_key: str | None,
    ) -> FlowRun:
        return await self._call(
            self.client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters, tags=tags, idempotency_key=idempotency_key
            )
        )

    async def run(self, run_id: uuid.UUID) -> FlowRun:
        return await self._call(
            self.client.read_flow_run(run_id), missing=f"run {run_id} not found"
        )

    async def flow_name(self, flow_id: uuid.UUID) -> str:
        if flow_id not in self._flow_names:
            flow = await self._call(self.client.read_flow(flow_id))
            self._flow_names[flow_id] = flow.name
        return self._flow_names[flow_id]

    async def runs(
        self,
        deployment_ids: list[uuid.UUID],
        state: StateType | None,
        since: dt.datetime | None,
        limit: int,
        offset: int,
    ) -> list[FlowRun]:
        run_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])) if state else None,
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since) if since else None,
        )
        return await self._call(
            self.client.read_flow_runs(
                flow_run_filter=run_filter,
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
                offset=offset,
            )
        )

    async def cancel(self, run_id: uuid.UUID) -> None:
        await self._call(self.client.set_flow_run_state(run_id, Cancelling()))

    async def logs(self, run_id: uuid.UUID, limit: int, offset: int) -> list[Log]:
        return await self._call(
            self.client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=limit,
                offset=offset,
                sort=LogSort.TIMESTAMP_ASC,
            )
        )

    async def training_tables(self, run_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        """The table artifacts of a run, by the end of their key: `model-metrics` and
        `model-registry` of a training run, `live-metrics` of send-requests (each key starts
        with the dataset)."""
        artifacts = await self._call(
            self.client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        )
        tables = {}
        for artifact in artifacts:
            for kind in ("model-metrics", "model-registry", "live-metrics"):
                if artifact.key and artifact.key.endswith(f"-{kind}") and artifact.data:
                    data = artifact.data
                    tables[kind] = json.loads(data) if isinstance(data, str) else data
        return tables


@asynccontextmanager
async def open_gateway(deployment_name: str) -> AsyncIterator[PrefectGateway]:
    async with get_client() as client:
        yield PrefectGateway(client, deployment_name)
