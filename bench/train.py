"""Training speed: the reference pipeline (DictVectorizer over records) against ours.

Both read the same two synthetic FHV months from disk, train on the first and validate on
the second, alternating in one run so that machine noise hits both alike.

    .venv/bin/python bench/train.py [--rows 1150000] [--repeats 3]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the services and tests on sys.path)

import reference
from tlc_server import write_month
from trainer.datasets import DATASETS
from trainer.features import prepare
from trainer.store import DataStore
from trainer.training import fit_and_evaluate

FHV = DATASETS["fhv"]
TRAIN, VAL = "2021-06", "2021-07"


def ours(store: DataStore) -> dict[str, float]:
    train = prepare(store.read_month(FHV, TRAIN), FHV)
    val = prepare(store.read_month(FHV, VAL), FHV)
    _, metrics = fit_and_evaluate(train, val)
    return metrics.__dict__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_150_000, help="rows per month")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "fhv").mkdir()
        print(f"generating two synthetic FHV months of {args.rows:,} rows ...", flush=True)
        paths = [str(write_month(root / "fhv", FHV, month, args.rows)) for month in (TRAIN, VAL)]
        store = DataStore(str(root))

        times: dict[str, list[float]] = {"reference": [], "ours": []}
        results: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            for name, run in (
                ("reference", lambda: reference.train_and_validate(*paths)),
                ("ours", lambda: ours(store)),
            ):
                start = time.perf_counter()
                results[name] = run()
                times[name].append(time.perf_counter() - start)
                print(f"  repeat {repeat + 1}: {name:9} {times[name][-1]:6.2f} s", flush=True)

    ref, our = results["reference"], results["ours"]
    ref_time, our_time = statistics.median(times["reference"]), statistics.median(times["ours"])
    print()
    print(f"{'pipeline':10} {'median s':>9} {'train RMSE':>14} {'val RMSE':>14} {'features':>9}")
    for name, seconds, r in (("reference", ref_time, ref), ("ours", our_time, our)):
        print(
            f"{name:10} {seconds:9.2f} {r['train_rmse']:14.8f} {r['val_rmse']:14.8f}"
            f" {r['features']:9d}"
        )
    print()
    print(f"speed-up (reference / ours): {ref_time / our_time:.1f}x")
    print(f"|val RMSE difference|: {abs(ref['val_rmse'] - our['val_rmse']):.2e}")
    print(f"|train RMSE difference|: {abs(ref['train_rmse'] - our['train_rmse']):.2e}")


if __name__ == "__main__":
    main()
