"""The memory a training run needs, estimated before any data is read: plain functions.

train-model holds one month at a time (the training month is let go before the validation
month is read), so a run needs what its bigger month needs. That is estimated from the row
count in the month's parquet footer, with the peak measured by `bench/train.py --scaling`
(docs/benchmarks.md), and compared with TRAINING_MEMORY_LIMIT_MB: a month over it fails the
run with the estimate and the setting, not with an out-of-memory kill halfway through.
"""

import os
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
# `bench/train.py --scaling` (docs/benchmarks.md) peaked at 408, 762 and 1501 MiB at 1, 5
# and 20 M rows a month: 52-66 bytes a row above a fixed 0.2-0.45 GiB (the interpreter and
# its libraries, read buffers). A flow run's process starts 0.1 GiB bigger (Prefect and
# the MLflow client imported: 313 MiB, against the benchmark's 209). So: 80 bytes a row (20%
# over the steepest slope) plus 768 MiB, 30-45% above a run's peak at 5 to 20 M rows.
BYTES_PER_ROW = 80
FIXED_MIB = 768

# Where a container's memory limit is (cgroup v2, then v1); "max" or a huge number: none.
CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


class MemoryLimitError(RuntimeError):
    """A month too big for the memory a training run may use."""


@dataclass(frozen=True)
class MemoryLimit:
    mib: int
    explicit: bool  # set by TRAINING_MEMORY_LIMIT_MB, not the machine's memory


def estimate_mib(rows: int) -> int:
    """Peak memory of training on (or validating with) a month of `rows` rows, in MiB."""
    return FIXED_MIB + -(-rows * BYTES_PER_ROW // MIB)


def memory_limit(setting_mib: int | None) -> MemoryLimit:
    """TRAINING_MEMORY_LIMIT_MB if set, else all the memory this process may have: its
    container's limit, or the machine's physical memory."""
    if setting_mib is not None:
        return MemoryLimit(setting_mib, explicit=True)
    return MemoryLimit(machine_memory_mib(), explicit=False)


def machine_memory_mib() -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMIT_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            physical = min(physical, int(text))  # v1 says "no limit" with a huge number
            break
    return physical // MIB


def check_fits(dataset: str, month_rows: dict[str, int], limit: MemoryLimit) -> int:
    """The run's estimate in MiB; MemoryLimitError naming the month, its estimate and the
    setting when the bigger month does not fit."""
    month, rows = max(month_rows.items(), key=lambda item: item[1])
    needed = estimate_mib(rows)
    if needed <= limit.mib:
        return needed
    if limit.explicit:
        over = f"over TRAINING_MEMORY_LIMIT_MB={limit.mib}"
    else:
        over = (
            f"over the {limit.mib} MiB this machine (or container) has "
            "(TRAINING_MEMORY_LIMIT_MB is unset)"
        )
    raise MemoryLimitError(
        f"{dataset} {month} has {rows:,} rows (from its parquet footer): training on it needs "
        f"an estimated {needed:,} MiB ({FIXED_MIB} MiB plus {BYTES_PER_ROW} bytes a row), "
        f"{over}. Nothing was read. Raise TRAINING_MEMORY_LIMIT_MB (MiB) if the agent has the "
        "memory, or run train-model on an agent that does."
    )
