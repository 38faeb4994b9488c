"""The ledger is append-only for everyone: the application role lacks the privileges, and
the owner (even a superuser) is stopped by triggers. The schema is idempotent.

Every statement that must be refused runs inside a transaction that is always rolled back, so
even if a refusal regressed, no test could damage the ledger other tests share.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import asyncpg
import pytest

from eventstore.db import APP_ROLE, apply_schema
from eventstore.keys import write_new_private_key
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from tests.conftest import FreshDatabases, settings_for
from valueledger.bootstrap import open_store

REFUSED: Final = {
    "UPDATE": "UPDATE events SET type = 'Tampered' WHERE tenant = $1",
    "DELETE": "DELETE FROM events WHERE tenant = $1",
    "TRUNCATE": "TRUNCATE events",
}


@asynccontextmanager
async def connect(url: str, role: str | None = None) -> AsyncIterator[asyncpg.Connection[Any]]:
    settings = {"role": role} if role else {}
    connection = await asyncpg.connect(url, server_settings=settings)
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def rolled_back(connection: asyncpg.Connection[Any]) -> AsyncIterator[None]:
    transaction = connection.transaction()
    await transaction.start()
    try:
        yield
    finally:
        await transaction.rollback()


async def ledger_of(store: EventStore, tenant: str, meta: Metadata) -> list[tuple[Any, ...]]:
    await store.append(
        f"{tenant}:acct",
        [NewEvent("Opened", {"n": 1}), NewEvent("Paid", {"amount": "9.99"})],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    return await rows_of(store, tenant)


async def rows_of(store: EventStore, tenant: str) -> list[tuple[Any, ...]]:
    rows = await store.pool.fetch(
        "SELECT seq, type, canonical, hash, signature FROM events WHERE tenant = $1 ORDER BY seq",
        tenant,
    )
    return [tuple(row) for row in rows]


async def test_the_store_runs_as_the_application_role(store: EventStore) -> None:
    assert await store.pool.fetchval("SELECT current_user") == APP_ROLE


@pytest.mark.parametrize("operation", sorted(REFUSED))
async def test_application_role_may_not_change_the_ledger(
    store: EventStore, database_url: str, tenant: str, meta: Metadata, operation: str
) -> None:
    before = await ledger_of(store, tenant, meta)
    sql = REFUSED[operation]
    async with connect(database_url, APP_ROLE) as connection:
        assert await connection.fetchval("SELECT current_user") == APP_ROLE
        async with rolled_back(connection):
            await connection.execute("SET LOCAL lock_timeout = '10s'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await connection.execute(sql, *([tenant] if "$1" in sql else []))
    assert await rows_of(store, tenant) == before


@pytest.mark.parametrize("operation", sorted(REFUSED))
async def test_owner_and_superuser_are_stopped_by_the_triggers(
    store: EventStore, database_url: str, tenant: str, meta: Metadata, operation: str
) -> None:
    before = await ledger_of(store, tenant, meta)
    sql = REFUSED[operation]
    async with connect(database_url) as connection:
        assert await connection.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        owner = await connection.fetchval(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'events'"
        )
        assert owner == await connection.fetchval("SELECT current_user")
        async with rolled_back(connection):
            await connection.execute("SET LOCAL lock_timeout = '10s'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                await connection.execute(sql, *([tenant] if "$1" in sql else []))
    assert f"the ledger is append-only: {operation} on events is refused" in str(refused.value)
    assert await rows_of(store, tenant) == before


async def test_application_role_may_not_get_around_the_triggers(database_url: str) -> None:
    async with connect(database_url, APP_ROLE) as connection:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("SET session_replication_role = replica")
        async with rolled_back(connection):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="owner"):
                await connection.execute("ALTER TABLE events DISABLE TRIGGER USER")
        async with rolled_back(connection):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await connection.execute("DELETE FROM signing_keys")
        async with rolled_back(connection):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await connection.execute("UPDATE signing_keys SET retired_at = now()")


async def test_application_role_may_insert_and_select(
    store: EventStore, database_url: str, tenant: str, meta: Metadata
) -> None:
    before = await ledger_of(store, tenant, meta)
    async with connect(database_url, APP_ROLE) as connection:
        selected = await connection.fetch(
            "SELECT seq, type, canonical, hash, signature FROM events WHERE tenant = $1"
            " ORDER BY seq",
            tenant,
        )
        assert [tuple(row) for row in selected] == before
        # A direct INSERT is allowed (the store's own appends are INSERTs too); it is rolled
        # back so that no unsigned row is left in the shared ledger.
        async with rolled_back(connection):
            status = await connection.execute(
                """
                INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical,
                                    data, meta, recorded_at, prev_hash, hash, signature, key_id)
                VALUES ((SELECT max(epoch) FROM store_epochs), $1, 99, $2, 1, 'Probe', '\\x7b7d',
                        '{}', '{}', now(), repeat('0', 64), encode(sha256('\\x7b7d'::bytea), 'hex'),
                        'probe', 'probe')
                """,
                tenant,
                f"{tenant}:probe",
            )
            assert status == "INSERT 0 1"
    assert await rows_of(store, tenant) == before


# ----------------------------------------------------------------------------- idempotent schema

SNAPSHOT_QUERIES: Final = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, column_default,
               is_nullable, is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position
    """,
    "relations": """
        SELECT c.oid::bigint, c.relname, c.relkind, pg_get_userbyid(c.relowner) AS owner,
               c.relacl::text, c.relrowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' ORDER BY c.relname
    """,
    "column grants": """
        SELECT c.relname, a.attname, a.attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND a.attnum > 0 AND a.attacl IS NOT NULL
        ORDER BY 1, 2
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2
    """,
    "functions": """
        SELECT p.oid::bigint, proname, pg_get_function_identity_arguments(p.oid),
               md5(prosrc), proacl::text, pg_get_userbyid(proowner)
        FROM pg_proc p WHERE pronamespace = 'public'::regnamespace ORDER BY 2, 3
    """,
    "table grants": """
        SELECT table_name, grantee, privilege_type, is_grantable
        FROM information_schema.role_table_grants WHERE table_schema = 'public'
        ORDER BY 1, 2, 3
    """,
    "roles": """
        SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
               rolbypassrls, rolconnlimit
        FROM pg_roles WHERE rolname LIKE 'valueledger%' ORDER BY 1
    """,
    "role members": """
        SELECT r.rolname, m.rolname FROM pg_auth_members am
        JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
        WHERE r.rolname LIKE 'valueledger%' OR m.rolname LIKE 'valueledger%' ORDER BY 1, 2
    """,
    "epochs": "SELECT epoch, started_at, reason FROM store_epochs ORDER BY epoch",
    "keys": "SELECT key_id, created_at, retired_at FROM signing_keys ORDER BY key_id",
    "events": "SELECT tenant, seq, hash FROM events ORDER BY tenant, seq",
    "heads": "SELECT tenant, seq, hash FROM chain_heads ORDER BY tenant",
}


