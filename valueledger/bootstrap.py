"""Wiring, done once: schema, signing key, pool and store, shared by every entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from eventstore.db import apply_schema, create_pool
from eventstore.keys import (
    SigningKey,
    current_signing_key,
    load_private_key,
    register_first_key,
    write_new_private_key,
)
from eventstore.store import EventStore
from valueledger.settings import Settings


async def prepare_database(settings: Settings, database_url: str) -> None:
    """Apply the schema and make sure a signing key exists and is registered (as the owner).

    In the embedded default the key is generated on first run; a configured key file that is
    missing is an error, never silently replaced.
    """
    await apply_schema(database_url)
    path = settings.signing_key_path
    if not path.exists():
        if settings.signing_key:
            raise FileNotFoundError(f"VALUELEDGER_SIGNING_KEY names {path}, which does not exist")
        write_new_private_key(path)
    key = load_private_key(path)
    connection = await asyncpg.connect(database_url)
    try:
        await register_first_key(connection, key)
    finally:
        await connection.close()


@asynccontextmanager
async def open_store(
    settings: Settings, database_url: str, service_url: str | None = None
) -> AsyncIterator[EventStore]:
    """A ready EventStore signing with the configured key, running as the application role:
    prepared by the owner (`database_url`), its sessions logged in as `service_url` (by
    default the owner's login too, each session set to the application role)."""
    await prepare_database(settings, database_url)
    pool = await create_pool(service_url or database_url, settings.db_role or None)
    try:

        async def load_key() -> SigningKey:
            key = load_private_key(settings.signing_key_path)
            async with pool.acquire() as connection:
                return await current_signing_key(connection, key)

        store = EventStore(pool, await load_key(), reload_key=load_key)
        try:
            yield store
        finally:
            await store.close()
    finally:
        await pool.close()
