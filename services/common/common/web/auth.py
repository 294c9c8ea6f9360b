"""API keys, sessions and roles: who is calling (a key's name and role, checked against its
SHA-256 in constant time; or a person's, by the `stack_session` cookie the API's login
sets), whether the key or session is still valid (revoked, expired, user disabled), and
their rate limit. Shared by the API and the serving service (one implementation of both);
which role each route needs is `common.web.access`.
"""

import datetime as dt
import enum
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.web.db import ApiKey, LiveSession, blocking, hash_key
from common.web.problems import Problem
from common.web.ratelimit import RateLimiter

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

# The promise: a key revoked (or rotated) on one replica is refused on every replica within
# this long, and so is a session revoked or a user disabled. Each replica reloads the keys
# (and the live sessions) when its copy is older than CACHE_SECONDS (one small query per
# replica at most twice a second, and only while requests come).
REVOCATION_SECONDS = 1.0
CACHE_SECONDS = 0.5
# A session token not in a copy at least this old makes the copy be read again: a session
# made on another replica a moment ago is found at once (the browser follows the login's
# redirect at once), and random tokens cost at most one read per replica this often.
SESSION_MISS_SECONDS = 0.05
SESSION_COOKIE = "stack_session"
USER_PREFIX = "user:"  # a person's caller name: `user:<name>` (keys are plain names)


class Role(enum.Enum):
    """What a caller may do; each role may do everything the roles before it may."""

    viewer = "viewer"  # read runs, logs, flows, models
    operator = "operator"  # also trigger and cancel runs, predict
    admin = "admin"  # also keys and the audit log

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def __lt__(self, other: "Role") -> bool:
        return self.rank < other.rank

    def __le__(self, other: "Role") -> bool:
        return self.rank <= other.rank

    def __gt__(self, other: "Role") -> bool:
        return self.rank > other.rank

    def __ge__(self, other: "Role") -> bool:
        return self.rank >= other.rank


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name (or `insecure-dev`, or `ip:<address>` for an open read)
    and what they may do."""

    name: str
    role: Role


class KeyStore(Protocol):
    """Where the keys are kept (`common.web.db.Database`; a fake in tests)."""

    def key_hashes(self) -> dict[str, ApiKey]:
        """Every key (revoked and expired too), by the SHA-256 of its secret. Blocking."""
        ...


class KeyChecker:
    """Which key a bearer token is, if any. The keys are cached for CACHE_SECONDS."""

    def __init__(self, database: KeyStore) -> None:
        self.database = database
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at = float("-inf")
        # Requests that find the copy stale together wait for one read, not one read each.
        self._reloading = threading.Lock()

    def key(self, token: str) -> ApiKey | None:
        """The token's key, or None. Blocking (reads the database when the cache is stale)."""
        if time.monotonic() - self._loaded_at > CACHE_SECONDS:
            with self._reloading:
                if time.monotonic() - self._loaded_at > CACHE_SECONDS:
                    self._reload()
        return self._match(hash_key(token))

    def cached_key(self, token: str) -> ApiKey | None:
        """The token's key if the cache is fresh and holds it, else None (then ask `key`).
        Never blocks: a known key costs no thread hop."""
        if time.monotonic() - self._loaded_at > CACHE_SECONDS:
            return None
        return self._match(hash_key(token))

    def forget(self) -> None:
        """Read the keys again at the next request: this replica made, rotated or revoked
        one (the others see it within CACHE_SECONDS)."""
        self._loaded_at = float("-inf")

    def _reload(self) -> None:
        self._keys = self.database.key_hashes()
        self._loaded_at = time.monotonic()

    def _match(self, presented: str) -> ApiKey | None:
        found = None
        for stored, key in self._keys.items():
            # Compare against every key, so the time taken does not depend on which matched.
            if hmac.compare_digest(stored, presented):
                found = key
        return found


class SessionStore(Protocol):
    """Where the sessions are kept (`common.web.db.Database`; a fake in tests)."""

    def live_sessions(self) -> dict[str, LiveSession]:
        """Every usable session, by the SHA-256 of its token. Blocking."""
        ...


