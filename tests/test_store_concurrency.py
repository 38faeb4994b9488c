"""Races: optimistic concurrency, many tenants at once, and the reader that must skip nothing."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import defaultdict
from pathlib import Path

import asyncpg
import pytest

from eventstore.db import create_pool
from eventstore.errors import ConcurrencyError
from eventstore.receipts import GENESIS_HASH
from eventstore.store import (
    START,
    Cursor,
    EventStore,
    Metadata,
    NewEvent,
    RecordedEvent,
    StreamState,
    read_committed,
)
from tests.conftest import settings_for, verified_records, write_record_directly
from valueledger.bootstrap import open_store


async def test_fifty_racers_on_one_expected_version_one_wins(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    await store.append(
        f"{tenant}-race", [NewEvent("Opened", {})], StreamState.NO_STREAM, tenant, meta
    )

    async def racer(n: int) -> str:
        try:
            await store.append(f"{tenant}-race", [NewEvent("Claimed", {"by": n})], 1, tenant, meta)
        except ConcurrencyError as error:
            return f"lost to version {error.actual} expecting {error.expected}"
        return "won"

    outcomes = await asyncio.gather(*(racer(n) for n in range(50)))
    assert outcomes.count("won") == 1
    assert outcomes.count("lost to version 2 expecting 1") == 49
    assert [e.version for e in await store.read_stream(f"{tenant}-race")] == [1, 2]


async def test_racers_in_separate_processes_worth_of_pools_one_wins(
    store: EventStore, database_url: str, key_folder: Path, tenant: str, meta: Metadata
) -> None:
    """Two store instances (two pools, as two processes would have) racing on one stream: the
    database, not the in-process lane, decides."""
    await store.append(
        f"{tenant}-race", [NewEvent("Opened", {})], StreamState.NO_STREAM, tenant, meta
    )
    async with open_store(settings_for(database_url, key_folder), database_url) as other:

        async def racer(target: EventStore, n: int) -> bool:
            try:
                await target.append(
                    f"{tenant}-race", [NewEvent("Claimed", {"by": n})], 1, tenant, meta
                )
            except ConcurrencyError:
                return False
            return True

        wins = await asyncio.gather(*(racer(store if n % 2 else other, n) for n in range(50)))
    assert wins.count(True) == 1


async def test_eight_tenants_at_once_every_chain_contiguous_and_valid(
    store: EventStore, database_url: str, meta: Metadata
) -> None:
    tenants = [f"c-{secrets.token_hex(4)}" for _ in range(8)]

    async def writer(tenant: str, stream: int) -> None:
        for n in range(25):
            await store.append(
                f"{tenant}-s-{stream}",
                [NewEvent("Measured", {"n": n})],
                StreamState.ANY,
                tenant,
                meta,
            )

    await asyncio.gather(*(writer(t, s) for t in tenants for s in range(3)))
    for tenant in tenants:
        chain = await store.read_tenant(tenant)
        assert [e.seq for e in chain] == list(range(1, 76))
        assert chain[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))
    assert await verified_records(database_url, tenants) == 8 * 75


async def test_a_slow_transaction_holding_a_lower_position_is_not_skipped(
    store: EventStore, database_url: str, tenant: str, meta: Metadata
) -> None:
    """The defect of position-ordered readers: T1 takes a position, T2 takes a higher one and
    commits first, a reader passes T2, T1 commits behind the cursor. Here T2 is held back
    until T1 ends, and both are then handed out, T1 first."""
    head = await store.read_all(START, limit=1_000_000)
    cursor = head[-1].cursor if head else START
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await write_record_directly(slow, f"{tenant}-x", 1, f"{tenant}-x-slow", "Slow")
        fast = await store.append(
            f"{tenant}-fast", [NewEvent("Fast", {})], StreamState.ANY, tenant, meta
        )
        assert fast[0].position > await slow.fetchval(
            "SELECT max(position) FROM events WHERE tenant = $1", f"{tenant}-x"
        )
        assert [
            e for e in await store.read_all(cursor) if e.tenant in (tenant, f"{tenant}-x")
        ] == []
        held, age = await store.held_back(cursor)
        assert held >= 1
        assert age > 0
        await transaction.commit()
    finally:
        await slow.close()
    seen = [e for e in await store.read_all(cursor) if e.tenant in (tenant, f"{tenant}-x")]
    assert [e.type for e in seen] == ["Slow", "Fast"]


async def test_many_writers_many_tenants_a_subscriber_sees_each_event_once(
    store: EventStore, database_url: str, key_folder: Path, meta: Metadata
) -> None:
    """Writers on two store instances (two pools) append to 12 tenants while a subscriber
    follows from the current head; it must receive exactly the appended events, each once,
    in non-decreasing cursor order and, per tenant, in chain order."""
    existing = await store.read_all(START, limit=1_000_000)
    cursor = existing[-1].cursor if existing else START
    tenants = [f"m-{secrets.token_hex(4)}" for _ in range(12)]
    written: list[RecordedEvent] = []
    received: list[RecordedEvent] = []
    total = 12 * 4 * 10

    async def follow() -> None:
        async for event in store.subscribe(cursor):
            if event.tenant in tenants:
                received.append(event)
                if len(received) == total:
                    return

    follower = asyncio.create_task(follow())
    async with open_store(settings_for(database_url, key_folder), database_url) as other:

        async def writer(target: EventStore, tenant: str, stream: str) -> None:
            for n in range(10):
                written.extend(
                    await target.append(
                        stream, [NewEvent("Tick", {"n": n})], StreamState.ANY, tenant, meta
                    )
                )

        await asyncio.gather(
            *(
                writer(store if w % 2 else other, tenant, f"{tenant}-w{w}")
                for tenant in tenants
                for w in range(4)
            )
        )
    await asyncio.wait_for(follower, timeout=30)
    assert len(received) == total
    assert {(e.tenant, e.seq) for e in received} == {(e.tenant, e.seq) for e in written}
    assert len({e.position for e in received}) == total
    cursors = [e.cursor for e in received]
    assert cursors == sorted(cursors)
    by_tenant: dict[str, list[int]] = defaultdict(list)
    for event in received:
        by_tenant[event.tenant].append(event.seq)
    assert all(seqs == list(range(1, 41)) for seqs in by_tenant.values())


async def test_eight_processes_worth_of_writers_a_reader_pages_each_event_once(
    store: EventStore, database_url: str, meta: Metadata
) -> None:
    """As many write transactions at once as eight processes have: eight stores, each with its
    own pool and writer connection, append to 16 tenants, each tenant from four of them (so
    their statements also wait on each other's head locks), while a reader pages through the
    ledger by cursor, seven events at a time, on a connection and event loop of its own (a
    thread, so that it reads as often as a reader process would, not only when the writers
    let this loop go). It must see every committed event exactly once, in cursor order, and
    each tenant's in chain order: seq 1, 2, ..., each linked to the one before."""
    existing = await store.read_all(START, limit=1_000_000)
    after = existing[-1].cursor if existing else START
    tenants = [f"p-{secrets.token_hex(4)}" for _ in range(16)]
    total = 16 * 4 * 18  # tenants, writers of each, events each writer appends
    written: list[RecordedEvent] = []
    received: list[RecordedEvent] = []

    async def writer(target: EventStore, tenant: str, stream: str) -> None:
        for n in range(12):
            events = [NewEvent("Tick", {"n": n, "i": i}) for i in range(1 + n % 2)]
            written.extend(await target.append(stream, events, StreamState.ANY, tenant, meta))

    async def reader(cursor: Cursor) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            while len(received) < total:  # one skipped never comes: the wait_for ends it
                page = await read_committed(connection, cursor, limit=7)
                received.extend(event for event in page if event.tenant in tenants)
                if page:
                    cursor = page[-1].cursor
                else:
                    await asyncio.sleep(0.001)
        finally:
            await connection.close()

    reading = asyncio.ensure_future(
        asyncio.to_thread(asyncio.run, asyncio.wait_for(reader(after), 30))
    )
    stores = [
        EventStore(await create_pool(database_url, min_size=1, max_size=2), store.signing_key)
        for _ in range(8)
    ]
    try:
        await asyncio.gather(
            *(
                writer(stores[(t + shift) % 8], tenant, f"{tenant}-w{shift}")
                for t, tenant in enumerate(tenants)
                for shift in range(4)
            )
        )
    finally:
        for opened in stores:
            await opened.close()
            await opened.pool.close()
    await reading
    assert len(written) == total
    assert sorted((e.tenant, e.seq) for e in received) == sorted((e.tenant, e.seq) for e in written)
    cursors = [e.cursor for e in received]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    chains: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in received:
        chains[event.tenant].append(event)
    for chain in chains.values():
        assert [e.seq for e in chain] == list(range(1, 73))
        assert chain[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))


