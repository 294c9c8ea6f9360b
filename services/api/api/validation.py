"""Validating a run request against the deployment's parameter schema: plain functions.

The schema is Prefect's, built from the flow's signature, so the trainer's types are the one
source of the rules: dates are `format: date`, months carry their pattern and description.
"""

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError


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
        if (found := _error(field, _message(error))) not in errors:  # a month: length and form
            errors.append(found)
    return errors


def _message(error: ValidationError) -> str:
    """jsonschema's message, said plainly for a value that is one of several types (a month
    or null): the reason of the option that fits the value's type."""
    for option in error.context or ():
        if option.validator in ("pattern", "format", "minLength", "maxLength"):
            return _message(option)
    # A patterned string (a month) has a fixed length too: say what it should look like.
    schema = error.schema
    patterned = error.validator in ("pattern", "minLength", "maxLength")
    if patterned and isinstance(schema, Mapping) and "pattern" in schema:
        described = schema.get("description", "").rstrip(".")
        described = described[:1].lower() + described[1:]  # "A month, YYYY-MM" mid-sentence
        form = described or f"of the form {schema['pattern']}"
        return f"{error.instance!r} is not {form}"
    if error.validator == "format" and error.validator_value == "date":
        return f"{error.instance!r} is not a valid YYYY-MM-DD date"
    return error.message


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": f"parameters.{field}", "message": message}


def _resolvable(schema: dict[str, Any]) -> dict[str, Any]:
    """Prefect puts shared types under `definitions`; point `$ref`s there as 2020-12 expects."""
    return {**schema, "$defs": schema.get("definitions", {})}
