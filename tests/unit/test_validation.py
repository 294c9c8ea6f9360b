"""The API's parameter check (api.validation) by the flows' own schemas: every bad one named."""

from prefect.utilities.callables import parameter_schema

from api.validation import parameter_errors
from trainer.flows import load_data, train_model

# The schemas Prefect stores for the deployments, built from the flows' signatures.
TRAIN_SCHEMA = parameter_schema(train_model).model_dump()
LOAD_SCHEMA = parameter_schema(load_data).model_dump()


def test_valid_parameters_have_no_errors() -> None:
    assert parameter_errors(TRAIN_SCHEMA, {"date": "2021-08-15", "auto_load": True}) == []
    assert parameter_errors(TRAIN_SCHEMA, {}) == []


def test_every_bad_parameter_is_named() -> None:
    errors = parameter_errors(
        TRAIN_SCHEMA, {"date": "2021-8-15", "dataset": "purple", "auto_load": "yes", "x": 1}
    )
    by_field = {e["field"]: e["message"] for e in errors}
    assert set(by_field) == {
        "parameters.date", "parameters.dataset", "parameters.auto_load", "parameters.x",
    }  # fmt: skip
    assert by_field["parameters.date"] == "'2021-8-15' is not a valid YYYY-MM-DD date"
    assert by_field["parameters.x"] == (
        "unknown parameter; allowed: auto_load, dataset, date, promote, source"
    )


def test_month_parameters_are_checked_by_the_flow_s_own_pattern() -> None:
    assert parameter_errors(LOAD_SCHEMA, {"month": "2021-06"}) == []
    assert parameter_errors(LOAD_SCHEMA, {"month": None}) == []
    for bad in ("2021-13", "2021-6"):
        [error] = parameter_errors(LOAD_SCHEMA, {"month": bad})
        assert error == {"field": "parameters.month", "message": f"{bad!r} is not a month, YYYY-MM"}
