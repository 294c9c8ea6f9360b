"""Callers (common.web.auth): the key cache, and insecure dev mode limiting nobody without a key."""

import asyncio
import dataclasses
import datetime as dt
import uuid
from types import SimpleNamespace

import pytest

from common.web import auth
from common.web.auth import Authenticator, KeyChecker
from common.web.db import ApiKey, hash_key
from common.web.problems import Problem
from common.web.ratelimit import RateLimiter


class CountingKeys:
    """Key hashes as the database gives them, counting the reads."""

    def __init__(self) -> None:
        self.hashes = {hash_key("k1"): "alice"}
        self.reads = 0

    def key_hashes(self) -> dict[str, ApiKey]:
        self.reads += 1
        now = dt.datetime.now(dt.UTC)
        return {h: ApiKey(uuid.uuid4(), name, "admin", "", now) for h, name in self.hashes.items()}


def test_insecure_dev_mode_limits_nobody_without_a_key() -> None:
    limiter = RateLimiter(rate=0.001, capacity=1)
    dev = Authenticator(KeyChecker(CountingKeys()), limiter, insecure_dev_mode=True)  # type: ignore[arg-type]
    request = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"))

    async def fifty_calls() -> list[str]:
        return [(await dev.identify(request, None, required=True)).name for _ in range(50)]  # type: ignore[arg-type]

    assert asyncio.run(fifty_calls()) == ["insecure-dev"] * 50
    closed = Authenticator(KeyChecker(CountingKeys()), limiter, insecure_dev_mode=False)  # type: ignore[arg-type]
    assert asyncio.run(closed.identify(request, None, required=False)).name == "ip:127.0.0.1"  # type: ignore[arg-type]
    with pytest.raises(Problem) as limited:
        asyncio.run(closed.identify(request, None, required=False))  # type: ignore[arg-type]
    assert limited.value.status == 429


def name(key: ApiKey | None) -> str | None:
    return None if key is None else key.name


def test_known_keys_are_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = CountingKeys()
    assert hash_key("k1") != "k1" and len(hash_key("k1")) == 64  # stored: SHA-256 hex
    checker = KeyChecker(keys)  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    assert checker.cached_key("k1") is None  # nothing loaded: ask the database
    assert name(checker.key("k1")) == "alice" and keys.reads == 1
    assert name(checker.cached_key("k1")) == "alice"  # no read, no thread hop
    assert checker.cached_key("nope") is None
    keys.hashes[hash_key("k2")] = "bob"
    clock[0] += 2  # a new key is found by a reload on a miss, within a second
    assert name(checker.key("k2")) == "bob" and keys.reads == 2
    clock[0] += auth.CACHE_SECONDS + 1  # stale: the cache answers nothing
    assert checker.cached_key("k1") is None
    assert name(checker.key("k1")) == "alice" and keys.reads == 3


def test_a_revoked_key_is_refused_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replica revokes a key: this one refuses it once its copy is CACHE_SECONDS old,
    within REVOCATION_SECONDS."""
    assert auth.CACHE_SECONDS < auth.REVOCATION_SECONDS
    now = dt.datetime.now(dt.UTC)
    key = ApiKey(uuid.uuid4(), "alice", "operator", "a", now)
    store = {hash_key("k1"): key}
    checker = KeyChecker(SimpleNamespace(key_hashes=lambda: dict(store)))  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    assert checker.key("k1") == key
    store[hash_key("k1")] = dataclasses.replace(key, revoked_at=now)
    clock[0] += auth.CACHE_SECONDS / 2
    assert checker.cached_key("k1") == key  # still within the cache
    clock[0] += auth.CACHE_SECONDS
    assert checker.cached_key("k1") is None
    found = checker.key("k1")
    assert found is not None and "revoked" in (found.refusal(now) or "")
    checker.forget()  # this replica revoked it: at once
    assert checker.cached_key("k1") is None


def test_a_key_is_refused_from_its_expiry_on() -> None:
    now = dt.datetime.now(dt.UTC)
    key = ApiKey(uuid.uuid4(), "bob", "viewer", "b", now, expires_at=now)
    assert key.refusal(now - dt.timedelta(microseconds=1)) is None
    assert "expired" in (key.refusal(now) or "")
