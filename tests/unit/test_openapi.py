"""Both services' OpenAPI documents, as generated clients read them: every operation named
and tagged, every error a ProblemBody under `application/problem+json` only, no FastAPI
default 422 schema (tests/integration/test_generated_clients.py uses such clients)."""

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app as create_api
from api.settings import ApiSettings
from common.web.problems import MEDIA_TYPE
from serving.main import create_app as create_serving
from serving.settings import ServingSettings


def api_app() -> FastAPI:
    return create_api(ApiSettings(database_url="postgresql://unused/x", api_key="k" * 40))


def serving_app() -> FastAPI:
    settings = ServingSettings(
        database_url="postgresql://unused/x",
        api_key="k" * 40,
        mlflow_tracking_uri="http://127.0.0.1:1",
    )
    return create_serving(settings)


def api_document() -> dict[str, Any]:
    return api_app().openapi()


def serving_document() -> dict[str, Any]:
    return serving_app().openapi()


OPERATIONS = {
    "api": {
        "create_run": ["runs"],
        "list_runs": ["runs"],
        "read_run": ["runs"],
        "cancel_run": ["runs"],
        "retry_run": ["runs"],
        "stream_run_events": ["runs"],
        "create_backfill": ["backfills"],
        "list_backfills": ["backfills"],
        "read_backfill": ["backfills"],
        "cancel_backfill": ["backfills"],
        "create_webhook": ["webhooks"],
        "list_webhooks": ["webhooks"],
        "delete_webhook": ["webhooks"],
        "list_webhook_deliveries": ["webhooks"],
        "redeliver_webhook_delivery": ["webhooks"],
        "read_run_logs": ["runs"],
        "list_flows": ["flows"],
        "create_key": ["keys"],
        "list_keys": ["keys"],
        "rotate_key": ["keys"],
        "revoke_key": ["keys"],
        "list_audit": ["audit"],
        "create_user": ["people"],
        "list_users": ["people"],
        "change_user": ["people"],
        "disable_user": ["people"],
        "list_sessions": ["people"],
        "end_session": ["people"],
        "login_page": ["login"],
        "login": ["login"],
        "logout": ["login"],
        "door_check": ["door"],
        "healthz": ["operations"],
        "readyz": ["operations"],
        "metrics": ["operations"],
    },
    "serving": {
        "predict": ["predictions"],
        "list_models": ["models"],
        "healthz": ["operations"],
        "readyz": ["operations"],
        "metrics": ["operations"],
    },
}


@pytest.mark.parametrize(
    ("document", "service"), [(api_document, "api"), (serving_document, "serving")]
)
def test_every_operation_is_named_for_generated_clients(document: Any, service: str) -> None:
    operations = {
        op["operationId"]: op["tags"]
        for path in document()["paths"].values()
        for op in path.values()
    }
    assert operations == OPERATIONS[service]


@pytest.mark.parametrize("document", [api_document, serving_document])
def test_every_error_is_a_problem_under_problem_json_only(document: Any) -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    assert schemas["ProblemBody"]["properties"]["errors"]["anyOf"][0] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/FieldError"},
    }
    assert schemas["FieldError"]["required"] == ["field", "message"]
    problem = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
    errors = {
        (path, method, status): response.get("content")
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        for status, response in operation["responses"].items()
        if status.startswith("4") or (status == "503" and path != "/readyz")
    }
    assert errors and {key for key, content in errors.items() if content != problem} == set()
    # Every operation that takes input documents its 422 as the problem.
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if operation.get("parameters") or operation.get("requestBody"):
                assert operation["responses"]["422"]["content"] == problem, path


def test_the_document_is_built_once() -> None:
    app = create_api(ApiSettings(database_url="postgresql://unused/x", api_key="k" * 40))
    assert app.openapi() is app.openapi()


@pytest.mark.parametrize("service", ["api", "serving"])
def test_the_interactive_docs_load_nothing_from_outside(service: str) -> None:
    """/docs and /redoc name only the app's own assets, and the app serves them: the docs
    work on a machine without internet (a CDN's script would leave the page blank)."""
    app = api_app() if service == "api" else serving_app()
    client = TestClient(app)  # no lifespan: the pages need no database
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/") for a in assets), (page, assets)
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
