from pathlib import Path

import pandas as pd
import pytest

import reference
from tlc_server import write_month
from trainer.datasets import DATASETS
from trainer.features import prepare
from trainer.training import fit_and_evaluate


def test_matches_the_reference_pipeline(tmp_path: Path) -> None:
    fhv = DATASETS["fhv"]
    train_path = write_month(tmp_path, fhv, "2021-06", 60_000)
    val_path = write_month(tmp_path, fhv, "2021-07", 60_000)
    expected = reference.train_and_validate(str(train_path), str(val_path))

    train = prepare(pd.read_parquet(train_path), fhv)
    val = prepare(pd.read_parquet(val_path), fhv)
    _, metrics = fit_and_evaluate(train, val)

    assert metrics.train_rmse == pytest.approx(expected["train_rmse"], abs=1e-6)
    assert metrics.val_rmse == pytest.approx(expected["val_rmse"], abs=1e-6)
    assert (metrics.train_rows, metrics.val_rows) == (expected["train_rows"], expected["val_rows"])
    assert metrics.features == expected["features"]


def test_ids_unseen_in_training_are_ignored_at_validation() -> None:
    train = pd.DataFrame(
        {"PUlocationID": [1, 2, 1, 2], "DOlocationID": [3, 3, 4, 4], "duration": [5, 7, 6, 8.0]}
    )
    val = pd.DataFrame({"PUlocationID": [99], "DOlocationID": [3], "duration": [6.0]})
    model, metrics = fit_and_evaluate(train, val)
    assert metrics.features == 4
    assert metrics.train_rmse == pytest.approx(0.0, abs=1e-9)
    assert model.predict(val[["PUlocationID", "DOlocationID"]]).shape == (1,)


def test_empty_months_are_refused_with_a_reason() -> None:
    empty = pd.DataFrame({"PUlocationID": [], "DOlocationID": [], "duration": []})
    with pytest.raises(ValueError, match="no training trips of 1 to 60 minutes"):
        fit_and_evaluate(empty, empty)
