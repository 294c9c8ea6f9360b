"""Errors as RFC 9457 problem details (`application/problem+json`), one stable type each,
and documented as such in OpenAPI (`responses`, `install`): the API's and serving's."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from common.web.jsonbody import decode_error_message
from common.web.requestid import current_request_id

MEDIA_TYPE = "application/problem+json"
SCHEMAS = "#/components/schemas/"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RETRY_AFTER_SECONDS = 5

# slug -> title; the `type` of a problem is "/problems/<slug>" (documented in docs/api.md).
TITLES = {
    "validation-error": "The request is not valid",
    "unauthorized": "A valid API key is required",
    "forbidden": "The key's role does not allow this",
    "cross-site": "Sent from another site's page",
    "key-name-taken": "A key of that name exists",
    "key-from-environment": "The key is API_KEY's: change it in the environment",
    "user-name-taken": "A user of that name exists",
    "user-disabled": "The user is disabled",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "idempotency-key-reused": "Idempotency-Key reused with a different request",
    "run-is-final": "The run has already finished",
    "run-not-retryable": "The run cannot be retried",
    "deployment-outdated": "The flow's deployment is older than the API",
    "payload-too-large": "The request body is too large",
    "rate-limited": "Too many requests",
    "service-unavailable": "A service the API depends on is unavailable",
    "internal-error": "Internal error",
}


class FieldError(BaseModel):
    """What is wrong with one part of the request."""

    field: str = Field(description="Where: e.g. body.trips.0.pickup_location_id, query.cursor.")
    message: str


class ProblemBody(BaseModel):
    """RFC 9457 problem details, sent as `application/problem+json` (both services)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/validation-error",
                    "title": "The request is not valid",
                    "status": 422,
                    "detail": "body.flow: String should have at most 100 characters",
                    "instance": "/runs",
                    "request_id": "4f1c2b0e9a7d4c3e",
                    "errors": [
                        {
                            "field": "body.flow",
                            "message": "String should have at most 100 characters",
                        }
                    ],
                }
            ]
        }
    )

    type: str = Field(description="/problems/<slug>: one stable type per kind of error.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The path of the request.")
    request_id: str | None = Field(None, description="Its X-Request-ID, as in the logs.")
    errors: list[FieldError] | None = Field(None, description="A validation error's fields.")


class Problem(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.errors, self.headers = errors, headers or {}


def said(errors: list[dict[str, str]]) -> str:
    """Field errors (`[{field, message}]`) in one line, for a problem's detail."""
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors)


def invalid(field: str, message: str) -> Problem:
    """The 422 for one field (`body.url`, `header.last-event-id`, ...) and what is wrong."""
    errors = [{"field": field, "message": message}]
    return Problem(422, "validation-error", said(errors), errors=errors)


def unavailable(what: str, error: object) -> Problem:
    return Problem(
        503,
        "service-unavailable",
        f"{what} is unavailable ({type(error).__name__}); retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def problem_response(
    request: Request,
    status: int,
    slug: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{slug}",
        "title": TITLES[slug],
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": current_request_id(),
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses: a ProblemBody under `application/problem+json`
    only, what `problem_response` sends. (FastAPI's `model` key would put it under
    `application/json` too, where a generated client looks first and finds nothing.)"""
    return {
        status: {
            "description": text,
            "content": {MEDIA_TYPE: {"schema": {"$ref": f"{SCHEMAS}{ProblemBody.__name__}"}}},
        }
        for status, text in descriptions.items()
    }


def _document_problems(app: FastAPI) -> None:
    """Add ProblemBody, and the models it uses, to the app's OpenAPI components: `responses`
    refers to it by `$ref`, which FastAPI does not follow to collect the schema."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, cached after the first call
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if ProblemBody.__name__ not in schemas:
            problem = ProblemBody.model_json_schema(
                ref_template=f"{SCHEMAS}{{model}}", mode="serialization"
            )
            schemas.update(problem.pop("$defs", {}), **{ProblemBody.__name__: problem})
            document["components"]["schemas"] = dict(sorted(schemas.items()))
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _allowed_methods(app: FastAPI, request: Request) -> set[str]:
    """The methods some route answers on this path. Asked of each route as a full match,
    since FastAPI keeps an included router as one route (no `methods` of its own)."""
    return {
        method
        for method in METHODS
        for route in app.router.routes
        if route.matches({**request.scope, "method": method})[0] == Match.FULL
    }


def field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for e in error.errors():
        if e["type"] == "json_invalid":  # loc is ("body", position)
            message = decode_error_message(error.body or "", e["loc"][1], e["ctx"]["error"])
            errors.append({"field": "body", "message": message})
        else:
            errors.append({"field": ".".join(str(part) for part in e["loc"]), "message": e["msg"]})
    return errors


def install(app: FastAPI) -> None:
    """Answer every error, FastAPI's own included, as a problem; put the problem's schema in
    the OpenAPI document (the app's `responses` declare it: see `responses`)."""
    _document_problems(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, error: Problem) -> JSONResponse:
        return problem_response(
            request,
            error.status,
            error.slug,
            error.detail,
            errors=error.errors,
            headers=error.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        body_errors = any(e["loc"][:1] == ("body",) for e in error.errors())
        if body_errors and "json" not in content_type:
            # FastAPI reads a body without a JSON content type as bytes: say why it failed.
            detail = (
                "the body must be JSON sent with Content-Type: application/json "
                f"(got {content_type or 'no Content-Type'})"
            )
            errors = [{"field": "header.content-type", "message": detail}]
            return problem_response(request, 422, "validation-error", detail, errors=errors)
        errors = field_errors(error)
        return problem_response(request, 422, "validation-error", said(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            error.status_code, "validation-error" if error.status_code < 500 else "internal-error"
        )
        headers = dict(error.headers or {})
        if error.status_code == 405:
            # Starlette names only the first route of the path; list every route's methods.
            headers["Allow"] = ", ".join(sorted(_allowed_methods(app, request)))
        return problem_response(
            request, error.status_code, slug, str(error.detail), headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        return problem_response(
            request, 500, "internal-error", "unexpected error; the request id is in the logs"
        )
