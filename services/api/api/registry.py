"""What the model registry (MLflow's REST API) holds of a model: which months its versions
were trained and validated on. A backfill of train-model skips what is there already."""

from typing import Any

import httpx

from api.backfills import registered_as
from common.web.problems import unavailable

TIMEOUT_SECONDS = 10.0
PAGE = 1000  # MLflow's largest page of runs
MAX_PAGES = 10


async def trained_months(
    tracking_uri: str, model: str, transport: httpx.AsyncBaseTransport | None = None
) -> dict[tuple[str, str], str]:
    """By (train month, validation month): a registered version of `model` trained on them,
    in words. Read from the MLflow runs of the experiment named after the model (where
    train-model logs them) that carry a `promotion` tag, which train-model sets once the
    version is registered and has its alias.

    Raises a 503 problem when MLflow cannot be reached or answers with an error."""
    base = tracking_uri.rstrip("/") + "/api/2.0/mlflow"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, transport=transport) as client:
            found = await client.get(
                f"{base}/experiments/get-by-name", params={"experiment_name": model}
            )
            if found.status_code == 404:
                return {}  # nothing trained yet
            found.raise_for_status()
            experiment = found.json()["experiment"]["experiment_id"]
            months: dict[tuple[str, str], str] = {}
            token: str | None = None
            for _ in range(MAX_PAGES):
                body: dict[str, Any] = {
                    "experiment_ids": [experiment],
                    "filter": "tags.promotion LIKE '%'",
                    "max_results": PAGE,
                }
                if token:
                    body["page_token"] = token
                answer = await client.post(f"{base}/runs/search", json=body)
                answer.raise_for_status()
                page = answer.json()
                for run in page.get("runs", []):
                    months.update(_months(run, model))
                token = page.get("next_page_token")
                if not token:
                    break
            return months
    except (httpx.HTTPError, KeyError, ValueError) as error:
        raise unavailable(f"the model registry (MLflow at {tracking_uri})", error) from None


def _months(run: dict[str, Any], model: str) -> dict[tuple[str, str], str]:
    data = run.get("data", {})
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    train, val = params.get("train_month"), params.get("val_month")
    if not (train and val):
        return {}
    run_id = run.get("info", {}).get("run_id", "?")
    return {(train, val): registered_as(model, run_id, train, val)}
