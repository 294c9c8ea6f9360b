"""Fitting and scoring the trip-duration model: plain functions, no Prefect."""

from dataclasses import dataclass

import pandas as pd
from sklearn.metrics import root_mean_squared_error
from sklearn.pipeline import Pipeline

from trainer.estimators import ExactLinearRegression, IntegerOneHotEncoder, MissingIdFiller
from trainer.features import FEATURES, TARGET


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


def fit_and_evaluate(train: pd.DataFrame, val: pd.DataFrame) -> tuple[Pipeline, Metrics]:
    """Fit on prepared training trips; score RMSE on them and on the validation trips."""
    if train.empty:
        raise ValueError("no training trips of 1 to 60 minutes: cannot fit a model")
    if val.empty:
        raise ValueError("no validation trips of 1 to 60 minutes: cannot score the model")
    model = build_model().fit(train[FEATURES], train[TARGET])
    metrics = Metrics(
        train_rmse=float(root_mean_squared_error(train[TARGET], model.predict(train[FEATURES]))),
        val_rmse=float(root_mean_squared_error(val[TARGET], model.predict(val[FEATURES]))),
        train_rows=len(train),
        val_rows=len(val),
        features=int(sum(len(c) for c in model.named_steps["encoder"].categories_)),
    )
    return model, metrics
