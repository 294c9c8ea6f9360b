"""Fitted models in the model store: encoder and regressor in one file, with what made them."""

import dataclasses
import io

import joblib
from sklearn.pipeline import Pipeline

from trainer.store import Store
from trainer.training import Metrics


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    model: Pipeline
    dataset: str
    train_month: str
    val_month: str
    metrics: Metrics
    data_sources: dict[str, str]
    trained_at: str
    flow_run_id: str | None = None


def model_path(store: Store, bundle: ModelBundle) -> str:
    stamp = bundle.trained_at.replace(":", "").replace("-", "")
    name = bundle.flow_run_id or stamp
    return store.path(bundle.dataset, f"{bundle.train_month}_{bundle.val_month}", f"{name}.joblib")


def save_model(store: Store, bundle: ModelBundle) -> str:
    """Write the bundle atomically; return where it is, as the user would write it."""
    buffer = io.BytesIO()
    joblib.dump(bundle, buffer)
    path = model_path(store, bundle)
    store.write_bytes(path, buffer.getvalue())
    return store.display(path)


def load_model(store: Store, path: str) -> ModelBundle:
    with store.fs.open(path, "rb") as handle:
        bundle = joblib.load(handle)
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"{path} does not hold a model bundle")
    return bundle
