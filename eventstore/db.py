"""Connections and the schema: the store's only contact with PostgreSQL set-up."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

APP_ROLE = "valueledger_app"


def schema_path() -> Path:
    """schema.sql: inside the package when installed from a wheel, else at the repository top."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schema.sql", here.parent / "schema.sql"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("schema.sql is missing from the installation")


async def apply_schema(dsn: str) -> None:
    """Apply schema.sql as the connecting (owner) role. Safe to run any number of times; an
    advisory lock keeps concurrent start-ups from interleaving their DDL."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(7243190011)")
            await connection.execute(schema_path().read_text(encoding="utf-8"))
    finally:
        await connection.close()


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """Skip asyncpg's reset round trip on every release: the store leaves no session state
    behind (its one LISTEN is removed, and its writer connection's plan setting reset, before
    the connection goes back)."""


async def create_pool(
    dsn: str, role: str | None = APP_ROLE, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose sessions run as `role` (a startup parameter, so it survives the pool's
    RESET ALL): the service then holds only the ledger's INSERT and SELECT privileges. (The
    store's writer steps back to the login role for two statements only: to name its own
    session and, after losing its connection, to end it; see EventStore._writer.)"""
    settings = {"role": role} if role else {}
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, server_settings=settings, reset=_keep_session
    )
    assert pool is not None  # noqa: S101 - create_pool returns the pool once awaited
    return pool
