"""/runs: start flow runs, follow them (read, wait, stream), cancel and retry them, read
their logs."""

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prefect.client.schemas.objects import FlowRun, StateType
from pydantic import BaseModel

from api import pages
from api.deps import Allowed, IdempotencyDep, MetricsDep, PrefectDep, RunEventsDep, SettingsDep
from api.prefect_gateway import (
    FINAL,
    RETRY_OF,
    RETRYABLE,
    PrefectGateway,
    RunRecord,
    request_tag,
    retry_of,
    run_tags,
    unknown_flow,
)
from api.routers import PROBLEM_RESPONSES, next_url, page_cursor
from api.run_stream import Position, PositionError, RunStream
from api.schemas import (
    IsoDatetime,
    LogLine,
    LogPage,
    RegisteredModel,
    Run,
    RunLinks,
    RunPage,
    RunRequest,
    RunState,
    StateTypeName,
)
from api.settings import WAIT_MAX_SECONDS, ApiSettings
from api.validation import parameter_errors
from common.results import LiveMetrics, ModelMetrics, ModelRegistry
from common.web.jsonbody import JsonRoute
from common.web.problems import Problem, invalid, said
from common.web.requestid import current_request_id

router = APIRouter(prefix="/runs", tags=["runs"], route_class=JsonRoute)


# -- presenting runs ---------------------------------------------------------------------


def present(
    settings: ApiSettings,
    request: Request,
    record: RunRecord,
    retries: list[uuid.UUID] | None = None,
) -> Run:
    """`record` as the API shows it; `retries` as `PrefectGateway.retries` lists them (None:
    not read, as in lists)."""
    run, tables = record.run, record.tables
    base = f"{(settings.api_public_url or str(request.base_url)).rstrip('/')}/runs/{run.id}"
    state = run.state
    state_type = state.type.value if state else "SCHEDULED"
    metrics = model = registry = error = None
    if live := LiveMetrics.read(tables):
        metrics = live.table()
    if trained := ModelMetrics.read(tables):
        metrics, model = trained.metrics(), trained.model
    if registered := ModelRegistry.read(tables):
        registry = RegisteredModel(
            name=registered.model,
            version=registered.version,
            alias=registered.alias,
            decision=registered.decision,
            mlflow_run=registered.mlflow_run,
            url=registered.model_version,
        )
    if state_type in ("FAILED", "CRASHED"):
        error = state.message if state else None
    ui = settings.prefect_ui_url
    return Run(
        id=run.id,
        flow=record.flow,
        name=run.name,
        state=RunState(
            type=state_type,
            name=state.name if state else "Scheduled",
            message=state.message if state else None,
        ),
        parameters=run.parameters,
        tags=sorted(run.tags),
        created=run.created,
        started=run.start_time,
        ended=run.end_time,
        metrics=metrics,
        model=model,
        registry=registry,
        error=error,
        retry_of=retry_of(run.tags),
        retries=retries,
        links=RunLinks(
            self=base,
            logs=f"{base}/logs",
            cancel=f"{base}/cancel",
            retry=f"{base}/retry",
            ui=f"{ui.rstrip('/')}/runs/flow-run/{run.id}" if ui else None,
        ),
    )


async def summary(
    settings: ApiSettings, prefect: PrefectGateway, request: Request, run: FlowRun
) -> Run:
    """A run as lists show it: without its result tables."""
    flow = await prefect.flow_name(run.flow_id)
    return present(settings, request, RunRecord(run, flow, {}))


async def in_full(
    settings: ApiSettings, prefect: PrefectGateway, request: Request, record: RunRecord
) -> Run:
    """A run as `GET /runs/{id}` shows it: with its retries (only a run that can be retried
    can have any, so no other costs a read)."""
    state = record.run.state
    retryable = state is not None and state.type in RETRYABLE
    retries = await prefect.retries(record.run.id) if retryable else []
    return present(settings, request, record, retries)


def api_tags(caller: str) -> list[str]:
    """The tags of a run this request starts (`run_tags`)."""
    return run_tags(caller, current_request_id())


