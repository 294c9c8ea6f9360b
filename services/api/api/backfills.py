"""Backfills: one flow run per month over a range of dates, a few at a time. Plain functions
and one loop.

`POST /backfills` plans a backfill: the dates from `start` to `end`, a month apart, each
with the flow's parameters and its date (a flow's `date`, YYYY-MM-DD, or `month`, YYYY-MM,
whichever its schema has). What counts as done already is decided then, by `reprocess`:
from the flow's runs that named a date of the same month (and the same `dataset`) and, for
train-model, from the registry (MLflow runs with a registered version trained on the same
months). The plan is one row of `backfills` in the API's database.

`Backfiller` carries the plans out: each API process claims running backfills with a lease
(a second replica skips them; a dead one's are taken over after LEASE_SECONDS), reads the
states of their runs, and starts the next dates while fewer than `max_active` runs are
going. A run is started with Prefect's idempotency key `backfill:<id>:<date>`, so a
process that dies between starting a run and recording it starts it once. With train-model
and `auto_load`, each month the dates need is loaded first by one load-data run (months
shared by two dates are loaded once), and a date starts once its months' loads have ended.
A cancelled backfill starts nothing more and cancels the runs it has going.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args

from dateutil.relativedelta import relativedelta
from prefect.client.schemas.objects import FlowRun, StateType

from api.prefect_gateway import FINAL, PrefectGateway, run_tags
from common.contract import LOAD_DATA, TRAIN_MODEL, model_name
from common.months import month_of, training_months
from common.web.problems import Problem

logger = logging.getLogger("api.backfills")

Reprocess = Literal["missing", "failed", "all"]
REPROCESS: tuple[Reprocess, ...] = get_args(Reprocess)
Status = Literal["running", "cancelling", "completed", "failed", "cancelled"]
DateStatus = Literal["pending", "skipped", "running", "completed", "failed", "cancelled"]
MAX_DATES = 120  # ten years of months
MAX_ACTIVE = 20
BACKFILL_TAG = "backfill:"  # each run a backfill starts carries `backfill:<id>`
# Parameters that say which data a run covers, beside its date: two runs differing in
# these did not do the same work. (`auto_load`, `source`, `promote` say how, not what.)
IDENTITY = ("dataset",)
LEASE_SECONDS = 30.0  # a backfill whose process vanished is taken over after this
TURN_SECONDS = 10.0  # one backfill's turn, at most: well within its lease
TICK_SECONDS = 2.0  # how often running backfills are looked at, short of a run's event
CLAIM_BATCH = 50
RUNS_CONSIDERED = 1000  # the newest runs of the flow `reprocess` looks at

BACKFILLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS backfills (
    id               uuid PRIMARY KEY,
    request_hash     text NOT NULL UNIQUE,
    caller           text NOT NULL,
    request_id       text NOT NULL,
    flow             text NOT NULL,
    request          jsonb NOT NULL,
    plan             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'running',
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    lease_holder     uuid,
    lease_until      timestamptz NOT NULL DEFAULT '-infinity'
);
CREATE INDEX IF NOT EXISTS backfills_open ON backfills (created_at)
    WHERE status IN ('running', 'cancelling');
"""


