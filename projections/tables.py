"""Read-model tables as typed rows, and the in-memory view a batch of events is applied to.

A projector never writes SQL per event. For a batch, the runner asks the projector which rows
the events touch, loads them all at once (one query per table), lets the projector's pure
`apply(view, event)` change them in memory, and writes back only what changed (one upsert and
one delete per table). That is what lets a projector catch up at thousands of events a second,
and keeps the projection logic free of SQL.

Rows are frozen msgspec Structs whose field names are the table's columns; asyncpg maps their
Python types (str, int, bool, Decimal, datetime, None) to the columns' types. The tables
themselves are created by `schema.sql` (function `vl_create_read_models`), the only DDL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import msgspec

from eventstore.db import Connection

Row = TypeVar("Row", bound=msgspec.Struct)
Key = tuple[Any, ...]

READ_MODELS_SCHEMA: Final = "read_models"
"""Where the live read models are; rebuilds fill another schema and swap tables into this one."""


@dataclass(frozen=True, slots=True)
class Table(Generic[Row]):
    """One read-model table: its name, its row type, and its primary key columns with their
    PostgreSQL types (used to load many keys in one query)."""

    name: str
    row_type: type[Row]
    key: tuple[str, ...]
    key_types: tuple[str, ...]
    columns: tuple[str, ...] = field(init=False)
    column_types: tuple[str, ...] = field(init=False)
    """Each column's PostgreSQL array element type, from its Python type (for unnest)."""

    def __post_init__(self) -> None:
        info = msgspec.inspect.type_info(self.row_type)
        assert isinstance(info, msgspec.inspect.StructType)  # noqa: S101 (Row is a Struct)
        object.__setattr__(self, "columns", tuple(f.name for f in info.fields))
        object.__setattr__(
            self, "column_types", tuple(_pg_type(self.name, f.name, f.type) for f in info.fields)
        )
        if len(self.key) != len(self.key_types) or not set(self.key) <= set(self.columns):
            raise ValueError(f"table {self.name}: key columns must be columns, each with a type")

    def key_of(self, row: Row) -> Key:
        return tuple(getattr(row, column) for column in self.key)

    @property
    def load_sql(self) -> str:
        keys = ", ".join(self.key)
        arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(self.key_types, 1))
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name}"
            f" WHERE ({keys}) IN (SELECT * FROM unnest({arrays}))"
        )

    @property
    def upsert_sql(self) -> str:
        """One statement for many rows: each column arrives as one array (unnest), which is
        far cheaper than a Bind/Execute per row."""
        arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(self.column_types, 1))
        updates = ", ".join(
            f"{column} = EXCLUDED.{column}" for column in self.columns if column not in self.key
        )
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return (
            f"INSERT INTO {self.name} ({', '.join(self.columns)})"
            f" SELECT * FROM unnest({arrays}) ON CONFLICT ({', '.join(self.key)}) {conflict}"
        )

    @property
    def delete_sql(self) -> str:
        keys = ", ".join(self.key)
        arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(self.key_types, 1))
        return f"DELETE FROM {self.name} WHERE ({keys}) IN (SELECT * FROM unnest({arrays}))"


_PG_TYPES: Final[dict[type[msgspec.inspect.Type], str]] = {
    msgspec.inspect.StrType: "text",
    msgspec.inspect.IntType: "int8",
    msgspec.inspect.BoolType: "bool",
    msgspec.inspect.DecimalType: "numeric",
    msgspec.inspect.DateTimeType: "timestamptz",
}


def _pg_type(table: str, column: str, kind: msgspec.inspect.Type) -> str:
    """The PostgreSQL type of a row field (an optional field has its value's type)."""
    if isinstance(kind, msgspec.inspect.UnionType):
        present = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(present) == 1:
            kind = present[0]
    name = _PG_TYPES.get(type(kind))
    if name is None:
        raise TypeError(f"table {table}: column {column} has a type rows cannot hold: {kind}")
    return name


_GONE: Final = object()


class View:
    """The rows one batch touches: loaded once, changed in memory by `apply`, written once.

    `get` returns the row as it stands after the events applied so far in the batch; `put`
    and `delete` record changes. Only changed rows are written back.
    """

    def __init__(self) -> None:
        self._rows: dict[Table[Any], dict[Key, Any]] = {}
        self._changed: dict[Table[Any], dict[Key, Any]] = {}

    def get(self, table: Table[Row], key: Key) -> Row | None:
        row = self._changed.get(table, {}).get(key, self._rows.get(table, {}).get(key))
        return None if row is _GONE else row

    def put(self, table: Table[Row], row: Row) -> None:
        self._changed.setdefault(table, {})[table.key_of(row)] = row

    def delete(self, table: Table[Row], key: Key) -> None:
        self._changed.setdefault(table, {})[key] = _GONE

    async def load(
        self, connection: Connection, wanted: Mapping[Table[Any], Iterable[Key]]
    ) -> None:
        """Read every wanted row that exists, one query per table."""
        for table, keys in wanted.items():
            unique = list(dict.fromkeys(keys))
            if not unique:
                continue
            columns = [list(column) for column in zip(*unique, strict=True)]
            records = await connection.fetch(table.load_sql, *columns)
            rows = self._rows.setdefault(table, {})
            for record in records:
                row = table.row_type(**dict(record))
                rows[table.key_of(row)] = row

    async def write(self, connection: Connection) -> int:
        """Write the changed rows back; returns how many rows were written or deleted."""
        written = 0
        for table, changed in self._changed.items():
            upserts = [
                tuple(getattr(row, column) for column in table.columns)
                for row in changed.values()
                if row is not _GONE
            ]
            deletes = [key for key, row in changed.items() if row is _GONE]
            if upserts:
                await connection.execute(table.upsert_sql, *map(list, zip(*upserts, strict=True)))
            if deletes:
                await connection.execute(table.delete_sql, *map(list, zip(*deletes, strict=True)))
            written += len(upserts) + len(deletes)
        return written
