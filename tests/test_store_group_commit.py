"""Cross-tenant group commit: several tenants' appends in one statement and one commit, and what
must still hold when another process (another store, another pool) writes the same tenants."""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.bundle import export_bundle
from eventstore.errors import ConcurrencyError, StreamOwnershipError
from eventstore.keys import rotate_key, write_new_private_key
from eventstore.store import EventStore, Metadata, NewEvent, RecordedEvent, StreamState
from eventstore.verify import KeyRing, verify_database
from tests.conftest import (
    FreshDatabases,
    head_held,
    lock_waiters,
    settings_for,
    verified_records,
    write_record_directly,
)
from valueledger.bootstrap import open_store

ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM


@pytest.fixture(scope="module")
async def other_store(database_url: str, key_folder: Path) -> AsyncIterator[EventStore]:
    """A second store on the same database with a pool of its own, as another process has."""
    async with open_store(settings_for(database_url, key_folder), database_url) as opened:
        yield opened


def _tenants(count: int) -> list[str]:
    prefix = f"g-{secrets.token_hex(4)}"
    return [f"{prefix}-{index}" for index in range(count)]


async def test_concurrent_appends_of_many_tenants_share_one_commit(
    store: EventStore, database_url: str, meta: Metadata
) -> None:
    tenants = _tenants(8)
    done = await asyncio.gather(
        *(
            store.append(f"{t}-s", [NewEvent("A", {}), NewEvent("B", {})], ANY, t, meta)
            for t in tenants
        )
    )
    events = [event for appended in done for event in appended]
    assert len({event.tx_id for event in events}) == 1  # one statement, one transaction
    assert [[(e.tenant, e.seq) for e in appended] for appended in done] == [
        [(t, 1), (t, 2)] for t in tenants
    ]
    positions = [event.position for event in events]
    assert positions == sorted(positions)
    for appended in done:
        assert appended == await store.read_stream(appended[0].stream)
    assert await verified_records(database_url, tenants) == 16


async def test_a_tenant_moved_by_another_store_is_refused_alone_and_rebuilt(
    store: EventStore, other_store: EventStore, database_url: str, meta: Metadata
) -> None:
    """`store` caches every head; `other_store` then moves one of them. In the statement that
    follows, that tenant's head does not move and none of its records are written, while the
    others commit; it is then rebuilt on the new head and committed on its own."""
    first, moved, last = tenants = _tenants(3)
    for tenant in tenants:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
    foreign = await other_store.append(f"{moved}-x", [NewEvent("X", {})], ANY, moved, meta)
    done = await asyncio.gather(
        *(store.append(f"{t}-s", [NewEvent("B", {})], 1, t, meta) for t in tenants)
    )
    by_tenant = {appended[0].tenant: appended[0] for appended in done}
    assert by_tenant[first].tx_id == by_tenant[last].tx_id
    assert by_tenant[moved].tx_id != by_tenant[first].tx_id
    assert by_tenant[moved].tx_id > foreign[0].tx_id
    assert [(e.seq, e.type) for e in await store.read_tenant(moved)] == [
        (1, "A"),
        (2, "X"),
        (3, "B"),
    ]
    assert by_tenant[moved].prev_hash == foreign[0].hash
    assert [e.seq for e in await store.read_tenant(first)] == [1, 2]
    assert await verified_records(database_url, tenants) == 7


async def test_a_lone_append_on_a_head_another_store_moved_is_rebuilt(
    store: EventStore, other_store: EventStore, database_url: str, meta: Metadata
) -> None:
    """The one-record round (its own, leaner statement) is refused and rebuilt the same way;
    a stale expected version still fails with the true one."""
    (tenant,) = _tenants(1)
    await store.append(f"{tenant}-s", [NewEvent("A", {})], NO_STREAM, tenant, meta)
    await other_store.append(f"{tenant}-x", [NewEvent("X", {})], NO_STREAM, tenant, meta)
    await other_store.append(f"{tenant}-s", [NewEvent("Y", {})], 1, tenant, meta)
    mine = await store.append(f"{tenant}-t", [NewEvent("B", {})], NO_STREAM, tenant, meta)
    assert (mine[0].seq, mine[0].version) == (4, 1)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(f"{tenant}-s", [NewEvent("C", {})], 1, tenant, meta)
    assert caught.value.actual == 2
    with pytest.raises(StreamOwnershipError):
        await store.append(f"{tenant}-s", [NewEvent("C", {})], 2, f"{tenant}-other", meta)
    assert await verified_records(database_url, [tenant]) == 4