class BackfillRefused(ValueError):
    """A backfill that cannot be planned; `field` is where the request is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# -- the plan ------------------------------------------------------------------------------


@dataclass
class Item:
    """One run a backfill makes (or not): a date's, or a month's load."""

    value: str  # the date (or month) given to the flow
    parameters: dict[str, Any]
    skipped: str | None = None  # why it is not run
    needs: list[str] = field(default_factory=list)  # months whose loads come first
    run: str | None = None  # the flow run, once started
    state: str | None = None  # its state type, as last read
    cancelled: bool = False  # never started: the backfill was cancelled first

    @property
    def active(self) -> bool:
        return self.run is not None and not _final(self.state)

    @property
    def waiting(self) -> bool:
        return self.run is None and self.skipped is None and not self.cancelled

    @property
    def status(self) -> DateStatus:
        if self.skipped is not None:
            return "skipped"
        if self.run is None:
            return "cancelled" if self.cancelled else "pending"
        if not _final(self.state):
            return "running"
        return {"COMPLETED": "completed", "CANCELLED": "cancelled"}.get(self.state or "", "failed")  # type: ignore[return-value]


@dataclass
class Plan:
    dates: list[Item]
    loads: list[Item] = field(default_factory=list)
    # Why the last turn could not start a run (None: it could); `stopped`: it never will,
    # and the backfill has failed.
    error: str | None = None
    stopped: bool = False

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Plan:
        return cls(
            dates=[Item(**item) for item in stored["dates"]],
            loads=[Item(**item) for item in stored.get("loads", [])],
            error=stored.get("error"),
            stopped=bool(stored.get("stopped")),
        )

    def stored(self) -> dict[str, Any]:
        return {
            "dates": [asdict(d) for d in self.dates],
            "loads": [asdict(m) for m in self.loads],
            "error": self.error,
            "stopped": self.stopped,
        }

    def items(self) -> list[Item]:
        return [*self.loads, *self.dates]

    def progress(self) -> dict[str, int]:
        """How many dates are in each status (loads are not counted), and the total."""
        counts = dict.fromkeys(get_args(DateStatus), 0)
        for item in self.dates:
            counts[item.status] += 1
        return {"total": len(self.dates), **counts}

    def status(self, cancel_requested: bool) -> Status:
        if cancel_requested:
            return "cancelling" if any(i.active for i in self.items()) else "cancelled"
        if any(i.active for i in self.items()) or (
            not self.stopped and any(i.waiting for i in self.items())
        ):
            return "running"
        if self.stopped:
            return "failed"
        ran = [d for d in self.dates if d.run is not None]
        return "completed" if all(d.state == "COMPLETED" for d in ran) else "failed"

    def next(self, max_active: int) -> list[Item]:
        """What to start now: dates whose loads have ended, first, then loads, in order,
        while fewer than `max_active` runs are going."""
        free = max_active - sum(i.active for i in self.items())
        if free <= 0 or self.stopped:
            return []
        loaded = {m.value for m in self.loads if m.run is not None and _final(m.state)}
        ready = [d for d in self.dates if d.waiting and set(d.needs) <= loaded]
        loads = [m for m in self.loads if m.waiting]
        return (ready + loads)[:free]


def _final(state: str | None) -> bool:
    return state is not None and StateType(state) in FINAL


# -- planning ------------------------------------------------------------------------------


DateKind = Literal["date", "month"]


def date_parameter(schema: dict[str, Any]) -> DateKind:
    """The flow's parameter a backfill steps through: `date` (YYYY-MM-DD) or `month`
    (YYYY-MM), by its deployment's parameter schema."""
    properties = schema.get("properties") or {}
    for name in get_args(DateKind):
        if name in properties:
            return name  # type: ignore[no-any-return]
    raise BackfillRefused("body.flow", "the flow has no `date` or `month` parameter to step")


def parse_day(text: str, where: str, *, end: bool = False) -> dt.date:
    """YYYY-MM-DD, or YYYY-MM (its first day; with `end`, any day of it counts)."""
    try:
        if len(text) == len("YYYY-MM"):
            first = dt.date.fromisoformat(f"{text}-01")
            return first + relativedelta(months=1, days=-1) if end else first
        return dt.date.fromisoformat(text)
    except ValueError:
        message = f"{text!r} is not a date (YYYY-MM-DD) or month (YYYY-MM)"
        raise BackfillRefused(where, message) from None


def dates(start: dt.date, end: dt.date) -> list[dt.date]:
    """`start`, then a month later each, up to `end` (inclusive); a day past a month's end
    falls on its last day (Jan 31 -> Feb 28 -> Mar 31: each counted from `start`)."""
    if end < start:
        raise BackfillRefused("body.end", f"end {end} is before start {start}")
    found: list[dt.date] = []
    while True:
        try:
            day = start + relativedelta(months=len(found))
        except ValueError:  # past year 9999: there is no next date
            return found
        if day > end:
            return found
        if len(found) == MAX_DATES:
            raise BackfillRefused(
                "body.end", f"more than {MAX_DATES} dates from {start} to {end}: split it"
            )
        found.append(day)


def as_value(day: dt.date, kind: DateKind) -> str:
    return day.isoformat() if kind == "date" else month_of(day)


