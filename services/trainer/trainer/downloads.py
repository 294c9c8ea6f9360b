"""Fetching one TLC file over HTTP: its schema first, from the parquet footer alone, then the
whole file, each with bounded retries of what a busy source answers now and then.

The schema comes from byte ranges (the last 64 KiB, and the rest of the footer if it is
longer), so a file that would be refused is refused before it is downloaded. A server that
does not serve ranges gets the whole download, checked once it is stored.

Retried (`DOWNLOAD_RETRIES` times, within `DOWNLOAD_RETRY_SECONDS` of the first attempt):
HTTP 403 (CloudFront's answer when it throttles), 408, 429 and 5xx, and connections that
fail, time out or break off mid-stream. A `Retry-After` is honoured; otherwise the waits
back off from `DOWNLOAD_RETRY_WAIT_SECONDS` (1 s), doubling. A 404 is a month not yet
published: never retried.
"""

import email.utils
import logging
import time
from collections.abc import Callable
from typing import IO, TypeVar

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import tenacity

from trainer.store import CorruptMonthError

CHUNK_BYTES = 1 << 20
# One request gets the footer of most files (FHV 2021's is a few KiB); a longer one takes two.
TAIL_BYTES = 64 << 10
MAGIC = b"PAR1"
TRANSIENT_STATUSES = {
    403: "forbidden (CloudFront throttles this way)",
    408: "request timeout",
    429: "throttled",
}

Logger = logging.Logger | logging.LoggerAdapter
T = TypeVar("T")


class DownloadError(RuntimeError):
    """The month could not be fetched from its URL."""


class TransientDownloadError(DownloadError):
    """An answer worth another attempt; `retry_after` is what the server asked to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def with_retries(
    attempt: Callable[[], T],
    *,
    retries: int,
    seconds: float,
    first_wait: float,
    logger: Logger,
) -> T:
    """`attempt()`, again after each TransientDownloadError, `retries` times at most and not
    past `seconds` after the first, waiting as the server asks or `first_wait` doubling; then
    a DownloadError that says which failure it was."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "attempt %d of %d failed: %s; retrying in %.1f s",
            state.attempt_number,
            retries + 1,
            state.outcome.exception() if state.outcome else "?",
            wait,
        )

    def give_up(state: tenacity.RetryCallState) -> T:
        error = state.outcome.exception() if state.outcome else None
        attempts = f"{state.attempt_number} attempt" + ("s" if state.attempt_number > 1 else "")
        raise DownloadError(
            f"{error} (gave up after {attempts} in "
            f"{state.seconds_since_start:.1f} s: DOWNLOAD_RETRIES={retries}, "
            f"DOWNLOAD_RETRY_SECONDS={seconds:g})"
        ) from error

    # No wait takes more than its share of the budget: the attempts keep a share of their own.
    backoff = tenacity.wait_exponential_jitter(
        initial=first_wait, jitter=first_wait / 2, max=seconds / (retries + 1)
    )

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        return asked if asked is not None else backoff(state)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retries + 1) | tenacity.stop_before_delay(seconds),
        wait=wait,
        retry=tenacity.retry_if_exception_type(TransientDownloadError),
        before_sleep=log_retry,
        retry_error_callback=give_up,
    )
    return retrying(attempt)


def check_answer(url: str, response: httpx.Response) -> None:
    """Raise for an error answer: transient ones (worth a retry) apart from final ones."""
    status = response.status_code
    if status == httpx.codes.NOT_FOUND:
        raise DownloadError(f"{url} does not exist (HTTP 404): the month is not published")
    if status in TRANSIENT_STATUSES or status >= 500:
        what = TRANSIENT_STATUSES.get(status, "server error")
        wait = _retry_after(response.headers)
        asked = "" if wait is None else f", asked to wait {wait:g} s"
        raise TransientDownloadError(f"{url} answered HTTP {status}, {what}{asked}", wait)
    if response.is_error:
        raise DownloadError(f"{url} answered HTTP {status}")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks to wait: `Retry-After` as seconds or as an HTTP date."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def connection_error(url: str, error: httpx.TransportError) -> DownloadError:
    """A broken, refused or timed-out connection: transient, but for a URL that cannot be."""
    if isinstance(error, httpx.UnsupportedProtocol):
        return DownloadError(f"could not download {url}: {error}")
    kind = type(error).__name__
    return TransientDownloadError(f"could not download {url}: {kind}: {error or 'no detail'}")


