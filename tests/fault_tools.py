"""What fault tests share: waiting through an outage, and watching our API through it."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """`predicate()` once truthy. While a server is away (refused, cut, or 5xx), not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        except httpx.HTTPStatusError as error:
            if error.response.status_code < 500:
                raise
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class ApiWatch:
    """Polls our API (a run, and /readyz) in the background; collects every status code."""

    def __init__(self, api: httpx.Client, run_ids: list[str]) -> None:
        self.api, self.run_ids = api, run_ids
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "ApiWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            for path in [f"/runs/{i}" for i in self.run_ids] + ["/readyz"]:
                try:
                    self.statuses[self.api.get(path, timeout=30).status_code] += 1
                except httpx.HTTPError:
                    self.statuses[0] += 1  # the API itself away (restarting): no answer
