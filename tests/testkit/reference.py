"""The seed's reference pipeline, kept verbatim in spirit as the oracle for tests and benchmarks.

DictVectorizer over records, then a default LinearRegression (FHV columns only). On sparse
input that LinearRegression runs the iterative LSQR solver, which stops at a relative
tolerance (`tol`, 1e-6 by default): tests pass a tighter one to approach the exact solution.
"""

import pandas as pd
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import root_mean_squared_error

CATEGORICAL = ["PUlocationID", "DOlocationID"]


def read_dataframe(path: str) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df["duration"] = df.dropOff_datetime - df.pickup_datetime
    df.duration = df.duration.dt.total_seconds() / 60
    df = df[(df.duration >= 1) & (df.duration <= 60)].copy()
    df[CATEGORICAL] = df[CATEGORICAL].fillna(-1).astype("int").astype("str")
    return df


LSQR_DEFAULT_TOL = 1e-6  # scikit-learn's LinearRegression(tol=...) default


def train_and_validate(
    train_path: str, val_path: str, tol: float = LSQR_DEFAULT_TOL
) -> dict[str, float]:
    df_train = read_dataframe(train_path)
    df_val = read_dataframe(val_path)
    dv = DictVectorizer()
    x_train = dv.fit_transform(df_train[CATEGORICAL].to_dict(orient="records"))
    lr = LinearRegression(tol=tol).fit(x_train, df_train.duration.values)
    x_val = dv.transform(df_val[CATEGORICAL].to_dict(orient="records"))
    return {
        "train_rmse": float(root_mean_squared_error(df_train.duration.values, lr.predict(x_train))),
        "val_rmse": float(root_mean_squared_error(df_val.duration.values, lr.predict(x_val))),
        "train_rows": len(df_train),
        "val_rows": len(df_val),
        "features": len(dv.feature_names_),
    }
