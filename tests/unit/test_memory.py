"""The memory estimate of a training run, and the refusal of a month over the limit."""

from pathlib import Path

import pytest

from testkit.tlc import write_month
from trainer.datasets import DATASETS
from trainer.memory import (
    BYTES_PER_ROW,
    FIXED_MIB,
    MIB,
    MemoryLimit,
    MemoryLimitError,
    check_fits,
    estimate_mib,
    machine_memory_mib,
    memory_limit,
)
from trainer.store import DataStore

FHV = DATASETS["fhv"]


def test_the_estimate_is_the_fixed_part_plus_bytes_per_row_rounded_up() -> None:
    assert estimate_mib(0) == FIXED_MIB
    assert estimate_mib(1) == FIXED_MIB + 1
    assert estimate_mib(20_000_000) == FIXED_MIB + -(-20_000_000 * BYTES_PER_ROW // MIB)
    # What docs/benchmarks.md measured at 20 M rows (1501 MiB) fits, with room.
    assert 1.25 * 1501 < estimate_mib(20_000_000) < 2 * 1501


def test_a_run_needs_what_its_bigger_month_needs() -> None:
    rows = {"2021-06": 1_000_000, "2021-07": 3_000_000}
    assert check_fits("fhv", rows, MemoryLimit(10_000, explicit=True)) == estimate_mib(3_000_000)


def test_a_month_over_the_setting_is_refused_with_the_estimate_and_the_setting() -> None:
    rows = {"2021-06": 25_000_000, "2021-07": 1_000_000}
    needed = estimate_mib(25_000_000)
    with pytest.raises(MemoryLimitError) as refused:
        check_fits("fhv", rows, MemoryLimit(needed - 1, explicit=True))
    message = str(refused.value)
    assert "fhv 2021-06 has 25,000,000 rows" in message
    assert f"an estimated {needed:,} MiB" in message
    assert f"over TRAINING_MEMORY_LIMIT_MB={needed - 1}" in message
    assert "Raise TRAINING_MEMORY_LIMIT_MB" in message
    assert check_fits("fhv", rows, MemoryLimit(needed, explicit=True)) == needed


def test_unset_the_limit_is_the_machines_memory_and_the_message_says_so() -> None:
    limit = memory_limit(None)
    assert limit == MemoryLimit(machine_memory_mib(), explicit=False)
    assert 256 < limit.mib < 2**30  # MiB: between a tiny container and a petabyte
    assert memory_limit(2048) == MemoryLimit(2048, explicit=True)
    with pytest.raises(MemoryLimitError, match="TRAINING_MEMORY_LIMIT_MB is unset"):
        check_fits("fhv", {"2021-06": 10**9}, MemoryLimit(4096, explicit=False))


def test_row_counts_come_from_the_footer(tmp_path: Path) -> None:
    (tmp_path / "fhv").mkdir()
    write_month(tmp_path / "fhv", FHV, "2021-06", 3_000)
    assert DataStore(str(tmp_path)).month_rows(FHV, "2021-06") == 3_000
