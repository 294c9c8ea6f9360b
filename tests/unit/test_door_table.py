"""The front door's role table (common.web.access.DOOR, door_route): every write route the
Prefect and MLflow UIs call needs the role the table says (a viewer is refused), their
reads are a viewer's, anything not in the table is refused, the tables are exactly the
servers' own route lists, and no spelling of a path (dot segments, `//`, encoded slashes,
query strings, read suffixes in the wrong place) gets a request past a check it would
otherwise face."""

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from common.web.access import DOOR, ROUTES, DoorRefusal, DoorRoute, door_route
from common.web.auth import Role

ID = "0b5c9b3e-4c1e-4f57-9c38-2f6a3f0c7a11"
ROOT = Path(__file__).resolve().parents[2]

# The writes the Prefect UI (prefect/server/ui/assets: its API classes' post/put/patch/
# delete calls, each class's routePrefix) makes, as the door sees them, and who may.
PREFECT_UI_WRITES: list[tuple[str, str, Role]] = [
    # An admin's: job_variables in its body can replace the agent's command.
    ("POST", f"/prefect/api/deployments/{ID}/create_flow_run", Role.admin),
    ("POST", f"/prefect/api/flow_runs/{ID}/set_state", Role.operator),
    ("POST", f"/prefect/api/flow_runs/{ID}/resume", Role.operator),
    ("DELETE", f"/prefect/api/flow_runs/{ID}", Role.admin),
    ("POST", f"/prefect/api/task_runs/{ID}/set_state", Role.admin),
    ("DELETE", f"/prefect/api/task_runs/{ID}", Role.admin),
    ("POST", "/prefect/api/deployments/", Role.admin),
    ("PATCH", f"/prefect/api/deployments/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/deployments/{ID}", Role.admin),
    ("POST", f"/prefect/api/deployments/{ID}/schedules", Role.admin),
    ("PATCH", f"/prefect/api/deployments/{ID}/schedules/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/deployments/{ID}/schedules/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/flows/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/artifacts/{ID}", Role.admin),
    ("POST", "/prefect/api/automations/", Role.admin),
    ("PATCH", f"/prefect/api/automations/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/automations/{ID}", Role.admin),
    ("POST", "/prefect/api/block_documents/", Role.admin),
    ("PATCH", f"/prefect/api/block_documents/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/block_documents/{ID}", Role.admin),
    ("POST", "/prefect/api/concurrency_limits/", Role.admin),
    ("DELETE", f"/prefect/api/concurrency_limits/{ID}", Role.admin),
    ("DELETE", "/prefect/api/concurrency_limits/tag/gpu", Role.admin),
    ("POST", "/prefect/api/concurrency_limits/tag/gpu/reset", Role.admin),
    ("POST", "/prefect/api/v2/concurrency_limits/", Role.admin),
    ("PATCH", "/prefect/api/v2/concurrency_limits/gpu", Role.admin),
    ("DELETE", "/prefect/api/v2/concurrency_limits/gpu", Role.admin),
    ("PUT", "/prefect/api/saved_searches/", Role.admin),
    ("DELETE", f"/prefect/api/saved_searches/{ID}", Role.admin),
    ("POST", "/prefect/api/variables/", Role.admin),
    ("PATCH", f"/prefect/api/variables/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/variables/{ID}", Role.admin),
    ("POST", "/prefect/api/work_pools/", Role.admin),
    ("PATCH", "/prefect/api/work_pools/training", Role.admin),
    ("DELETE", "/prefect/api/work_pools/training", Role.admin),
    ("POST", "/prefect/api/work_pools/training/queues", Role.admin),
    ("PATCH", "/prefect/api/work_pools/training/queues/default", Role.admin),
    ("DELETE", "/prefect/api/work_pools/training/queues/default", Role.admin),
    ("DELETE", "/prefect/api/work_pools/training/workers/agent-1", Role.admin),
    ("POST", "/prefect/api/work_queues/", Role.admin),
    ("PATCH", f"/prefect/api/work_queues/{ID}", Role.admin),
    ("DELETE", f"/prefect/api/work_queues/{ID}", Role.admin),
]
# The UI library's calls that Prefect's open-source server does not have (Cloud's): refused
# to everyone, as Prefect itself would not find them.
PREFECT_UI_CLOUD_ONLY = [
    ("POST", f"/prefect/api/deployments/{ID}/enable"),
    ("POST", f"/prefect/api/deployments/{ID}/set_schedule_inactive"),
    ("POST", "/prefect/api/v2/concurrency_limits/bulk_increment"),
    ("POST", "/prefect/api/flow_run_notification_policies/"),
    ("PATCH", "/prefect/api/work_pools/training/queues/default/update_priority"),
]
# The MLflow UI's writes (mlflow/server/js/build: its `ajax-api/...` calls). All an admin's:
# the registry is what serving follows (moving `champion` changes what it predicts with).
MLFLOW_UI_WRITES = [
    ("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/create"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/delete"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/update"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/set-experiment-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/delete-experiment-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/create"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/create-promptlab-run"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/delete"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/restore"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/update"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/set-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/delete-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/log-metric"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/log-parameter"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/create"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/registered-models/delete"),
    ("PATCH", "/mlflow/ajax-api/2.0/mlflow/registered-models/update"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/set-tag"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/registered-models/delete-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/model-versions/create"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/model-versions/delete"),
    ("PATCH", "/mlflow/ajax-api/2.0/mlflow/model-versions/update"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/model-versions/set-tag"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/model-versions/delete-tag"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/model-versions/transition-stage"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/upload-artifact"),
    ("PUT", "/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/traces/delete-traces"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/traces/delete-traces"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/webhooks"),
    ("PATCH", "/mlflow/ajax-api/2.0/mlflow/webhooks/w1"),
    ("DELETE", "/mlflow/ajax-api/2.0/mlflow/webhooks/w1"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/datasets/create"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/scorers/register"),
    ("DELETE", "/mlflow/ajax-api/3.0/mlflow/scorers/delete"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/gateway/secrets/create"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/demo/generate"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/ui-telemetry"),
    # The same REST API for machines (the MLflow client): /mlflow/api/...
    ("POST", "/mlflow/api/2.0/mlflow/registered-models/alias"),
    ("POST", "/mlflow/api/2.0/mlflow/runs/log-batch"),
]
# What a viewer browsing both UIs sends.
VIEWER_READS = [
    ("GET", "/prefect/"),
    ("GET", "/prefect"),
    ("GET", "/prefect/runs/flow-run/" + ID),
    ("GET", "/prefect/assets/index-BD_kIOMy-DbSivZUD.js"),
    ("HEAD", "/prefect/ui-settings"),
    ("GET", f"/prefect/api/flow_runs/{ID}"),
    ("GET", f"/prefect/api/flow_runs/{ID}/graph-v2"),
    ("GET", "/prefect/api/events/out"),  # the UI's websocket
    ("GET", "/prefect/api/logs/out"),
    ("POST", "/prefect/api/flow_runs/filter"),
    ("POST", "/prefect/api/flow_runs/count"),
    ("POST", "/prefect/api/flow_runs/paginate"),
    ("POST", "/prefect/api/flow_runs/history"),
    ("POST", "/prefect/api/flow_runs/lateness"),
    ("POST", "/prefect/api/task_runs/filter"),
    ("POST", "/prefect/api/deployments/paginate"),
    ("POST", "/prefect/api/flows/filter"),
    ("POST", "/prefect/api/work_pools/filter"),
    ("POST", "/prefect/api/work_pools/training/workers/filter"),
    ("POST", "/prefect/api/work_pools/training/queues/filter"),
    ("POST", "/prefect/api/ui/flow_runs/history"),
    ("POST", "/prefect/api/ui/flows/next-runs"),
    ("POST", "/prefect/api/ui/task_runs/dashboard/counts"),
    ("POST", "/prefect/api/ui/schemas/validate"),
    ("POST", "/prefect/api/events/filter"),
    ("POST", "/prefect/api/events/count-by/time"),
    ("POST", "/prefect/api/logs/filter"),
    ("POST", "/prefect/api/artifacts/latest/filter"),
    ("POST", "/prefect/api/variables/filter"),
    ("POST", "/prefect/api/automations/filter"),
    ("GET", f"/prefect/api/block_documents/{ID}"),
    ("GET", "/mlflow/"),
    ("GET", "/mlflow/static-files/static/js/main.js"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=20"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/search"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/logged-models/search"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow/registered-models/search"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow/model-versions/search"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids=a"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl"),
    ("POST", "/mlflow/graphql"),
    ("GET", "/mlflow/get-artifact?path=a%2Fb.json&run_uuid=abc"),
    ("GET", "/mlflow/model-versions/get-artifact?path=MLmodel&name=m&version=1"),
    ("GET", "/api/runs"),
    ("GET", f"/api/runs/{ID}/logs"),
    ("GET", "/api/metrics"),
    ("GET", "/serving/models"),
]
OPEN = [
    "/api/healthz",
    "/api/readyz",
    "/serving/healthz",
    "/serving/readyz",
    "/prefect/api/health",
    "/mlflow/health",
]
UNKNOWN = [
    ("GET", "/"),
    ("GET", "/prefectx/api/flow_runs/" + ID),
    ("POST", "/prefect/"),
    ("POST", "/prefect/assets/x.js"),
    ("GET", "/prefect/api"),
    ("POST", "/prefect/api/flow_runs/filter/"),
    ("POST", "/prefect/api/flow_runs"),
    ("GET", "/prefect/api/no_such_thing"),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/users/create"),
    ("POST", "/mlflow/ajax-api/3.0/mlflow/roles/assign"),
    ("DELETE", "/mlflow/"),
    ("GET", "/api/door/check"),
    ("GET", "/api/nothing"),
    ("POST", "/serving/models"),
    ("GET", "/other/x"),
    ("BREW", "/prefect/"),
    ("get", "/prefect/"),
]


def role_of(method: str, uri: str) -> Role | None:
    return door_route(method, uri).role


@pytest.mark.parametrize(("method", "uri", "needs"), PREFECT_UI_WRITES)
def test_each_prefect_ui_write_needs_its_role(method: str, uri: str, needs: Role) -> None:
    route = door_route(method, uri)
    assert route.role == needs and route.audited
    assert route.role > Role.viewer  # a viewer is refused


@pytest.mark.parametrize(("method", "uri"), MLFLOW_UI_WRITES)
def test_each_mlflow_ui_write_is_an_admins(method: str, uri: str) -> None:
    route = door_route(method, uri)
    assert route.role is Role.admin and route.audited


@pytest.mark.parametrize(("method", "uri"), PREFECT_UI_CLOUD_ONLY + UNKNOWN)
def test_a_request_not_in_the_table_is_refused(method: str, uri: str) -> None:
    with pytest.raises(DoorRefusal):
        door_route(method, uri)


@pytest.mark.parametrize(("method", "uri"), VIEWER_READS)
def test_a_viewer_may_browse_both_uis(method: str, uri: str) -> None:
    route = door_route(method, uri)
    assert route.role is Role.viewer and not route.audited


@pytest.mark.parametrize("uri", OPEN)
def test_health_is_open_and_nothing_else_of_our_services(uri: str) -> None:
    assert door_route("GET", uri).role is None
    opened = set()
    for prefix, area in (("/api", "api"), ("/serving", "serving")):
        for method, path in DOOR[area]:
            try:
                if door_route(method, prefix + concrete(path)).role is None:
                    opened.add((method, prefix + path))
            except DoorRefusal:
                assert path == "/door/check"
    assert opened <= {("GET", uri) for uri in OPEN} | LOGIN


LOGIN = {("GET", "/api/login"), ("POST", "/api/login"), ("POST", "/api/logout")}


def test_secrets_are_an_admins() -> None:
    # The UI's menu needs the server's settings, whose secrets Prefect obfuscates.
    assert role_of("GET", "/prefect/api/admin/settings") is Role.viewer
    assert role_of("POST", "/prefect/api/block_documents/filter") is Role.admin
    for uri in (
        f"/prefect/api/block_documents/{ID}?include_secrets=true",
        f"/prefect/api/block_documents/{ID}?a=1&include%5Fsecrets=1",
        "/prefect/api/block_types/slug/aws/block_documents?include_secrets",
        "/prefect/api/block_types/slug/aws/block_documents/name/x?include_secrets=false",
    ):
        assert role_of("GET", uri) is Role.admin, uri
    assert role_of("GET", "/mlflow/ajax-api/3.0/mlflow/gateway/secrets/list") is Role.admin
    assert role_of("GET", "/mlflow/ajax-api/2.0/mlflow/gateway-proxy") is Role.admin


def test_the_audit_names_the_pattern_and_the_id() -> None:
    route = door_route("POST", f"/prefect/api/flow_runs/{ID}/set_state?x=1")
    assert route == DoorRoute(
        "prefect", "POST", "/prefect/api/flow_runs/{id}/set_state", Role.operator, ID
    )
    alias = door_route("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias")
    assert alias.route == "/mlflow/ajax-api/2.0/mlflow/registered-models/alias"
    assert alias.target is None
    queue = door_route("DELETE", "/prefect/api/work_pools/training/queues/default")
    assert queue.route == "/prefect/api/work_pools/{work_pool_name}/queues/{name}"
    assert queue.target == "training"


# -- the tables are the servers' own route lists ------------------------------------------

PREFECT_ROUTES = """
import json
from starlette.routing import Mount, WebSocketRoute
from prefect.server.api.server import create_app
app = create_app(ephemeral=True)
api = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/api").app
routes = {(m.upper(), p) for p, ops in api.openapi()["paths"].items() for m in ops}
# Websockets (GETs to the door) are not in the document. FastAPI 0.150 includes routers
# lazily: their routes are the included routers' "effective route contexts".
for route in api.router.routes:
    contexts = getattr(route, "effective_route_contexts", [route])
    for context in contexts() if callable(contexts) else contexts:
        if isinstance(getattr(context, "original_route", context), WebSocketRoute):
            routes.add(("GET", getattr(context, "original_route", context).path))
print(json.dumps(sorted(routes)))
"""
MLFLOW_ROUTES = """
import json, re
from mlflow.server import app
routes = set()
for rule in app.url_map.iter_rules():
    path = re.sub(r"<path:([^>]+)>", r"{\\1:path}", rule.rule)
    path = re.sub(r"<([^>]+)>", r"{\\1}", path)
    for method in rule.methods - {"HEAD", "OPTIONS"}:
        routes.add((method, path))
print(json.dumps(sorted(routes)))
"""


def server_routes(python: Path, script: str) -> set[tuple[str, str]]:
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    return {tuple(route) for route in json.loads(done.stdout.strip().splitlines()[-1])}  # type: ignore[misc]


def test_the_prefect_table_is_prefects_route_list() -> None:
    """A Prefect upgrade that adds a route fails here until the route is placed (it would be
    refused through the door meanwhile)."""
    routes = server_routes(Path(sys.executable), PREFECT_ROUTES)
    assert {(m, p.removeprefix("/api")) for m, p in routes} == set(DOOR["prefect"])


def test_the_mlflow_tables_are_mlflows_route_list() -> None:
    """MLflow's REST routes (under /api and /ajax-api, one table for both) and the rest."""
    python = ROOT / ".venv-mlflow" / "bin" / "python"
    assert python.exists(), "make venv creates .venv-mlflow (MLflow's own environment)"
    routes = server_routes(python, MLFLOW_ROUTES)
    rest = {
        (m, re.sub(r"^/(ajax-api|api)/", "/", p))
        for m, p in routes
        if re.match(r"^/(ajax-api|api)/\d\.\d/", p)
    }
    assert rest == set(DOOR["mlflow"])
    # MLflow's own typo (`/2.0mlflow/`, no slash) answers "not implemented": left out.
    other = {r for r in routes if not re.match(r"^/(ajax-api|api)/", r[1])}
    assert other == set(DOOR["mlflow-ui"])


def test_our_services_tables_are_their_route_tables() -> None:
    assert DOOR["api"] is ROUTES["api"] and DOOR["serving"] is ROUTES["serving"]


# -- properties: no spelling of a path gets past its check -------------------------------

READ_SUFFIX = re.compile(
    r"/(filter|count|paginate|history|lateness|validate|search|concurrency_status"
    r"|count-by/[^/]+|get-latest-versions|batchGetInfos|metrics"
    r"|calculate-filter-correlation|presigned-download-url|search-datasets"
    r"|next-runs|count-task-runs|count-deployments|counts|graphql)$"
)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


WRITES = sorted(
    (
        method,
        prefix + concrete(path),
        role,
    )
    for prefix, area in (
        ("/prefect/api", "prefect"),
        ("/mlflow/ajax-api", "mlflow"),
        ("/mlflow", "mlflow-ui"),
    )
    for (method, path), role in DOOR[area].items()
    if role is not None and role > Role.viewer
)
SEGMENTS = st.sampled_from(
    [
        "prefect", "api", "mlflow", "ajax-api", "2.0", "flow_runs", "deployments", "filter",
        "count", "search", "set_state", "create_flow_run", "runs", "registered-models",
        "alias", ID, "..", ".", "", "%2F", "%2f", "%2E%2E", "%2e", "%252F", "%5C", "\\",
        "ui", "serving", "door", "check", "health", "x", "%00", "%20",
    ]
)  # fmt: skip
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])


@given(METHODS, st.lists(SEGMENTS, min_size=1, max_size=8), st.text(max_size=20))
@example("POST", ["prefect", "api", "deployments", "filter", "create_flow_run"], "")
@example("POST", ["prefect", "api", "flow_runs", "filter", "..", ID, "set_state"], "")
@example("POST", ["prefect", "api", "flow_runs", ID, "set_state"], "/filter")
@example("POST", ["prefect", "api", "flow_runs%2Ffilter"], "")
def test_a_write_is_a_viewers_only_where_the_table_lists_a_read(
    method: str, segments: list[str], query: str
) -> None:
    """Whatever the path, a request that is not a GET or HEAD needs more than a viewer unless
    its (decoded) path ends in one of the read suffixes the table lists."""
    uri = "/" + "/".join(segments) + ("?" + quote(query) if query else "")
    try:
        route = door_route(method, uri)
    except DoorRefusal:
        return
    if method not in ("GET", "HEAD") and (route.role is None or route.role <= Role.viewer):
        path = uri.partition("?")[0]
        assert READ_SUFFIX.search(path), (method, uri, route)


@given(METHODS, st.lists(SEGMENTS, min_size=1, max_size=8))
def test_a_path_that_is_not_canonical_is_refused(method: str, segments: list[str]) -> None:
    uri = "/" + "/".join(segments)
    tricky = (
        any(s in ("..", ".", "") for s in segments[:-1])
        or segments[-1] in ("..", ".")
        or re.search(r"%(2f|2e|25|5c|00)|\\", uri, re.IGNORECASE)
    )
    if tricky:
        with pytest.raises(DoorRefusal):
            door_route(method, uri)


@given(st.sampled_from(WRITES), st.text(max_size=30), st.sampled_from(["", "/", "%2F", "?"]))
def test_a_query_or_suffix_never_lowers_a_writes_role(
    write: tuple[str, str, Role], junk: str, joint: str
) -> None:
    """A query string (whatever it holds: `/filter`, `..`) keeps the route and its role. A
    read suffix after a write's path makes another path: refused, or a read the table
    lists by that very suffix (`/work_pools/x/queues` + `/filter`), never the write."""
    method, path, role = write
    plain = door_route(method, path)
    with_query = door_route(method, f"{path}?{quote(junk, safe='/.=&')}")
    assert (with_query.route, with_query.role) == (plain.route, role)
    for suffix in ("/filter", "/count", "/search", "/history"):
        try:
            other = door_route(method, f"{path}{joint}{suffix}")
        except DoorRefusal:
            continue
        if joint == "?":
            assert (other.route, other.role) == (plain.route, role)
        elif other.role is None or other.role <= Role.viewer:
            assert other.route.endswith(suffix) and other.route != plain.route, other


@given(st.sampled_from(WRITES))
def test_the_same_write_through_another_spelling_is_refused(write: tuple[str, str, Role]) -> None:
    method, path, _ = write
    head, _, tail = path.rpartition("/")
    for spelling in (
        f"{head}//{tail}",
        f"{head}/./{tail}",
        f"{head}/x/../{tail}",
        f"{head}%2F{tail}",
        f"{head}/%2e/{tail}",
        f"/prefect/api/flow_runs/filter/../..{path}",
        f"{path}\\",
    ):
        with pytest.raises(DoorRefusal):
            door_route(method, spelling)
