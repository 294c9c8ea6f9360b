"""An agent's Prefect calls go through as soon as the server answers again after an outage,
not at the end of Prefect's back-off.

Prefect's client retries a failed call `PREFECT_CLIENT_MAX_RETRIES` times (7 here, set by
`common.contract.RUN_ENVIRONMENT`), sleeping 2, 4, 8, ... 128 s between attempts. Those
sleeps do not end when the server is back: a run that ended 25 s into a 100 s outage of
PostgreSQL reached COMPLETED 42 s (local) to 55 s (Compose) after the database returned,
its engine asleep in a 64 s back-off, holding its agent's slot all the while.

`install` has every attempt of Prefect's client ride out an outage of up to
`RIDE_OUT_SECONDS` first: while the server is away (refused, cut, timed out) or answers a
5xx that Prefect retries without a `Retry-After`, the same request is sent again every
`RIDE_OUT_POLL_SECONDS`. Prefect's own retries, back-off and limits then apply to what an
attempt could not ride out, as before. So a call goes through within
`RIDE_OUT_POLL_SECONDS` of the server answering again, unless it is in one of Prefect's
sleeps between attempts then: they come after 60 s, 122 s, 186 s, ... of outage and last 2,
4, 8, 16 s (a call is at most 16 s late through an outage of 5 minutes), and a call fails
once an outage has lasted 8 times 60 s plus Prefect's 254 s, 12 minutes, not 4 as before. What
Prefect does not retry (a 4xx, a first connection that is refused, a 429 or any answer with
a `Retry-After`) is handed to it at once.

Installed in the agent's processes: the worker (agent.worker) and each run's engine
(agent.engine).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import httpx

# Long against Prefect's first sleeps (2, 4, 8, 16 s), which a call spends deaf.
RIDE_OUT_SECONDS = 60.0
RIDE_OUT_POLL_SECONDS = 2.0
# The server's answers while it cannot do its work: PostgreSQL away is a 500 (Prefect
# classifies a refused database connection as an internal error), a proxy in front of it a
# 502 or 504, Prefect's own "retry later" a 503. Ridden out only when Prefect would retry it.
SERVER_AWAY = frozenset({500, 502, 503, 504})


def _rides_out(response: httpx.Response, retry_codes: Collection[int]) -> bool:
    """Whether an answer is the server being away, to be asked again at once."""
    return (
        response.status_code in SERVER_AWAY
        and response.status_code in retry_codes
        and "Retry-After" not in response.headers
    )


def riding_out_async(
    send: Callable[..., Awaitable[httpx.Response]],
    retry_codes: Collection[int],
    retry_exceptions: tuple[type[Exception], ...],
    seconds: float = RIDE_OUT_SECONDS,
    poll: float = RIDE_OUT_POLL_SECONDS,
) -> Callable[..., Awaitable[httpx.Response]]:
    """`send`, sending again every `poll` s for up to `seconds` while the server is away;
    then the last answer, or the last error raised."""

    async def send_riding_out(request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            try:
                response = await send(request, *args, **kwargs)
            except retry_exceptions:
                if time.monotonic() + poll > deadline:
                    raise
            else:
                if not _rides_out(response, retry_codes) or time.monotonic() + poll > deadline:
                    return response
                await response.aclose()
            await anyio.sleep(poll)

    return send_riding_out


def riding_out_sync(
    send: Callable[..., httpx.Response],
    retry_codes: Collection[int],
    retry_exceptions: tuple[type[Exception], ...],
    seconds: float = RIDE_OUT_SECONDS,
    poll: float = RIDE_OUT_POLL_SECONDS,
) -> Callable[..., httpx.Response]:
    """`riding_out_async` for Prefect's sync client."""

    def send_riding_out(request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + seconds
        while True:
            try:
                response = send(request, *args, **kwargs)
            except retry_exceptions:
                if time.monotonic() + poll > deadline:
                    raise
            else:
                if not _rides_out(response, retry_codes) or time.monotonic() + poll > deadline:
                    return response
                response.close()
            time.sleep(poll)

    return send_riding_out


def install(seconds: float = RIDE_OUT_SECONDS, poll: float = RIDE_OUT_POLL_SECONDS) -> None:
    """Have this process's Prefect clients, async and sync, ride out outages. Once per
    process (a forked engine has its fork server's)."""
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    original_async = PrefectHttpxAsyncClient._send_with_retry
    if getattr(original_async, "rides_out", False):
        return
    original_sync = PrefectHttpxSyncClient._send_with_retry

    async def send_with_retry_async(
        self: PrefectHttpxAsyncClient,
        request: httpx.Request,
        send: Callable[..., Awaitable[httpx.Response]],
        send_args: tuple[Any, ...],
        send_kwargs: dict[str, Any],
        retry_codes: set[int] = set(),  # noqa: B006 (Prefect's signature)
        retry_exceptions: tuple[type[Exception], ...] = tuple(),
    ) -> httpx.Response:
        riding = riding_out_async(send, retry_codes, retry_exceptions, seconds, poll)
        return await original_async(
            self, request, riding, send_args, send_kwargs, retry_codes, retry_exceptions
        )

    def send_with_retry_sync(
        self: PrefectHttpxSyncClient,
        request: httpx.Request,
        send: Callable[..., httpx.Response],
        send_args: tuple[Any, ...],
        send_kwargs: dict[str, Any],
        retry_codes: set[int] = set(),  # noqa: B006 (Prefect's signature)
        retry_exceptions: tuple[type[Exception], ...] = tuple(),
    ) -> httpx.Response:
        riding = riding_out_sync(send, retry_codes, retry_exceptions, seconds, poll)
        return original_sync(
            self, request, riding, send_args, send_kwargs, retry_codes, retry_exceptions
        )

    send_with_retry_async.rides_out = True  # type: ignore[attr-defined]
    send_with_retry_async.__wrapped__ = original_async  # type: ignore[attr-defined]
    send_with_retry_sync.__wrapped__ = original_sync  # type: ignore[attr-defined]
    PrefectHttpxAsyncClient._send_with_retry = send_with_retry_async  # type: ignore[method-assign]
    PrefectHttpxSyncClient._send_with_retry = send_with_retry_sync  # type: ignore[method-assign]