async def test_a_refused_first_append_leaves_no_ledger(
    main_server: FreshDatabases, key_folder: Path, meta: Metadata
) -> None:
    """The head a tenant's first append makes (at seq 0) outlives the append's refusal; export,
    replay and verify still see no ledger for that tenant, as for one never named. (A database
    of its own: every tenant in it is verified.)"""
    url = await main_server.create(f"refused_{secrets.token_hex(3)}")
    (owner, refused) = _tenants(2)
    async with open_store(settings_for(url, key_folder), url) as store:
        await store.append(f"{owner}-s", [NewEvent("A", {})], NO_STREAM, owner, meta)
        with pytest.raises(StreamOwnershipError):
            await store.append(f"{owner}-s", [NewEvent("B", {})], 1, refused, meta)
    connection = await asyncpg.connect(url)
    try:
        with pytest.raises(LookupError, match=f"tenant '{refused}' has no ledger"):
            await export_bundle(connection, refused, io.BytesIO(), datetime.now(UTC))
        with pytest.raises(LookupError, match=f"tenant '{refused}' has no ledger"):
            await verify_database(connection, KeyRing(), [refused])
        everyone = await verify_database(connection, KeyRing())
    finally:
        await connection.close()
    assert everyone.ok, everyone.failure
    assert owner in everyone.tenants
    assert refused not in everyone.tenants


async def test_a_stale_stream_of_one_tenant_fails_only_its_append(
    store: EventStore, other_store: EventStore, meta: Metadata
) -> None:
    """Another store appended to a stream this one knows at an older version: in the shared
    statement that tenant is refused, its append fails with the true version, the others go
    in."""
    tenants = _tenants(3)
    for tenant in tenants:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], StreamState.NO_STREAM, tenant, meta)
    await other_store.append(f"{tenants[1]}-s", [NewEvent("X", {})], 1, tenants[1], meta)
    outcomes = await asyncio.gather(
        *(store.append(f"{t}-s", [NewEvent("B", {})], 1, t, meta) for t in tenants),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ConcurrencyError)
    assert (outcomes[1].expected, outcomes[1].actual) == (1, 2)
    assert [type(o) for o in (outcomes[0], outcomes[2])] == [list, list]
    assert [e.type for e in await store.read_stream(f"{tenants[1]}-s")] == ["A", "X"]


async def test_a_statement_failing_as_a_whole_fails_only_the_append_that_caused_it(
    store: EventStore, database_url: str, meta: Metadata
) -> None:
    """A row slipped into one tenant's chain behind the store's back (its head not moved) makes
    the shared insert violate that chain's primary key, failing the statement as a whole. The
    appends are then committed one by one: only that tenant's fails."""
    tenants = _tenants(3)
    for tenant in tenants:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
    broken = tenants[1]
    owner = await asyncpg.connect(database_url)
    try:
        await write_record_directly(owner, broken, 2, f"{broken}-slipped", "Slipped")
    finally:
        await owner.close()
    outcomes = await asyncio.gather(
        *(store.append(f"{t}-s", [NewEvent("B", {})], ANY, t, meta) for t in tenants),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], asyncpg.UniqueViolationError)
    assert outcomes[1].constraint_name == "events_pkey"
    assert [type(outcomes[0]), type(outcomes[2])] == [list, list]
    healthy = [tenants[0], tenants[2]]
    assert await verified_records(database_url, healthy) == 4
    # The broken tenant's lane reads its head again and is not stuck.
    assert [e.type for e in await store.read_tenant(broken)] == ["A", "Slipped"]


async def test_a_stream_claimed_by_two_tenants_at_once_goes_to_the_first(
    store: EventStore, meta: Metadata
) -> None:
    first, second = _tenants(2)
    stream = f"{first}-contested"
    outcomes = await asyncio.gather(
        store.append(stream, [NewEvent("A", {})], ANY, first, meta),
        store.append(f"{second}-own", [NewEvent("A", {})], ANY, second, meta),
        store.append(stream, [NewEvent("A", {})], ANY, second, meta),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes[:2]] == [list, list]
    assert isinstance(outcomes[2], StreamOwnershipError)
    assert [e.tenant for e in await store.read_stream(stream)] == [first]


async def test_an_idempotency_key_committed_by_another_store_is_answered_from_the_ledger(
    store: EventStore, other_store: EventStore, database_url: str, meta: Metadata
) -> None:
    """Both stores send one key while a head lock holds them back; whichever commits second is
    refused for that tenant (its other tenant goes in) and answered with the first's events."""
    keyed, bystander = _tenants(2)
    for tenant in (keyed, bystander):
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
    events = [NewEvent("Paid", {"amount": "5"})]
    async with head_held(database_url, keyed) as holder:
        racing = asyncio.gather(
            store.append(f"{keyed}-p", events, ANY, keyed, meta, "pay-1"),
            store.append(f"{bystander}-s", [NewEvent("B", {})], ANY, bystander, meta),
            other_store.append(f"{keyed}-p", events, ANY, keyed, meta, "pay-1"),
        )
        await lock_waiters(holder, 2)
    mine, theirs_bystander, theirs = await racing
    assert mine == theirs
    assert theirs_bystander[0].seq == 2
    assert [e.type for e in await store.read_tenant(keyed)] == ["A", "Paid"]
    assert await verified_records(database_url, [keyed, bystander]) == 4


