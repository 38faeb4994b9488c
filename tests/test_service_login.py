"""The service's own sessions log in as a role that owns nothing, so none of them can step back
(SET ROLE NONE) to the owner of the ledger's tables and disable the triggers that keep it
append-only: on the embedded server by default, elsewhere with VALUELEDGER_APP_DATABASE_URL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventstore.db import APP_ROLE, apply_schema
from eventstore.store import Actor, EventStore, Metadata, NewEvent, StreamState
from tests.conftest import settings_for
from valueledger.bootstrap import open_store
from valueledger.servers import servers
from valueledger.settings import Settings

META = Metadata(actor=Actor(user="u-1", role="ADMIN"))


def as_user(url: str, user: str) -> str:
    """`url` logging in as `user` (no password: the test servers trust local logins)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


async def assert_service_cannot_step_back(store: EventStore, login: str) -> None:
    """The store works through its sessions, which log in as `login`, and not even a session
    that resets its role may disable the ledger's triggers or delete a record."""
    tenant = f"t-{secrets.token_hex(4)}"
    await store.append(f"{tenant}:s", [NewEvent("Opened", {})], StreamState.NO_STREAM, tenant, META)
    async with store.pool.acquire() as connection:
        assert await connection.fetchval("SELECT session_user") == login
        assert await connection.fetchval("SELECT current_user") == APP_ROLE
        await connection.execute("SET ROLE NONE")
        assert await connection.fetchval("SELECT current_user") == login
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("ALTER TABLE events DISABLE TRIGGER USER")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM events WHERE tenant = $1", tenant)
        await connection.execute("RESET ROLE")
    assert len(await store.read_tenant(tenant)) == 1


async def test_the_embedded_service_logs_in_as_the_application_role(
    scratch_folder: Path,
) -> None:
    settings = Settings(data_dir=str(scratch_folder / "data"))
    with servers(settings, redis=False) as urls:
        assert urlsplit(urls.database_url).username == "postgres"  # the owner migrates
        assert urlsplit(urls.service_database_url).username == APP_ROLE
        async with open_store(settings, urls.database_url, urls.service_database_url) as store:
            await assert_service_cannot_step_back(store, APP_ROLE)


@pytest.fixture
async def service_login(database_url: str) -> AsyncIterator[str]:
    """A login role of this test's own that owns nothing and is a member of the application
    role, as an operator would make one; dropped at the end."""
    await apply_schema(database_url)
    name = f"vl_service_{secrets.token_hex(4)}"
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute(f"CREATE ROLE {name} LOGIN IN ROLE {APP_ROLE}")
    finally:
        await owner.close()
    try:
        yield name
    finally:
        owner = await asyncpg.connect(database_url)
        try:
            await owner.execute(f"DROP ROLE {name}")
        finally:
            await owner.close()


async def test_a_configured_service_login_is_the_one_its_sessions_use(
    database_url: str, service_login: str, key_folder: Path
) -> None:
    login_url = as_user(database_url, service_login)
    settings = Settings.from_env(
        {"DATABASE_URL": database_url, "VALUELEDGER_APP_DATABASE_URL": login_url}
    )
    with servers(settings, redis=False) as urls:
        assert (urls.database_url, urls.service_database_url) == (database_url, login_url)
    configured = settings_for(database_url, key_folder)
    async with open_store(configured, database_url, login_url) as store:
        await assert_service_cannot_step_back(store, service_login)
        # The store ends its own lost sessions (EventStore._settle_lost) as their login (SET
        # LOCAL ROLE NONE): a login may end its own sessions, so that works without the owner.
        async with store.pool.acquire() as one, store.pool.acquire() as other:
            pid = await other.fetchval("SELECT pg_backend_pid()")
            async with one.transaction():
                await one.execute("SET LOCAL ROLE NONE")
                assert await one.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)


def test_without_a_service_login_an_external_database_is_used_as_configured(
    database_url: str,
) -> None:
    with servers(Settings(database_url=database_url), redis=False) as urls:
        assert urls.service_database_url == database_url
