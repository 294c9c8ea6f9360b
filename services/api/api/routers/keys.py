"""/keys: API keys with roles (admin only). A key's secret is shown once, when it is made
or rotated; only its SHA-256 is kept. A revoked or rotated-out secret is refused on every
replica within a second (common.web.auth.REVOCATION_SECONDS)."""

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.deps import Allowed, DatabaseDep
from api.routers import PROBLEM_RESPONSES, oldest_first
from api.schemas import Key, KeyPage, KeyRequest, NewKey
from common.web.auth import Auth, Role
from common.web.db import ENV_KEY, ApiKey, KeyNameTakenError, blocking
from common.web.problems import Problem

router = APIRouter(prefix="/keys", tags=["keys"])


def shown(key: ApiKey) -> Key:
    return Key(**vars(key) | {"role": Role(key.role)})


async def _changeable(database: DatabaseDep, key_id: uuid.UUID) -> None:
    """API_KEY's own key is configuration: rotating or revoking it here would lock out every
    service that is given API_KEY (serving, send-requests) until the environment changed."""
    key = await blocking(database.read_key, key_id)
    if key is not None and key.name == ENV_KEY:
        raise Problem(
            409,
            "key-from-environment",
            f"key {key_id} is API_KEY's ({ENV_KEY!r}): change API_KEY and restart the services "
            "to rotate it",
        )


ENV_KEY_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[422] | {"description": "The key is API_KEY's"}
}


@router.post(
    "",
    operation_id="create_key",
    status_code=201,
    response_model=NewKey,
    summary="Make a key (its secret is shown once)",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "A key of that name exists"}},
)
async def create_key(
    body: KeyRequest, request: Request, database: DatabaseDep, auth: Auth, caller: Allowed
) -> NewKey:
    if body.role > caller.role:
        raise Problem(
            403,
            "forbidden",
            f"{caller.name} is a {caller.role.value}: it cannot make a {body.role.value} key",
        )
    expires_at = body.expiry(dt.datetime.now(dt.UTC))
    try:
        key, secret = await blocking(
            database.create_key, body.name, body.role.value, body.owner, expires_at
        )
    except KeyNameTakenError as error:
        raise Problem(409, "key-name-taken", str(error)) from None
    request.state.audit_target = str(key.id)
    auth.keys.forget()
    return NewKey(**shown(key).model_dump(), key=secret)


@router.get("", operation_id="list_keys", response_model=KeyPage, summary="Keys, oldest first")
async def list_keys(
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> KeyPage:
    keys, following = await oldest_first(request, cursor, limit, "keys", database.list_keys)
    return KeyPage(keys=[shown(key) for key in keys], next=following)


@router.post(
    "/{key_id}/rotate",
    operation_id="rotate_key",
    response_model=NewKey,
    summary="A new secret for a key (the old one is refused at once)",
    responses=ENV_KEY_RESPONSE,
)
async def rotate_key(key_id: uuid.UUID, database: DatabaseDep, auth: Auth, _: Allowed) -> NewKey:
    await _changeable(database, key_id)
    rotated = await blocking(database.rotate_key, key_id)
    auth.keys.forget()
    if rotated is None:
        raise Problem(404, "not-found", f"no key {key_id} that is not revoked")
    key, secret = rotated
    return NewKey(**shown(key).model_dump(), key=secret)


@router.delete(
    "/{key_id}",
    operation_id="revoke_key",
    response_model=Key,
    summary="Revoke a key",
    responses=ENV_KEY_RESPONSE,
)
async def revoke_key(key_id: uuid.UUID, database: DatabaseDep, auth: Auth, _: Allowed) -> Key:
    """Idempotent: revoking a revoked key answers it as it is. API_KEY's key is refused (409):
    it is changed in the environment."""
    await _changeable(database, key_id)
    key = await blocking(database.revoke_key, key_id)
    auth.keys.forget()
    if key is None:
        raise Problem(404, "not-found", f"no key {key_id}")
    return shown(key)