@pytest.fixture
async def race_database(main_server: FreshDatabases) -> str:
    """A database of its own, so that its deadlock count is this test's alone."""
    return await main_server.create(f"race_{secrets.token_hex(3)}")


async def test_a_caller_cancelled_while_queued_leaves_the_round_to_the_others(
    store: EventStore, meta: Metadata
) -> None:
    tenants = _tenants(3)
    calls = [
        asyncio.ensure_future(store.append(f"{t}-s", [NewEvent("A", {})], ANY, t, meta))
        for t in tenants
    ]
    await asyncio.sleep(0)  # queued, not yet taken by a round
    calls[1].cancel()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert [len(await store.read_tenant(t)) for t in tenants] == [1, 0, 1]


async def test_a_key_rotated_under_a_running_round_is_picked_up_for_every_tenant(
    race_database: str, tmp_path: Path, meta: Metadata
) -> None:
    """Another process rotates the key while a store has rounds in flight and prepared: the
    statements it then sends are refused (the key is retired), it loads the new key once, and
    every tenant's appends go in signed by one key or the other, none lost, all verifying."""
    write_new_private_key(tmp_path / "signing-key.pem")
    tenants = _tenants(4)
    async with open_store(settings_for(race_database, tmp_path), race_database) as one:

        async def writer(tenant: str, first: int, count: int) -> list[str]:
            keys = []
            for n in range(first, first + count):
                done = await one.append(f"{tenant}-s", [NewEvent("T", {"n": n})], ANY, tenant, meta)
                keys.append(done[0].key_id)
            return keys

        async def rotate() -> None:
            connection = await asyncpg.connect(race_database)
            try:
                await rotate_key(connection, write_new_private_key(tmp_path / "signing-key.pem"))
            finally:
                await connection.close()

        before = await asyncio.gather(*(writer(t, 0, 5) for t in tenants))
        rotation = asyncio.ensure_future(rotate())
        during = await asyncio.gather(*(writer(t, 5, 25) for t in tenants))
        await rotation
    old_key = before[0][0]
    assert all(keys == [old_key] * 5 for keys in before)
    assert all(keys[-1] != old_key for keys in during)
    assert await verified_records(race_database, tenants) == 4 * 30


async def _deadlocks_once_closed(url: str) -> int:
    """The deadlocks PostgreSQL detected in the database at `url`, once every other session of
    it has ended (each backend hands its statistics over as it exits)."""
    observer = await asyncpg.connect(url)
    try:
        for _ in range(1000):
            others = await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            if others == 0:
                break
            await asyncio.sleep(0.01)
        deadlocks: int = await observer.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await observer.close()
    return deadlocks


async def test_two_stores_locking_overlapping_heads_cannot_deadlock(
    race_database: str, key_folder: Path, meta: Metadata
) -> None:
    """A third session holds M's head. Store A's statement for L, M, H takes L and waits for M.
    Store B's statement for H and L (queued H first) must then wait for L holding nothing; had
    it taken H first, A would wait for B on H once M is free, and B for A on L: a deadlock,
    which PostgreSQL breaks after a second by failing one statement (the store would survive
    that by retrying, so the server's deadlock count is what tells)."""
    low, middle, high = tenants = _tenants(3)
    settings_ = settings_for(race_database, key_folder)
    async with (
        open_store(settings_, race_database) as one,
        open_store(settings_, race_database) as two,
    ):
        for tenant in tenants:  # both stores learn every head: one by losing a race
            await two.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
            with pytest.raises(ConcurrencyError):
                await one.append(f"{tenant}-s", [NewEvent("A", {})], NO_STREAM, tenant, meta)
        async with head_held(race_database, middle) as holder:
            first = asyncio.gather(
                *(one.append(f"{t}-one", [NewEvent("B", {})], ANY, t, meta) for t in tenants)
            )
            await lock_waiters(holder, 1)
            second = asyncio.gather(
                *(two.append(f"{t}-s", [NewEvent("C", {})], ANY, t, meta) for t in (high, low))
            )
            await lock_waiters(holder, 2)
        (b_low, b_middle, b_high), (c_high, c_low) = await asyncio.wait_for(
            asyncio.gather(first, second), timeout=30
        )
    assert b_low[0].tx_id == b_middle[0].tx_id == b_high[0].tx_id
    assert c_low[0].tx_id == c_high[0].tx_id > b_low[0].tx_id
    assert await _deadlocks_once_closed(race_database) == 0
    assert await verified_records(race_database, tenants) == 8


