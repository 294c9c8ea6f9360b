"""Which months a training date covers: the one rule the trainer (what train-model reads) and
the API (what a backfill loads first, and what the registry already holds) both follow."""

import datetime as dt

from dateutil.relativedelta import relativedelta


def month_of(day: dt.date) -> str:
    """`day`'s month, YYYY-MM."""
    return f"{day.year:04d}-{day.month:02d}"


def training_months(date: dt.date) -> tuple[str, str]:
    """Train on the month two before `date`, validate on the month before: (train, val),
    each YYYY-MM."""
    return month_of(date - relativedelta(months=2)), month_of(date - relativedelta(months=1))
