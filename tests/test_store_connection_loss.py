"""The writer connection breaking: between rounds, with a statement in flight (before or after
it reached the server), and with the database gone. Every append is answered, none is written
twice, and the store goes on.

The breaks are made by a real TCP proxy between the store and PostgreSQL, which can drop a
connection at a chosen moment, or by ending sessions from the server's side."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing, asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import pytest

from eventstore.db import APP_ROLE, create_pool
from eventstore.errors import AppendOutcomeUnknownError, LedgerBusyError
from eventstore.store import (
    EventStore,
    Metadata,
    NewEvent,
    RecordedEvent,
    StreamState,
    _outcome_unknown,
)
from tests.conftest import (
    FreshDatabases,
    head_held,
    lock_waiters,
    lock_waiting_pids,
    settings_for,
    verified_records,
    write_record_directly,
)
from valueledger.bootstrap import open_store

ANY = StreamState.ANY


class PostgresProxy:
    """Forwards PostgreSQL connections, byte for byte, and breaks one on request.

    `cut_request_with`: the connection whose client next sends these bytes (a marker in an
    append's data) is dropped with them: the server never sees that request.
    `cut_answer_to`: the request carrying these bytes goes to the server, but the server's
    answer is dropped with the connection: the client never learns what happened.
    `cut_everything()`: every connection dropped at once, as by a network failure, while the
    server's side of each lives on until the server notices. `refusing`: new connections are
    closed at once."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self._port = parts.port or 5432
        self._unix = f"{socket_dir}/.s.PGSQL.{self._port}" if socket_dir.startswith("/") else None
        self._host = parts.hostname or "127.0.0.1"
        self._user = parts.username or "postgres"
        self._database = parts.path.lstrip("/")
        self.cut_request_with: bytes | None = None
        self.cut_answer_to: bytes | None = None
        self.refusing = False
        self.cuts = 0
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql://{self._user}@127.0.0.1:{port}/{self._database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def cut_everything(self) -> None:
        """Drop every client connection; the server's side of each is left open."""
        for client in list(self._clients):
            client.transport.abort()
        self.cuts += len(self._clients)
        self._clients.clear()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        if self.refusing:
            client_out.transport.abort()
            return
        if self._unix is not None:
            server_in, server_out = await asyncio.open_unix_connection(self._unix)
        else:
            server_in, server_out = await asyncio.open_connection(self._host, self._port)
        answer_to_cut = asyncio.Event()
        writers = (client_out, server_out)
        self._clients.add(client_out)

        def cut() -> None:
            self.cuts += 1
            for writer in writers:
                writer.transport.abort()

        async def requests() -> None:
            while data := await client_in.read(65536):
                if self.cut_request_with is not None and self.cut_request_with in data:
                    self.cut_request_with = None
                    cut()
                    return
                if self.cut_answer_to is not None and self.cut_answer_to in data:
                    self.cut_answer_to = None
                    answer_to_cut.set()
                server_out.write(data)
                await server_out.drain()
            server_out.close()

        async def answers() -> None:
            while data := await server_in.read(65536):
                if answer_to_cut.is_set():  # the server has answered: it committed
                    cut()
                    return
                client_out.write(data)
                await client_out.drain()
            client_out.close()

        for pump in (requests(), answers()):
            task = asyncio.create_task(self._pumped(pump))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pumped(pump: Coroutine[Any, Any, None]) -> None:
        with suppress(OSError):
            await pump


@pytest.fixture
async def own_database(main_server: FreshDatabases) -> str:
    return await main_server.create(f"lost_{secrets.token_hex(3)}")


@pytest.fixture
async def proxy(own_database: str) -> AsyncIterator[PostgresProxy]:
    proxied = PostgresProxy(own_database)
    await proxied.start()
    yield proxied
    await proxied.stop()


@asynccontextmanager
async def store_on(url: str, key_folder: Path, role: str = APP_ROLE) -> AsyncIterator[EventStore]:
    settings = msgspec.structs.replace(settings_for(url, key_folder), db_role=role)
    async with open_store(settings, url) as opened:
        yield opened


@asynccontextmanager
async def begun_store(
    url: str,
    key_folder: Path,
    meta: Metadata,
    tenants: list[str],
    head_lock_timeout: float,
    role: str = APP_ROLE,
) -> AsyncIterator[EventStore]:
    """A store with a lock timeout of the test's choosing, each tenant's chain begun with one
    event ("A" on stream `<tenant>-s`)."""
    async with store_on(url, key_folder, role) as opened:
        store = EventStore(opened.pool, opened.signing_key, head_lock_timeout=head_lock_timeout)
        try:
            for tenant in tenants:
                await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
            yield store
        finally:
            await store.close()


@pytest.fixture(params=["application role", "role without pg_read_all_stats"])
async def pool_role(request: pytest.FixtureRequest, own_database: str) -> AsyncIterator[str]:
    """The role the store's sessions run as: the schema's application role, or one with the
    store's privileges but not pg_read_all_stats (which schema.sql grants only when its owner
    may), to which even its own sessions' start times are hidden."""
    if request.param == "application role":
        yield APP_ROLE
        return
    role = f"vl_nostats_{secrets.token_hex(3)}"
    owner = await asyncpg.connect(own_database)
    try:
        await owner.execute(
            f"CREATE ROLE {role} NOLOGIN;"
            f" GRANT SELECT, INSERT ON events, append_idempotency TO {role};"
            f" GRANT SELECT, INSERT, UPDATE ON chain_heads TO {role};"
            f" GRANT SELECT ON signing_keys, store_epochs TO {role};"
        )
        yield role
    finally:
        await owner.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await owner.close()


def _tenant() -> str:
    return f"lost-{secrets.token_hex(4)}"


def _marked() -> tuple[dict[str, str], bytes]:
    """Event data carrying a marker, and the marker's bytes as they go over the wire."""
    marker = secrets.token_hex(8)
    return {"marker": marker}, marker.encode()


async def test_a_writer_session_ended_between_rounds_is_replaced(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    tenant = _tenant()
    async with store_on(own_database, key_folder) as store:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
        admin = await asyncpg.connect(own_database)
        try:
            ended = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert ended >= 1
        for noticed in (False, True):  # the break not yet seen by the client, then seen
            if noticed:
                await asyncio.sleep(0.1)
            await store.append(f"{tenant}-s", [NewEvent("B", {})], ANY, tenant, meta)
        assert [e.type for e in await store.read_tenant(tenant)] == ["A", "B", "B"]
    assert await verified_records(own_database, [tenant]) == 3


async def _listening_pid(admin: asyncpg.Connection) -> int:
    """The session of this database that LISTENs (a subscriber's), once it does."""
    for _ in range(1000):
        pid: int | None = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError("the subscriber never listened")


async def test_a_subscriber_whose_listening_session_ended_gets_every_event_by_polling(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """Issue #2 section 4: subscribe is woken by LISTEN/NOTIFY, with a polling fallback. Its
    listening session is ended from the server's side, so no notification can reach it again;
    round after round, every event appended still arrives, in order, from polling alone."""
    tenant = _tenant()
    async with store_on(own_database, key_folder) as writer:
        subscriber = EventStore(writer.pool, writer.signing_key, poll_interval=0.05)
        arrived: asyncio.Queue[RecordedEvent] = asyncio.Queue()

        async def follow() -> None:
            async with aclosing(subscriber.subscribe()) as events:
                async for event in events:
                    await arrived.put(event)

        follower = asyncio.create_task(follow())
        admin = await asyncpg.connect(own_database)
        try:
            listener = await _listening_pid(admin)
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", listener)
            sent: list[RecordedEvent] = []
            for round_ in range(3):
                appended = await writer.append(
                    f"{tenant}-s",
                    [NewEvent("A", {"round": round_}), NewEvent("B", {})],
                    ANY,
                    tenant,
                    meta,
                )
                sent.extend(appended)
                # A bound on the wait, so that a subscriber that never polls fails the test
                # instead of hanging it; not a measure of how soon events arrive.
                seen = [await asyncio.wait_for(arrived.get(), 30) for _ in appended]
                assert [(e.tenant, e.seq) for e in seen] == [(e.tenant, e.seq) for e in appended]
            assert (
                await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", listener
                )
                == 0
            )
        finally:
            await admin.close()
            follower.cancel()
            with suppress(asyncio.CancelledError):
                await follower
    assert await verified_records(own_database, [tenant]) == len(sent) == 6


async def test_a_commit_whose_answer_is_lost_is_answered_from_the_ledger_once(
    proxy: PostgresProxy, own_database: str, key_folder: Path, meta: Metadata
) -> None:
    tenants = [_tenant(), _tenant()]
    async with store_on(proxy.url, key_folder) as store:
        for tenant in tenants:
            await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
        data, marker = _marked()
        proxy.cut_answer_to = marker
        answered = await asyncio.gather(
            *(store.append(f"{t}-s", [NewEvent("B", data)], 1, t, meta) for t in tenants)
        )
        assert proxy.cuts == 1
        # Answered as committed: not sent again (a retry would have met its own version and
        # failed with a ConcurrencyError, or, with ANY, written a second copy).
        assert [[(e.seq, e.version, e.type) for e in events] for events in answered] == [
            [(2, 2, "B")],
            [(2, 2, "B")],
        ]
        stored = [await store.read_tenant(t) for t in tenants]
        assert [events[-1] for events in answered] == [chain[-1] for chain in stored]
        await store.append(f"{tenants[0]}-s", [NewEvent("C", {})], 2, tenants[0], meta)
    assert await verified_records(own_database, tenants) == 5


async def test_a_statement_lost_before_the_server_saw_it_goes_again_once(
    proxy: PostgresProxy, own_database: str, key_folder: Path, meta: Metadata
) -> None:
    tenant = _tenant()
    async with store_on(proxy.url, key_folder) as store:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
        data, marker = _marked()
        proxy.cut_request_with = marker
        events = await store.append(f"{tenant}-s", [NewEvent("B", data)], ANY, tenant, meta)
        assert proxy.cuts == 1
        assert [(e.seq, e.type) for e in events] == [(2, "B")]
        assert [e.type for e in await store.read_tenant(tenant)] == ["A", "B"]
    assert await verified_records(own_database, [tenant]) == 2


async def test_a_statement_cut_off_while_its_session_lives_on_is_ended_then_sent_again(
    proxy: PostgresProxy, own_database: str, key_folder: Path, meta: Metadata, pool_role: str
) -> None:
    """The network drops while the statement waits for a head another session holds: the
    server's side of the writer lives on, still waiting, and would commit once the head is
    free. The store names that session and ends it as the login role, which owns it (the role
    its sessions run as may do neither), before it looks for the records, so the append it
    then sends again is written once, not twice."""
    tenant = _tenant()
    async with begun_store(proxy.url, key_folder, meta, [tenant], 60, pool_role) as store:
        async with head_held(own_database, tenant) as holder:
            call = asyncio.create_task(
                store.append(f"{tenant}-s", [NewEvent("B", {})], ANY, tenant, meta)
            )
            await lock_waiters(holder, 1)
            [first] = await lock_waiting_pids(holder)
            proxy.cut_everything()
            # The head stays held until the cut-off session is gone and the append, sent
            # again from a new session, waits in its place.
            for _ in range(1000):
                if await lock_waiting_pids(holder) not in ([], [first]):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the append never came back from a new session")
        events = await call
        assert [(e.seq, e.type) for e in events] == [(2, "B")]
        assert [e.type for e in await store.read_tenant(tenant)] == ["A", "B"]
    assert await verified_records(own_database, [tenant]) == 2


async def test_with_the_database_out_of_reach_the_outcome_is_reported_unknown(
    proxy: PostgresProxy, own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """The answer is lost and no new connection can be made to learn what happened: the caller
    is told so, not handed a guess. Once the database is back, the store goes on."""
    tenant = _tenant()
    async with store_on(proxy.url, key_folder) as store:
        await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
        # Idle pool connections are closed, so that learning the outcome needs a new one.
        await store.pool.expire_connections()
        proxy.refusing = True
        data, marker = _marked()
        proxy.cut_answer_to = marker
        with pytest.raises(AppendOutcomeUnknownError, match="cannot be learned now"):
            await store.append(f"{tenant}-s", [NewEvent("B", data)], 1, tenant, meta)
        assert proxy.cuts == 1
        proxy.refusing = False
        # It did commit (the server got the whole statement): deciding again finds that.
        assert [e.type for e in await store.read_tenant(tenant)] == ["A", "B"]
        await store.append(f"{tenant}-s", [NewEvent("C", {})], 2, tenant, meta)
    assert await verified_records(own_database, [tenant]) == 3


async def test_lone_rounds_after_a_failed_statement_are_not_starved_by_busy_tenants(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """A statement fails as a whole (a record slipped into one chain behind the store's back),
    so its appends go again one per round, while appends to sixteen other tenants keep
    arriving, as requests do, so that a round is always prepared ahead. The lone rounds go
    first: they are answered while the others are still arriving."""
    broken, healthy = _tenant(), _tenant()
    busy = [_tenant() for _ in range(16)]
    stop = asyncio.Event()
    arrivals: list[asyncio.Task[list[RecordedEvent]]] = []

    async with store_on(own_database, key_folder) as store:
        for tenant in (broken, healthy):
            await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
        owner = await asyncpg.connect(own_database)
        try:
            await write_record_directly(owner, broken, 2, f"{broken}-slipped", "Slipped")
        finally:
            await owner.close()

        async def keep_arriving() -> None:
            outstanding = asyncio.Semaphore(64)
            while not stop.is_set() and len(arrivals) < 4000:
                await outstanding.acquire()
                tenant = busy[len(arrivals) % len(busy)]
                arrival = asyncio.create_task(
                    store.append(f"{tenant}-s", [NewEvent("Busy", {})], ANY, tenant, meta)
                )
                arrival.add_done_callback(lambda _: outstanding.release())
                arrivals.append(arrival)
                await asyncio.sleep(0)

        producer = asyncio.create_task(keep_arriving())
        await asyncio.sleep(0.2)  # rounds are being prepared ahead
        outcomes = await asyncio.gather(
            store.append(f"{broken}-s", [NewEvent("B", {})], ANY, broken, meta),
            store.append(f"{healthy}-s", [NewEvent("B", {})], ANY, healthy, meta),
            return_exceptions=True,
        )
        still_arriving = not producer.done()
        stop.set()
        await producer
        await asyncio.gather(*arrivals)
    assert isinstance(outcomes[0], asyncpg.UniqueViolationError)
    assert isinstance(outcomes[1], list)
    assert still_arriving, f"answered only once all {len(arrivals)} other appends had arrived"
    assert await verified_records(own_database, [healthy, *busy]) == 2 + len(arrivals)


async def test_a_head_held_by_another_session_fails_only_its_tenant_after_the_lock_timeout(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """One connection carries every tenant's rounds, so a head held elsewhere must not hold up
    the others for longer than the lock timeout: the held tenant's appends fail, all of them
    at the first timeout of one on its own (not one timeout each, in turn), and nothing else
    does."""
    held, free = _tenant(), _tenant()
    async with begun_store(own_database, key_folder, meta, [held, free], 0.2) as store:
        async with head_held(own_database, held):
            outcomes = await asyncio.gather(
                *(
                    store.append(f"{held}-s{n}", [NewEvent("B", {})], ANY, held, meta)
                    for n in range(6)
                ),
                store.append(f"{free}-s", [NewEvent("B", {})], ANY, free, meta),
                return_exceptions=True,
            )
        *busy, answered = outcomes
        assert all(isinstance(outcome, LedgerBusyError) for outcome in busy), busy
        assert "was held by another session for more than 0.2 s" in str(busy[0])
        causes = {id(outcome.__cause__) for outcome in busy}  # type: ignore[union-attr]
        assert len(causes) == 1, "each append waited out a lock timeout of its own"
        assert [e.seq for e in answered] == [2]  # type: ignore[union-attr]
        await store.append(f"{held}-s", [NewEvent("C", {})], ANY, held, meta)
    assert await verified_records(own_database, [held, free]) == 4


async def test_a_lock_timeout_shared_with_a_held_tenant_does_not_refuse_a_free_one(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """A round carries a held tenant's append and a free tenant's; the held tenant's caller
    gives up while the statement waits. When the round times out, the free tenant's append is
    the only one left, and must go again (alone), not be refused as busy with its queue."""
    held, free = _tenant(), _tenant()
    async with begun_store(own_database, key_folder, meta, [held, free], 0.5) as store:
        async with head_held(own_database, held) as holder:
            gives_up = asyncio.create_task(
                store.append(f"{held}-s", [NewEvent("B", {})], ANY, held, meta)
            )
            waits = asyncio.create_task(
                store.append(f"{free}-s", [NewEvent("B", {})], ANY, free, meta)
            )
            await lock_waiters(holder, 1)
            queued = [
                asyncio.create_task(
                    store.append(f"{free}-s{n}", [NewEvent("C", {})], ANY, free, meta)
                )
                for n in range(3)
            ]
            gives_up.cancel()
            outcomes = await asyncio.gather(waits, *queued, return_exceptions=True)
        assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
        assert [e.type for e in await store.read_tenant(free)] == ["A", "B", "C", "C", "C"]


@pytest.mark.parametrize("when", ["before it ran", "during a statement"])
async def test_appends_waiting_when_the_commit_task_dies_are_answered(
    own_database: str, key_folder: Path, meta: Metadata, when: str
) -> None:
    """The commit task is cancelled (as when its event loop shuts down) with appends queued,
    before it ever ran or while its statement waits for a head another session holds: none of
    their callers is left waiting, each learns it went in or that its outcome is unknown, and
    the store serves later appends."""
    tenants = [_tenant() for _ in range(6)]
    # Its statement waits for the head until cancelled, never timing out first.
    async with begun_store(own_database, key_folder, meta, tenants, 600) as store:
        async with head_held(own_database, tenants[0]) as holder:
            calls = [
                asyncio.create_task(store.append(f"{t}-s", [NewEvent("B", {})], ANY, t, meta))
                for t in tenants
            ]
            await asyncio.sleep(0)  # queued, the commit task created
            if when == "during a statement":
                await lock_waiters(holder, 1)
            committer = store._committer
            assert committer is not None
            committer.cancel()
            outcomes = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), timeout=30
            )
            # The cancel request travels on its own: keep the head until it has landed.
            for _ in range(1000):
                if not await lock_waiting_pids(holder):
                    break
                await asyncio.sleep(0.01)
        assert all(isinstance(outcome, AppendOutcomeUnknownError) for outcome in outcomes), outcomes
        for tenant in tenants:
            await store.append(f"{tenant}-s", [NewEvent("C", {})], ANY, tenant, meta)
        counts = [len(await store.read_tenant(t)) for t in tenants]
    assert counts == [2] * len(tenants)  # the cancelled statement wrote nothing
    assert await verified_records(own_database, tenants) == sum(counts)


async def test_closing_the_store_gives_its_connection_back_without_its_settings(
    own_database: str, key_folder: Path, meta: Metadata
) -> None:
    """The pool does not reset what it takes back, so the writer's settings must not ride on
    into whoever uses the connection next (a pool of one connection: the writer's)."""
    pool = await create_pool(own_database, min_size=1, max_size=1)
    try:
        async with store_on(own_database, key_folder) as opened:
            store = EventStore(pool, opened.signing_key, head_lock_timeout=0.2)
            tenant = _tenant()
            await store.append(f"{tenant}-s", [NewEvent("A", {})], ANY, tenant, meta)
            await store.close()
        async with pool.acquire() as connection:
            settings = await connection.fetchrow(
                "SELECT current_setting('lock_timeout') AS lock_timeout,"
                " current_setting('plan_cache_mode') AS plan_cache_mode"
            )
    finally:
        await pool.close()
    assert settings is not None
    assert dict(settings) == {"lock_timeout": "0", "plan_cache_mode": "auto"}


async def test_only_a_broken_connection_or_an_ended_session_leaves_the_outcome_unknown(
    own_database: str,
) -> None:
    """A statement refused by the server, or by the client before sending, did not commit;
    one whose connection broke or whose session the server ended may have."""
    pool = await create_pool(own_database, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:
            assert not _outcome_unknown(asyncpg.UniqueViolationError("dup"), connection)
            assert not _outcome_unknown(asyncpg.DataError("bad argument"), connection)
            assert not _outcome_unknown(ValueError("a bug"), connection)
            assert _outcome_unknown(ConnectionResetError(), connection)
            assert _outcome_unknown(asyncpg.ConnectionDoesNotExistError("gone"), connection)
            assert _outcome_unknown(asyncpg.AdminShutdownError("ended"), connection)
            assert _outcome_unknown(asyncpg.CrashShutdownError("crashed"), connection)
            connection.terminate()
            assert _outcome_unknown(asyncpg.UniqueViolationError("dup"), connection)
    finally:
        await pool.close()
