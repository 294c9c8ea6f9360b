"""serving.registry's follower, over a fake registry (testkit.apps): it loads the champions
and sets the served version's gauge, and keeps going while the registry is away."""

import asyncio
import logging

import pytest
from prometheus_client import generate_latest

from common.contract import model_name
from serving.champions import Champions
from serving.deps import ServingMetrics
from serving.registry import follow
from testkit.apps import ConstantModel, FakeRegistry


def run_briefly(champions: Champions, metrics: ServingMetrics) -> None:
    async def main() -> None:
        follower = asyncio.create_task(follow(champions, metrics, 0.01))
        await asyncio.sleep(0.1)
        follower.cancel()

    asyncio.run(main())


def test_the_follower_loads_the_champion_and_reports_its_version() -> None:
    registry = FakeRegistry()
    registry.register("fhv", "7", ConstantModel(10.0))
    champions = Champions(["fhv"], model_name, registry.champion_version, registry.load)
    metrics = ServingMetrics()
    run_briefly(champions, metrics)
    loaded = champions.get("fhv")
    assert loaded is not None and loaded.version == "7"
    text = generate_latest(metrics.registry).decode()
    assert 'serving_model_version{model="trip-duration-fhv"} 7.0' in text


def test_the_registry_away_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    registry.down = True
    champions = Champions(["fhv"], model_name, registry.champion_version, registry.load)
    with caplog.at_level(logging.WARNING, logger="serving"):
        run_briefly(champions, ServingMetrics())
    warnings = [r for r in caplog.records if "could not check the champions" in r.message]
    assert len(warnings) > 1 and champions.get("fhv") is None
