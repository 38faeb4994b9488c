"""The bundle format `valueledger-bundle/1`: a tenant's ledger as JSON Lines, for auditors.

Line 1 is the header; every further line one record: the covered members plus hash, signature
and key_id, written in JCS form. The export reads one consistent snapshot in pages, so memory
stays flat and the keys listed are exactly those in force when the records were read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import IO, Final

import msgspec

from eventstore.canonical import canonical_json
from eventstore.db import Connection
from eventstore.keys import list_keys
from eventstore.receipts import format_timestamp
from eventstore.verify import BUNDLE_FORMAT

PAGE: Final = 2000
_decoder = msgspec.json.Decoder()


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


async def record_lines(
    connection: Connection, tenant: str, from_seq: int = 1
) -> AsyncIterator[bytes]:
    """The tenant's records from `from_seq` on, as bundle lines, in seq order, page by page."""
    after = from_seq - 1
    while True:
        rows = await connection.fetch(
            "SELECT seq, canonical, hash, signature, key_id FROM events"
            " WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            tenant,
            after,
            PAGE,
        )
        for row in rows:
            yield record_line(bytes(row["canonical"]), row["hash"], row["signature"], row["key_id"])
        if len(rows) < PAGE:
            return
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
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        if await connection.fetchval("SELECT 1 FROM chain_heads WHERE tenant = $1", tenant) is None:
            raise LookupError(f"tenant {tenant!r} has no ledger")
        out.write(await header_line(connection, tenant, exported_at) + b"\n")
        count = 0
        async for line in record_lines(connection, tenant, from_seq):
            out.write(line + b"\n")
            count += 1
            if progress is not None:
                progress(1)
    return count
