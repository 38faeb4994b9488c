"""Running a projector: follow the ledger from its checkpoint, batch by batch, exactly once.

Each batch is one transaction that locks the projector's checkpoint row, reads the committed
events after it (the store's gap-free, commit-safe order), applies them to the read-model
rows, writes the rows and moves the checkpoint. A crash anywhere rolls all of it back, so an
event is never counted twice nor lost; two runners of one projector queue on the checkpoint
row, so they never apply an event twice either. A lease (an advisory lock) makes the second
one wait instead of queueing batch by batch.

Appends are never blocked: a projector only reads `events`.

A rebuild fills fresh tables in a schema of its own from position 0 while readers keep using
the live ones, then, in one short transaction holding the checkpoint row, catches up the last
events and swaps its tables in.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from eventstore.db import Connection
from eventstore.store import NOTIFY_CHANNEL, START, Cursor, RecordedEvent, read_committed
from projections.projector import Projector, domain_event
from projections.tables import READ_MODELS_SCHEMA, Key, Table, View

BATCH_SIZE: Final = 1000
"""Events per transaction when behind; fewer when following live appends."""
POLL_INTERVAL: Final = 1.0
"""Seconds between looks at the ledger when no notification came (a notification may be lost)."""

Invalidate = Callable[[set[str]], Awaitable[None]]
"""Told, after each commit, which tenants' read models changed (the cache drops them)."""


def checkpoint_name(name: str) -> str:
    """The projector's row in subscription_checkpoints."""
    return f"projection:{name}"


