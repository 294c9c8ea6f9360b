"""People: their passwords (argon2id, argon2-cffi's defaults: RFC 9106's second
recommendation), login attempts limited per user name and per client address, where a
login may send the browser next, and the users and sessions as stored (api.db).

Plain logic, no I/O: the login route (api.routers.login), the admin routes
(api.routers.users) and the CLI (api.admin) use it.
"""

import collections
import datetime as dt
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte of password is a denial of service
DEFAULT_NEXT = "/prefect/"

_hasher = PasswordHasher()
# Verified when the user does not exist, so that a wrong name and a wrong password take the
# same time (one argon2 computation each).
_DUMMY_HASH = _hasher.hash("no user has this password: it only spends the time")


@dataclass(frozen=True)
class User:
    """A person as stored, without their password hash. `role` is a Role value."""

    id: uuid.UUID
    name: str
    role: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None


@dataclass(frozen=True)
class Session:
    """A session as stored, without its token (only its SHA-256 is kept)."""

    id: uuid.UUID
    user_id: uuid.UUID
    user: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None


class WeakPasswordError(ValueError):
    """A password refused before it is hashed (too short, too long)."""


def check_password(password: str) -> None:
    """Raises WeakPasswordError for a password shorter than MIN_PASSWORD characters (or
    longer than MAX_PASSWORD)."""
    if len(password) < MIN_PASSWORD:
        raise WeakPasswordError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WeakPasswordError(f"a password has at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    """The argon2id hash of a password that passes `check_password` (a PHC string with its
    salt and parameters). Takes some tens of milliseconds: call it off the event loop."""
    check_password(password)
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: no such user, and the answer is False
    after the same work). Takes some tens of milliseconds."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD]) and bool(stored)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def safe_next(target: str | None) -> str:
    """Where a login may send the browser: a path on this site (one leading `/`, not `//`
    or `/\\`, which browsers read as another host; no scheme, no control characters), else
    DEFAULT_NEXT."""
    if not target or len(target) > 2048 or not target.startswith("/"):
        return DEFAULT_NEXT
    if target.startswith(("//", "/\\")) or any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return DEFAULT_NEXT
    if "\\" in target:
        return DEFAULT_NEXT
    return target


class LoginLimiter:
    """Failed logins per user name and per client address, in this process: at most
    `failures` in `window` seconds for either; then a wait (Retry-After) until the oldest
    failure leaves the window. Successes are not counted. Each replica keeps its own count
    (so N replicas allow up to N times as many guesses; the door and a single API are the
    common case)."""

    def __init__(
        self, failures: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures, self.window, self.clock = failures, window, clock
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *subjects: str) -> int:
        """0 when a login for these subjects (user name, address) may be tried now, else
        whole seconds to wait (at least 1)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for subject in subjects:
                seen = self._recent(subject, now)
                if len(seen) >= self.failures:
                    wait = max(wait, seen[0] + self.window - now)
        return 0 if wait <= 0 else max(1, math.ceil(wait))

    def failed(self, *subjects: str) -> None:
        now = self.clock()
        with self._lock:
            for subject in subjects:
                self._recent(subject, now).append(now)
            if len(self._seen) > 10_000:  # drop the subjects with nothing recent
                for subject in [s for s, d in self._seen.items() if not self._recent(s, now)]:
                    del self._seen[subject]

    def _recent(self, subject: str, now: float) -> collections.deque[float]:
        seen = self._seen.setdefault(subject, collections.deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        return seen
