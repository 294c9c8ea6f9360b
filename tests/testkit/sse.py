"""Reading a text/event-stream, as `GET /runs/{id}/events` sends it, in the tests and the
benchmarks: one parser for a whole body and for lines as they arrive."""

import json
from collections.abc import Iterable, Iterator
from typing import Any


def events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Each event of a stream's lines as soon as it is complete (at its blank line):
    {event, data (parsed JSON), id (when it has one)}; comments (keep-alives) dropped."""
    fields: dict[str, Any] = {}
    for row in lines:
        if not row:
            if "event" in fields:
                yield fields
            fields = {}
            continue
        name, _, value = row.partition(": ")
        if name in ("event", "id"):
            fields[name] = value
        elif name == "data":
            fields["data"] = json.loads(value)
    if "event" in fields:
        yield fields


def parse(text: str) -> list[dict[str, Any]]:
    """The events of a whole text/event-stream body."""
    return list(events(text.replace("\r\n", "\n").split("\n")))
