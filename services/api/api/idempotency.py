"""Idempotency keys as POST /runs uses them: claim a key for a request, bind it to the run
the request created; expired keys are dropped now and then. Over `api.db.ApiDatabase`."""

import time
from typing import Protocol

from api.db import Claim
from common.web.db import blocking

# How often expired idempotency keys are deleted, at most, per process.
CLEANUP_SECONDS = 60.0


class KeyTable(Protocol):
    """The idempotency table (`api.db.ApiDatabase`; a fake in tests). Blocking calls."""

    def claim(self, caller: str, key: str, request_hash: str, retention_hours: float) -> Claim: ...

    def bind(
        self, caller: str, key: str, request_hash: str, nonce: str, flow_run_id: str
    ) -> bool: ...

    def forget_expired(self, retention_hours: float) -> int: ...


class IdempotencyKeys:
    def __init__(self, table: KeyTable, retention_hours: float) -> None:
        self.table, self.retention_hours = table, retention_hours
        self._last_cleanup = float("-inf")

    async def claim(self, caller: str, key: str, request_hash: str) -> Claim:
        """The claim of (caller, key) for this request (see `api.db.ApiDatabase.claim`)."""
        await self._forget_expired()
        return await blocking(self.table.claim, caller, key, request_hash, self.retention_hours)

    async def bind(self, caller: str, key: str, request_hash: str, nonce: str, run: str) -> bool:
        """True when this request bound the key to its run; False for a replay."""
        return await blocking(self.table.bind, caller, key, request_hash, nonce, run)

    async def _forget_expired(self) -> None:
        """Drop expired idempotency keys, at most once every CLEANUP_SECONDS."""
        if time.monotonic() - self._last_cleanup > CLEANUP_SECONDS:
            self._last_cleanup = time.monotonic()
            await blocking(self.table.forget_expired, self.retention_hours)
