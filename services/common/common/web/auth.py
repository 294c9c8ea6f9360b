"""API keys: stored as SHA-256 hashes, compared in constant time; who is calling, and their
rate limit. Shared by the API and the serving service (one implementation of both)."""

import hmac
import time
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.web.db import blocking, hash_key
from common.web.problems import Problem
from common.web.ratelimit import RateLimiter

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

CACHE_SECONDS = 30.0
# An unknown key reloads the hashes at most this often, so a new key works within a second.
RELOAD_ON_MISS_SECONDS = 1.0


class KeyStore(Protocol):
    """Where the keys' hashes are kept (`common.web.db.Database`; a fake in tests)."""

    def key_hashes(self) -> dict[str, str]:
        """Name of each key, by the SHA-256 of the key. Blocking."""
        ...


class KeyChecker:
    """Which caller a bearer token belongs to, if any. Hashes are cached briefly."""

    def __init__(self, database: KeyStore) -> None:
        self.database = database
        self._hashes: dict[str, str] = {}
        self._loaded_at = float("-inf")

    def caller(self, token: str) -> str | None:
        """The key's name, or None. Blocking (may read the database)."""
        age = time.monotonic() - self._loaded_at
        if age > CACHE_SECONDS:
            self._reload()
        found = self._match(hash_key(token))
        if found is None and RELOAD_ON_MISS_SECONDS < age <= CACHE_SECONDS:
            self._reload()
            found = self._match(hash_key(token))
        return found

    def cached_caller(self, token: str) -> str | None:
        """The key's name if the cache is fresh and holds it, else None (then ask `caller`).
        Never blocks: a known key costs no thread hop."""
        if time.monotonic() - self._loaded_at > CACHE_SECONDS:
            return None
        return self._match(hash_key(token))

    def _reload(self) -> None:
        self._hashes = self.database.key_hashes()
        self._loaded_at = time.monotonic()

    def _match(self, presented: str) -> str | None:
        found = None
        for stored, name in self._hashes.items():
            # Compare against every key, so the time taken does not depend on which matched.
            if hmac.compare_digest(stored, presented):
                found = name
        return found


class Authenticator:
    """The caller of a request: the name of its key; "insecure-dev" without one in insecure
    dev mode (not rate limited); its IP for a read that needs no key. Then the caller's token
    bucket.

    An app puts one in `app.state.auth`; the `writer` and `reader` dependencies take it
    through `authenticator`.
    """

    def __init__(
        self,
        keys: KeyChecker,
        limiter: RateLimiter,
        *,
        insecure_dev_mode: bool,
        reads_require_key: bool = True,
    ) -> None:
        self.keys, self.limiter = keys, limiter
        self.insecure_dev_mode = insecure_dev_mode
        self.reads_require_key = reads_require_key

    async def caller(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None, required: bool
    ) -> str:
        caller = None
        if credentials is not None:
            token = credentials.credentials
            caller = self.keys.cached_caller(token) or await blocking(self.keys.caller, token)
            if caller is None:
                raise Problem(401, "unauthorized", "the API key is not valid", headers=CHALLENGE)
        if caller is None:
            if self.insecure_dev_mode:
                # No identity to limit: every local client would share one bucket.
                return "insecure-dev"
            if required:
                raise Problem(
                    401,
                    "unauthorized",
                    "send an API key: Authorization: Bearer <key>",
                    headers=CHALLENGE,
                )
            else:
                caller = f"ip:{request.client.host if request.client else 'unknown'}"
        wait = self.limiter.retry_after(caller)
        if wait:
            raise Problem(
                429,
                "rate-limited",
                f"rate limit reached for {caller}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        return caller


CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authenticator(request: Request) -> Authenticator:
    """The app's authenticator (set at start-up); tests override this dependency."""
    auth: Authenticator = request.app.state.auth
    return auth


Auth = Annotated[Authenticator, Depends(authenticator)]


async def writer(request: Request, credentials: Credentials, auth: Auth) -> str:
    """A caller with a key (or insecure dev mode): for requests that change or compute."""
    return await auth.caller(request, credentials, required=True)


async def reader(request: Request, credentials: Credentials, auth: Auth) -> str:
    """A caller for a read: a key, unless API_READS_REQUIRE_KEY=false."""
    return await auth.caller(request, credentials, required=auth.reads_require_key)