async def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    async with connect(url) as connection:
        return {
            name: [tuple(row) for row in await connection.fetch(sql)]
            for name, sql in SNAPSHOT_QUERIES.items()
        }


@pytest.fixture
async def fresh_database(
    databases: dict[str, FreshDatabases], request: pytest.FixtureRequest
) -> str:
    """A database of its own, with the schema applied once (by FreshDatabases.create)."""
    backend = "external" if "external" in databases else "embedded"
    return await databases[backend].create(f"schema_{secrets.token_hex(4)}")


async def test_schema_applied_again_changes_nothing(fresh_database: str) -> None:
    before = await snapshot(fresh_database)
    # Not a vacuous comparison: the snapshot sees what the schema made.
    assert {row[1] for row in before["triggers"]} == {
        "events_refuse_update_delete",
        "events_refuse_truncate",
    }
    on_events = {(row[1], row[2]) for row in before["table grants"] if row[0] == "events"}
    assert {p for g, p in on_events if g == APP_ROLE} == {"INSERT", "SELECT"}
    assert {p for g, p in on_events if g == "valueledger_auditor"} == {"SELECT"}
    assert {p for g, p in on_events if g == "PUBLIC"} == set()
    assert [row[0] for row in before["epochs"]] == [1]
    for _ in range(2):
        await apply_schema(fresh_database)
        assert await snapshot(fresh_database) == before


async def test_schema_applied_again_over_a_live_ledger_changes_nothing(
    fresh_database: str, tmp_path: Path, meta: Metadata
) -> None:
    """With records, keys and heads in place, a re-apply (every start-up does one) must not
    add an epoch, touch a grant, or disturb a row."""
    write_new_private_key(tmp_path / "signing-key.pem")
    async with open_store(settings_for(fresh_database, tmp_path), fresh_database) as store:
        for tenant in ("a", "b"):
            await store.append(
                f"{tenant}-acct",
                [NewEvent("Opened", {}), NewEvent("Paid", {"amount": "1.00"})],
                StreamState.ANY,
                tenant,
                meta,
            )
    before = await snapshot(fresh_database)
    assert len(before["events"]) == 4
    assert len(before["keys"]) == 1
    await apply_schema(fresh_database)
    assert await snapshot(fresh_database) == before
