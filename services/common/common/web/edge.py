"""ASGI middleware at the edge: request ids, the body size limit, metrics and access logs."""

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.web.problems import problem_response
from common.web.requestid import HEADER, choose_request_id, set_request_id

# Both services log their access lines under this name, as they did when it was the API's module.
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
    """Request ids, the body size limit (413, declared or chunked), metrics, access logs."""

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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            declared = headers.get("content-length")
            if declared is not None:
                # The server holds a body to its declared length.
                if not declared.isdigit() or int(declared) > self.max_body_bytes:
                    raise BodyTooLargeError
            elif "transfer-encoding" in headers:
                # Chunked: read it here, within the limit, so that an oversize body is a 413
                # and not a parse error inside FastAPI.
                receive = await self._buffered(receive)
            await self.app(scope, receive, send_with_id)
        except BodyTooLargeError:  # raised before the app saw the request
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
            extra = {"status": status, "route": route, "duration_ms": round(elapsed * 1e3, 1)}
            # Who, when the request was authenticated (auth keeps the caller in the state):
            # through the front door this is the request's only access line (docs/gateway.md).
            caller = scope.get("state", {}).get("caller")
            if caller is not None:
                extra |= {"caller": caller.name, "role": caller.role.value}
            logger.info("%s %s %d", method, scope["path"], status, extra=extra)

    async def _buffered(self, receive: Receive) -> Receive:
        """The whole body, read now (BodyTooLargeError past the limit), replayed to the app."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay(message, receive)  # the client went away: say so to the app
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                raise BodyTooLargeError
            if not message.get("more_body", False):
                break
        return _replay({"type": "http.request", "body": b"".join(chunks)}, receive)


def _replay(first: Message, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return first

    return replay
