"""/webhooks: subscriptions to runs' ends (an operator's), their deliveries, redelivery.
How messages are made and sent: api.webhooks."""

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import Allowed, DatabaseDep, SettingsDep
from api.routers import oldest_first
from api.schemas import (
    DeliveryPage,
    NewWebhook,
    Webhook,
    WebhookDelivery,
    WebhookPage,
    WebhookRequest,
)
from api.webhooks import Delivery, Subscription, TargetRefused, check_target, new_secret
from common.web.db import blocking
from common.web.jsonbody import JsonRoute
from common.web.problems import Problem, invalid

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=JsonRoute)


def shown(subscription: Subscription) -> Webhook:
    return Webhook(**subscription.__dict__)


def delivery(found: Delivery) -> WebhookDelivery:
    return WebhookDelivery.model_validate(found.__dict__)


async def _live(database: DatabaseDep, webhook_id: uuid.UUID) -> Subscription:
    found = await blocking(database.read_webhook, webhook_id)
    if found is None:
        raise Problem(404, "not-found", f"no webhook {webhook_id}")
    return found


@router.post(
    "",
    operation_id="create_webhook",
    status_code=201,
    response_model=NewWebhook,
    summary="Subscribe a URL to runs' ends (its signing secret is shown once)",
)
async def create_webhook(
    body: WebhookRequest,
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    allowed: Allowed,
) -> NewWebhook:
    try:
        await check_target(body.url, settings.api_webhooks_allow_private, request.app.state.resolve)
    except TargetRefused as refused:
        raise invalid("body.url", str(refused)) from None
    secret = new_secret()
    events = sorted(set(body.events))
    made = await blocking(
        database.create_webhook, body.url, events, body.flow, secret, allowed.name
    )
    request.state.audit_target = str(made.id)
    return NewWebhook(**shown(made).model_dump(), secret=secret)


@router.get("", operation_id="list_webhooks", response_model=WebhookPage, summary="Webhooks")
async def list_webhooks(
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> WebhookPage:
    found, following = await oldest_first(
        request, cursor, limit, "webhooks", database.list_webhooks
    )
    return WebhookPage(webhooks=[shown(s) for s in found], next=following)


@router.delete(
    "/{webhook_id}",
    operation_id="delete_webhook",
    status_code=204,
    response_class=Response,
    summary="Stop a webhook (its pending deliveries are given up)",
)
async def delete_webhook(webhook_id: uuid.UUID, database: DatabaseDep, _: Allowed) -> Response:
    if not await blocking(database.delete_webhook, webhook_id):
        raise Problem(404, "not-found", f"no webhook {webhook_id}")
    return Response(status_code=204)


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="list_webhook_deliveries",
    response_model=DeliveryPage,
    summary="A webhook's deliveries, oldest first, each with its attempts",
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> DeliveryPage:
    await _live(database, webhook_id)

    def load(size: int, since: dt.datetime | None) -> list[Delivery]:
        return database.list_deliveries(webhook_id, size, since)

    found, following = await oldest_first(request, cursor, limit, f"deliveries:{webhook_id}", load)
    return DeliveryPage(deliveries=[delivery(d) for d in found], next=following)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    operation_id="redeliver_webhook_delivery",
    status_code=202,
    response_model=WebhookDelivery,
    summary="Send a delivery again now (same webhook-id), whatever its state",
)
async def redeliver(
    webhook_id: uuid.UUID, delivery_id: uuid.UUID, database: DatabaseDep, _: Allowed
) -> WebhookDelivery:
    found = await blocking(database.redeliver, webhook_id, delivery_id)
    if found is None:
        raise Problem(404, "not-found", f"no delivery {delivery_id} of webhook {webhook_id}")
    return delivery(found)
