"""Request and response bodies, with the examples OpenAPI shows."""

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from api.people import MAX_PASSWORD, MIN_PASSWORD
from api.webhooks import EVENT_TYPES as WEBHOOK_EVENT_TYPES
from api.webhooks import EventType as WebhookEventType
from common.contract import (
    CHAMPION,
    LOAD_DATA,
    MODEL_NAME_PATTERN,
    TRAIN_MODEL,
    Alias,
    model_name,
)
from common.web.auth import Role


def _iso_only(value: object) -> object:
    """Pydantic reads numbers as Unix times; the documented format is ISO 8601 only."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and re.fullmatch(r"[\d.eE+-]+", value.strip())
    ):
        raise ValueError("expected an ISO 8601 date-time, like 2021-08-15T00:00:00Z")
    return value


def _utc(value: dt.datetime) -> dt.datetime:
    """In UTC (a time without an offset is taken as UTC), within the years Prefect can
    filter on: an instant it could not take is the caller's error here, not a 5xx there."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        value = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None
    if not 1 < value.year < 9999:
        raise ValueError("the year must be within 2 and 9998")
    return value


IsoDatetime = Annotated[dt.datetime, BeforeValidator(_iso_only), AfterValidator(_utc)]


StateTypeName = Literal[
    "SCHEDULED",
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CRASHED",
    "PAUSED",
    "CANCELLING",
]


class RunRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"flow": TRAIN_MODEL, "parameters": {"date": "2021-08-15"}},
                {"flow": LOAD_DATA, "parameters": {"month": "2021-06", "source": "synthetic"}},
            ]
        },
    )

    flow: str = Field(
        TRAIN_MODEL,
        max_length=100,
        description="Which flow to run: one of `GET /flows` (the deployments on the work pool).",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The flow's parameters, checked against its schema in `GET /flows` "
        "(see docs/flows.md).",
    )


class RunState(BaseModel):
    type: StateTypeName
    name: str
    message: str | None = None


class RegisteredModel(BaseModel):
    """Where a training run's model went in the MLflow registry, and what it became."""

    name: str = Field(
        description=f"The registered model: {MODEL_NAME_PATTERN.format(dataset='<dataset>')}."
    )
    version: str
    alias: Alias = Field(
        description="The alias it took when it was registered (a later run may move it)."
    )
    decision: str | None = Field(None, description="Why: both validation RMSEs compared.")
    mlflow_run: str = Field(description="URL of the MLflow run in the MLflow UI.")
    url: str = Field(description="URL of the model version in the MLflow UI.")


class RunLinks(BaseModel):
    self: str
    logs: str
    cancel: str
    retry: str
    ui: str | None = None


class Run(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b5c1d0e-8f71-4a58-9d3c-2f1f0c1f7a11",
                    "flow": TRAIN_MODEL,
                    "name": "tidy-orca",
                    "state": {"type": "COMPLETED", "name": "Completed", "message": None},
                    "parameters": {"date": "2021-08-15"},
                    "tags": ["api", "caller:ci", "request:4f1c..."],
                    "created": "2026-11-23T12:56:37Z",
                    "started": "2026-11-23T12:56:47Z",
                    "ended": "2026-11-23T12:56:50Z",
                    "metrics": {"train_rmse": 7.38, "val_rmse": 7.46, "features": 532},
                    "model": "/data/models/fhv/2021-06_2021-07/0b5c1d0e.joblib",
                    "registry": {
                        "name": model_name("fhv"),
                        "version": "3",
                        "alias": CHAMPION,
                        "decision": "version 3 (validation RMSE 7.4600 on 2021-07) beats "
                        "champion version 2 (RMSE 7.5100 on the same month): it becomes champion",
                        "mlflow_run": "http://127.0.0.1:5000/#/experiments/1/runs/4b0e...",
                        "url": "http://127.0.0.1:5000/#/models/trip-duration-fhv/versions/3",
                    },
                    "error": None,
                    "retry_of": None,
                    "retries": [],
                    "links": {
                        "self": "/runs/0b5c1d0e-8f71-4a58-9d3c-2f1f0c1f7a11",
                        "logs": "/runs/0b5c1d0e-8f71-4a58-9d3c-2f1f0c1f7a11/logs",
                        "cancel": "/runs/0b5c1d0e-8f71-4a58-9d3c-2f1f0c1f7a11/cancel",
                        "retry": "/runs/0b5c1d0e-8f71-4a58-9d3c-2f1f0c1f7a11/retry",
                        "ui": "http://127.0.0.1:4200/runs/flow-run/0b5c1d0e-...",
                    },
                }
            ]
        }
    )

    id: uuid.UUID
    flow: str
    name: str
    state: RunState
    parameters: dict[str, Any]
    tags: list[str]
    created: dt.datetime | None
    started: dt.datetime | None
    ended: dt.datetime | None
    metrics: dict[str, Any] | None = Field(
        None,
        description="A completed training run's metrics, or send-requests' live metrics "
        "(live_rmse, validation_rmse, latencies, errors, the retrain run it started).",
    )
    model: str | None = Field(None, description="Where a completed training run saved its model.")
    registry: RegisteredModel | None = Field(
        None, description="A completed training run's model in the MLflow registry."
    )
    error: str | None = Field(None, description="Why a failed or crashed run failed.")
    retry_of: uuid.UUID | None = Field(
        None, description="The run this one retries (`POST /runs/{id}/retry`), if it does."
    )
    retries: list[uuid.UUID] | None = Field(
        None,
        description="The runs made as retries of this one, the first made first; read for "
        "one run (`GET /runs/{id}`, a retry's answer), null in lists.",
    )
    links: RunLinks


