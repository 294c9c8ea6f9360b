"""/backfills: run a flow once per month over a range of dates, a few at a time (an
operator's); follow and cancel them. How they are planned and carried out: api.backfills."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.backfills import (
    RUNS_CONSIDERED,
    Backfill,
    BackfillRefused,
    Plan,
    as_value,
    date_parameter,
    dates,
    parse_day,
    plan,
    registry_model,
)
from api.deps import Allowed, DatabaseDep, PrefectDep, SettingsDep
from api.registry import trained_months
from api.routers import PROBLEM_RESPONSES, oldest_first
from api.routers.runs import request_hash
from api.schemas import Backfill as BackfillShown
from api.schemas import (
    BackfillDate,
    BackfillLinks,
    BackfillLoad,
    BackfillPage,
    BackfillProgress,
    BackfillRequest,
)
from api.settings import ApiSettings
from api.validation import parameter_errors
from common.contract import LOAD_DATA, TRAIN_MODEL
from common.web.db import blocking
from common.web.jsonbody import JsonRoute
from common.web.problems import Problem, invalid, said
from common.web.requestid import current_request_id

router = APIRouter(prefix="/backfills", tags=["backfills"], route_class=JsonRoute)


def shown(settings: ApiSettings, request: Request, backfill: Backfill) -> BackfillShown:
    base = f"{(settings.api_public_url or str(request.base_url)).rstrip('/')}/backfills"
    current = Plan.of(backfill.plan)
    return BackfillShown(
        id=backfill.id,
        flow=backfill.flow,
        status=backfill.status,
        request=BackfillRequest.model_validate(backfill.request),
        created_by=backfill.caller,
        created=backfill.created_at,
        ended=backfill.ended_at,
        progress=BackfillProgress(**current.progress()),
        dates=[
            BackfillDate(date=d.value, status=d.status, run=d.run, state=d.state, reason=d.skipped)
            for d in current.dates
        ],
        loads=[BackfillLoad(month=m.value, run=m.run, state=m.state) for m in current.loads],
        error=current.error,
        links=BackfillLinks(self=f"{base}/{backfill.id}", cancel=f"{base}/{backfill.id}/cancel"),
    )


def _wake(request: Request) -> None:
    if backfiller := getattr(request.app.state, "backfiller", None):
        backfiller.wake()


@router.post(
    "",
    operation_id="create_backfill",
    status_code=202,
    response_model=BackfillShown,
    summary="Run a flow once per month from start to end (idempotent)",
    responses={
        200: {"description": "The same request made this backfill already"},
        503: PROBLEM_RESPONSES[503],
    },
)
async def create_backfill(
    body: BackfillRequest,
    request: Request,
    response: Response,
    settings: SettingsDep,
    prefect: PrefectDep,
    database: DatabaseDep,
    allowed: Allowed,
    force: Annotated[
        bool,
        Query(description="Make a new backfill even if the same request made one already."),
    ] = False,
) -> BackfillShown:
    """The dates are planned now: which run and which are skipped, by `reprocess`. The same
    request again (whoever sends it, however its dates are written) answers the backfill it
    made (200, `Idempotency-Replayed: true`)."""
    deployment = await prefect.deployment(body.flow)
    schema = deployment.parameter_openapi_schema or {}
    try:
        param = date_parameter(schema)
        days = dates(parse_day(body.start, "body.start"), parse_day(body.end, "body.end", end=True))
    except BackfillRefused as refused:
        raise invalid(refused.field, str(refused)) from None
    parameters = _parameters(body, schema, param)
    auto_load = body.flow == TRAIN_MODEL and parameters.get("auto_load")
    if auto_load and LOAD_DATA not in await prefect.flows():
        raise invalid(
            "body.parameters.auto_load",
            f"auto_load loads months with the {LOAD_DATA} flow, which the API does not run",
        )
    errors = parameter_errors(schema, parameters | {param: as_value(days[0], param)})
    if errors:
        raise Problem(422, "validation-error", said(errors), errors=errors)

    # The same backfill however its dates are written (2024-03 or 2024-03-01; an end
    # anywhere in the month after the last date), by anyone.
    resolved = body.model_copy(update={"start": str(days[0]), "end": str(days[-1])})
    body_hash = request_hash(resolved) + (f":{uuid.uuid4()}" if force else "")
    found = await blocking(database.backfill_by_hash, body_hash)
    made, created = found, False
    if found is None:
        runs: list[Any] = []
        registered: dict[tuple[str, str], str] = {}
        running: list[Backfill] = []
        if body.reprocess != "all":
            runs = await prefect.deployment_runs(deployment.id, RUNS_CONSIDERED)
            running = await blocking(database.open_backfills, body.flow)
            if body.flow == TRAIN_MODEL and settings.mlflow_tracking_uri:
                model = registry_model(parameters, schema)
                registered = await trained_months(settings.mlflow_tracking_uri, model)
        try:
            planned = plan(
                body.flow, schema, days, parameters, body.reprocess, runs, registered, running
            )
        except BackfillRefused as refused:
            raise invalid(refused.field, str(refused)) from None
        made, created = await blocking(
            database.create_backfill,
            body_hash,
            allowed.name,
            current_request_id(),
            body.flow,
            body.model_dump(mode="json"),
            planned.stored(),
        )
    assert made is not None
    response.headers["Idempotency-Replayed"] = "false" if created else "true"
    if created:
        _wake(request)
    else:
        response.status_code = 200
    request.state.audit_target = str(made.id)
    presented = shown(settings, request, made)
    response.headers["Location"] = presented.links.self
    return presented


def _parameters(body: BackfillRequest, schema: dict[str, Any], param: str) -> dict[str, Any]:
    """Each run's parameters but its date: the request's, with `promote` for a flow that
    takes it."""
    if param in body.parameters:
        raise invalid(
            f"body.parameters.{param}", f"`{param}` is the backfill's: give start and end"
        )
    if "promote" in body.parameters:
        raise invalid("body.parameters.promote", "give `promote` beside `parameters`")
    if "promote" in (schema.get("properties") or {}):
        return body.parameters | {"promote": body.promote}
    if body.flow == TRAIN_MODEL:
        # A deployment registered before train-model took `promote` would drop it, and
        # every run would promote: refuse rather than move `champion` unasked.
        raise Problem(
            409,
            "deployment-outdated",
            f"the {TRAIN_MODEL} deployment takes no `promote` parameter: register the "
            "deployments again (restart the trainer) first",
        )
    if body.promote:
        raise invalid("body.promote", f"flow {body.flow!r} registers no models to promote")
    return dict(body.parameters)


def _found(backfill_id: uuid.UUID, found: Backfill | None) -> Backfill:
    if found is None:
        raise Problem(404, "not-found", f"no backfill {backfill_id}")
    return found


@router.get(
    "",
    operation_id="list_backfills",
    response_model=BackfillPage,
    summary="Backfills, oldest first",
)
async def list_backfills(
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> BackfillPage:
    found, following = await oldest_first(
        request, cursor, limit, "backfills", database.list_backfills
    )
    return BackfillPage(backfills=[shown(settings, request, b) for b in found], next=following)


@router.get(
    "/{backfill_id}",
    operation_id="read_backfill",
    response_model=BackfillShown,
    summary="A backfill: each date, its run and state, and its progress",
)
async def read_backfill(
    backfill_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    _: Allowed,
) -> BackfillShown:
    """The runs' states are as the backfill last read them: at most a few seconds old."""
    found = _found(backfill_id, await blocking(database.read_backfill, backfill_id))
    return shown(settings, request, found)


@router.post(
    "/{backfill_id}/cancel",
    operation_id="cancel_backfill",
    status_code=202,
    response_model=BackfillShown,
    summary="Cancel a backfill: no more runs start, and those going are cancelled",
)
async def cancel_backfill(
    backfill_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    _: Allowed,
) -> BackfillShown:
    """Idempotent; a backfill that has ended is answered as it is. It is `cancelling` until
    the runs it cancelled have ended, then `cancelled`."""
    found = _found(backfill_id, await blocking(database.cancel_backfill, backfill_id))
    _wake(request)
    return shown(settings, request, found)
