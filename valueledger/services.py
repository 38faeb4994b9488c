"""Everything the service's parts share, wired once: the ledger, the vault, the cache.

The API, the projectors' worker and the CLI open the same `Services` from the same settings,
so a handler behaves the same whichever entry point called it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import redis.asyncio

from commands.personal_data import PersonalDataVault
from eventstore.store import EventStore
from projections.cache import SOCKET_TIMEOUT, ReadModelCache, connect_cache
from projections.request_redis import RequestRedis, request_redis
from valueledger.bootstrap import open_store
from valueledger.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    """The service's shared dependencies, for the lifetime of one process."""

    settings: Settings
    store: EventStore
    vault: PersonalDataVault
    redis: redis.asyncio.Redis
    request_redis: RequestRedis
    """The same Redis for the request path's commands (see `projections.request_redis`)."""
    cache: ReadModelCache

    @property
    def pool(self) -> asyncpg.Pool:
        """The application role's pool (the store's): INSERT and SELECT on the ledger only."""
        return self.store.pool


@asynccontextmanager
async def open_services(
    settings: Settings, database_url: str, redis_url: str, service_url: str | None = None
) -> AsyncIterator[Services]:
    """Apply the schema (as `database_url`), open the store (signing key ready; its sessions
    log in as `service_url`, see `open_store`) and connect the cache."""
    client = connect_cache(redis_url)
    commands = request_redis(redis_url, client, timeout=SOCKET_TIMEOUT)
    try:
        async with open_store(settings, database_url, service_url) as store:
            yield Services(
                settings=settings,
                store=store,
                vault=PersonalDataVault(store.pool),
                redis=client,
                request_redis=commands,
                cache=ReadModelCache(client, settings.cache_prefix, reads=commands),
            )
    finally:
        await commands.aclose()
        await client.aclose()