class SessionChecker:
    """Which live session a `stack_session` token is, if any. The live sessions are cached
    for CACHE_SECONDS, so a revoked session or a disabled user is refused within
    REVOCATION_SECONDS on every replica."""

    def __init__(self, database: SessionStore) -> None:
        self.database = database
        self._sessions: dict[str, LiveSession] = {}
        self._loaded_at = float("-inf")
        self._reloading = threading.Lock()

    def session(self, token: str) -> LiveSession | None:
        """The token's live session, or None. Blocking (reads the database when the copy is
        stale, or holds no such token and is older than SESSION_MISS_SECONDS)."""
        digest = hash_key(token)
        self._reload_if_older(CACHE_SECONDS)
        # A lookup by the token's hash: its timing tells nothing useful (no one can choose
        # a token whose SHA-256 is near a stored one).
        found = self._sessions.get(digest)
        if found is None:
            self._reload_if_older(SESSION_MISS_SECONDS)
            found = self._sessions.get(digest)
        return found

    def cached_session(self, token: str) -> LiveSession | None:
        """The token's session if the copy is fresh and holds it, else None (then ask
        `session`). Never blocks."""
        if time.monotonic() - self._loaded_at > CACHE_SECONDS:
            return None
        return self._sessions.get(hash_key(token))

    def forget(self) -> None:
        """Read the sessions again at the next request (this replica changed one)."""
        self._loaded_at = float("-inf")

    def _reload_if_older(self, seconds: float) -> None:
        if time.monotonic() - self._loaded_at > seconds:
            with self._reloading:
                if time.monotonic() - self._loaded_at > seconds:
                    self._sessions = self.database.live_sessions()
                    self._loaded_at = time.monotonic()


class Authenticator:
    """The caller of a request: its key's name and role (a bearer key); else the person
    whose session cookie it carries (`user:<name>`, their role); "insecure-dev" (an admin)
    without either in insecure dev mode (not rate limited); its IP (a viewer) for a read
    that needs no key. Then the caller's token bucket. A bearer key, when sent, decides
    alone: a bad key is a 401 even with a good cookie.

    An app puts one in `app.state.auth`; the route guards (`common.web.access`) take it
    through `authenticator`.
    """

    def __init__(
        self,
        keys: KeyChecker,
        limiter: RateLimiter,
        *,
        insecure_dev_mode: bool,
        reads_require_key: bool = True,
        sessions: SessionChecker | None = None,
    ) -> None:
        self.keys, self.limiter, self.sessions = keys, limiter, sessions
        self.insecure_dev_mode = insecure_dev_mode
        self.reads_require_key = reads_require_key

    async def identify(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None, required: bool
    ) -> Caller:
        caller = None
        if credentials is not None:
            token = credentials.credentials
            key = self.keys.cached_key(token) or await blocking(self.keys.key, token)
            if key is None:
                raise Problem(401, "unauthorized", "the API key is not valid", headers=CHALLENGE)
            refusal = key.refusal(dt.datetime.now(dt.UTC))
            if refusal is not None:
                _remember(request, Caller(key.name, Role(key.role)))
                raise Problem(401, "unauthorized", refusal, headers=CHALLENGE)
            caller = Caller(key.name, Role(key.role))
        elif (cookie := self._session_token(request)) is not None:
            caller = await self._person(cookie)
        if caller is None:
            if self.insecure_dev_mode:
                # No identity to limit: every local client would share one bucket.
                return _remember(request, Caller("insecure-dev", Role.admin))
            if required:
                raise Problem(
                    401,
                    "unauthorized",
                    "send an API key (Authorization: Bearer <key>) or log in (/login)",
                    headers=CHALLENGE,
                )
            else:
                address = request.client.host if request.client else "unknown"
                caller = Caller(f"ip:{address}", Role.viewer)
        _remember(request, caller)
        wait = self.limiter.retry_after(caller.name)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                f"rate limit reached for {caller.name}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        return caller

    def _session_token(self, request: Request) -> str | None:
        if self.sessions is None:
            return None
        cookies = getattr(request, "cookies", {})
        return cookies.get(SESSION_COOKIE) or None

    async def _person(self, token: str) -> Caller:
        assert self.sessions is not None
        session = self.sessions.cached_session(token) or await blocking(
            self.sessions.session, token
        )
        if session is None:
            raise Problem(
                401,
                "unauthorized",
                "the session is not valid (expired, ended, or its user disabled): log in again",
                headers=CHALLENGE,
            )
        return Caller(USER_PREFIX + session.user, Role(session.role))


CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _remember(request: Request, caller: Caller) -> Caller:
    """Keep the caller on the request, for the audit log (the state outlives the route)."""
    state = getattr(request, "state", None)
    if state is not None:
        state.caller = caller
    return caller


def authenticator(request: Request) -> Authenticator:
    """The app's authenticator (set at start-up); tests override this dependency."""
    auth: Authenticator = request.app.state.auth
    return auth


Auth = Annotated[Authenticator, Depends(authenticator)]