def identity(parameters: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The parameters that say which data a run covers, defaults filled from `schema`."""
    properties = schema.get("properties") or {}
    return {
        name: parameters.get(name, properties[name].get("default"))
        for name in IDENTITY
        if name in properties
    }


@dataclass(frozen=True)
class History:
    """What the flow's runs say of one month: the newest run, and a completed one if any."""

    latest: FlowRun | None = None
    completed: FlowRun | None = None


def histories(
    runs: list[FlowRun], param: str, same: dict[str, Any], schema: dict[str, Any]
) -> dict[str, History]:
    """By month (YYYY-MM): the runs that named a date (or month) in it and cover the same
    data (`same`, as `identity` gives it); `runs` newest first. A run that named no date
    ran on its schedule's and is not counted."""
    found: dict[str, History] = {}
    for run in runs:
        value = run.parameters.get(param)
        if not isinstance(value, str) or identity(run.parameters, schema) != same:
            continue
        month = value[:7]
        seen = found.get(month, History())
        latest = seen.latest or run
        completed = seen.completed
        if completed is None and run.state is not None and run.state.type == StateType.COMPLETED:
            completed = run
        found[month] = History(latest, completed)
    return found


def skip_reason(
    reprocess: Reprocess, history: History, registered: str | None, claimed: str | None = None
) -> str | None:
    """Why a date is not run (None: it is). `registered`: what the registry holds of it;
    `claimed`: the open backfill that has it to run."""
    if reprocess == "all":
        return None
    if history.completed is not None:
        return f"done: run {history.completed.id} completed"
    if registered is not None:
        return f"done: {registered}"
    latest = history.latest
    if latest is not None and latest.state is not None and latest.state.type not in FINAL:
        return f"in progress: run {latest.id} is {latest.state.type.value}"
    if claimed is not None:
        return f"in progress: {claimed}"
    if reprocess == "failed" and latest is None:
        return "not failed: it never ran"
    return None


def claimed_months(
    backfills: list[Backfill], same: dict[str, Any], schema: dict[str, Any]
) -> dict[str, str]:
    """By month: the open backfill that has it still to run, or running, for the same data
    (`same`, as `identity` gives it)."""
    param = date_parameter(schema)
    found: dict[str, str] = {}
    for backfill in backfills:
        for item in Plan.of(backfill.plan).dates:
            if (item.waiting or item.active) and identity(item.parameters, schema) == same:
                found.setdefault(str(item.parameters[param])[:7], f"backfill {backfill.id}")
    return found


def plan(
    flow: str,
    schema: dict[str, Any],
    values: list[dt.date],
    parameters: dict[str, Any],
    reprocess: Reprocess,
    runs: list[FlowRun],
    registered: dict[tuple[str, str], str],
    open_backfills: list[Backfill] | None = None,
) -> Plan:
    """The dates to run and skip and, for train-model with `auto_load`, the months to load
    first. `registered`: what the registry holds, by (train month, validation month);
    `open_backfills`: the flow's running backfills, whose dates are not run twice."""
    param = date_parameter(schema)
    same = identity(parameters, schema)
    past = histories(runs, param, same, schema)
    claimed = claimed_months(open_backfills or [], same, schema)
    items = []
    for day in values:
        try:
            months = training_months(day) if flow == TRAIN_MODEL else ()
        except ValueError:  # before year 1
            raise BackfillRefused("body.start", f"{day} has no months before it") from None
        month = month_of(day)
        skipped = skip_reason(
            reprocess,
            past.get(month, History()),
            registered.get(months) if months else None,
            claimed.get(month),
        )
        value = as_value(day, param)
        auto_load = flow == TRAIN_MODEL and parameters.get("auto_load") and not skipped
        items.append(
            Item(value, parameters | {param: value}, skipped, list(months) if auto_load else [])
        )
    needed = sorted({month for item in items for month in item.needs})
    source = {key: parameters[key] for key in ("dataset", "source") if key in parameters}
    return Plan(items, [Item(month, source | {"month": month}) for month in needed])


def registered_as(model: str, mlflow_run: str, train: str, val: str) -> str:
    """What the registry holding a month's model is said as, in a skipped date's reason."""
    return f"{model} has a version trained on {train}, validated on {val} (MLflow run {mlflow_run})"


def registry_model(parameters: dict[str, Any], schema: dict[str, Any]) -> str:
    """The registered model a train-model backfill's runs register versions of."""
    dataset = identity(parameters, schema).get("dataset") or "fhv"
    return model_name(str(dataset))


# -- carrying plans out --------------------------------------------------------------------


@dataclass
class Backfill:
    """A stored backfill (`backfills`' row)."""

    id: uuid.UUID
    caller: str
    request_id: str
    flow: str
    request: dict[str, Any]
    plan: dict[str, Any]
    status: Status
    cancel_requested: bool
    created_at: dt.datetime
    ended_at: dt.datetime | None


class Store(Protocol):
    """What the backfiller needs of the database (api.db implements it)."""

    def claim_backfills(
        self, holder: uuid.UUID, lease_seconds: float, limit: int
    ) -> list[Backfill]: ...

    def save_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, plan: dict[str, Any], status: str
    ) -> bool: ...

    def release_backfills(self, holder: uuid.UUID) -> None: ...

    def renew_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, lease_seconds: float
    ) -> Backfill | None: ...