def test_cursor_text_round_trip() -> None:
    cursor = Cursor(2, 123456789, 42)
    assert Cursor.parse(str(cursor)) == cursor
    # Not digits, other scripts' digits (which int() reads), and values no column can hold.
    for bad in ("", "1.2", "1.2.x", "-1.2.3", "\u00b2.1.1", "1.\u0663.1", f"1.1.{2**63}"):
        with pytest.raises(ValueError, match="cursor"):
            Cursor.parse(bad)


async def test_a_busy_lane_keeps_every_append_exact_under_conflicts(
    store: EventStore, database_url: str, tenant: str, meta: Metadata
) -> None:
    """Many writers on one tenant keep its lane busy, so batches are prepared while the one
    before commits. Writers on their own streams must always succeed; writers contending on a
    shared stream must each see either success or a ConcurrencyError with the true version,
    and the chain must come out contiguous and valid."""
    shared = f"{tenant}-shared"
    await store.append(shared, [NewEvent("Opened", {})], StreamState.NO_STREAM, tenant, meta)
    wins: list[int] = []
    conflicts: list[tuple[int, int]] = []

    async def writer(n: int) -> None:
        own = f"{tenant}-own-{n}"
        seen = 1
        for version in range(20):
            expected = StreamState.NO_STREAM if version == 0 else version
            await store.append(own, [NewEvent("Own", {"n": n})], expected, tenant, meta)
            try:
                done = await store.append(
                    shared, [NewEvent("Shared", {"n": n})], seen, tenant, meta
                )
            except ConcurrencyError as error:
                conflicts.append((seen, error.actual))
                seen = error.actual
            else:
                wins.append(done[0].version)
                seen = done[0].version

    await asyncio.gather(*(writer(n) for n in range(10)))
    assert conflicts, "ten writers on one stream should have collided"
    assert all(actual > expected for expected, actual in conflicts)
    assert sorted(wins) == list(range(2, 2 + len(wins)))
    assert [e.version for e in await store.read_stream(shared)] == list(range(1, 2 + len(wins)))
    for n in range(10):
        assert [e.version for e in await store.read_stream(f"{tenant}-own-{n}")] == list(
            range(1, 21)
        )
    assert await verified_records(database_url, [tenant]) == 1 + 200 + len(wins)
