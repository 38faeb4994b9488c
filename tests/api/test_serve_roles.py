"""`valueledger serve --role api|projectors|worker` against a database of its own: each role
does its part and only that (the API listens, the others do not), and SIGINT and SIGTERM each
stop it with exit 0."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from litestar import Litestar, Request, post
from litestar.params import JSONBody

from commands.customer import handle_customer
from tests.commands.test_customer_and_setup import register
from tests.conftest import FreshDatabases, settings_for
from valueledger.bootstrap import open_store

SCRIPT = Path(sys.executable).parent / "valueledger"
PATIENCE = 600
"""Checks of 0.1 s each before a role is taken not to have done its part: a generous bound for
a loaded machine, never a measure of speed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def eventually(check: Callable[[], Awaitable[bool]], server: subprocess.Popen[bytes]) -> None:
    """Until `check` holds, while the server runs."""
    for _ in range(PATIENCE):
        if await check():
            return
        assert server.poll() is None, "serve exited early"
        await asyncio.sleep(0.1)
    raise AssertionError("the role never did its part")


async def listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def serving(
    role: str, database_url: str, redis_url: str, key_folder: Path, **extra: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    """`valueledger serve --role <role>` from a clean data folder, on the given database and
    Redis; killed at the end if the test did not stop it."""
    folder = Path(tempfile.mkdtemp(prefix="valueledger-test-role-"))
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VALUELEDGER_")
    }
    environment |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "VALUELEDGER_DATA_DIR": str(folder),
        "VALUELEDGER_SIGNING_KEY": str(key_folder / "signing-key.pem"),
        "VALUELEDGER_CACHE_PREFIX": f"vltest-role-{secrets.token_hex(4)}",
        **extra,
    }
    port = _free_port()
    server = subprocess.Popen(  # noqa: S603, ASYNC220 (our own console script; started once)
        [str(SCRIPT), "serve", "--role", role, "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield server, port
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


async def stopped_by(server: subprocess.Popen[bytes], signum: signal.Signals) -> str:
    """Send `signum`; the exit status (which must be 0) and what the server wrote."""
    server.send_signal(signum)
    assert await asyncio.to_thread(server.wait, 60) == 0
    assert server.stderr is not None
    log = server.stderr.read().decode()
    assert "Traceback" not in log
    assert log.rstrip().endswith("stopped")
    return log


@pytest.fixture
async def own_database(main_server: FreshDatabases) -> str:
    """A database of the test's own: the worker follows the ledger from its beginning."""
    return await main_server.create(f"role_{secrets.token_hex(3)}")


async def append_customer(database_url: str, key_folder: Path) -> str:
    """A customer registered straight through the store, as another process would."""
    tenant = f"t-{secrets.token_hex(6)}"
    async with open_store(settings_for(database_url, key_folder), database_url) as store:
        await handle_customer(store, register(tenant))
    return tenant


SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signum.name)
async def test_the_api_role_answers_and_stops(
    signum: signal.Signals, own_database: str, redis_url: str, key_folder: Path
) -> None:
    async with serving("api", own_database, redis_url, key_folder) as (server, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def alive() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(alive, server)
        log = await stopped_by(server, signum)
    assert "API on http://127.0.0.1" in log
    # DATABASE_URL and no service login of its own: the operator is told what that means.
    assert "set VALUELEDGER_APP_DATABASE_URL" in log


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signum.name)
async def test_the_projectors_role_builds_read_models_and_serves_nothing(
    signum: signal.Signals, own_database: str, redis_url: str, key_folder: Path
) -> None:
    async with serving("projectors", own_database, redis_url, key_folder) as (server, port):
        tenant = await append_customer(own_database, key_folder)
        reader = await asyncpg.connect(own_database)
        try:

            async def projected() -> bool:
                found = await reader.fetchval(
                    "SELECT count(*) FROM read_models.dashboard_customers WHERE tenant = $1",
                    tenant,
                )
                return bool(found)

            await eventually(projected, server)
        finally:
            await reader.close()
        assert not await listening(port)
        log = await stopped_by(server, signum)
    assert "API on" not in log


received: list[dict[str, Any]] = []


@post("/hook", sync_to_thread=False)
def hook(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> None:
    received.append({"webhook-id": request.headers.get("webhook-id"), **data})


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda signum: signum.name)
async def test_the_worker_role_delivers_webhooks_and_serves_nothing(
    signum: signal.Signals, own_database: str, redis_url: str, key_folder: Path, tmp_path: Path
) -> None:
    receiver_port = _free_port()
    receiver = uvicorn.Server(
        uvicorn.Config(Litestar([hook]), host="127.0.0.1", port=receiver_port, log_config=None)
    )
    receiving = asyncio.create_task(receiver.serve())
    endpoints = tmp_path / "webhooks.json"
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    endpoints.write_text(
        json.dumps(
            [{"id": "crm", "url": f"http://127.0.0.1:{receiver_port}/hook", "secret": secret}]
        )
    )
    received.clear()
    try:
        async with serving(
            "worker", own_database, redis_url, key_folder, VALUELEDGER_WEBHOOKS=str(endpoints)
        ) as (server, port):
            tenant = await append_customer(own_database, key_folder)

            async def delivered() -> bool:
                return any(item.get("data", {}).get("tenant") == tenant for item in received)

            await eventually(delivered, server)
            assert not await listening(port)
            log = await stopped_by(server, signum)
    finally:
        receiver.should_exit = True
        await receiving
    assert "API on" not in log
