"""The README's promise: `valueledger serve` starts from a clean folder on the embedded servers,
`valueledger demo` passes against it, and the service stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from litestar import Litestar, Request, get

from valueledger.serve import api_config

SCRIPT = Path(sys.executable).parent / "valueledger"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_serve_from_a_clean_folder_then_the_demo_passes() -> None:
    folder = Path(tempfile.mkdtemp(prefix="valueledger-test-serve-"))
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL"} and not key.startswith("VALUELEDGER_")
    }
    environment["VALUELEDGER_DATA_DIR"] = str(folder)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(  # noqa: S603, ASYNC220 (our own console script; started once)
        [str(SCRIPT), "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(600):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, "serve exited early"
                await asyncio.sleep(0.1)
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            schema = await client.get("/schema/openapi.json")
            assert schema.status_code == 200
            assert "/v1/customers" in json.loads(schema.content)["paths"]
        bundle = folder / "demo.jsonl"
        demo = await asyncio.to_thread(
            subprocess.run,
            [str(SCRIPT), "demo", "--url", url, "--bundle", str(bundle)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "verified them offline: OK" in demo.stdout
        assert bundle.read_bytes().count(b"\n") > 10
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0
        assert server.stderr is not None
        log = server.stderr.read().decode()
        assert "one-time password" in log  # the first ADMIN's credentials, shown once
        # The embedded server's service logs in as the application role: nothing to warn of.
        assert "VALUELEDGER_APP_DATABASE_URL" not in log
        assert "Traceback" not in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


async def test_the_demo_says_in_one_line_when_no_server_answers(
    env: dict[str, str | None],
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [str(SCRIPT), "demo", "--url", f"http://127.0.0.1:{_free_port()}"],
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("valueledger: no valueledger API")


@get("/peer", sync_to_thread=False)
def peer(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


async def test_the_api_server_leaves_x_forwarded_for_to_the_trusted_proxies_setting() -> None:
    """uvicorn believes a local peer's X-Forwarded-For by default; as `serve` configures it,
    the client stays the socket's peer, and only VALUELEDGER_TRUSTED_PROXIES (read by the rate
    limiter) decides whose forwarded address counts."""
    port = _free_port()
    server = uvicorn.Server(api_config(Litestar([peer]), "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    answer = await client.get("/peer", headers={"X-Forwarded-For": "203.0.113.9"})
                    break
                await asyncio.sleep(0.05)
        assert answer.status_code == 200
        assert answer.text == "127.0.0.1"
    finally:
        server.should_exit = True
        await serving
