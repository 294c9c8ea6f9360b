"""API keys: stored as SHA-256 hashes, compared in constant time."""

import hmac
import time

from api.db import Database, hash_key

CACHE_SECONDS = 30.0
# An unknown key reloads the hashes at most this often, so a new key works within a second.
RELOAD_ON_MISS_SECONDS = 1.0


class KeyChecker:
    """Which caller a bearer token belongs to, if any. Hashes are cached briefly."""

    def __init__(self, database: Database) -> None:
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


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
