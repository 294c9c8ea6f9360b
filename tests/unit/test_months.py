import datetime as dt
import re

import pytest
from prefect.utilities.callables import parameter_schema

from common.months import training_months
from trainer.flows import load_data, send_requests, train_model
from trainer.months import MONTH_PATTERN, BadDateError, parse_date, parse_month


@pytest.mark.parametrize(
    ("date", "train", "val"),
    [
        ("2021-08-15", "2021-06", "2021-07"),
        ("2021-03-01", "2021-01", "2021-02"),
        ("2021-01-31", "2020-11", "2020-12"),  # across a year boundary
        ("2021-02-28", "2020-12", "2021-01"),
        ("2024-03-31", "2024-01", "2024-02"),  # month ends do not spill over
    ],
)
def test_training_months_are_two_before_and_one_before(date: str, train: str, val: str) -> None:
    assert training_months(parse_date(date)) == (train, val)


def test_parse_date_defaults() -> None:
    assert parse_date(None, default=dt.date(2021, 8, 15)) == dt.date(2021, 8, 15)
    assert parse_date(None) == dt.date.today()
    assert parse_date(dt.datetime(2021, 8, 15, 9, 30)) == dt.date(2021, 8, 15)


@pytest.mark.parametrize("bad", ["2021-13-01", "15/08/2021", "", "2021-02-30", "yesterday"])
def test_bad_dates_are_named_in_the_error(bad: str) -> None:
    with pytest.raises(BadDateError, match="not a valid YYYY-MM-DD date"):
        parse_date(bad)


def test_parse_month() -> None:
    assert parse_month("2021-06") == "2021-06"
    assert parse_month(None, today=dt.date(2021, 1, 10)) == "2020-12"
    # One rule, the pattern in the flows' parameter schemas: the API rejects what this does.
    for bad in ("2021-00", "2021-13", "2021-6", " 2021-06", "2021-06-01", "21-06"):
        with pytest.raises(BadDateError, match="not a valid YYYY-MM month"):
            parse_month(bad)
        assert not re.fullmatch(MONTH_PATTERN, bad)


def test_flow_parameter_schemas_carry_the_formats() -> None:
    """What Prefect stores for each deployment, and the API validates against."""
    train = parameter_schema(train_model).model_dump()["properties"]["date"]
    assert {"type": "string", "format": "date"} in train["anyOf"]
    for flow in (load_data, send_requests):
        month = parameter_schema(flow).model_dump()["properties"]["month"]
        assert any(option.get("pattern") == MONTH_PATTERN for option in month["anyOf"]), month