def request_hash(body: BaseModel) -> str:
    """A digest of a request body, the same for the same request however it was written."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- routes ------------------------------------------------------------------------------


@router.post(
    "",
    operation_id="create_run",
    status_code=202,
    response_model=Run,
    summary="Start a flow run",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "Idempotency-Key reused"}},
)
async def create_run(
    body: RunRequest,
    request: Request,
    response: Response,
    settings: SettingsDep,
    prefect: PrefectDep,
    keys: IdempotencyDep,
    metrics: MetricsDep,
    allowed: Allowed,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Replays of this key return the original run.",
        ),
    ] = None,
) -> Run:
    caller = allowed.name
    deployment = await prefect.deployment(body.flow)
    errors = parameter_errors(deployment.parameter_openapi_schema or {}, body.parameters)
    if errors:
        raise Problem(422, "validation-error", said(errors), errors=errors)

    claim, prefect_key, body_hash = None, None, request_hash(body)
    if idempotency_key is not None:
        claim = await keys.claim(caller, idempotency_key, body_hash)
        if not claim.same_request:
            raise Problem(
                409,
                "idempotency-key-reused",
                f"Idempotency-Key {idempotency_key!r} was used for a different request",
            )
        # Unique per claim, so that Prefect itself returns one run to racing requests.
        prefect_key = f"api:{caller}:{idempotency_key}:{claim.nonce}"

    tags = api_tags(caller)
    # A failure here leaves the claim unbound: the same request retried reuses its nonce
    # (Prefect returns the run if one was made after all); a different one may take the key.
    run = await prefect.create_run(deployment, body.parameters, tags, prefect_key)
    replayed = False
    if claim is not None and idempotency_key is not None:
        replayed = claim.bound or not await keys.bind(
            caller, idempotency_key, body_hash, claim.nonce, str(run.id)
        )
        response.headers["Idempotency-Replayed"] = "true" if replayed else "false"
    request.state.audit_target = str(run.id)
    if not replayed:
        metrics.runs_triggered.labels(body.flow).inc()
    presented = await summary(settings, prefect, request, run)
    response.headers["Location"] = presented.links.self
    return presented


@router.get(
    "/{run_id}", operation_id="read_run", response_model=Run, summary="A run's state and results"
)
async def read_run(
    run_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    prefect: PrefectDep,
    events: RunEventsDep,
    _: Allowed,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=WAIT_MAX_SECONDS,
            allow_inf_nan=False,
            description="Seconds (at most 60) to wait for the run to be final: the answer "
            "comes as soon as it is, or at the deadline with its state then (at the "
            "latest after API_WAIT_MAX_SECONDS, 60 unless set lower).",
        ),
    ] = None,
) -> Run:
    """A final run is read once and then served from memory; a run that is still going can
    be up to `API_READ_CACHE_SECONDS` (1 s) stale, except when waited for: then it is read
    again as soon as Prefect says it changed."""
    if not wait:
        return await in_full(settings, prefect, request, await prefect.record(run_id))
    deadline = time.monotonic() + min(wait, settings.api_wait_max_seconds)
    async with events.watch(run_id) as watch:
        record = await prefect.record(run_id, fresh_after=watch.since)
        while not record.final and (left := deadline - time.monotonic()) > 0:
            # Woken by the run's event: read it anew. Else (a timeout, a poll while the
            # events are away) the cache's copy, which waiters share, will do.
            fresh = time.monotonic() if await watch.changed(left) else None
            record = await prefect.record(run_id, fresh_after=fresh)
    return await in_full(settings, prefect, request, record)


@router.get("", operation_id="list_runs", response_model=RunPage, summary="List runs, newest first")
async def list_runs(
    request: Request,
    settings: SettingsDep,
    prefect: PrefectDep,
    _: Allowed,
    flow: Annotated[
        str | None, Query(max_length=100, description="Only this flow (see GET /flows).")
    ] = None,
    state: Annotated[StateTypeName | None, Query(description="Only this state type.")] = None,
    since: Annotated[
        IsoDatetime | None,
        Query(description="Only runs expected to start after this ISO 8601 time."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> RunPage:
    scope = f"runs:{flow}:{state}:{since.isoformat() if since else ''}"
    at = page_cursor(cursor, scope)
    flows = await prefect.flows()
    if flow is not None and flow not in flows:
        message = unknown_flow(flow, flows)
        raise Problem(
            422, "validation-error", message, errors=[{"field": "query.flow", "message": message}]
        )
    deployment_ids = [d.id for name, d in flows.items() if flow in (None, name)]
    if not deployment_ids:
        return RunPage(runs=[])
    read = pages.plan(at, limit)
    before = None if read.start is None else pages.moment(read.start, newest_first=True)
    runs = await prefect.runs(
        deployment_ids, StateType(state) if state else None, since, before, read.size
    )
    page = pages.turn(at, read, runs, _run_key, window=pages.RUNS_WINDOW)
    return RunPage(
        runs=[await summary(settings, prefect, request, run) for run in page.items],
        next=next_url(request, page.cursor, scope) if page.more else None,
    )


def _run_key(run: FlowRun) -> tuple[int, uuid.UUID]:
    when = run.expected_start_time or run.created
    assert when is not None  # the server sets `created` on every run it returns
    return pages.position(when, newest_first=True), run.id


@router.post(
    "/{run_id}/cancel",
    operation_id="cancel_run",
    status_code=202,
    response_model=Run,
    summary="Cancel a run (idempotent)",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "The run already finished"}},
)
async def cancel_run(
    run_id: uuid.UUID, request: Request, settings: SettingsDep, prefect: PrefectDep, _: Allowed
) -> Run:
    run = await prefect.run(run_id)
    if run.state and run.state.type in FINAL:
        raise Problem(
            409,
            "run-is-final",
            f"run {run_id} is already {run.state.type.value}; only runs that have not "
            "finished can be cancelled",
        )
    if not (run.state and run.state.type == StateType.CANCELLING):
        await prefect.cancel(run_id)
        run = await prefect.run(run_id)
    return await summary(settings, prefect, request, run)


@router.post(
    "/{run_id}/retry",
    operation_id="retry_run",
    status_code=202,
    response_model=Run,
    summary="Start a failed, crashed or cancelled run again (idempotent per run)",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "The run cannot be retried"}},
)
async def retry_run(
    run_id: uuid.UUID,
    request: Request,
    response: Response,
    settings: SettingsDep,
    prefect: PrefectDep,
    metrics: MetricsDep,
    allowed: Allowed,
    force: Annotated[
        bool,
        Query(
            description="Start another retry even if the run has one already (by default "
            "the retry it has is answered, `Idempotency-Replayed: true`)."
        ),
    ] = False,
) -> Run:
    """A new run of the same flow with the same parameters, tagged `retry-of:<id>`: its
    `retry_of` names the run, whose `retries` name it."""
    run = await prefect.run(run_id)  # not the cache's copy: it may have just failed
    state = run.state.type if run.state else StateType.SCHEDULED
    if state not in RETRYABLE:
        raise Problem(
            409,
            "run-not-retryable",
            f"run {run_id} is {state.value}; only failed, crashed or cancelled runs can be retried",
        )
    flows = await prefect.flows()
    flow = next((name for name, d in flows.items() if d.id == run.deployment_id), None)
    if flow is None:
        raise Problem(
            409,
            "run-not-retryable",
            f"run {run_id} was not started from a flow the API runs (see GET /flows)",
        )
    errors = parameter_errors(flows[flow].parameter_openapi_schema or {}, run.parameters)
    if errors:
        raise Problem(
            409,
            "run-not-retryable",
            f"run {run_id}'s parameters no longer fit flow {flow!r}: {said(errors)}",
            errors=errors,
        )
    tags = [*api_tags(allowed.name), f"{RETRY_OF}{run_id}"]
    # Prefect's idempotency key makes racing retries of one run one run; `force` a new one.
    key = f"retry:{run_id}" + (f":{uuid.uuid4()}" if force else "")
    retry = await prefect.create_run(flows[flow], run.parameters, tags, key)
    # Prefect gave back an earlier request's run.
    replayed = request_tag(current_request_id()) not in retry.tags
    response.headers["Idempotency-Replayed"] = "true" if replayed else "false"
    prefect.retried(run_id)
    request.state.audit_target = str(retry.id)
    if not replayed:
        metrics.runs_triggered.labels(flow).inc()
    presented = present(settings, request, RunRecord(retry, flow, {}), [])
    response.headers["Location"] = presented.links.self
    return presented


async def stream_position(
    run_id: uuid.UUID,
    prefect: PrefectDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=4096,
            description="The `id` of the last event a client had: the stream resumes after "
            "it (browsers' EventSource sends it on reconnecting).",
        ),
    ] = None,
) -> Position:
    """Where a stream starts; checked before it does (a 404 or 422 cannot follow a 200)."""
    await prefect.record(run_id)  # 404 for an unknown run
    try:
        return Position.decode(last_event_id, run_id)
    except PositionError as error:
        raise invalid("header.last-event-id", str(error)) from None


@router.get(
    "/{run_id}/events",
    operation_id="stream_run_events",
    response_class=EventSourceResponse,
    summary="A run's states and log lines as they happen (server-sent events)",
)
async def stream_run_events(
    run_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    prefect: PrefectDep,
    events: RunEventsDep,
    _: Allowed,  # before the position: a caller without a key learns nothing of the run
    position: Annotated[Position, Depends(stream_position)],
) -> AsyncIterator[ServerSentEvent]:
    """`state` (type, name, message, timestamp) for each state the run passes through, `log`
    (timestamp, level, message) for each line, then `end` (the run, as `GET /runs/{id}`
    shows it) once it is final and its last lines are in, and the stream closes. `notice`
    (mode `polling` or `live`) says when Prefect's events are away and the stream reads
    the run every second instead. Each `state` and `log` has an `id`: send the last one as
    `Last-Event-ID` to resume after it."""
    async with events.watch(run_id, lines=True) as watch:

        async def end() -> Run:
            record = await prefect.record(run_id, fresh_after=watch.news_at)
            return await in_full(settings, prefect, request, record)

        async for event in RunStream(run_id, position, prefect, watch, end).events():
            yield event


@router.get(
    "/{run_id}/logs",
    operation_id="read_run_logs",
    response_model=LogPage,
    summary="A run's log lines",
)
async def read_run_logs(
    run_id: uuid.UUID,
    request: Request,
    prefect: PrefectDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> LogPage:
    scope = f"logs:{run_id}"
    at = page_cursor(cursor, scope)
    record = await prefect.record(run_id)  # 404 for an unknown run, not an empty page
    read = pages.plan(at, limit)
    since = None if read.start is None else pages.moment(read.start)
    logs = await prefect.logs(run_id, since, read.size)
    page = pages.turn(at, read, logs, lambda log: (pages.position(log.timestamp), log.id))
    state = record.run.state
    settled = pages.settled(state.timestamp if record.final and state else None)
    return LogPage(
        lines=[
            LogLine(timestamp=x.timestamp, level=x.level, message=x.message) for x in page.items
        ],
        next=next_url(request, page.cursor, scope) if page.more or not settled else None,
    )
