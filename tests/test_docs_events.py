"""docs/events.md is the public contract of the ledger's event types: checked against the code.

Every event type of every aggregate has its own section headed by its tag and current schema
version, and that section's table names every field the event carries; a section for a type
that no longer exists is caught too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from commands.aggregates import AGGREGATES

EVENTS_DOC = Path(__file__).parents[1] / "docs" / "events.md"
_HEADING = re.compile(r"^### `(?P<tag>[A-Za-z]+)` \(schema (?P<schema>\d+)\)$", re.MULTILINE)


def _sections() -> dict[str, tuple[int, str]]:
    text = EVENTS_DOC.read_text(encoding="utf-8")
    headings = list(_HEADING.finditer(text))
    sections: dict[str, tuple[int, str]] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        body = text[heading.end() : end].split("\n## ")[0]
        assert heading["tag"] not in sections, f"{heading['tag']} is documented twice"
        sections[heading["tag"]] = (int(heading["schema"]), body)
    return sections


def _event_types() -> list[Any]:
    return [event for aggregate in AGGREGATES for event in get_args(aggregate.event_type)]


@pytest.mark.parametrize("event", _event_types(), ids=lambda event: event.__name__)
def test_every_event_type_is_documented_with_every_field(event: Any) -> None:
    info = msgspec.inspect.type_info(event)
    assert isinstance(info, msgspec.inspect.StructType)
    sections = _sections()
    tag = _tag(event)
    assert tag in sections, f"docs/events.md has no section ### `{tag}` (schema N)"
    schema, body = sections[tag]
    fields = {field.name: field for field in info.fields}
    assert schema == fields["schema"].default, f"{tag}: the heading's schema is not the code's"
    documented = set(re.findall(r"^\| `([a-z0-9_]+)`", body, re.MULTILINE))
    missing = set(fields) - documented - {"schema"}
    assert not missing, f"{tag}: fields not in its table: {sorted(missing)}"
    unknown = documented - set(fields)
    assert not unknown, f"{tag}: the table names fields the event does not have: {sorted(unknown)}"


def _tag(event: Any) -> str:
    info = msgspec.inspect.type_info(event)
    assert isinstance(info, msgspec.inspect.StructType)
    assert isinstance(info.tag, str)
    return info.tag


def test_no_section_documents_an_event_that_does_not_exist() -> None:
    assert set(_sections()) <= {_tag(event) for event in _event_types()}