def remote_schema(client: httpx.Client, url: str) -> tuple[pa.Schema, int] | None:
    """The schema in the file's footer and the bytes fetched to read it, from byte ranges;
    None when the server does not serve them."""
    tail = _byte_range(client, url, f"-{TAIL_BYTES}")
    if tail is None:
        return None
    data, size = tail
    if len(data) < 12 or data[-4:] != MAGIC:
        raise CorruptMonthError(f"{url} is not a readable parquet file: it ends without a footer")
    needed = int.from_bytes(data[-8:-4], "little") + 8
    if needed > size - 4:
        raise CorruptMonthError(f"{url} is not a readable parquet file: its footer length is off")
    if needed > len(data):
        head = _byte_range(client, url, f"{size - needed}-{size - len(data) - 1}")
        if head is None:
            return None
        data = head[0] + data
    try:
        # The footer alone, framed as a file: its schema does not need the data pages.
        schema = pq.read_schema(pa.BufferReader(MAGIC + data[-needed:]))
    except pa.ArrowException as error:
        raise CorruptMonthError(f"{url} is not a readable parquet file: {error}") from error
    return schema, len(data)


def _byte_range(client: httpx.Client, url: str, spec: str) -> tuple[bytes, int] | None:
    """Bytes `spec` of `url` (as in `Range: bytes=<spec>`) and the file's size; None when the
    server answers with anything but those bytes (a 200 is the whole file: left unread)."""
    headers = {"Range": f"bytes={spec}", "Accept-Encoding": "identity"}
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE:
                return None
            check_answer(url, response)
            total = response.headers.get("content-range", "").rpartition("/")[2]
            if response.status_code != httpx.codes.PARTIAL_CONTENT or not total.isdigit():
                return None
            return response.read(), int(total)
    except httpx.TransportError as error:
        raise connection_error(url, error) from error


def download(client: httpx.Client, url: str, handle: IO[bytes], *, logger: Logger) -> None:
    """Stream `url` into `handle` from its start, logging progress every tenth (or 16 MiB)."""
    handle.seek(0)
    handle.truncate()
    try:
        with client.stream("GET", url) as response:
            check_answer(url, response)
            # Content-Length counts the bytes on the wire, compressed when a mirror compresses
            # on the fly: progress and completeness count those (num_bytes_downloaded).
            total = int(response.headers.get("content-length", 0)) or None
            received, next_report = 0, 0.0
            for chunk in response.iter_bytes(CHUNK_BYTES):
                handle.write(chunk)
                received += len(chunk)
                raw = response.num_bytes_downloaded
                done = raw / total if total else raw / (16 * CHUNK_BYTES)
                if done >= next_report:
                    logger.info("downloaded %s", _progress(received, raw, total))
                    next_report = (int(done * 10) + 1) / 10 if total else int(done) + 1
            raw = response.num_bytes_downloaded
    except httpx.TransportError as error:
        raise connection_error(url, error) from error
    if total is not None and raw != total:
        raise TransientDownloadError(f"{url} was cut short: {raw} of {total} bytes arrived")
    logger.info("downloaded %s in full", _progress(received, raw, total))


def _progress(received: int, raw: int, total: int | None) -> str:
    mib = received / (1 << 20)
    return f"{mib:.1f} MiB ({raw / total:.0%})" if total else f"{mib:.1f} MiB"
