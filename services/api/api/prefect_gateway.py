"""The API's only contact with Prefect: a thin async wrapper over one PrefectClient.

Prefect being away becomes a 503 problem; a missing object becomes a 404. The flows the API
runs are the deployments on the work pool; reads of runs are cached (see `api.cache`).
"""

import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, Log, State, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelling

from api.cache import ReadCache
from api.run_events import FOLLOWED
from common.results import kind_of
from common.web.problems import Problem, unavailable

T = TypeVar("T")
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
# What `POST /runs/{id}/retry` takes; only these runs can have retries.
RETRYABLE = {StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
# The tag that links a retry to the run it retries (visible in Prefect's UI too).
RETRY_OF = "retry-of:"
MAX_RETRIES_LISTED = 100
MAX_EVENTS_READ_BACK = 20_000  # flow-run events one catch-up reads at most
EVENTS_PAGE = 50  # the most Prefect gives in one page of events
RUNS_PAGE = 200  # the most Prefect gives in one page of runs (PREFECT_API_DEFAULT_LIMIT)
# A deployment registered, changed or removed on the pool is seen within this long while
# the API hears of no deployment events (its subscription is down), ...
FLOWS_CACHE_SECONDS = 5.0
# ... and while it does, once its event came (api.run_events), or at the latest after this:
# a net for an event lost on the way.
FLOWS_CACHE_LIVE_SECONDS = 300.0


def run_tags(caller: str, request_id: str) -> list[str]:
    """The tags of a run the API starts: `api`, who asked, and the request (the one that
    made a backfill, for its runs)."""
    return ["api", f"caller:{caller}", request_tag(request_id)]


def request_tag(request_id: str) -> str:
    """The tag of the request that started a run."""
    return f"request:{request_id}"


def unknown_flow(flow: str, flows: dict[str, Any]) -> str:
    known = ", ".join(flows) or "none yet (is the trainer's registration done?)"
    return f"unknown flow {flow!r}; the flows are: {known}"


def retry_of(tags: list[str]) -> uuid.UUID | None:
    """The run a run retries, from its `retry-of:<id>` tag; None for a first attempt."""
    for tag in tags:
        if tag.startswith(RETRY_OF):
            try:
                return uuid.UUID(tag.removeprefix(RETRY_OF))
            except ValueError:
                return None
    return None


def refused(error: PrefectHTTPStatusError, missing: str | None = None) -> Problem:
    """Prefect's error answer as our problem. A 4xx stays a 4xx: Prefect refused what the
    caller sent (409 and 422 are its answers to parameters that fail the deployment's schema,
    which our own check should have caught first). Only a 5xx means Prefect is unavailable."""
    response = error.response
    status = response.status_code
    if status == 404:
        return Problem(404, "not-found", missing or "not found")
    if status >= 500:
        return unavailable("the Prefect API", error)
    if status in (401, 403):  # our credentials, not the caller's request
        return Problem(500, "internal-error", "the Prefect API refused the API's credentials")
    return Problem(422, "validation-error", f"Prefect refused the request: {_detail(response)}")


def _detail(response: httpx.Response, limit: int = 500) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else json.dumps(detail) if detail else response.text
    return text[:limit] or f"HTTP {response.status_code}"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What GET /runs/{id} reports: the run, its flow's name, its result tables."""

    run: FlowRun
    flow: str
    tables: dict[str, list[dict[str, Any]]]

    @property
    def final(self) -> bool:
        return self.run.state is not None and self.run.state.type in FINAL


class PrefectGateway:
    def __init__(
        self,
        client: PrefectClient,
        deployment_name: str,
        work_pool_name: str,
        *,
        allowed_flows: frozenset[str] | None = None,
        read_cache_seconds: float = 1.0,
    ) -> None:
        self.client = client
        self.deployment_name, self.work_pool_name = deployment_name, work_pool_name
        self.allowed_flows = allowed_flows
        self._flow_names: dict[uuid.UUID, str] = {}
        self._catalogue: ReadCache[str, dict[str, DeploymentResponse]] = ReadCache(
            lambda _: False, ttl=FLOWS_CACHE_LIVE_SECONDS
        )
        # When a read of the deployments begun after it is current (a `time.monotonic()`),
        # or None when nothing tells: `RunEvents.deployments_fresh_after`, once the app has
        # its events.
        self.deployments_fresh_after: Callable[[], float | None] = lambda: None
        self.records: ReadCache[uuid.UUID, RunRecord] = ReadCache(
            lambda record: record.final, ttl=read_cache_seconds
        )
        # A run's states, for its event streams: read once per event however many stream.
        self.states_read: ReadCache[uuid.UUID, list[State]] = ReadCache(
            lambda states: bool(states) and states[-1].type in FINAL, ttl=read_cache_seconds
        )
        # A final run never changes, but a retry of it can be made at any time (through
        # any API process): its list of retries is kept no longer than a running run.
        self._retries: ReadCache[uuid.UUID, list[uuid.UUID]] = ReadCache(
            lambda _: False, ttl=read_cache_seconds
        )

    async def _call(self, call: Awaitable[T], missing: str | None = None) -> T:
        try:
            return await call
        except ObjectNotFound:
            raise Problem(404, "not-found", missing or "not found") from None
        except PrefectHTTPStatusError as error:
            raise refused(error, missing) from error
        except (httpx.TransportError, OSError) as error:
            raise unavailable("the Prefect API", error) from error

    async def ready(self) -> str | None:
        """None when the Prefect API answers, else why not."""
        try:
            error = await self.client.api_healthcheck()
        except Exception as caught:  # any failure to reach it means "not ready"
            error = caught
        return None if error is None else f"{type(error).__name__}: {error}"

    async def flows(self) -> dict[str, DeploymentResponse]:
        """Each flow the API runs, with its deployment: the deployments named
        `deployment_name` on the work pool (narrowed by `allowed_flows`), by flow name.

        Read again once a deployment's event says one changed (FLOWS_CACHE_LIVE_SECONDS at
        the latest), or every FLOWS_CACHE_SECONDS while no events come: a trigger seldom
        waits for a read of the deployments (40 ms on the 2-core machine)."""
        fresh_after = self.deployments_fresh_after()
        if fresh_after is None:
            fresh_after = time.monotonic() - FLOWS_CACHE_SECONDS
        return await self._catalogue.get("flows", self._read_flows, fresh_after)

    async def _read_flows(self) -> dict[str, DeploymentResponse]:
        deployments = await self._call(
            self.client.read_deployments(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[self.deployment_name])
                ),
                work_pool_filter=WorkPoolFilter(
                    name=WorkPoolFilterName(any_=[self.work_pool_name])
                ),
            )
        )
        flows = {}
        for deployment in deployments:
            name = await self.flow_name(deployment.flow_id)
            if self.allowed_flows is None or name in self.allowed_flows:
                flows[name] = deployment
        return dict(sorted(flows.items()))

    async def deployment(self, flow: str) -> DeploymentResponse:
        """The deployment of `flow`; 404 naming the flows there are."""
        flows = await self.flows()
        if flow not in flows:
            raise Problem(404, "not-found", unknown_flow(flow, flows))
        return flows[flow]

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

    async def record(self, run_id: uuid.UUID, fresh_after: float | None = None) -> RunRecord:
        """The run, its flow and its tables; cached (final runs for good, others for
        `read_cache_seconds`, or read again if fetched before `fresh_after`, a
        `time.monotonic()`), and concurrent reads of one run share one."""
        return await self.records.get(run_id, lambda: self._read_record(run_id), fresh_after)

    async def _read_record(self, run_id: uuid.UUID) -> RunRecord:
        run = await self.run(run_id)
        completed = run.state is not None and run.state.type == StateType.COMPLETED
        tables = await self.tables(run_id) if completed else {}
        return RunRecord(run, await self.flow_name(run.flow_id), tables)

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
        before: dt.datetime | None,
        limit: int,
    ) -> list[FlowRun]:
        """Runs expected to start between `since` and `before` (both inclusive), newest first;
        the first `limit` (ties in order arbitrary: see `api.pages`)."""
        window = FlowRunFilterExpectedStartTime(after_=since, before_=before)
        run_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])) if state else None,
            expected_start_time=window if since or before else None,
        )
        return await self._call(
            self.client.read_flow_runs(
                flow_run_filter=run_filter,
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=limit,
            )
        )

    async def runs_by_id(self, run_ids: list[uuid.UUID]) -> list[FlowRun]:
        """The runs of `run_ids` that exist, as they are now (no cache)."""
        if not run_ids:
            return []
        return await self._call(
            self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
                limit=len(run_ids),
            )
        )

    async def deployment_runs(self, deployment_id: uuid.UUID, limit: int) -> list[FlowRun]:
        """The newest `limit` runs of a deployment, newest first (by expected start)."""
        found: list[FlowRun] = []
        while len(found) < limit:
            page = await self._call(
                self.client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                    sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                    offset=len(found),
                    limit=min(RUNS_PAGE, limit - len(found)),
                )
            )
            found += page
            if len(page) < RUNS_PAGE:
                break
        return found

    async def states(self, run_id: uuid.UUID, fresh_after: float | None = None) -> list[State]:
        """Every state the run has been in, oldest first; cached as `record` is."""
        return await self.states_read.get(run_id, lambda: self._read_states(run_id), fresh_after)

    async def _read_states(self, run_id: uuid.UUID) -> list[State]:
        states = await self._call(
            self.client.read_flow_run_states(run_id), missing=f"run {run_id} not found"
        )
        return sorted(states, key=lambda state: state.timestamp)

    async def retries(self, run_id: uuid.UUID) -> list[uuid.UUID]:
        """The ids of the runs made as retries of `run_id` (tagged `retry-of:<id>`), the
        first made first; cached like a run that is not final."""
        return await self._retries.get(run_id, lambda: self._read_retries(run_id))

    def retried(self, run_id: uuid.UUID) -> None:
        """A retry of `run_id` was just made: this process's next read lists it."""
        self._retries.forget(run_id)

    async def _read_retries(self, run_id: uuid.UUID) -> list[uuid.UUID]:
        runs = await self._call(
            self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"{RETRY_OF}{run_id}"])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=MAX_RETRIES_LISTED,
            )
        )
        return [run.id for run in runs]

    async def run_events_since(self, since: dt.datetime) -> list[Any]:
        """The events the API follows (`api.run_events.FOLLOWED`) since `since`
        (inclusive), oldest first (at most MAX_EVENTS_READ_BACK): what a restarted API
        missed."""
        event_filter = EventFilter(
            occurred=EventOccurredFilter(since=since, until=dt.datetime.now(dt.UTC)),
            event=EventNameFilter(prefix=FOLLOWED),
            order=EventOrder.ASC,
        )
        page = await self._call(self.client.read_events(event_filter, limit=EVENTS_PAGE))
        events = list(page.events)
        while page.next_page and len(events) < MAX_EVENTS_READ_BACK:
            page = await self._call(self.client.read_events_page(str(page.next_page)))
            events += page.events
        return events

    async def cancel(self, run_id: uuid.UUID) -> None:
        await self._call(self.client.set_flow_run_state(run_id, Cancelling()))
        self.records.forget(run_id)  # the next read shows Cancelling

    async def logs(self, run_id: uuid.UUID, since: dt.datetime | None, limit: int) -> list[Log]:
        """The run's first `limit` log lines at or after `since` (inclusive), by timestamp
        (ties in order arbitrary: see `api.pages`)."""
        return await self._call(
            self.client.read_logs(
                LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[run_id]),
                    timestamp=LogFilterTimestamp(after_=since) if since else None,
                ),
                limit=limit,
                sort=LogSort.TIMESTAMP_ASC,
            )
        )

    async def tables(self, run_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        """The run's result tables (`common.results.TABLES`), by kind: their rows, which
        the result models read."""
        artifacts = await self._call(
            self.client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        )
        tables: dict[str, list[dict[str, Any]]] = {}
        for artifact in artifacts:
            kind = kind_of(artifact.key) if artifact.key else None
            if kind and artifact.data:
                data: Any = artifact.data  # a table's rows: JSON text, or parsed already
                tables[kind] = json.loads(data) if isinstance(data, str) else data
        return tables


@asynccontextmanager
async def open_gateway(**options: Any) -> AsyncIterator[PrefectGateway]:
    """A gateway over one client for the app's lifetime (its connections are reused)."""
    async with get_client() as client:
        yield PrefectGateway(client, **options)
