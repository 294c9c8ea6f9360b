"""Shared fixtures."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.tlc import TlcServer
from trainer.datasets import DATASETS, Dataset


@pytest.fixture
def tlc_server(tmp_path: Path) -> Iterator[TlcServer]:
    server = TlcServer(tmp_path / "tlc")
    server.root.mkdir()
    yield server
    server.close()


@pytest.fixture
def fhv() -> Dataset:
    return DATASETS["fhv"]
