"""What tracking and registration add to a training run: fit alone against log + register +
promote, side by side, on the two 1.15 M-row months of bench/train.py.

Starts a local stack (for MLflow's server and Prefect's promotion lock) and registers into a
model of its own. Each round fits a model, then registers it; from the second round on, the
champion is loaded and re-scored on the validation month before the alias moves.

    make bench-registry  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/devstack:tests \
        .venv/bin/python bench/registry.py [--rows 1150000] [--rounds 4]
"""

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings

from testkit.bench import start_stack
from trainer.datasets import DATASETS
from trainer.features import prepare
from trainer.models import ModelBundle
from trainer.promotion_lock import promotion_lock
from trainer.registry import RegistryTarget, register_and_promote
from trainer.synthetic import generate_month
from trainer.training import fit_and_evaluate

FHV = DATASETS["fhv"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_150_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    train = prepare(generate_month(FHV, "2021-06", args.rows, seed=1).to_pandas(), FHV)
    val = prepare(generate_month(FHV, "2021-07", args.rows, seed=2).to_pandas(), FHV)
    print(f"{len(train):,} training and {len(val):,} validation trips", flush=True)
    dataset = f"bench{uuid.uuid4().hex[:6]}"

    with tempfile.TemporaryDirectory() as root:
        stack = start_stack(Path(root), "registry", {})
        try:
            target = RegistryTarget(tracking_uri=stack.mlflow_url, ui_url=stack.mlflow_url)
            fits, registrations = [], []
            with temporary_settings({PREFECT_API_URL: stack.api_url}):
                for round_ in range(args.rounds):
                    start = time.perf_counter()
                    model, metrics = fit_and_evaluate(train, val)
                    fits.append(time.perf_counter() - start)
                    bundle = ModelBundle(
                        model=model,
                        dataset=dataset,
                        train_month="2021-06",
                        val_month="2021-07",
                        metrics=metrics,
                        data_sources={"2021-06": "synthetic", "2021-07": "synthetic"},
                        trained_at="2026-11-27T00:00:00Z",
                        flow_run_id=str(uuid.uuid4()),
                    )
                    start = time.perf_counter()
                    registration = register_and_promote(
                        target,
                        bundle,
                        val,
                        lambda: promotion_lock(300),
                    )
                    registrations.append(time.perf_counter() - start)
                    print(
                        f"round {round_ + 1}: fit {fits[-1]:.2f} s, register "
                        f"{registrations[-1]:.2f} s (version {registration.version}, "
                        f"{registration.alias})",
                        flush=True,
                    )
        finally:
            stack.stop()

    fit_s = statistics.median(fits)
    # The first round has no champion to re-score: the later rounds are the usual case.
    usual = statistics.median(registrations[1:] or registrations)
    print()
    print(f"fit and score (median):              {fit_s:.2f} s")
    print(f"first registration (no champion):    {registrations[0]:.2f} s")
    print(f"later registrations (median):        {usual:.2f} s")
    print(f"registry overhead: ratio {usual / fit_s:.2f} of the fit, {usual:.2f} s per run")


if __name__ == "__main__":
    main()
