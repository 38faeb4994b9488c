"""docs/read-models.md is what operators and API writers read about the read models: checked
against the code. Every table has a section whose table lists its columns in order, with the
database's type and nullability; the stages and the queries are the code's."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from eventstore.store import EventStore
from projections import queries
from projections.dashboard import STAGE_ORDER
from projections.registry import PROJECTORS
from projections.tables import READ_MODELS_SCHEMA, Table

DOC: Final = Path(__file__).parents[2] / "docs" / "read-models.md"
_TABLE_HEADING = re.compile(r"^#### `(?P<name>[a-z_]+)`$", re.MULTILINE)
_COLUMN = re.compile(r"^\| `(?P<column>[a-z_]+)` \| (?P<type>[a-z]+)(?P<null>, or null)? \|", re.M)
_TYPES: Final = {
    "text": "text",
    "integer": "integer",
    "bigint": "bigint",
    "numeric": "numeric",
    "boolean": "boolean",
    "timestamp with time zone": "timestamptz",
}


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _sections() -> dict[str, str]:
    text = _text()
    headings = list(_TABLE_HEADING.finditer(text))
    sections: dict[str, str] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        body = text[heading.end() : end].split("\n## ")[0].split("\n### ")[0]
        assert heading["name"] not in sections, f"{heading['name']} is documented twice"
        sections[heading["name"]] = body
    return sections


_TABLES: Final = [table for projector in PROJECTORS for table in projector.tables]


def test_every_table_and_no_other_is_documented() -> None:
    assert sorted(_sections()) == sorted(table.name for table in _TABLES)
    for projector in PROJECTORS:
        assert f"(projector `{projector.name}`)" in _text(), projector.name


@pytest.mark.parametrize("table", _TABLES, ids=lambda table: table.name)
async def test_each_tables_columns_types_and_nulls(store: EventStore, table: Table[Any]) -> None:
    documented = [
        (match["column"], match["type"], match["null"] is not None)
        for match in _COLUMN.finditer(_sections()[table.name])
    ]
    actual = await store.pool.fetch(
        "SELECT column_name, data_type, is_nullable = 'YES' AS nullable"
        " FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2"
        " ORDER BY ordinal_position",
        READ_MODELS_SCHEMA,
        table.name,
    )
    assert documented == [
        (row["column_name"], _TYPES[row["data_type"]], row["nullable"]) for row in actual
    ]
    assert tuple(column for column, _, _ in documented) == table.columns


def test_the_stages_in_order() -> None:
    section = _text().split("## Customer stages")[1].split("\n## ")[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)
    assert documented == [stage.value for stage in STAGE_ORDER]


def test_every_query_is_documented_with_its_parameters() -> None:
    documented = dict(re.findall(r"^### `([a-z_]+)\((.*)\)`$", _text(), re.MULTILINE))
    public = {
        name: function
        for name, function in vars(queries).items()
        if inspect.iscoroutinefunction(function)
        and not name.startswith("_")
        and function.__module__ == queries.__name__
    }
    assert sorted(documented) == sorted(public)
    for name, function in public.items():
        assert documented[name] == _parameters(function), name


def _parameters(function: Callable[..., object]) -> str:
    """The parameters as the doc writes them: ``db, tenant, *, limit=50``."""
    written: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in written:
            written.append("*")
        default = parameter.default
        written.append(
            parameter.name if default is parameter.empty else f"{parameter.name}={default!r}"
        )
    return ", ".join(written)
