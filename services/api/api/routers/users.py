"""/users and /sessions: people and their sessions (admin only). A password is taken once,
hashed with argon2id (api.people) and never shown; disabling a user or changing their
password ends their sessions, which every replica refuses within a second
(common.web.auth.REVOCATION_SECONDS)."""

import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request

from api import people
from api.db import UserDisabledError, UserNameTakenError
from api.deps import Allowed, DatabaseDep
from api.routers import PROBLEM_RESPONSES, oldest_first
from api.schemas import Session, SessionPage, User, UserChange, UserPage, UserRequest
from common.web.auth import Auth, Role
from common.web.db import blocking
from common.web.problems import Problem, invalid

router = APIRouter(tags=["people"])


def shown(user: people.User) -> User:
    return User(**vars(user) | {"role": Role(user.role)})


def shown_session(session: people.Session) -> Session:
    return Session(**vars(session))


def _forget(auth: Auth) -> None:
    """This replica reads the sessions again at once (the others within CACHE_SECONDS)."""
    if auth.sessions is not None:
        auth.sessions.forget()


async def _hash(password: str) -> str:
    try:
        return await anyio.to_thread.run_sync(people.hash_password, password)
    except people.WeakPasswordError as error:
        raise invalid("body.password", str(error)) from None


@router.post(
    "/users",
    operation_id="create_user",
    status_code=201,
    response_model=User,
    summary="Add a person (their password is stored only as its argon2id hash)",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "A user of that name exists"}},
)
async def create_user(
    body: UserRequest, request: Request, database: DatabaseDep, _: Allowed
) -> User:
    password_hash = await _hash(body.password)
    try:
        user = await blocking(database.create_user, body.name, body.role.value, password_hash)
    except UserNameTakenError as error:
        raise Problem(409, "user-name-taken", str(error)) from None
    request.state.audit_target = str(user.id)
    return shown(user)


@router.get("/users", operation_id="list_users", response_model=UserPage, summary="People")
async def list_users(
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> UserPage:
    users, following = await oldest_first(request, cursor, limit, "users", database.list_users)
    return UserPage(users=[shown(user) for user in users], next=following)


@router.patch(
    "/users/{user_id}",
    operation_id="change_user",
    response_model=User,
    summary="Change a person's role or password (a new password ends their sessions)",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "The user is disabled"}},
)
async def change_user(
    user_id: uuid.UUID, body: UserChange, database: DatabaseDep, auth: Auth, _: Allowed
) -> User:
    """A disabled person is not changed (409 `user-disabled`): disabling is final."""
    password_hash = None if body.password is None else await _hash(body.password)
    role = None if body.role is None else body.role.value
    try:
        user = await blocking(database.update_user, user_id, role, password_hash)
    except UserDisabledError as error:
        raise Problem(409, "user-disabled", str(error)) from None
    _forget(auth)
    if user is None:
        raise Problem(404, "not-found", f"no user {user_id}")
    return shown(user)


@router.delete(
    "/users/{user_id}",
    operation_id="disable_user",
    response_model=User,
    summary="Disable a person and end their sessions",
)
async def disable_user(user_id: uuid.UUID, database: DatabaseDep, auth: Auth, _: Allowed) -> User:
    """Idempotent; the user stays listed (disabled), and their name stays taken."""
    user = await blocking(database.disable_user, user_id)
    _forget(auth)
    if user is None:
        raise Problem(404, "not-found", f"no user {user_id}")
    return shown(user)


@router.get(
    "/sessions",
    operation_id="list_sessions",
    response_model=SessionPage,
    summary="Live sessions (not ended, not expired), oldest first",
)
async def list_sessions(
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> SessionPage:
    found, following = await oldest_first(
        request, cursor, limit, "sessions", database.list_sessions
    )
    return SessionPage(sessions=[shown_session(s) for s in found], next=following)


@router.delete(
    "/sessions/{session_id}",
    operation_id="end_session",
    response_model=Session,
    summary="End a session (its cookie is refused within a second everywhere)",
)
async def end_session(
    session_id: uuid.UUID, database: DatabaseDep, auth: Auth, _: Allowed
) -> Session:
    """Idempotent: ending an ended session answers it as it is."""
    session = await blocking(database.revoke_session, session_id)
    _forget(auth)
    if session is None:
        raise Problem(404, "not-found", f"no session {session_id}")
    return shown_session(session)
