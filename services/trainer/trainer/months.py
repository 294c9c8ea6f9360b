"""Date arithmetic: which months a run trains and validates on."""

import datetime as dt
import re
from typing import Annotated

from dateutil.relativedelta import relativedelta
from pydantic import BeforeValidator, Field

from common.months import month_of

# The one rule for a month parameter. Flows type their months with `Month`, so the pattern
# is in each deployment's parameter schema, where the API checks requests against it with
# jsonschema (Python's `re`), while the flow engine checks it with pydantic (a Rust engine).
# Written so that both engines give one verdict: `[0-9]`, not `\d` (which is any Unicode digit
# in both), and a fixed length, since Python's `$` also matches before a final newline and
# Rust's has neither `\Z` nor look-ahead to say otherwise.
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
MONTH_LENGTH = len("YYYY-MM")
Month = Annotated[
    str,
    Field(
        pattern=MONTH_PATTERN,
        min_length=MONTH_LENGTH,
        max_length=MONTH_LENGTH,
        description="A month, YYYY-MM.",
        examples=["2021-06"],
    ),
]

DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def _iso_date(value: object) -> object:
    """A date parameter given as text must be exactly YYYY-MM-DD: the rule of the API's
    check (jsonschema's `format: date`), where pydantic alone would also take a date-time
    with a zero time or a number of seconds."""
    if isinstance(value, str):
        if not re.fullmatch(DATE_PATTERN, value):
            raise ValueError(f"{value!r} is not a valid YYYY-MM-DD date")
        return dt.date.fromisoformat(value)
    return value


# The one rule for a date parameter; its schema is `format: date`, which the API checks.
Day = Annotated[dt.date, BeforeValidator(_iso_date)]


class BadDateError(ValueError):
    """A date or month parameter that cannot be parsed."""


def parse_date(value: str | dt.date | None, *, default: dt.date | None = None) -> dt.date:
    """Parse a YYYY-MM-DD date; `None` gives `default` (today when unset)."""
    if value is None:
        return default or dt.date.today()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise BadDateError(f"date {value!r} is not a valid YYYY-MM-DD date") from None


def parse_month(value: str | None, *, today: dt.date | None = None) -> str:
    """Check a YYYY-MM month (MONTH_PATTERN); `None` means last month."""
    if value is None:
        return month_of((today or dt.date.today()) - relativedelta(months=1))
    if not re.fullmatch(MONTH_PATTERN, value):
        raise BadDateError(f"month {value!r} is not a valid YYYY-MM month")
    return value


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """First instant of `month` and of the month after it."""
    start = dt.datetime.strptime(month, "%Y-%m")
    return start, start + relativedelta(months=1)


def utc_now() -> str:
    """Now, as an ISO 8601 UTC timestamp to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