async def advance(backfill: Backfill, prefect: PrefectGateway) -> tuple[Plan, Status]:
    """One turn of a backfill: read its runs' states, cancel or start what is due; the plan
    and status after it."""
    current = Plan.of(backfill.plan)
    going = {uuid.UUID(i.run): i for i in current.items() if i.active and i.run}
    for run in await prefect.runs_by_id(list(going)):
        going.pop(run.id).state = run.state.type.value if run.state else "SCHEDULED"
    for gone in going.values():  # deleted from Prefect: it will not run
        gone.state = StateType.CANCELLED.value
    if backfill.cancel_requested:
        for item in current.items():
            if item.waiting:
                item.cancelled = True
            elif item.active and item.run and item.state != StateType.CANCELLING.value:
                await prefect.cancel(uuid.UUID(item.run))
                item.state = StateType.CANCELLING.value
        return current, current.status(True)
    current.error = None
    try:
        for item in current.next(int(backfill.request["max_active"])):
            flow = LOAD_DATA if item in current.loads else backfill.flow
            deployment = await prefect.deployment(flow)  # 404 once it is gone from the pool
            kind = "load" if flow != backfill.flow else "date"
            tags = [*run_tags(backfill.caller, backfill.request_id), f"{BACKFILL_TAG}{backfill.id}"]
            key = f"backfill:{backfill.id}:{kind}:{item.value}"
            run = await prefect.create_run(deployment, item.parameters, tags, key)
            item.run, item.state = str(run.id), run.state.type.value if run.state else "SCHEDULED"
    except Problem as refused:
        # What was started is kept. Prefect away (503): the next turn tries again; anything
        # else (a flow gone, parameters it refuses now) will not pass: start nothing more.
        current.error = refused.detail
        current.stopped = refused.status != 503
    return current, current.status(False)


class Backfiller:
    """Carries out the running backfills of every API process's database, one process per
    backfill at a time (leases); woken by any run's event, else every TICK_SECONDS."""

    def __init__(
        self,
        store: Store,
        prefect: PrefectGateway,
        blocking: Callable[..., Awaitable[Any]],
    ) -> None:
        self.store, self.prefect, self.blocking = store, prefect, blocking
        self.holder = uuid.uuid4()
        self._woken = asyncio.Event()

    def wake(self, _event: object = None) -> None:
        self._woken.set()

    async def turn(self) -> int:
        """Advance each backfill this process may; how many it advanced."""
        claimed = await self.blocking(
            self.store.claim_backfills, self.holder, LEASE_SECONDS, CLAIM_BATCH
        )
        for listed in claimed:
            # Leased again, and read afresh, right before its turn: a lease that ran out while
            # earlier backfills took theirs (another process has it now), or a cancel that
            # came meanwhile, is seen.
            backfill = await self.blocking(
                self.store.renew_backfill, listed.id, self.holder, LEASE_SECONDS
            )
            if backfill is None:
                continue
            try:
                current, status = await asyncio.wait_for(
                    advance(backfill, self.prefect), TURN_SECONDS
                )
            except Exception as error:  # Prefect away or slow: the next turn
                logger.warning("backfill %s: %s: %s", backfill.id, type(error).__name__, error)
                continue
            stored = current.stored()
            if stored != backfill.plan or status != backfill.status:  # else nothing to write
                await self.blocking(
                    self.store.save_backfill, backfill.id, self.holder, stored, status
                )
        return len(claimed)

    async def release(self) -> None:
        """Let another process take this one's backfills over at once (at shutdown)."""
        try:
            await self.blocking(self.store.release_backfills, self.holder)
        except Exception as error:  # the database away: the leases run out instead
            logger.warning("backfills not released: %s: %s", type(error).__name__, error)

    async def run(self) -> None:
        while True:
            try:
                await self.turn()
            except Exception as error:  # the database away: try again next tick
                logger.warning("backfills: %s: %s", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), TICK_SECONDS)
            self._woken.clear()
