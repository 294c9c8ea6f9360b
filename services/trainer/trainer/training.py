"""Fitting and scoring the trip-duration model: plain functions, no Prefect."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import root_mean_squared_error
from sklearn.pipeline import Pipeline

from trainer.estimators import ExactLinearRegression, IntegerOneHotEncoder, MissingIdFiller
from trainer.features import FEATURES, TARGET

PREDICT_BLOCK_ROWS = 1 << 21


@dataclass(frozen=True)
class Metrics:
    train_rmse: float
    val_rmse: float
    train_rows: int
    val_rows: int
    features: int


def build_model() -> Pipeline:
    """Missing location IDs as -1, one-hot IDs straight into a sparse matrix, then an exact
    least-squares fit.

    The seed's model (fill with -1, DictVectorizer, then a default LinearRegression), solved
    exactly: unseen IDs in validation encode as all zeros, as DictVectorizer.transform does,
    and the fit is the solution that LinearRegression's iterative solver approaches. The fill
    is a step of the model, so the model takes IDs as the files hold them (NaN or integers).
    """
    return Pipeline(
        [
            ("ids", MissingIdFiller()),
            ("encoder", IntegerOneHotEncoder()),
            ("regressor", ExactLinearRegression()),
        ]
    )


@dataclass(frozen=True)
class Fitted:
    """A model fitted on a month, with what it scored there: the month itself can go."""

    model: Pipeline
    train_rmse: float
    train_rows: int


def fit(train: pd.DataFrame) -> Fitted:
    """Fit on prepared training trips, and score RMSE on them."""
    _refuse_empty(train=train)
    model = build_model().fit(train[FEATURES], train[TARGET])
    return Fitted(model=model, train_rmse=rmse(model, train), train_rows=len(train))


def validate(fitted: Fitted, val: pd.DataFrame) -> Metrics:
    """The fitted model's metrics, with its RMSE on the validation trips."""
    _refuse_empty(val=val)
    return Metrics(
        train_rmse=fitted.train_rmse,
        val_rmse=rmse(fitted.model, val),
        train_rows=fitted.train_rows,
        val_rows=len(val),
        features=int(sum(len(c) for c in fitted.model.named_steps["encoder"].categories_)),
    )


def fit_and_evaluate(train: pd.DataFrame, val: pd.DataFrame) -> tuple[Pipeline, Metrics]:
    """Fit on prepared training trips; score RMSE on them and on the validation trips."""
    _refuse_empty(train=train, val=val)  # both before the fit
    fitted = fit(train)
    return fitted.model, validate(fitted, val)


def _refuse_empty(train: pd.DataFrame | None = None, val: pd.DataFrame | None = None) -> None:
    if train is not None and train.empty:
        raise ValueError("no training trips of 1 to 60 minutes: cannot fit a model")
    if val is not None and val.empty:
        raise ValueError("no validation trips of 1 to 60 minutes: cannot score the model")


def rmse(
    model: Pipeline,
    trips: pd.DataFrame,
    inputs: Callable[[pd.DataFrame], Any] = lambda ids: ids,
) -> float:
    """The model's RMSE on prepared trips (their IDs given to the model as `inputs` makes
    them), predicted in blocks of rows: the one-hot matrix of a whole 20 M-trip month would
    take 0.5 GiB. The same predictions as at once, bit for bit (each is its own row's sum)."""
    predictions = np.empty(len(trips))
    for start in range(0, len(trips), PREDICT_BLOCK_ROWS):
        block = trips[FEATURES].iloc[start : start + PREDICT_BLOCK_ROWS]
        predictions[start : start + len(block)] = model.predict(inputs(block))
    return float(root_mean_squared_error(trips[TARGET], predictions))
