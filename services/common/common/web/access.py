"""Which role each route needs: one table for the API and serving (read by the route guard
of each service), and one for every path behind the front door (read by the door's
authority, `GET /door/check`, for each request nginx lets through). Tests check that the
API's and serving's tables equal their OpenAPI documents, and that the door's tables for
Prefect and MLflow equal those servers' own route lists.

`None`: open to anyone (health, metrics; login). A read that needs `viewer` needs no key at
all when API_READS_REQUIRE_KEY=false (our API only: the door always wants credentials). A
route missing from the table is refused (403): a new route has to be placed here before
anyone can call it.
"""

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from fastapi import Request

from common.web.auth import Auth, Caller, Credentials, Role
from common.web.problems import Problem

Route = tuple[str, str]  # method, path template

ROUTES: dict[str, dict[Route, Role | None]] = {
    "api": {
        ("GET", "/runs"): Role.viewer,
        ("GET", "/runs/{run_id}"): Role.viewer,
        ("GET", "/runs/{run_id}/logs"): Role.viewer,
        ("GET", "/runs/{run_id}/events"): Role.viewer,
        ("GET", "/flows"): Role.viewer,
        ("POST", "/webhooks"): Role.operator,
        ("GET", "/webhooks"): Role.operator,
        ("DELETE", "/webhooks/{webhook_id}"): Role.operator,
        ("GET", "/webhooks/{webhook_id}/deliveries"): Role.operator,
        ("POST", "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): Role.operator,
        ("POST", "/runs"): Role.operator,
        ("POST", "/runs/{run_id}/cancel"): Role.operator,
        ("POST", "/runs/{run_id}/retry"): Role.operator,
        ("POST", "/backfills"): Role.operator,
        ("GET", "/backfills"): Role.viewer,
        ("GET", "/backfills/{backfill_id}"): Role.viewer,
        ("POST", "/backfills/{backfill_id}/cancel"): Role.operator,
        ("POST", "/keys"): Role.admin,
        ("GET", "/keys"): Role.admin,
        ("POST", "/keys/{key_id}/rotate"): Role.admin,
        ("DELETE", "/keys/{key_id}"): Role.admin,
        ("GET", "/audit"): Role.admin,
        ("POST", "/users"): Role.admin,
        ("GET", "/users"): Role.admin,
        ("PATCH", "/users/{user_id}"): Role.admin,
        ("DELETE", "/users/{user_id}"): Role.admin,
        ("GET", "/sessions"): Role.admin,
        ("DELETE", "/sessions/{session_id}"): Role.admin,
        # Open: logging in is how a person gets credentials; logging out ends the session
        # its cookie names, if any.
        ("GET", "/login"): None,
        ("POST", "/login"): None,
        ("POST", "/logout"): None,
        # Open: nginx asks it about each request's own credentials; not reachable through
        # the door itself (DOOR_INTERNAL).
        ("GET", "/door/check"): None,
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/metrics"): None,
    },
    "serving": {
        ("GET", "/models"): Role.viewer,
        ("POST", "/predict"): Role.operator,
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/metrics"): None,
    },
}


# -- the front door ------------------------------------------------------------------------
# What each request through the door needs, by area (a public path prefix, AREAS). Reads are
# viewer's: GET (and HEAD), and the POSTs that only read (Prefect's `.../filter`, `.../count`,
# `.../paginate`, `.../history`, `/ui/...`; MLflow's `.../search`). An operator may do what
# operators do through the Prefect UI: set a flow run's state (cancel, retry), resume it.
# Creating a flow run from a deployment is an admin's: its body may carry `job_variables`,
# which on a process pool replace the command an agent runs, and the door does not see
# bodies; operators trigger through our API (`POST /api/runs`), which takes parameters only.
# Every other write is an admin's. Prefect's server settings are a viewer's: the UI reads them
# to draw its menu, and Prefect obfuscates every secret in them (the database URL among
# them). A few reads are an admin's, because they can show secrets: the block
# documents' filter (its body may ask for secret values, and the door does not see bodies;
# a GET asking `include_secrets` is an admin's too, see SECRET_QUERY), MLflow's gateway
# secrets and its gateway proxy. Websockets are GETs (events/out and logs/out are reads;
# events/in, task run subscriptions and worker connections are not: only our own services
# use them, inside the network).
DOOR: dict[str, dict[Route, Role | None]] = {
    # Prefect's REST API, as Prefect names its routes (public: /prefect/api/...).
    "prefect": {
        ("GET", "/admin/settings"): Role.viewer,
        ("DELETE", "/admin/storage"): Role.admin,
        ("GET", "/admin/storage"): Role.viewer,
        ("PUT", "/admin/storage"): Role.admin,
        ("GET", "/admin/version"): Role.viewer,
        ("POST", "/artifacts/"): Role.admin,
        ("POST", "/artifacts/count"): Role.viewer,
        ("POST", "/artifacts/filter"): Role.viewer,
        ("POST", "/artifacts/latest/count"): Role.viewer,
        ("POST", "/artifacts/latest/filter"): Role.viewer,
        ("DELETE", "/artifacts/{id}"): Role.admin,
        ("GET", "/artifacts/{id}"): Role.viewer,
        ("PATCH", "/artifacts/{id}"): Role.admin,
        ("GET", "/artifacts/{key}/latest"): Role.viewer,
        ("POST", "/automations/"): Role.admin,
        ("POST", "/automations/count"): Role.viewer,
        ("POST", "/automations/filter"): Role.viewer,
        ("DELETE", "/automations/owned-by/{resource_id}"): Role.admin,
        ("GET", "/automations/related-to/{resource_id}"): Role.viewer,
        ("POST", "/automations/templates/validate"): Role.viewer,
        ("DELETE", "/automations/{id}"): Role.admin,
        ("GET", "/automations/{id}"): Role.viewer,
        ("PATCH", "/automations/{id}"): Role.admin,
        ("PUT", "/automations/{id}"): Role.admin,
        ("GET", "/block_capabilities/"): Role.viewer,
        ("POST", "/block_documents/"): Role.admin,
        ("POST", "/block_documents/count"): Role.viewer,
        ("POST", "/block_documents/filter"): Role.admin,
        ("DELETE", "/block_documents/{id}"): Role.admin,
        ("GET", "/block_documents/{id}"): Role.viewer,
        ("PATCH", "/block_documents/{id}"): Role.admin,
        ("POST", "/block_schemas/"): Role.admin,
        ("GET", "/block_schemas/checksum/{checksum}"): Role.viewer,
        ("POST", "/block_schemas/filter"): Role.viewer,
        ("DELETE", "/block_schemas/{id}"): Role.admin,
        ("GET", "/block_schemas/{id}"): Role.viewer,
        ("POST", "/block_types/"): Role.admin,
        ("POST", "/block_types/filter"): Role.viewer,
        ("POST", "/block_types/install_system_block_types"): Role.admin,
        ("GET", "/block_types/slug/{slug}"): Role.viewer,
        ("GET", "/block_types/slug/{slug}/block_documents"): Role.viewer,
        ("GET", "/block_types/slug/{slug}/block_documents/name/{block_document_name}"): Role.viewer,
        ("DELETE", "/block_types/{id}"): Role.admin,
        ("GET", "/block_types/{id}"): Role.viewer,
        ("PATCH", "/block_types/{id}"): Role.admin,
        ("GET", "/collections/views/{view}"): Role.viewer,
        ("POST", "/concurrency_limits/"): Role.admin,
        ("POST", "/concurrency_limits/decrement"): Role.admin,
        ("POST", "/concurrency_limits/filter"): Role.viewer,
        ("POST", "/concurrency_limits/increment"): Role.admin,
        ("DELETE", "/concurrency_limits/tag/{tag}"): Role.admin,
        ("GET", "/concurrency_limits/tag/{tag}"): Role.viewer,
        ("POST", "/concurrency_limits/tag/{tag}/reset"): Role.admin,
        ("DELETE", "/concurrency_limits/{id}"): Role.admin,
        ("GET", "/concurrency_limits/{id}"): Role.viewer,
        ("GET", "/csrf-token"): Role.viewer,
        ("POST", "/deployments/"): Role.admin,
        ("POST", "/deployments/bulk_delete"): Role.admin,
        ("POST", "/deployments/count"): Role.viewer,
        ("POST", "/deployments/filter"): Role.viewer,
        ("POST", "/deployments/get_scheduled_flow_runs"): Role.admin,
        ("GET", "/deployments/name/{flow_name}/{deployment_name}"): Role.viewer,
        ("POST", "/deployments/paginate"): Role.viewer,
        ("DELETE", "/deployments/{id}"): Role.admin,
        ("GET", "/deployments/{id}"): Role.viewer,
        ("PATCH", "/deployments/{id}"): Role.admin,
        ("POST", "/deployments/{id}/create_flow_run"): Role.admin,
        ("POST", "/deployments/{id}/create_flow_run/bulk"): Role.admin,
        ("POST", "/deployments/{id}/pause_deployment"): Role.admin,
        ("POST", "/deployments/{id}/resume_deployment"): Role.admin,
        ("POST", "/deployments/{id}/schedule"): Role.admin,
        ("GET", "/deployments/{id}/schedules"): Role.viewer,
        ("POST", "/deployments/{id}/schedules"): Role.admin,
        ("DELETE", "/deployments/{id}/schedules/{schedule_id}"): Role.admin,
        ("PATCH", "/deployments/{id}/schedules/{schedule_id}"): Role.admin,
        ("GET", "/deployments/{id}/work_queue_check"): Role.viewer,
        ("POST", "/events"): Role.admin,
        ("POST", "/events/count-by/{countable}"): Role.viewer,
        ("POST", "/events/filter"): Role.viewer,
        ("GET", "/events/filter/next"): Role.viewer,
        ("GET", "/events/in"): Role.admin,
        ("GET", "/events/out"): Role.viewer,
        ("GET", "/flow_run_states/"): Role.viewer,
        ("GET", "/flow_run_states/{id}"): Role.viewer,
        ("POST", "/flow_runs/"): Role.admin,
        ("POST", "/flow_runs/bulk_delete"): Role.admin,
        ("POST", "/flow_runs/bulk_set_state"): Role.admin,
        ("POST", "/flow_runs/count"): Role.viewer,
        ("POST", "/flow_runs/filter"): Role.viewer,
        ("POST", "/flow_runs/history"): Role.viewer,
        ("POST", "/flow_runs/lateness"): Role.viewer,
        ("POST", "/flow_runs/paginate"): Role.viewer,
        ("DELETE", "/flow_runs/{id}"): Role.admin,
        ("GET", "/flow_runs/{id}"): Role.viewer,
        ("PATCH", "/flow_runs/{id}"): Role.admin,
        ("GET", "/flow_runs/{id}/graph"): Role.viewer,
        ("GET", "/flow_runs/{id}/graph-v2"): Role.viewer,
        ("POST", "/flow_runs/{id}/input"): Role.admin,
        ("POST", "/flow_runs/{id}/input/filter"): Role.viewer,
        ("DELETE", "/flow_runs/{id}/input/{key}"): Role.admin,
        ("GET", "/flow_runs/{id}/input/{key}"): Role.viewer,
        ("PATCH", "/flow_runs/{id}/labels"): Role.admin,
        ("GET", "/flow_runs/{id}/logs/download"): Role.viewer,
        ("POST", "/flow_runs/{id}/resume"): Role.operator,
        ("POST", "/flow_runs/{id}/set_state"): Role.operator,
        ("POST", "/flows/"): Role.admin,
        ("POST", "/flows/bulk_delete"): Role.admin,
        ("POST", "/flows/count"): Role.viewer,
        ("POST", "/flows/filter"): Role.viewer,
        ("GET", "/flows/name/{name}"): Role.viewer,
        ("POST", "/flows/paginate"): Role.viewer,
        ("DELETE", "/flows/{id}"): Role.admin,
        ("GET", "/flows/{id}"): Role.viewer,
        ("PATCH", "/flows/{id}"): Role.admin,
        ("GET", "/health"): None,
        ("GET", "/hello"): Role.viewer,
        ("POST", "/logs/"): Role.admin,
        ("POST", "/logs/filter"): Role.viewer,
        ("GET", "/logs/out"): Role.viewer,
        ("GET", "/ready"): Role.viewer,
        ("PUT", "/saved_searches/"): Role.admin,
        ("POST", "/saved_searches/filter"): Role.viewer,
        ("DELETE", "/saved_searches/{id}"): Role.admin,
        ("GET", "/saved_searches/{id}"): Role.viewer,
        ("GET", "/task_run_states/"): Role.viewer,
        ("GET", "/task_run_states/{id}"): Role.viewer,
        ("POST", "/task_runs/"): Role.admin,
        ("POST", "/task_runs/count"): Role.viewer,
        ("POST", "/task_runs/filter"): Role.viewer,
        ("POST", "/task_runs/history"): Role.viewer,
        ("POST", "/task_runs/paginate"): Role.viewer,
        ("GET", "/task_runs/subscriptions/scheduled"): Role.admin,
        ("DELETE", "/task_runs/{id}"): Role.admin,
        ("GET", "/task_runs/{id}"): Role.viewer,
        ("PATCH", "/task_runs/{id}"): Role.admin,
        ("POST", "/task_runs/{id}/set_state"): Role.admin,
        ("POST", "/task_workers/filter"): Role.viewer,
        ("POST", "/templates/validate"): Role.viewer,
        ("POST", "/ui/flow_runs/count-task-runs"): Role.viewer,
        ("POST", "/ui/flow_runs/history"): Role.viewer,
        ("POST", "/ui/flows/count-deployments"): Role.viewer,
        ("POST", "/ui/flows/next-runs"): Role.viewer,
        ("POST", "/ui/schemas/validate"): Role.viewer,
        ("POST", "/ui/task_runs/count"): Role.viewer,
        ("POST", "/ui/task_runs/dashboard/counts"): Role.viewer,
        ("GET", "/ui/task_runs/{id}"): Role.viewer,
        ("POST", "/v2/concurrency_limits/"): Role.admin,
        ("POST", "/v2/concurrency_limits/decrement"): Role.admin,
        ("POST", "/v2/concurrency_limits/decrement-with-lease"): Role.admin,
        ("POST", "/v2/concurrency_limits/filter"): Role.viewer,
        ("POST", "/v2/concurrency_limits/increment"): Role.admin,
        ("POST", "/v2/concurrency_limits/increment-with-lease"): Role.admin,
        ("POST", "/v2/concurrency_limits/leases/{lease_id}/renew"): Role.admin,
        ("DELETE", "/v2/concurrency_limits/{id_or_name}"): Role.admin,
        ("GET", "/v2/concurrency_limits/{id_or_name}"): Role.viewer,
        ("PATCH", "/v2/concurrency_limits/{id_or_name}"): Role.admin,
        ("POST", "/variables/"): Role.admin,
        ("POST", "/variables/count"): Role.viewer,
        ("POST", "/variables/filter"): Role.viewer,
        ("DELETE", "/variables/name/{name}"): Role.admin,
        ("GET", "/variables/name/{name}"): Role.viewer,
        ("PATCH", "/variables/name/{name}"): Role.admin,
        ("DELETE", "/variables/{id}"): Role.admin,
        ("GET", "/variables/{id}"): Role.viewer,
        ("PATCH", "/variables/{id}"): Role.admin,
        ("GET", "/version"): Role.viewer,
        ("POST", "/work_pools/"): Role.admin,
        ("POST", "/work_pools/count"): Role.viewer,
        ("POST", "/work_pools/filter"): Role.viewer,
        ("DELETE", "/work_pools/{name}"): Role.admin,
        ("GET", "/work_pools/{name}"): Role.viewer,
        ("PATCH", "/work_pools/{name}"): Role.admin,
        ("POST", "/work_pools/{name}/concurrency_status"): Role.viewer,
        ("POST", "/work_pools/{name}/get_scheduled_flow_runs"): Role.admin,
        ("POST", "/work_pools/{work_pool_name}/queues"): Role.admin,
        ("POST", "/work_pools/{work_pool_name}/queues/filter"): Role.viewer,
        ("DELETE", "/work_pools/{work_pool_name}/queues/{name}"): Role.admin,
        ("GET", "/work_pools/{work_pool_name}/queues/{name}"): Role.viewer,
        ("PATCH", "/work_pools/{work_pool_name}/queues/{name}"): Role.admin,
        ("GET", "/work_pools/{work_pool_name}/workers/connect"): Role.admin,
        ("POST", "/work_pools/{work_pool_name}/workers/filter"): Role.viewer,
        ("POST", "/work_pools/{work_pool_name}/workers/heartbeat"): Role.admin,
        ("DELETE", "/work_pools/{work_pool_name}/workers/{name}"): Role.admin,
        ("POST", "/work_queues/"): Role.admin,
        ("POST", "/work_queues/filter"): Role.viewer,
        ("GET", "/work_queues/name/{name}"): Role.viewer,
        ("DELETE", "/work_queues/{id}"): Role.admin,
        ("GET", "/work_queues/{id}"): Role.viewer,
        ("PATCH", "/work_queues/{id}"): Role.admin,
        ("POST", "/work_queues/{id}/concurrency_status"): Role.viewer,
        ("POST", "/work_queues/{id}/get_runs"): Role.admin,
        ("GET", "/work_queues/{id}/status"): Role.viewer,
    },
    # The Prefect UI's pages and assets (public: /prefect/...; a single-page app).
    "prefect-ui": {
        ("GET", "/{path:path}"): Role.viewer,
    },
    # MLflow's REST API (public: /mlflow/api/... and /mlflow/ajax-api/..., the UI's copy).
    "mlflow": {
        ("GET", "/2.0/mlflow-artifacts/artifacts"): Role.viewer,
        ("DELETE", "/2.0/mlflow-artifacts/artifacts/{artifact_path:path}"): Role.admin,
        ("GET", "/2.0/mlflow-artifacts/artifacts/{artifact_path:path}"): Role.viewer,
        ("PUT", "/2.0/mlflow-artifacts/artifacts/{artifact_path:path}"): Role.admin,
        ("POST", "/2.0/mlflow-artifacts/mpu/abort/{artifact_path:path}"): Role.admin,
        ("POST", "/2.0/mlflow-artifacts/mpu/complete/{artifact_path:path}"): Role.admin,
        ("POST", "/2.0/mlflow-artifacts/mpu/create/{artifact_path:path}"): Role.admin,
        ("GET", "/2.0/mlflow-artifacts/presigned/{artifact_path:path}"): Role.viewer,
        ("GET", "/2.0/mlflow/artifacts/list"): Role.viewer,
        ("POST", "/2.0/mlflow/artifacts/presigned-download-url"): Role.viewer,
        ("POST", "/2.0/mlflow/artifacts/presigned-upload-url"): Role.admin,
        ("POST", "/2.0/mlflow/experiments/create"): Role.admin,
        ("POST", "/2.0/mlflow/experiments/delete"): Role.admin,
        ("POST", "/2.0/mlflow/experiments/delete-experiment-tag"): Role.admin,
        ("GET", "/2.0/mlflow/experiments/get"): Role.viewer,
        ("GET", "/2.0/mlflow/experiments/get-by-name"): Role.viewer,
        ("POST", "/2.0/mlflow/experiments/restore"): Role.admin,
        ("GET", "/2.0/mlflow/experiments/search"): Role.viewer,
        ("POST", "/2.0/mlflow/experiments/search"): Role.viewer,
        ("POST", "/2.0/mlflow/experiments/search-datasets"): Role.viewer,
        ("POST", "/2.0/mlflow/experiments/set-experiment-tag"): Role.admin,
        ("POST", "/2.0/mlflow/experiments/update"): Role.admin,
        ("GET", "/2.0/mlflow/gateway-proxy"): Role.admin,
        ("POST", "/2.0/mlflow/gateway-proxy"): Role.admin,
        ("GET", "/2.0/mlflow/get-online-trace-details"): Role.viewer,
        ("GET", "/2.0/mlflow/get-trace-artifact"): Role.viewer,
        ("POST", "/2.0/mlflow/logged-models"): Role.admin,
        ("POST", "/2.0/mlflow/logged-models/search"): Role.viewer,
        ("DELETE", "/2.0/mlflow/logged-models/{model_id}"): Role.admin,
        ("GET", "/2.0/mlflow/logged-models/{model_id}"): Role.viewer,
        ("PATCH", "/2.0/mlflow/logged-models/{model_id}"): Role.admin,
        ("GET", "/2.0/mlflow/logged-models/{model_id}/artifacts/directories"): Role.viewer,
        ("GET", "/2.0/mlflow/logged-models/{model_id}/artifacts/files"): Role.viewer,
        ("POST", "/2.0/mlflow/logged-models/{model_id}/params"): Role.admin,
        ("PATCH", "/2.0/mlflow/logged-models/{model_id}/tags"): Role.admin,
        ("DELETE", "/2.0/mlflow/logged-models/{model_id}/tags/{tag_key}"): Role.admin,
        ("GET", "/2.0/mlflow/metrics/get-history"): Role.viewer,
        ("GET", "/2.0/mlflow/metrics/get-history-bulk"): Role.viewer,
        ("GET", "/2.0/mlflow/metrics/get-history-bulk-interval"): Role.viewer,
        ("POST", "/2.0/mlflow/model-versions/create"): Role.admin,
        ("DELETE", "/2.0/mlflow/model-versions/delete"): Role.admin,
        ("DELETE", "/2.0/mlflow/model-versions/delete-tag"): Role.admin,
        ("GET", "/2.0/mlflow/model-versions/get"): Role.viewer,
        ("GET", "/2.0/mlflow/model-versions/get-download-uri"): Role.viewer,
        ("GET", "/2.0/mlflow/model-versions/search"): Role.viewer,
        ("POST", "/2.0/mlflow/model-versions/set-tag"): Role.admin,
        ("POST", "/2.0/mlflow/model-versions/transition-stage"): Role.admin,
        ("PATCH", "/2.0/mlflow/model-versions/update"): Role.admin,
        ("DELETE", "/2.0/mlflow/registered-models/alias"): Role.admin,
        ("GET", "/2.0/mlflow/registered-models/alias"): Role.viewer,
        ("POST", "/2.0/mlflow/registered-models/alias"): Role.admin,
        ("POST", "/2.0/mlflow/registered-models/create"): Role.admin,
        ("DELETE", "/2.0/mlflow/registered-models/delete"): Role.admin,
        ("DELETE", "/2.0/mlflow/registered-models/delete-tag"): Role.admin,
        ("GET", "/2.0/mlflow/registered-models/get"): Role.viewer,
        ("GET", "/2.0/mlflow/registered-models/get-latest-versions"): Role.viewer,
        ("POST", "/2.0/mlflow/registered-models/get-latest-versions"): Role.viewer,
        ("POST", "/2.0/mlflow/registered-models/rename"): Role.admin,
        ("GET", "/2.0/mlflow/registered-models/search"): Role.viewer,
        ("POST", "/2.0/mlflow/registered-models/set-tag"): Role.admin,
        ("PATCH", "/2.0/mlflow/registered-models/update"): Role.admin,
        ("POST", "/2.0/mlflow/runs/create"): Role.admin,
        ("POST", "/2.0/mlflow/runs/create-promptlab-run"): Role.admin,
        ("POST", "/2.0/mlflow/runs/delete"): Role.admin,
        ("POST", "/2.0/mlflow/runs/delete-tag"): Role.admin,
        ("GET", "/2.0/mlflow/runs/get"): Role.viewer,
        ("POST", "/2.0/mlflow/runs/log-batch"): Role.admin,
        ("POST", "/2.0/mlflow/runs/log-inputs"): Role.admin,
        ("POST", "/2.0/mlflow/runs/log-metric"): Role.admin,
        ("POST", "/2.0/mlflow/runs/log-model"): Role.admin,
        ("POST", "/2.0/mlflow/runs/log-parameter"): Role.admin,
        ("POST", "/2.0/mlflow/runs/outputs"): Role.admin,
        ("POST", "/2.0/mlflow/runs/restore"): Role.admin,
        ("POST", "/2.0/mlflow/runs/search"): Role.viewer,
        ("POST", "/2.0/mlflow/runs/set-tag"): Role.admin,
        ("POST", "/2.0/mlflow/runs/update"): Role.admin,
        ("GET", "/2.0/mlflow/traces"): Role.viewer,
        ("POST", "/2.0/mlflow/traces"): Role.admin,
        ("POST", "/2.0/mlflow/traces/delete-traces"): Role.admin,
        ("POST", "/2.0/mlflow/traces/link-prompts"): Role.admin,
        ("POST", "/2.0/mlflow/traces/link-to-run"): Role.admin,
        ("PATCH", "/2.0/mlflow/traces/{request_id}"): Role.admin,
        ("GET", "/2.0/mlflow/traces/{request_id}/info"): Role.viewer,
        ("DELETE", "/2.0/mlflow/traces/{request_id}/tags"): Role.admin,
        ("PATCH", "/2.0/mlflow/traces/{request_id}/tags"): Role.admin,
        ("GET", "/2.0/mlflow/unified-traces"): Role.viewer,
        ("POST", "/2.0/mlflow/upload-artifact"): Role.admin,
        ("GET", "/2.0/mlflow/webhooks"): Role.viewer,
        ("POST", "/2.0/mlflow/webhooks"): Role.admin,
        ("DELETE", "/2.0/mlflow/webhooks/{webhook_id}"): Role.admin,
        ("GET", "/2.0/mlflow/webhooks/{webhook_id}"): Role.viewer,
        ("PATCH", "/2.0/mlflow/webhooks/{webhook_id}"): Role.admin,
        ("POST", "/2.0/mlflow/webhooks/{webhook_id}/test"): Role.admin,
        ("POST", "/3.0/mlflow/datasets/create"): Role.admin,
        ("GET", "/3.0/mlflow/datasets/search"): Role.viewer,
        ("POST", "/3.0/mlflow/datasets/search"): Role.viewer,
        ("DELETE", "/3.0/mlflow/datasets/{dataset_id}"): Role.admin,
        ("GET", "/3.0/mlflow/datasets/{dataset_id}"): Role.viewer,
        ("POST", "/3.0/mlflow/datasets/{dataset_id}/add-experiments"): Role.admin,
        ("GET", "/3.0/mlflow/datasets/{dataset_id}/experiment-ids"): Role.viewer,
        ("DELETE", "/3.0/mlflow/datasets/{dataset_id}/records"): Role.admin,
        ("GET", "/3.0/mlflow/datasets/{dataset_id}/records"): Role.viewer,
        ("POST", "/3.0/mlflow/datasets/{dataset_id}/records"): Role.admin,
        ("POST", "/3.0/mlflow/datasets/{dataset_id}/remove-experiments"): Role.admin,
        ("PATCH", "/3.0/mlflow/datasets/{dataset_id}/tags"): Role.admin,
        ("DELETE", "/3.0/mlflow/datasets/{dataset_id}/tags/{key}"): Role.admin,
        ("POST", "/3.0/mlflow/demo/delete"): Role.admin,
        ("POST", "/3.0/mlflow/demo/generate"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/budgets/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/budgets/delete"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/budgets/get"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/budgets/list"): Role.viewer,
        ("POST", "/3.0/mlflow/gateway/budgets/update"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/budgets/windows"): Role.viewer,
        ("POST", "/3.0/mlflow/gateway/endpoints/bindings/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/endpoints/bindings/delete"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/endpoints/bindings/list"): Role.viewer,
        ("POST", "/3.0/mlflow/gateway/endpoints/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/endpoints/delete"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/endpoints/delete-tag"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/endpoints/get"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/endpoints/list"): Role.viewer,
        ("POST", "/3.0/mlflow/gateway/endpoints/models/attach"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/endpoints/models/detach"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/endpoints/set-tag"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/endpoints/update"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/guardrails/add-to-endpoint"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/guardrails/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/guardrails/delete"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/guardrails/get"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/guardrails/list"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/guardrails/list-for-endpoint"): Role.viewer,
        ("DELETE", "/3.0/mlflow/gateway/guardrails/remove-from-endpoint"): Role.admin,
        ("PATCH", "/3.0/mlflow/gateway/guardrails/update-config"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/model-definitions/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/model-definitions/delete"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/model-definitions/get"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/model-definitions/list"): Role.viewer,
        ("POST", "/3.0/mlflow/gateway/model-definitions/update"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/provider-config"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/secrets/config"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/secrets/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/gateway/secrets/delete"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/secrets/get"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/secrets/list"): Role.admin,
        ("POST", "/3.0/mlflow/gateway/secrets/update"): Role.admin,
        ("GET", "/3.0/mlflow/gateway/supported-models"): Role.viewer,
        ("GET", "/3.0/mlflow/gateway/supported-providers"): Role.viewer,
        ("POST", "/3.0/mlflow/genai/evaluate/invoke"): Role.admin,
        ("GET", "/3.0/mlflow/get-trace-artifact"): Role.viewer,
        ("POST", "/3.0/mlflow/issues"): Role.admin,
        ("POST", "/3.0/mlflow/issues/invoke"): Role.admin,
        ("POST", "/3.0/mlflow/issues/search"): Role.viewer,
        ("GET", "/3.0/mlflow/issues/{issue_id}"): Role.viewer,
        ("PATCH", "/3.0/mlflow/issues/{issue_id}"): Role.admin,
        ("PATCH", "/3.0/mlflow/jobs/cancel/{job_id}"): Role.admin,
        ("GET", "/3.0/mlflow/jobs/{job_id}"): Role.viewer,
        ("POST", "/3.0/mlflow/label-schemas/create"): Role.admin,
        ("DELETE", "/3.0/mlflow/label-schemas/delete"): Role.admin,
        ("GET", "/3.0/mlflow/label-schemas/get"): Role.viewer,
        ("GET", "/3.0/mlflow/label-schemas/get-by-name"): Role.viewer,
        ("GET", "/3.0/mlflow/label-schemas/list"): Role.viewer,
        ("PATCH", "/3.0/mlflow/label-schemas/update"): Role.admin,
        ("POST", "/3.0/mlflow/prompt-optimization/jobs"): Role.admin,
        ("GET", "/3.0/mlflow/prompt-optimization/jobs/search"): Role.viewer,
        ("POST", "/3.0/mlflow/prompt-optimization/jobs/search"): Role.viewer,
        ("DELETE", "/3.0/mlflow/prompt-optimization/jobs/{job_id}"): Role.admin,
        ("GET", "/3.0/mlflow/prompt-optimization/jobs/{job_id}"): Role.viewer,
        ("POST", "/3.0/mlflow/prompt-optimization/jobs/{job_id}/cancel"): Role.admin,
        ("POST", "/3.0/mlflow/review-queues/create"): Role.admin,
        ("POST", "/3.0/mlflow/review-queues/delete"): Role.admin,
        ("GET", "/3.0/mlflow/review-queues/get"): Role.viewer,
        ("GET", "/3.0/mlflow/review-queues/get-by-name"): Role.viewer,
        ("POST", "/3.0/mlflow/review-queues/get-or-create-user"): Role.admin,
        ("POST", "/3.0/mlflow/review-queues/items/add"): Role.admin,
        ("GET", "/3.0/mlflow/review-queues/items/list"): Role.viewer,
        ("POST", "/3.0/mlflow/review-queues/items/remove"): Role.admin,
        ("POST", "/3.0/mlflow/review-queues/items/set-status"): Role.admin,
        ("GET", "/3.0/mlflow/review-queues/list"): Role.viewer,
        ("POST", "/3.0/mlflow/review-queues/update"): Role.admin,
        ("POST", "/3.0/mlflow/scorer/invoke"): Role.admin,
        ("DELETE", "/3.0/mlflow/scorers/delete"): Role.admin,
        ("GET", "/3.0/mlflow/scorers/get"): Role.viewer,
        ("GET", "/3.0/mlflow/scorers/list"): Role.viewer,
        ("PUT", "/3.0/mlflow/scorers/online-config"): Role.admin,
        ("GET", "/3.0/mlflow/scorers/online-configs"): Role.viewer,
        ("POST", "/3.0/mlflow/scorers/register"): Role.admin,
        ("GET", "/3.0/mlflow/scorers/versions"): Role.viewer,
        ("GET", "/3.0/mlflow/server-info"): Role.viewer,
        ("POST", "/3.0/mlflow/traces"): Role.admin,
        ("GET", "/3.0/mlflow/traces/batchGet"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/batchGetInfos"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/calculate-filter-correlation"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/delete-traces"): Role.admin,
        ("GET", "/3.0/mlflow/traces/get"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/metrics"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/search"): Role.viewer,
        ("GET", "/3.0/mlflow/traces/{trace_id}"): Role.viewer,
        ("POST", "/3.0/mlflow/traces/{trace_id}/assessments"): Role.admin,
        ("DELETE", "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}"): Role.admin,
        ("GET", "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}"): Role.viewer,
        ("PATCH", "/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}"): Role.admin,
        ("DELETE", "/3.0/mlflow/traces/{trace_id}/tags"): Role.admin,
        ("PATCH", "/3.0/mlflow/traces/{trace_id}/tags"): Role.admin,
        ("GET", "/3.0/mlflow/ui-telemetry"): Role.viewer,
        ("POST", "/3.0/mlflow/ui-telemetry"): Role.admin,
        ("GET", "/3.0/mlflow/workspaces"): Role.viewer,
        ("POST", "/3.0/mlflow/workspaces"): Role.admin,
        ("DELETE", "/3.0/mlflow/workspaces/{workspace_name}"): Role.admin,
        ("GET", "/3.0/mlflow/workspaces/{workspace_name}"): Role.viewer,
        ("PATCH", "/3.0/mlflow/workspaces/{workspace_name}"): Role.admin,
    },
    # MLflow's UI, its assets, GraphQL (only searches: its "mutations" are reads too) and
    # artifact downloads (public: /mlflow/...).
    "mlflow-ui": {
        ("GET", "/"): Role.viewer,
        ("GET", "/static-files/{path:path}"): Role.viewer,
        ("GET", "/build/{filename:path}"): Role.viewer,
        ("GET", "/graphql"): Role.viewer,
        ("POST", "/graphql"): Role.viewer,
        ("GET", "/get-artifact"): Role.viewer,
        ("GET", "/model-versions/get-artifact"): Role.viewer,
        ("GET", "/version"): Role.viewer,
        ("GET", "/health"): None,
    },
    # Our API and serving: their own tables (ROUTES), behind their prefixes.
    "api": ROUTES["api"],
    "serving": ROUTES["serving"],
}

# Where each area sits in the public path space (first match; longer prefixes first).
AREAS: tuple[tuple[str, str], ...] = (
    ("/prefect/api", "prefect"),
    ("/prefect", "prefect-ui"),
    ("/mlflow/ajax-api", "mlflow"),
    ("/mlflow/api", "mlflow"),
    ("/mlflow", "mlflow-ui"),
    ("/api", "api"),
    ("/serving", "serving"),
)
# Areas whose writes the door's authority audits (our API and serving audit their own).
AUDITED_AREAS = frozenset({"prefect", "prefect-ui", "mlflow", "mlflow-ui"})
# Of our services' open routes, those open through the door too (health, login); the rest
# (/metrics) need a viewer there. The authority's own route is not reachable through it.
DOOR_OPEN = frozenset({"/healthz", "/readyz", "/login", "/logout"})
DOOR_INTERNAL = frozenset({("api", ("GET", "/door/check"))})
# A query parameter that makes a Prefect read show secret values: an admin's.
SECRET_QUERY = "include_secrets"
# In a path, escapes that could mean another path upstream (an encoded slash, backslash or
# dot, a double encoding, NUL): refused rather than guessed at.
UNSAFE_ESCAPES = re.compile(r"%(2f|5c|2e|25|00)", re.IGNORECASE)
METHOD = re.compile(r"^[A-Z]{1,16}$")


class DoorRefusal(Exception):
    """The door refuses the request whoever asks (a path not in the table, or one that is
    not canonical); `reason` is one line for X-Door-Reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DoorRoute:
    """What a request through the door is: its area, its route as the audit log names it
    (the public path pattern), the role it needs (None: open), and the id it acts on."""

    area: str
    method: str
    route: str
    role: Role | None
    target: str | None

    @property
    def audited(self) -> bool:
        """A write to Prefect or MLflow: more than a viewer's read."""
        return self.area in AUDITED_AREAS and self.role is not None and self.role > Role.viewer


def _pattern(template: str) -> re.Pattern[str]:
    """A route template as a regular expression: `{name}` is one segment, `{name:path}` the
    rest of the path (both named groups)."""
    parts = re.split(r"(\{[^}]+\})", template)
    regex = ""
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name, _, kind = part[1:-1].partition(":")
            regex += f"(?P<{name}>.*)" if kind == "path" else f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$")


_COMPILED: dict[str, list[tuple[Route, re.Pattern[str], Role | None]]] = {
    area: [(route, _pattern(route[1]), role) for route, role in table.items()]
    for area, table in DOOR.items()
}


def canonical_path(uri: str) -> tuple[str, str]:
    """The path of a request URI as nginx's `$request_uri` gives it (path and query, raw),
    decoded, and its raw query. Raises DoorRefusal for a path that is not canonical: not
    absolute, with `.` or `..` segments, empty segments (`//`), a backslash, control
    characters, or an escape that could turn into one of these upstream (`%2F`, `%2E`...)."""
    path, _, query = uri.partition("?")
    if not path.startswith("/"):
        raise DoorRefusal("the request's path is not absolute")
    if UNSAFE_ESCAPES.search(path) or "\\" in path or "#" in path:
        raise DoorRefusal("the request's path has an encoded slash, dot or escape")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise DoorRefusal("the request's path is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in decoded):
        raise DoorRefusal("the request's path has control characters")
    segments = decoded.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise DoorRefusal("the request's path is not canonical (., .. or //)")
    return decoded, query


def door_route(method: str, uri: str) -> DoorRoute:
    """What a request through the door is, and the role it needs. Raises DoorRefusal for a
    request no one may make (not in the tables, not canonical). HEAD needs what GET needs;
    when several routes of an area match, the one that needs most counts."""
    if not METHOD.match(method):
        raise DoorRefusal("the request's method is not a method")
    path, query = canonical_path(uri)
    prefix, area = _area(path)
    relative = path[len(prefix) :] or "/"
    lookup = "GET" if method == "HEAD" else method
    found: list[tuple[Route, dict[str, str], Role | None]] = []
    for route, pattern, role in _COMPILED[area]:
        if route[0] == lookup and (match := pattern.match(relative)):
            found.append((route, match.groupdict(), role))
    found = [f for f in found if (area, f[0]) not in DOOR_INTERNAL]
    if not found:
        raise DoorRefusal(f"{method} {printable(path)} is not in the door's role table")
    route, params, role = max(found, key=lambda f: -1 if f[2] is None else f[2].rank)
    if role is None and area in ("api", "serving") and route[1] not in DOOR_OPEN:
        role = Role.viewer
    if area == "prefect" and lookup == "GET" and _asks_for_secrets(query):
        role = Role.admin
    public = prefix + route[1]
    return DoorRoute(area, method, public, role, _target(params))


def _area(path: str) -> tuple[str, str]:
    """The area a public path is in, and its prefix (segment by segment: /prefectx is not
    /prefect)."""
    for prefix, area in AREAS:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, area
    raise DoorRefusal(f"{printable(path)} is behind no area of the door")


def _asks_for_secrets(query: str) -> bool:
    return any(key == SECRET_QUERY for key, _ in parse_qsl(query, keep_blank_values=True))


def _target(params: dict[str, str]) -> str | None:
    """The id a request acts on: the path parameter named like an id, else the first."""
    if not params:
        return None
    name = next((n for n in params if n == "id" or n.endswith("_id")), next(iter(params)))
    return printable(params[name]) or None


def printable(text: str, limit: int = 200) -> str:
    """Text as a header or the audit log may carry it: ASCII, control and non-ASCII
    characters escaped, at most `limit` characters."""
    return "".join(
        c if " " <= c <= "~" else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
        for c in text
    )[:limit]


def needed(service: str, method: str, path: str) -> Role:
    """The role a guarded route needs; a route not in the table needs more than anyone has."""
    role = ROUTES[service].get((method, path))
    if role is None:
        raise Problem(403, "forbidden", f"{method} {path} is not in the role table")
    return role


@functools.cache  # one dependency per service: tests override it by `guard(service)`
def guard(service: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller of a request to one of `service`'s routes, if their role is
    enough for it (401 without a valid key, 403 with too small a role)."""

    async def allowed(request: Request, credentials: Credentials, auth: Auth) -> Caller:
        path = getattr(request.scope.get("route"), "path", request.url.path)
        role = needed(service, request.method, path)
        open_read = role is Role.viewer and not auth.reads_require_key
        caller = await auth.identify(request, credentials, required=not open_read)
        if caller.role < role:
            raise Problem(
                403,
                "forbidden",
                f"{caller.name} is a {caller.role.value}; "
                f"{request.method} {path} needs {role.value}",
            )
        return caller

    return allowed