async def test_two_processes_on_overlapping_tenants_never_deadlock(
    race_database: str, key_folder: Path, meta: Metadata
) -> None:
    """Two stores (two pools) append to random subsets of twelve shared tenants at once, so
    that their statements lock overlapping sets of heads concurrently: no deadlock, and every
    chain verifies."""
    tenants = _tenants(12)
    chooser = random.Random(20240611)
    settings_ = settings_for(race_database, key_folder)
    async with (
        open_store(settings_, race_database) as one,
        open_store(settings_, race_database) as two,
    ):

        async def writer(target: EventStore, name: str) -> None:
            for n in range(25):
                picked = chooser.sample(tenants, chooser.randint(2, 12))
                await asyncio.gather(
                    *(
                        target.append(f"{t}-{name}", [NewEvent("Tick", {"n": n})], ANY, t, meta)
                        for t in picked
                    )
                )

        await asyncio.gather(*(writer(one if w % 2 else two, f"w{w}") for w in range(8)))
    assert await _deadlocks_once_closed(race_database) == 0
    connection = await asyncpg.connect(race_database)
    try:
        written = await connection.fetchval("SELECT count(*) FROM events")
    finally:
        await connection.close()
    assert await verified_records(race_database, tenants) == written > 0


def _seeded(tenant: int, stream: int) -> bool:
    """Which streams exist before a schedule runs: some do, some do not."""
    return (tenant + stream) % 2 == 0


Append = tuple[int, int, int, bool]  # store, tenant, stream, exact expected version or ANY


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    schedule=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 2), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
async def test_any_schedule_of_two_stores_keeps_every_chain_and_stream_exact(
    store: EventStore,
    other_store: EventStore,
    database_url: str,
    meta: Metadata,
    schedule: list[Append],
) -> None:
    """Appends from two stores to four tenants, all at once: those expecting an exact version
    expect what the stream had before the schedule started. Whatever the interleaving, each
    append either went in whole or failed with the stream's true version; streams and chains
    are contiguous, and every chain verifies."""
    tenants = _tenants(4)
    stores = (store, other_store)

    def stream_of(tenant: int, stream: int) -> str:
        return f"{tenants[tenant]}-s{stream}"

    for tenant, stream in itertools.product(range(4), range(3)):
        if _seeded(tenant, stream):
            await store.append(
                stream_of(tenant, stream), [NewEvent("Seed", {})], ANY, tenants[tenant], meta
            )
    before = {
        (tenant, stream): len(await store.read_stream(stream_of(tenant, stream)))
        for tenant, stream in itertools.product(range(4), range(3))
    }

    async def run(index: int, item: Append) -> list[RecordedEvent] | ConcurrencyError:
        which, tenant, stream, exact = item
        known = before[(tenant, stream)]
        expected = (known or StreamState.NO_STREAM) if exact else ANY
        try:
            return await stores[which].append(
                stream_of(tenant, stream),
                [NewEvent("Step", {"i": index}), NewEvent("Check", {"i": index})],
                expected,
                tenants[tenant],
                meta,
            )
        except ConcurrencyError as error:
            return error

    outcomes = await asyncio.gather(*(run(i, item) for i, item in enumerate(schedule)))
    wins: Counter[tuple[int, int]] = Counter()
    exact_wins: Counter[tuple[int, int]] = Counter()
    for (_, tenant, stream, exact), outcome in zip(schedule, outcomes, strict=True):
        if isinstance(outcome, ConcurrencyError):
            assert exact
            assert outcome.actual > before[(tenant, stream)]
            continue
        wins[(tenant, stream)] += 1
        assert [e.type for e in outcome] == ["Step", "Check"]
        assert outcome[1].version == outcome[0].version + 1
        if exact:
            exact_wins[(tenant, stream)] += 1
            assert outcome[0].version == before[(tenant, stream)] + 1
    assert all(count == 1 for count in exact_wins.values())
    chains: defaultdict[str, list[int]] = defaultdict(list)
    for (tenant, stream), count in before.items():
        read = await store.read_stream(stream_of(tenant, stream))
        assert [e.version for e in read] == list(range(1, count + 2 * wins[(tenant, stream)] + 1))
        chains[tenants[tenant]].extend(e.seq for e in read)
    for seqs in chains.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert await verified_records(database_url, tenants) == sum(len(c) for c in chains.values())
