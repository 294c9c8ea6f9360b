"""ASGI middleware at the edge: request ids, the body size limit, metrics and access logs."""

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from api.requestid import HEADER, choose_request_id, set_request_id

logger = logging.getLogger("api.access")


class Metrics:
    """A service's HTTP metrics, in a registry of its own, named `<prefix>_...`."""

    def __init__(self, prefix: str = "api") -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{prefix}_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )


class BodyTooLargeError(Exception):
    pass


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = choose_request_id(headers.get(HEADER))
        set_request_id(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError
            return message

        try:
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise BodyTooLargeError
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLargeError:
            if response_started:
                raise
            response = problem_response(
                Request(scope),
                413,
                "payload-too-large",
                f"the request body is larger than {self.max_body_bytes} bytes",
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            logger.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={"status": status, "route": route, "duration_ms": round(elapsed * 1e3, 1)},
            )
