"""The API's pure pieces: rate limiting, parameter validation, request ids, keys, settings."""

import asyncio
from types import SimpleNamespace

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError

from api.routers.runs import request_hash
from api.schemas import RunRequest
from api.settings import ApiSettings
from api.validation import parameter_errors
from common.web import auth
from common.web.auth import Authenticator, KeyChecker
from common.web.db import hash_key
from common.web.problems import Problem
from common.web.ratelimit import RateLimiter, TokenBucket
from common.web.requestid import choose_request_id
from trainer.flows import load_data, train_model

# The schemas Prefect stores for the deployments, built from the flows' signatures.
TRAIN_SCHEMA = parameter_schema(train_model).model_dump()
LOAD_SCHEMA = parameter_schema(load_data).model_dump()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now = 0.5
    assert bucket.take() == 0.0
    clock.now = 100.0  # refills only up to capacity
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_rate_limiter_keeps_one_bucket_per_caller() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, capacity=1, clock=clock)
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 10
    assert limiter.retry_after("b") == 0


def test_idle_buckets_are_dropped_and_come_back_full() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, capacity=2, clock=clock)
    for n in range(1000):
        limiter.retry_after(f"ip:10.0.{n // 256}.{n % 256}")
    assert limiter.retry_after("busy") == 0 and limiter.retry_after("busy") == 0
    assert limiter.retry_after("busy") == 1
    clock.now = 2.5  # every bucket has refilled: all of them are swept
    assert limiter.retry_after("busy") == 0
    assert set(limiter.buckets) == {"busy"}


def test_insecure_dev_mode_limits_nobody_without_a_key() -> None:
    limiter = RateLimiter(rate=0.001, capacity=1)
    dev = Authenticator(KeyChecker(CountingKeys()), limiter, insecure_dev_mode=True)  # type: ignore[arg-type]
    request = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"))

    async def fifty_calls() -> list[str]:
        return [await dev.caller(request, None, required=True) for _ in range(50)]  # type: ignore[arg-type]

    assert asyncio.run(fifty_calls()) == ["insecure-dev"] * 50
    closed = Authenticator(KeyChecker(CountingKeys()), limiter, insecure_dev_mode=False)  # type: ignore[arg-type]
    assert asyncio.run(closed.caller(request, None, required=False)) == "ip:127.0.0.1"  # type: ignore[arg-type]
    with pytest.raises(Problem) as limited:
        asyncio.run(closed.caller(request, None, required=False))  # type: ignore[arg-type]
    assert limited.value.status == 429


def test_valid_parameters_have_no_errors() -> None:
    assert parameter_errors(TRAIN_SCHEMA, {"date": "2021-08-15", "auto_load": True}) == []
    assert parameter_errors(TRAIN_SCHEMA, {}) == []


def test_every_bad_parameter_is_named() -> None:
    errors = parameter_errors(
        TRAIN_SCHEMA, {"date": "2021-8-15", "dataset": "purple", "auto_load": "yes", "x": 1}
    )
    by_field = {e["field"]: e["message"] for e in errors}
    assert set(by_field) == {
        "parameters.date", "parameters.dataset", "parameters.auto_load", "parameters.x",
    }  # fmt: skip
    assert by_field["parameters.date"] == "'2021-8-15' is not a valid YYYY-MM-DD date"
    assert by_field["parameters.x"] == (
        "unknown parameter; allowed: auto_load, dataset, date, source"
    )


def test_month_parameters_are_checked_by_the_flow_s_own_pattern() -> None:
    assert parameter_errors(LOAD_SCHEMA, {"month": "2021-06"}) == []
    assert parameter_errors(LOAD_SCHEMA, {"month": None}) == []
    for bad in ("2021-13", "2021-6"):
        [error] = parameter_errors(LOAD_SCHEMA, {"month": bad})
        assert error == {"field": "parameters.month", "message": f"{bad!r} is not a month, YYYY-MM"}


def test_request_ids_are_taken_when_sane() -> None:
    assert choose_request_id("abc-123") == "abc-123"
    generated = choose_request_id("bad id with spaces\n")
    assert len(generated) == 32 and generated != choose_request_id(None)
    assert len(choose_request_id("x" * 200)) == 32


class CountingKeys:
    """Key hashes as the database gives them, counting the reads."""

    def __init__(self) -> None:
        self.hashes = {hash_key("k1"): "alice"}
        self.reads = 0

    def key_hashes(self) -> dict[str, str]:
        self.reads += 1
        return dict(self.hashes)


def test_known_keys_are_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = CountingKeys()
    assert hash_key("k1") != "k1" and len(hash_key("k1")) == 64  # stored: SHA-256 hex
    checker = KeyChecker(keys)  # type: ignore[arg-type]
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    assert checker.cached_caller("k1") is None  # nothing loaded: ask the database
    assert checker.caller("k1") == "alice" and keys.reads == 1
    assert checker.cached_caller("k1") == "alice"  # no read, no thread hop
    assert checker.cached_caller("nope") is None
    keys.hashes[hash_key("k2")] = "bob"
    clock[0] += 2  # a new key is found by a reload on a miss, within a second
    assert checker.caller("k2") == "bob" and keys.reads == 2
    clock[0] += auth.CACHE_SECONDS + 1  # stale: the cache answers nothing
    assert checker.cached_caller("k1") is None
    assert checker.caller("k1") == "alice" and keys.reads == 3


def test_request_hash_ignores_key_order_but_not_values() -> None:
    a = RunRequest(flow="train-model", parameters={"date": "2021-08-15", "auto_load": True})
    b = RunRequest(flow="train-model", parameters={"auto_load": True, "date": "2021-08-15"})
    c = RunRequest(flow="train-model", parameters={"date": "2021-08-16", "auto_load": True})
    assert request_hash(a) == request_hash(b) != request_hash(c)


def test_no_key_means_no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEY", "API_INSECURE_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="no API key configured: set API_KEY"):
        ApiSettings(database_url="postgresql://x/y", _env_file=None)
    assert ApiSettings(database_url="postgresql://x/y", api_insecure_dev_mode=True, _env_file=None)
    assert ApiSettings(database_url="postgresql://x/y", api_key="k" * 32, _env_file=None).api_key
