"""Request ids: taken from X-Request-ID when it is sane, else generated; kept in a contextvar."""

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current: ContextVar[str] = ContextVar("request_id", default="-")


def choose_request_id(offered: str | None) -> str:
    return offered if offered and _SANE.match(offered) else uuid.uuid4().hex


def set_request_id(value: str) -> None:
    _current.set(value)


def current_request_id() -> str:
    return _current.get()
