"""One meaning per rule: the API's parameter check (jsonschema over the deployment's schema)
and the flow engine's (pydantic over the flow's signature) agree on every input.

- Every value the API accepts, the flow accepts, with the same meaning.
- For patterned strings (months, dates), both give the same verdict.

Values are generated for every deployed flow's parameters, as the API receives them: parsed
from JSON (so no NaN or infinities; the body parser refuses those, see test_json_body.py).
"""

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prefect import Flow
from prefect.exceptions import ParameterTypeError
from pydantic_core import to_jsonable_python

from api.validation import parameter_errors
from trainer.flows import load_data, probe, send_requests, train_model
from trainer.register import deployments
from trainer.settings import TrainerSettings

FLOWS: dict[str, Flow] = {f.name: f for f in (train_model, load_data, send_requests, probe)}
# What Prefect stores for each deployment and the API checks against.
SCHEMAS = {
    d.flow_name: d._parameter_openapi_schema.model_dump_for_openapi()
    for d in deployments(TrainerSettings())
}

# Digits that look like digits: ASCII, full-width, Arabic-Indic, mathematical bold.
DIGITS = "0123456789\uff10\uff11\uff12\uff13\u0663\u06f9\U0001d7d8\U0001d7d7"
# Around a value, mostly nothing: whitespace where it is least expected.
SPACE = st.one_of(st.just(""), st.sampled_from([" ", "\n", "\t", "\r\n", "\u00a0", "\u2028"]))


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=n - 1, max_size=n + 1)


MONTHS = st.builds(lambda y, m: f"{y}-{m}", _digits(4), _digits(2))
DATES = st.builds(lambda y, m, d: f"{y}-{m}-{d}", _digits(4), _digits(2), _digits(2))
VALID = st.one_of(
    st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat),
    st.dates().map(lambda d: f"{d:%Y-%m}"),
    st.dates().map(lambda d: f"{d.isoformat()}T00:00:00"),
    st.sampled_from(["fhv", "green", "yellow", "tlc", "synthetic", "FHV"]),
)
PATTERNED = st.builds(lambda a, s, b: a + s + b, SPACE, st.one_of(MONTHS, DATES, VALID), SPACE)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 3, 3.0, 3.5, 1e-320, 5e-324, 1000, 1000.0001, 3600, 1_000_000, -0.0]),
    st.text(max_size=10),
    PATTERNED,
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=2),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
)


def as_received(value: Any) -> Any:
    """The value as the API sees it: sent as JSON and parsed back."""
    return orjson.loads(orjson.dumps(value))


def flow_verdict(flow: Flow, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The flow's parameters as the engine validates them, or None when it refuses them."""
    try:
        return flow.validate_parameters(parameters)
    except ParameterTypeError:
        return None


def same_meaning(sent: Any, validated: Any) -> bool:
    """Whether the flow reads `sent` (JSON) as the value it means: the same number, text,
    boolean or null, and a date for its ISO text."""
    if isinstance(sent, bool) or isinstance(validated, bool):
        return type(sent) is type(validated) and sent == validated
    return to_jsonable_python(validated) == sent


def parameters_for(name: str) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(SCHEMAS[name]["properties"])
    return st.dictionaries(st.sampled_from(names), VALUES, max_size=len(names)).map(as_received)


def test_every_deployed_flow_is_covered() -> None:
    assert set(SCHEMAS) == set(FLOWS)


@pytest.mark.parametrize("name", sorted(FLOWS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_the_api_accepts_the_flow_accepts_with_one_meaning(name: str, data: Any) -> None:
    parameters = data.draw(parameters_for(name))
    if parameter_errors(SCHEMAS[name], parameters):
        return
    validated = flow_verdict(FLOWS[name], parameters)
    assert validated is not None, f"the API accepts {parameters!r}; {name} refuses it"
    for key, sent in parameters.items():
        assert same_meaning(sent, validated[key]), (key, sent, validated[key])


PATTERNED_PARAMETERS = [
    (name, key)
    for name, schema in SCHEMAS.items()
    for key, spec in schema["properties"].items()
    if any("pattern" in o or "format" in o for o in spec.get("anyOf", [spec]))
]


def test_the_patterned_parameters_are_found() -> None:
    assert ("load-data", "month") in PATTERNED_PARAMETERS
    assert ("train-model", "date") in PATTERNED_PARAMETERS


@pytest.mark.parametrize(("name", "key"), PATTERNED_PARAMETERS)
@settings(max_examples=600, deadline=None)
@given(text=PATTERNED)
# Found by hand before: Python's `$` before a final newline; Unicode digits; a date-time.
@example(text="2021-06\n")
@example(text="\uff12\uff10\uff12\uff11-\uff10\uff16")  # full-width 2021-06
@example(text="2021-08-15\n")
@example(text="2021-08-15T00:00:00")
def test_patterned_strings_get_one_verdict(name: str, key: str, text: str) -> None:
    api_accepts = not parameter_errors(SCHEMAS[name], {key: text})
    flow_accepts = flow_verdict(FLOWS[name], {key: text}) is not None
    assert api_accepts == flow_accepts, (text, api_accepts, flow_accepts)
