"""Validating a run request against the deployment's parameter schema: plain functions."""

import datetime as dt
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

# Parameters whose string values must be dates or months, by their name in our flows.
DATE_PARAMETERS = {"date": ("%Y-%m-%d", "YYYY-MM-DD date")}
MONTH_PARAMETERS = {"month": ("%Y-%m", "YYYY-MM month")}


def parameter_errors(schema: dict[str, Any], parameters: dict[str, Any]) -> list[dict[str, str]]:
    """Every problem with `parameters`, as {"field", "message"}; empty when they are valid.

    `schema` is the deployment's parameter_openapi_schema. Unknown parameters are errors
    too: Prefect would reject them later, with a less helpful message.
    """
    errors = []
    known = set(schema.get("properties", {}))
    for name in sorted(set(parameters) - known):
        allowed = ", ".join(sorted(known)) or "none"
        errors.append(_error(name, f"unknown parameter; allowed: {allowed}"))
    validator = Draft202012Validator(_resolvable(schema), format_checker=FormatChecker())
    for error in sorted(validator.iter_errors(parameters), key=lambda e: list(e.path)):
        if error.validator == "additionalProperties":
            continue
        field = ".".join(str(p) for p in error.path) or "parameters"
        errors.append(_error(field, error.message))
    for name, (pattern, label) in (DATE_PARAMETERS | MONTH_PARAMETERS).items():
        value = parameters.get(name)
        if isinstance(value, str) and not _parses(value, pattern):
            errors.append(_error(name, f"{value!r} is not a valid {label}"))
    return errors


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": f"parameters.{field}", "message": message}


def _parses(value: str, pattern: str) -> bool:
    try:
        dt.datetime.strptime(value, pattern)
    except ValueError:
        return False
    return len(value) == len(dt.datetime.strptime(value, pattern).strftime(pattern))


def _resolvable(schema: dict[str, Any]) -> dict[str, Any]:
    """Prefect puts shared types under `definitions`; point `$ref`s there as 2020-12 expects."""
    return {**schema, "$defs": schema.get("definitions", {})}
