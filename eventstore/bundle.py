"""The bundle format `valueledger-bundle/1`: a tenant's ledger as JSON Lines, for auditors.

Line 1 is the header; every further line one record: the covered members plus hash, signature
and key_id, written in JCS form. An export first fixes its end: the chain head and the header's
keys, read in one short snapshot (`fix_export_end`). The records up to that head are then read
page by page by seq (`record_pages`), each page on a connection lent for that page alone. The
ledger is append-only and a chain's records up to its head are all committed with the head, so
the bundle is exactly what one snapshot would give, memory stays flat, and a slow reader of the
bundle holds no connection while it reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Final, TypeAlias

import msgspec

from eventstore.canonical import canonical_json
from eventstore.db import Connection
from eventstore.keys import list_keys
from eventstore.receipts import format_timestamp
from eventstore.verify import BUNDLE_FORMAT, HAS_LEDGER

PAGE: Final = 2000
_decoder = msgspec.json.Decoder()

ConnectionLender: TypeAlias = Callable[[], AbstractAsyncContextManager[Connection]]
"""Lends a connection for one page and takes it back (a pool's `acquire`, or `lending`)."""

_PAGE_SQL: Final = (
    "SELECT seq, canonical, hash, signature, key_id FROM events"
    " WHERE tenant = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
)


def record_line(canonical: bytes, hash_hex: str, signature: str, key_id: str) -> bytes:
    """One bundle line (without newline) for a stored record."""
    record = _decoder.decode(canonical)
    record["hash"] = hash_hex
    record["signature"] = signature
    record["key_id"] = key_id
    return canonical_json(record)


async def header_line(connection: Connection, tenant: str, exported_at: datetime) -> bytes:
    keys = [
        {
            "key_id": key.key_id,
            "public_key": key.public_key,
            "valid_from": format_timestamp(key.created_at),
            "valid_until": format_timestamp(key.retired_at) if key.retired_at else None,
        }
        for key in await list_keys(connection)
    ]
    return canonical_json(
        {
            "format": BUNDLE_FORMAT,
            "tenant": tenant,
            "exported_at": format_timestamp(exported_at),
            "keys": keys,
        }
    )


@dataclass(frozen=True, slots=True)
class ExportEnd:
    """Where an export stops and what its header says, fixed together in one snapshot, so the
    keys listed are those in force when the last record exported was the chain's head."""

    header: bytes
    """The header line, without newline."""
    through_seq: int
    """The chain's head when the export began: no later record is exported."""


async def ledger_end(connection: Connection, tenant: str) -> int:
    """The seq of `tenant`'s last record; LookupError if it has no ledger (a mistake in the
    request, not an empty ledger: export, replay and verify say so alike)."""
    seq: int | None = await connection.fetchval(
        f"SELECT seq FROM chain_heads WHERE tenant = $1 AND {HAS_LEDGER}", tenant
    )
    if seq is None:
        raise LookupError(f"tenant {tenant!r} has no ledger")
    return seq


async def fix_export_end(connection: Connection, tenant: str, exported_at: datetime) -> ExportEnd:
    """Read `tenant`'s head and the header in one short snapshot; LookupError if it has no
    ledger."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        through_seq = await ledger_end(connection, tenant)
        return ExportEnd(await header_line(connection, tenant, exported_at), through_seq)


def lending(connection: Connection) -> ConnectionLender:
    """A lender of the one connection its caller holds anyway (the CLI's own session)."""

    @asynccontextmanager
    async def lend() -> AsyncIterator[Connection]:
        yield connection

    return lend


async def record_pages(
    lend: ConnectionLender, tenant: str, from_seq: int, through_seq: int
) -> AsyncIterator[list[bytes]]:
    """The tenant's records from `from_seq` through `through_seq`, as bundle lines in seq
    order, a page at a time. Each page is read on a connection from `lend` that is given back
    before the page is handed on, so however slowly the caller consumes, it holds none."""
    after = from_seq - 1
    while after < through_seq:
        async with lend() as connection:
            rows = await connection.fetch(_PAGE_SQL, tenant, after, through_seq, PAGE)
        if not rows:
            return
        yield [
            record_line(bytes(row["canonical"]), row["hash"], row["signature"], row["key_id"])
            for row in rows
        ]
        after = rows[-1]["seq"]


async def export_bundle(
    connection: Connection,
    tenant: str,
    out: IO[bytes],
    exported_at: datetime,
    from_seq: int = 1,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the bundle of `tenant` to `out`; return the number of records written."""
    end = await fix_export_end(connection, tenant, exported_at)
    out.write(end.header + b"\n")
    count = 0
    async for page in record_pages(lending(connection), tenant, from_seq, end.through_seq):
        for line in page:
            out.write(line + b"\n")
        count += len(page)
        if progress is not None:
            progress(len(page))
    return count