class RunPage(BaseModel):
    runs: list[Run]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


class LogLine(BaseModel):
    timestamp: dt.datetime
    level: int
    message: str


class LogPage(BaseModel):
    lines: list[LogLine]
    next: str | None = None


class Flow(BaseModel):
    """A flow the API runs: a deployment on the work pool."""

    name: str
    deployment: str = Field(description="The deployment POST /runs starts: <flow>/<name>.")
    description: str | None = None
    parameters: dict[str, Any] = Field(
        description="JSON Schema of the parameters (Prefect's, from the flow's signature)."
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# Text PostgreSQL can store and a log can show: no control characters (NUL among them).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class KeyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "ci-deploy", "role": "operator", "owner": "ana", "expires_in_days": 90}
            ]
        },
    )
    name: str = Field(
        min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$", description="Unique."
    )
    role: Role = Field(description="viewer, operator or admin; at most the creator's.")
    owner: str = Field(
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Who answers for the key.",
    )
    expires_at: IsoDatetime | None = Field(
        None, description="When it stops working (ISO 8601; UTC without an offset)."
    )
    expires_in_days: float | None = Field(
        None, gt=0, le=3650, strict=True, description="Or: how many days from now."
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> "KeyRequest":
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        return self

    def expiry(self, now: dt.datetime) -> dt.datetime | None:
        if self.expires_in_days is not None:
            return now + dt.timedelta(days=self.expires_in_days)
        return self.expires_at


class Key(BaseModel):
    """A key as stored: never its secret."""

    id: uuid.UUID
    name: str
    role: Role
    owner: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class NewKey(Key):
    key: str = Field(description="The secret: shown this once, stored only as its SHA-256.")


class KeyPage(BaseModel):
    keys: list[Key]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


USER_NAME = r"^[A-Za-z0-9._@-]+$"


class UserRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "ana", "role": "viewer", "password": "correct horse battery"}]
        },
    )
    name: str = Field(min_length=1, max_length=100, pattern=USER_NAME, description="Unique.")
    role: Role
    password: str = Field(
        min_length=MIN_PASSWORD,
        max_length=MAX_PASSWORD,
        description=f"At least {MIN_PASSWORD} characters; stored only as its argon2id hash.",
    )


class UserChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"role": "operator"}]}
    )
    role: Role | None = Field(None, description="The new role.")
    password: str | None = Field(
        None,
        min_length=MIN_PASSWORD,
        max_length=MAX_PASSWORD,
        description="A new password (the user's sessions end).",
    )

    @model_validator(mode="after")
    def _something(self) -> "UserChange":
        if self.role is None and self.password is None:
            raise ValueError("give role, password or both")
        return self


class User(BaseModel):
    """A person as stored: never their password or its hash."""

    id: uuid.UUID
    name: str
    role: Role
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None


class UserPage(BaseModel):
    users: list[User]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


class Session(BaseModel):
    """A session as stored: never its token."""

    id: uuid.UUID
    user_id: uuid.UUID
    user: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None


class SessionPage(BaseModel):
    sessions: list[Session]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str = Field(description="The key's name (`anonymous`: refused before it was known).")
    role: Role | None
    method: str
    route: str = Field(description="The route template, e.g. /runs/{run_id}/cancel.")
    target: str | None = Field(None, description="The run or key acted on.")
    request_id: str
    outcome: int = Field(description="The HTTP status of the response.")
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


class WebhookRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://ci.example.com/hooks/training",
                    "events": ["run.completed", "run.failed"],
                    "flow": "train-model",
                }
            ]
        },
    )
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="Where to POST: http(s), a host with public addresses only (unless "
        "API_WEBHOOKS_ALLOW_PRIVATE).",
    )
    events: list[WebhookEventType] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENT_TYPES), description="What to be told of."
    )
    flow: str | None = Field(
        None, max_length=100, pattern=PRINTABLE, description="Only this flow's runs."
    )