def lease_key(projector: Projector) -> int:
    """The advisory lock key of the projector's lease: stable across processes and versions."""
    digest = hashlib.sha256(checkpoint_name(projector.name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def locked_checkpoint(connection: Connection, name: str) -> Cursor:
    """The checkpoint `name` (the ledger's start if it has none yet), its row locked until the
    transaction ends: whoever follows the ledger under that name queues here."""
    await connection.execute(
        "INSERT INTO subscription_checkpoints (name, epoch, tx_id, position)"
        " VALUES ($1, 0, '0', 0) ON CONFLICT (name) DO NOTHING",
        name,
    )
    row = await connection.fetchrow(
        "SELECT epoch, tx_id::text AS tx_id, position FROM subscription_checkpoints"
        " WHERE name = $1 FOR UPDATE",
        name,
    )
    assert row is not None  # noqa: S101 (inserted just above if missing)
    return Cursor(row["epoch"], int(row["tx_id"]), row["position"])


async def save_checkpoint(connection: Connection, name: str, cursor: Cursor) -> None:
    await connection.execute(
        "UPDATE subscription_checkpoints SET epoch = $2, tx_id = $3::text::xid8, position = $4,"
        " updated_at = clock_timestamp() WHERE name = $1",
        name,
        cursor.epoch,
        str(cursor.tx_id),
        cursor.position,
    )


async def apply_batch(
    connection: Connection, projector: Projector, records: Sequence[RecordedEvent]
) -> set[str]:
    """Apply `records` in order to the projector's rows; returns the tenants changed."""
    decoded = [(record, domain_event(record)) for record in records]
    wanted: dict[Table[Any], list[Key]] = {}
    for record, event in decoded:
        for table, key in projector.wants(record, event):
            wanted.setdefault(table, []).append(key)
    view = View()
    await view.load(connection, wanted)
    changed = {record.tenant for record, event in decoded if projector.apply(view, record, event)}
    await view.write(connection)
    return changed


async def project_once(
    connection: Connection,
    projector: Projector,
    *,
    schema: str = READ_MODELS_SCHEMA,
    batch_size: int = BATCH_SIZE,
) -> tuple[int, set[str]]:
    """One batch in the caller's transaction: the events projected and the tenants changed."""
    await connection.execute(f"SET LOCAL search_path = {schema}, public")
    cursor = await locked_checkpoint(connection, checkpoint_name(projector.name))
    records = await read_committed(connection, cursor, batch_size)
    if not records:
        return 0, set()
    changed = await apply_batch(connection, projector, records)
    await save_checkpoint(connection, checkpoint_name(projector.name), records[-1].cursor)
    return len(records), changed


@dataclass
class ProjectionRunner:
    """Keeps one projector's read models up to date, from whichever process holds its lease."""

    pool: asyncpg.Pool
    projector: Projector
    invalidate: Invalidate | None = None
    batch_size: int = BATCH_SIZE
    poll_interval: float = POLL_INTERVAL

    async def step(self) -> int:
        """Project one batch; returns how many events it held (0: caught up)."""
        async with self.pool.acquire() as connection, connection.transaction():
            count, changed = await project_once(
                connection, self.projector, batch_size=self.batch_size
            )
        if changed and self.invalidate is not None:
            await self.invalidate(changed)
        return count

    async def catch_up(self) -> int:
        """Project until no committed event is left; returns how many were projected."""
        total = 0
        while count := await self.step():
            total += count
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lease and follow the ledger until `stop` is set; the batch in progress
        finishes (its checkpoint is saved with it) before returning."""
        wake = asyncio.Event()

        def on_notify(*_args: object) -> None:
            wake.set()

        async with self.pool.acquire() as holder:
            while not stop.is_set():
                if await holder.fetchval(
                    "SELECT pg_try_advisory_lock($1)", lease_key(self.projector)
                ):
                    break
                await wait_until(stop, self.poll_interval)
            if stop.is_set():
                return
            await holder.add_listener(NOTIFY_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    if await self.step() == self.batch_size:
                        continue
                    await wait_until(stop, self.poll_interval, wake)
            finally:
                await holder.remove_listener(NOTIFY_CHANNEL, on_notify)
                await holder.execute("SELECT pg_advisory_unlock($1)", lease_key(self.projector))


async def wait_until(
    stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None
) -> None:
    """Sleep until `stop` (or `wake`) is set, or `seconds` pass."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# --- rebuilding ---------------------------------------------------------------------------------


def rebuild_schema(projector: Projector) -> str:
    return f"rebuild_{projector.name}"


async def rebuild(
    connection: Connection,
    projector: Projector,
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> Cursor:
    """Rebuild the projector's tables from position 0 and swap them in atomically.

    Runs as the schema's owner. Readers are served the old tables until the swap; the live
    runner waits only for the swap's transaction, which also projects whatever was appended
    since the rebuild's last batch. Returns the checkpoint the swapped tables are at.
    """
    scratch = rebuild_schema(projector)
    await connection.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
    await connection.execute(f"CREATE SCHEMA {scratch}")
    await connection.execute("SELECT vl_create_read_models($1)", scratch)
    cursor = START
    while True:
        async with connection.transaction():
            await connection.execute(f"SET LOCAL search_path = {scratch}, public")
            records = await read_committed(connection, cursor, batch_size)
            if records:
                await apply_batch(connection, projector, records)
                cursor = records[-1].cursor
        if progress is not None:
            progress(len(records))
        if len(records) < batch_size:
            break
    async with connection.transaction():
        await locked_checkpoint(connection, checkpoint_name(projector.name))
        await connection.execute(f"SET LOCAL search_path = {scratch}, public")
        while records := await read_committed(connection, cursor, batch_size):
            await apply_batch(connection, projector, records)
            cursor = records[-1].cursor
            if progress is not None:
                progress(len(records))
        for table in projector.tables:
            await connection.execute(f"DROP TABLE {READ_MODELS_SCHEMA}.{table.name}")
            await connection.execute(
                f"ALTER TABLE {scratch}.{table.name} SET SCHEMA {READ_MODELS_SCHEMA}"
            )
        await connection.execute(f"SET LOCAL search_path = {READ_MODELS_SCHEMA}, public")
        await save_checkpoint(connection, checkpoint_name(projector.name), cursor)
        await connection.execute(f"DROP SCHEMA {scratch} CASCADE")
        await connection.execute("SELECT vl_grant_read_models($1)", READ_MODELS_SCHEMA)
    return cursor
