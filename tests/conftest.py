"""Shared fixtures."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from testkit.tlc import TlcServer
from trainer.datasets import DATASETS, Dataset

# Hypothesis times each example (a 200 ms deadline, a health check on slow generation): a
# speed assertion that fails on a busy machine, as when the suites run side by side (make
# test). Speed is measured in bench/, not asserted here; the properties stay.
settings.register_profile("untimed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("untimed")


@pytest.fixture
def tlc_server(tmp_path: Path) -> Iterator[TlcServer]:
    server = TlcServer(tmp_path / "tlc")
    server.root.mkdir()
    yield server
    server.close()


@pytest.fixture
def fhv() -> Dataset:
    return DATASETS["fhv"]
