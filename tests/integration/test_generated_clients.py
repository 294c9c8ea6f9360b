"""Clients generated from each service's OpenAPI document by openapi-python-client, used
against the running apps: the success, a 422 and a 404 each parse into the documented
models (a problem is a ProblemBody, its fields FieldErrors), not None or a ValueError.

The generator runs in an environment of its own (uv's tool run, pinned): it needs typer<0.28,
which the stack's lock does not hold. The generated packages need httpx, attrs and
python-dateutil, which the lock has, so they are imported here."""

import importlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from devstack.stack import BIN, LocalStack
from integration.conftest import API_KEY
from integration.servingkit import serve_a_champion, serving_process

pytestmark = pytest.mark.integration
GENERATOR = "openapi-python-client==0.29.1"


def generate(url: str, package: str, into: Path) -> ModuleType:
    """Generate a client package from `url`'s /openapi.json into `into`/`package`."""
    document = into / f"{package}.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json").raise_for_status().content)
    result = subprocess.run(
        [
            str(BIN / "uv"), "tool", "run", "--python", sys.executable,
            "--from", GENERATOR, "--with", "typer<0.28",
            "openapi-python-client", "generate", "--meta", "none",
            "--path", str(document), "--output-path", str(into / package),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # A part the generator cannot read is left out of the client, with a warning.
    assert "Warning(s) encountered" not in result.stderr, result.stderr
    return importlib.import_module(package)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    into = tmp_path_factory.mktemp("clients")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(into))
        yield into
    for name in [m for m in sys.modules if m.split(".")[0].startswith("generated_")]:
        del sys.modules[name]


def test_api_client(stack: LocalStack, clients: Path) -> None:
    generate(stack.service_url, "generated_api", clients)
    from generated_api import AuthenticatedClient
    from generated_api.api.runs import create_run, read_run
    from generated_api.models import FieldError, ProblemBody, Run, RunRequest

    client = AuthenticatedClient(base_url=stack.service_url, token=API_KEY, timeout=30)
    created = create_run.sync_detailed(
        client=client, body=RunRequest.from_dict({"flow": "probe", "parameters": {"seconds": 0}})
    )
    assert created.status_code == 202, created.content
    assert isinstance(created.parsed, Run) and created.parsed.flow == "probe"
    read = read_run.sync_detailed(created.parsed.id, client=client)
    assert isinstance(read.parsed, Run) and read.parsed.id == created.parsed.id

    invalid = create_run.sync_detailed(
        client=client, body=RunRequest.from_dict({"flow": "probe", "parameters": {"seconds": -1}})
    )
    assert invalid.status_code == 422, invalid.content
    problem = invalid.parsed
    assert isinstance(problem, ProblemBody), invalid.content
    assert (problem.status, problem.type_) == (422, "/problems/validation-error")
    assert isinstance(problem.errors, list) and isinstance(problem.errors[0], FieldError)
    assert problem.errors[0].field == "parameters.seconds"

    missing = read_run.sync_detailed(uuid.uuid4(), client=client)
    assert missing.status_code == 404, missing.content
    assert isinstance(missing.parsed, ProblemBody)
    assert missing.parsed.type_ == "/problems/not-found"


def test_serving_client(stack: LocalStack, clients: Path) -> None:
    dataset = f"clients{uuid.uuid4().hex[:6]}"
    with serving_process(stack, "serving-clients", dataset) as url:
        serve_a_champion(stack, url, dataset)
        generate(url, "generated_serving", clients)
        from generated_serving import AuthenticatedClient
        from generated_serving.api.models import list_models
        from generated_serving.api.predictions import predict
        from generated_serving.models import FieldError, Prediction, PredictRequest, ProblemBody

        client = AuthenticatedClient(base_url=url, token=API_KEY, timeout=30)

        def request(dataset: str, *trips: dict[str, Any]) -> Any:
            body = PredictRequest.from_dict({"dataset": dataset, "trips": list(trips)})
            return predict.sync_detailed(client=client, body=body)

        answer = request(dataset, {"pickup_location_id": 132, "dropoff_location_id": 7}, {})
        assert answer.status_code == 200, answer.content
        assert isinstance(answer.parsed, Prediction) and len(answer.parsed.minutes) == 2
        [served] = list_models.sync(client=client)
        assert (served.model, served.version) == (answer.parsed.model, answer.parsed.version)

        invalid = request(dataset, {"pickup_location_id": 1}, {"dropoff_location_id": 0})
        assert invalid.status_code == 422, invalid.content
        problem = invalid.parsed
        assert isinstance(problem, ProblemBody) and problem.status == 422, invalid.content
        assert isinstance(problem.errors, list) and isinstance(problem.errors[0], FieldError)
        assert problem.errors[0].field == "body.trips.1.dropoff_location_id"

        unknown = request("purple", {})
        assert unknown.status_code == 404, unknown.content
        assert isinstance(unknown.parsed, ProblemBody)
        assert "'purple' is not served" in unknown.parsed.detail