class Webhook(BaseModel):
    """A subscription as stored: never its secret."""

    id: uuid.UUID
    url: str
    events: list[str]
    flow: str | None
    created_by: str
    created_at: dt.datetime


class NewWebhook(Webhook):
    secret: str = Field(
        description="The signing secret (whsec_...): shown this once. Verify each message's "
        "webhook-signature with it (Standard Webhooks; e.g. the standardwebhooks package)."
    )


class WebhookPage(BaseModel):
    webhooks: list[Webhook]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


class DeliveryAttempt(BaseModel):
    at: dt.datetime
    status: int | None = Field(None, description="The receiver's HTTP status, if it answered.")
    error: str | None = Field(None, description="Why it failed; null when delivered.")
    duration_ms: float


class WebhookDelivery(BaseModel):
    id: uuid.UUID
    message_id: str = Field(description="Its webhook-id header, the same on every attempt.")
    type: str
    run_id: uuid.UUID | None
    occurred: dt.datetime
    created_at: dt.datetime
    state: Literal["pending", "delivered", "failed"]
    next_attempt_at: dt.datetime | None = Field(None, description="When, while pending.")
    delivered_at: dt.datetime | None
    attempts: list[DeliveryAttempt]


class DeliveryPage(BaseModel):
    deliveries: list[WebhookDelivery]
    next: str | None = Field(None, description="URL of the next page, if there is one.")


# -- backfills (api.backfills) -------------------------------------------------------------

MONTH_OR_DAY = r"^[0-9]{4}-(0[1-9]|1[0-2])(-[0-9]{2})?$"


class BackfillRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "flow": TRAIN_MODEL,
                    "start": "2024-03",
                    "end": "2025-02",
                    "max_active": 2,
                    "parameters": {"auto_load": True},
                }
            ]
        },
    )
    flow: str = Field(
        TRAIN_MODEL,
        max_length=100,
        description="The flow: one of `GET /flows` with a `date` or `month` parameter.",
    )
    start: str = Field(
        pattern=MONTH_OR_DAY,
        description="The first date, YYYY-MM-DD, or a month, YYYY-MM (its first day).",
    )
    end: str = Field(
        pattern=MONTH_OR_DAY,
        description="The last date (inclusive), YYYY-MM-DD, or a month, YYYY-MM (any day of it).",
    )
    step: Literal["month"] = Field("month", description="The time between dates.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The flow's other parameters, the same for every run (its date is the "
        "backfill's; `promote` is the field below).",
    )
    max_active: int = Field(1, ge=1, le=20, description="Runs going at once, at most.")
    reprocess: Literal["missing", "failed", "all"] = Field(
        "missing",
        description="Which dates to run: `missing` (not done yet: no completed run of the "
        "month and, for train-model, no model of it in the registry), `failed` (those not "
        "done whose latest run failed, crashed or was cancelled) or `all`.",
    )
    promote: bool = Field(
        False,
        description="train-model: let the versions it registers take `champion` if they "
        "beat it (by default they are registered as `challenger` and `champion` stays).",
    )


class BackfillDate(BaseModel):
    date: str = Field(description="The flow's `date` or `month`.")
    status: Literal["pending", "skipped", "running", "completed", "failed", "cancelled"]
    run: uuid.UUID | None = Field(None, description="Its run, once started.")
    state: StateTypeName | None = Field(None, description="The run's state type, as last read.")
    reason: str | None = Field(None, description="Why it is skipped.")


class BackfillLoad(BaseModel):
    month: str
    run: uuid.UUID | None = None
    state: StateTypeName | None = None


class BackfillProgress(BaseModel):
    total: int
    pending: int
    skipped: int
    running: int
    completed: int
    failed: int
    cancelled: int


class BackfillLinks(BaseModel):
    self: str
    cancel: str


class Backfill(BaseModel):
    id: uuid.UUID
    flow: str
    status: Literal["running", "cancelling", "completed", "failed", "cancelled"] = Field(
        description="`completed`: every date is done or skipped; `failed`: some run did not "
        "complete; `cancelling` until the runs it cancelled have ended."
    )
    request: BackfillRequest
    created_by: str
    created: dt.datetime
    ended: dt.datetime | None
    progress: BackfillProgress
    dates: list[BackfillDate]
    loads: list[BackfillLoad] = Field(
        description="train-model with `auto_load`: the load-data run of each month the "
        "dates need, each month once."
    )
    error: str | None = Field(
        None,
        description="Why its last turn could not start a run: Prefect away (it tries again) "
        "or a refusal that will not pass (the backfill has failed; what started goes on).",
    )
    links: BackfillLinks


class BackfillPage(BaseModel):
    backfills: list[Backfill]
    next: str | None = Field(None, description="URL of the next page, if there is one.")
