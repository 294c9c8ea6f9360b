"""Training speed and memory: the reference pipeline (DictVectorizer over records) against ours.

Both read the same two synthetic FHV months from disk, train on the first and validate on
the second, alternating in one run so that machine noise hits both alike. Each run is a
fresh process, so that its peak RSS is its own.

With `--scaling`, ours alone runs on months of 1, 5 and 20 M rows (or the sizes given), once
each in a fresh process, and prints time, peak RSS and peak RSS per training row (the rows
of the training month's file; the validation month is as big).

    make bench  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/devstack:tests \
        .venv/bin/python bench/train.py [--rows 1150000] [--repeats 3] [--scaling [ROWS ...]]
"""

import argparse
import contextlib
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import psutil

from testkit import reference
from testkit.tlc import write_month
from trainer.datasets import DATASETS
from trainer.features import prepare_month
from trainer.store import DataStore
from trainer.training import fit, validate

FHV = DATASETS["fhv"]
TRAIN, VAL = "2021-06", "2021-07"
# The reference's own solver error (LSQR stops at tol=1e-6): see tests/unit/test_training.py.
RMSE_TOLERANCE = 1e-5
SCALING_ROWS = [1_000_000, 5_000_000, 20_000_000]


def ours(root: str) -> dict[str, float]:
    # As train-model does: the training month is let go before the validation month is read.
    store = DataStore(root)
    fitted = fit(prepare_month(store, FHV, TRAIN))
    return validate(fitted, prepare_month(store, FHV, VAL)).__dict__


def measure(name: str, root: str) -> dict[str, object]:
    """In a fresh process: one pipeline's seconds, metrics and peak RSS (both modules loaded)."""
    before = psutil.Process().memory_info().rss
    run = {
        "reference": lambda: reference.train_and_validate(
            *(str(DataStore(root).month_path(FHV, month)) for month in (TRAIN, VAL))
        ),
        "ours": lambda: ours(root),
    }[name]
    start = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "metrics": metrics, "peak_rss": peak, "start_rss": before}


def in_fresh_process(name: str, root: Path) -> dict[str, object]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, name, str(root)).result()


@contextlib.contextmanager
def months_of(rows: int, data: Path | None) -> Iterator[Path]:
    """A data store holding the two months, of `rows` rows each: generated in a temporary
    directory, or under `data`/<rows> where they are kept for the next run."""
    with contextlib.ExitStack() as stack:
        if data is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            root = data / str(rows)
        (root / "fhv").mkdir(parents=True, exist_ok=True)
        for month in (TRAIN, VAL):
            if not DataStore(str(root)).has_month(FHV, month):
                print(f"generating a synthetic FHV month of {rows:,} rows ...", flush=True)
                write_month(root / "fhv", FHV, month, rows)
        yield root


def scaling(sizes: list[int], data: Path | None) -> None:
    results = []
    for rows in sizes:
        with months_of(rows, data) as root:
            result = in_fresh_process("ours", root)
        results.append((rows, result))
        print(
            f"  {rows:,} rows: {result['seconds']:.2f} s, "
            f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB",
            flush=True,
        )
    print()
    print(
        f"{'rows':>11} {'seconds':>8} {'peak RSS MiB':>13} {'added MiB':>10} {'bytes/row':>10}"
        f" {'val RMSE':>12}"
    )
    for rows, r in results:
        peak, added = r["peak_rss"], r["peak_rss"] - r["start_rss"]
        print(
            f"{rows:11,} {r['seconds']:8.2f} {peak / 2**20:13.0f} {added / 2**20:10.0f}"
            f" {peak / rows:10.1f} {r['metrics']['val_rmse']:12.8f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_150_000, help="rows per month")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="*",
        metavar="ROWS",
        help=f"ours alone at these rows per month (default {SCALING_ROWS})",
    )
    parser.add_argument("--data", type=Path, help="keep the generated months here, and reuse them")
    args = parser.parse_args()
    if args.scaling is not None:
        scaling(args.scaling or SCALING_ROWS, args.data)
        return

    with months_of(args.rows, args.data) as root:
        runs: dict[str, list[dict]] = {"reference": [], "ours": []}
        for repeat in range(args.repeats):
            for name in runs:
                result = in_fresh_process(name, root)
                runs[name].append(result)
                print(
                    f"  repeat {repeat + 1}: {name:9} {result['seconds']:6.2f} s, "
                    f"peak RSS {result['peak_rss'] / 2**20:6.0f} MiB",
                    flush=True,
                )

    summary = {
        name: {
            "seconds": statistics.median(r["seconds"] for r in results),
            "peak": statistics.median(r["peak_rss"] for r in results) / 2**20,
            "added": statistics.median(r["peak_rss"] - r["start_rss"] for r in results) / 2**20,
            "metrics": results[-1]["metrics"],
        }
        for name, results in runs.items()
    }
    print()
    print(
        f"{'pipeline':10} {'median s':>9} {'peak RSS MiB':>13} {'added MiB':>10}"
        f" {'train RMSE':>14} {'val RMSE':>14} {'features':>9}"
    )
    for name, s in summary.items():
        m = s["metrics"]
        print(
            f"{name:10} {s['seconds']:9.2f} {s['peak']:13.0f} {s['added']:10.0f}"
            f" {m['train_rmse']:14.8f} {m['val_rmse']:14.8f} {m['features']:9d}"
        )
    ref, our = summary["reference"], summary["ours"]
    worst = max(
        abs(ref["metrics"][key] - our["metrics"][key]) / ref["metrics"][key]
        for key in ("train_rmse", "val_rmse")
    )
    print()
    print(f"speed-up: ratio {ref['seconds'] / our['seconds']:.1f} (reference s / ours s)")
    print(f"memory: peak RSS ratio {our['peak'] / ref['peak']:.2f} (ours / reference)")
    verdict = "equal" if worst <= RMSE_TOLERANCE else "NOT equal"
    print(f"RMSE: largest relative difference {worst:.1e}, {verdict} within {RMSE_TOLERANCE:g}")


if __name__ == "__main__":
    main()
