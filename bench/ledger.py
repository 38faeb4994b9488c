"""Ledger write and verify throughput against its baselines, on one throw-away database.

Run: ``uv run --extra bench python -m bench.ledger [--quick] [--json FILE]``.

Cases, all against one fresh database ``vl_bench_<pid>`` on the server of DATABASE_URL
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end:

1. raw INSERT of a ledger row (same columns and bytes) into a table with only a primary key,
   one row per autocommitted statement: 1 connection, 8 connections;
2. RSA-2048 PKCS#1 v1.5 / SHA-256 signatures over 32 bytes: 1 thread, 2 threads;
3. the Python peer, ``eventsourcing``'s PostgreSQL application recorder (no signing), one event
   per insert: 1 thread, 8 threads;
4. ``EventStore.append``, one event per append: 1 writer, 8 writers on one tenant, 8 writers on
   8 tenants;
5. ``valueledger verify --bundle FILE`` over an exported tenant of 100,000 records, as the
   command runs by default (one worker process per CPU) and with ``--jobs 1`` (one process):
   records/s and the peak RSS of all the verifier's processes together.

Not a test: pytest only collects ``tests/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.common import progress, throwaway_database
from eventstore.canonical import canonical_json
from eventstore.db import apply_schema
from eventstore.receipts import (
    GENESIS_HASH,
    assemble_canonical,
    format_timestamp,
    key_id_of,
    record_hash,
    sign_hash,
)
from eventstore.store import (
    Actor,
    EventStore,
    ExpectedVersion,
    Metadata,
    NewEvent,
    StreamState,
)
from eventstore.verify import usable_cpus
from valueledger.bootstrap import open_store
from valueledger.settings import Settings

DEFAULT_SERVER_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITERS: Final = 8
FILL_PER_APPEND: Final = 200
VERIFY_TENANT: Final = "bench-bulk"

EVENT_TYPE: Final = "OnboardingStepCompleted"
EVENT_DATA: Final[dict[str, Any]] = {
    "customer_id": "cus_8f3a9c2e71b4",
    "step": "value_metric_confirmed",
    "metric": {"name": "qualified_leads", "unit": "lead", "baseline": 140, "target": 210},
    "price": {"currency": "EUR", "minor_units": 129900, "share_of_value": "0.12"},
    "notes": "Customer confirmed the value metric and the baseline period (Q1).",
}
EVENT: Final = NewEvent(type=EVENT_TYPE, data=EVENT_DATA)
META: Final = Metadata(
    actor=Actor(user="user-4711", role="ADMIN"),
    correlation_id="corr-0b6f1d2e",
    causation_id="cmd-93a1",
)

# Names of the measured cases (keys of the report).
RAW_1: Final = "raw insert, 1 connection"
RAW_8: Final = "raw insert, 8 connections"
SIGN_1: Final = "RSA-2048 sign, 1 thread"
SIGN_2: Final = "RSA-2048 sign, 2 threads"
PEER_1: Final = "peer (eventsourcing), 1 thread"
PEER_8: Final = "peer (eventsourcing), 8 threads"
STORE_1: Final = "store, 1 writer"
STORE_8_ONE: Final = "store, 8 writers / 1 tenant"
STORE_8_MANY: Final = "store, 8 writers / 8 tenants"
FILL: Final = "store, bulk fill (200/append, 8 writers)"

COMPARISONS: Final[list[tuple[str, str, float | None]]] = [
    # (case, baseline, the target for case / baseline)
    (STORE_1, RAW_1, 0.5),
    (STORE_1, PEER_1, 2.0),
    (STORE_8_ONE, SIGN_2, 0.5),
    (STORE_8_ONE, PEER_8, 2.0),
    (STORE_8_MANY, SIGN_2, 0.6),
    (STORE_8_MANY, PEER_8, 2.0),
    (STORE_8_MANY, RAW_8, None),
]
VERIFY_TARGET: Final = 20_000.0

RAW_TABLE_SQL: Final = """
CREATE TABLE bench_raw_events (
    position    bigint GENERATED ALWAYS AS IDENTITY,
    epoch       integer NOT NULL,
    tx_id       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    tenant      text NOT NULL,
    seq         bigint NOT NULL,
    stream_id   text NOT NULL,
    version     bigint NOT NULL,
    type        text NOT NULL,
    canonical   bytea NOT NULL,
    data        jsonb NOT NULL,
    meta        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL,
    prev_hash   text NOT NULL,
    hash        text NOT NULL,
    signature   text NOT NULL,
    key_id      text NOT NULL,
    PRIMARY KEY (tenant, seq)
)
"""
RAW_INSERT_SQL: Final = """
INSERT INTO bench_raw_events (epoch, tenant, seq, stream_id, version, type, canonical, data,
                              meta, recorded_at, prev_hash, hash, signature, key_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11, $12, $13, $14)
"""


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    seconds: float
    sign_seconds: float
    verify_records: int


FULL: Final = Plan(quick=False, seconds=4.0, sign_seconds=3.0, verify_records=100_000)
QUICK: Final = Plan(quick=True, seconds=0.5, sign_seconds=0.5, verify_records=2_000)


@dataclass(frozen=True, slots=True)
class Rate:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One ledger row exactly as the store would write it (signed, canonical)."""

    tenant: str
    stream: str
    type: str
    canonical: bytes
    data_json: str
    meta_json: str
    recorded_at: datetime
    prev_hash: str
    hash: str
    signature: str
    key_id: str


@dataclass(slots=True)
class VerifyResult:
    status: str  # "ok", "skipped" or "failed"
    records: int = 0
    seconds: float = 0.0
    peak_rss_kib: int = 0
    export_seconds: float = 0.0
    bundle_bytes: int = 0
    message: str = ""
    jobs: int = 1  # worker processes of the default run
    alone_seconds: float = 0.0  # the same verification with --jobs 1
    alone_peak_rss_kib: int = 0

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def alone_per_second(self) -> float:
        return self.records / self.alone_seconds if self.alone_seconds > 0 else 0.0


@dataclass(slots=True)
class Report:
    plan: Plan
    database: str
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rates: dict[str, Rate] = field(default_factory=dict)
    verify: VerifyResult = field(default_factory=lambda: VerifyResult("skipped"))


# ------------------------------------------------------------------------------- raw inserts


def sample_row(key: rsa.RSAPrivateKey) -> SampleRow:
    tenant, stream = "bench-raw", "raw-0"
    recorded_at = datetime.now(UTC)
    data_json = canonical_json(EVENT_DATA, "data")
    meta_json = canonical_json(msgspec.to_builtins(META), "meta")
    canonical = assemble_canonical(
        tenant_json=msgspec.json.encode(tenant),
        seq=1,
        stream_json=msgspec.json.encode(stream),
        version=1,
        type_json=msgspec.json.encode(EVENT_TYPE),
        data_json=data_json,
        meta_json=meta_json,
        recorded_at=format_timestamp(recorded_at),
        prev_hash=GENESIS_HASH,
    )
    digest = record_hash(canonical)
    return SampleRow(
        tenant=tenant,
        stream=stream,
        type=EVENT_TYPE,
        canonical=canonical,
        data_json=data_json.decode(),
        meta_json=meta_json.decode(),
        recorded_at=recorded_at,
        prev_hash=GENESIS_HASH,
        hash=digest,
        signature=sign_hash(key, digest),
        key_id=key_id_of(key.public_key()),
    )


async def timed_tasks(workers: Sequence[Callable[[float], Awaitable[int]]], seconds: float) -> Rate:
    """Run the workers concurrently until the deadline; each returns how many events it did."""
    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(start + seconds) for worker in workers))
    return Rate(sum(counts), time.perf_counter() - start)


async def raw_inserts(url: str, row: SampleRow, connections: int, seconds: float) -> Rate:
    opened = [await asyncpg.connect(url) for _ in range(connections)]
    tenant = f"{row.tenant}-{connections}"

    def writer(index: int) -> Callable[[float], Awaitable[int]]:
        connection = opened[index]
        first_seq = index * 1_000_000_000

        async def run(deadline: float) -> int:
            done = 0
            while time.perf_counter() < deadline:
                done += 1
                await connection.execute(
                    RAW_INSERT_SQL,
                    1,
                    tenant,
                    first_seq + done,
                    f"{row.stream}-{index}",
                    done,
                    row.type,
                    row.canonical,
                    row.data_json,
                    row.meta_json,
                    row.recorded_at,
                    row.prev_hash,
                    row.hash,
                    row.signature,
                    row.key_id,
                )
            return done

        return run

    try:
        return await timed_tasks([writer(i) for i in range(connections)], seconds)
    finally:
        for connection in opened:
            await connection.close()


# ----------------------------------------------------------------------------------- signing


def threaded(threads: int, work: Callable[[int, float], int], seconds: float) -> Rate:
    """Run `work(index, deadline)` on `threads` threads at once; each returns its count."""
    ready = threading.Barrier(threads + 1)
    deadline = [0.0]

    def run(index: int) -> int:
        ready.wait()
        return work(index, deadline[0])

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(run, i) for i in range(threads)]
        start = time.perf_counter()
        deadline[0] = start + seconds
        ready.wait()
        counts = [future.result() for future in futures]
    return Rate(sum(counts), time.perf_counter() - start)


def signing_rate(key: rsa.RSAPrivateKey, threads: int, seconds: float) -> Rate:
    def work(index: int, deadline: float) -> int:
        digest = os.urandom(32)
        done = 0
        while time.perf_counter() < deadline:
            key.sign(digest, padding.PKCS1v15(), hashes.SHA256())
            done += 1
        return done

    return threaded(threads, work, seconds)


# -------------------------------------------------------------------------------------- peer


def peer_rates(url: str, row: SampleRow, seconds: float) -> tuple[Rate, Rate]:
    """eventsourcing's PostgresApplicationRecorder appending the same bytes, one event per
    insert_events call; each thread its own originator (stream)."""
    try:
        from eventsourcing.persistence import StoredEvent  # noqa: PLC0415
        from eventsourcing.postgres import (  # noqa: PLC0415
            PostgresApplicationRecorder,
            PostgresDatastore,
        )
    except ImportError as error:
        raise SystemExit(
            f"the peer needs the bench extra ({error}); run: uv run --extra bench python -m "
            "bench.ledger"
        ) from None
    parts = urlsplit(url)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        pool_size=WRITERS,
        originator_id_type="text",
    )
    try:
        recorder = PostgresApplicationRecorder(datastore, events_table_name="peer_stored_events")
        recorder.create_table()

        def rate(threads: int) -> Rate:
            def work(index: int, deadline: float) -> int:
                stream = f"peer-{threads}-{index}"
                done = 0
                while time.perf_counter() < deadline:
                    done += 1
                    recorder.insert_events(
                        [
                            StoredEvent(
                                originator_id=stream,
                                originator_version=done,
                                topic=row.type,
                                state=row.canonical,
                            )
                        ]
                    )
                return done

            return threaded(threads, work, seconds)

        return rate(1), rate(WRITERS)
    finally:
        datastore.close()


# ------------------------------------------------------------------------------------- store


def store_writer(store: EventStore, tenant: str, stream: str) -> Callable[[float], Awaitable[int]]:
    """One event per append, awaited in turn, each at the exact expected version."""

    async def run(deadline: float) -> int:
        version = 0
        while time.perf_counter() < deadline:
            expected: ExpectedVersion = StreamState.NO_STREAM if version == 0 else version
            await store.append(stream, [EVENT], expected, tenant, META)
            version += 1
        return version

    return run


async def fill_tenant(store: EventStore, tenant: str, total: int) -> Rate:
    """`total` events into one tenant, FILL_PER_APPEND per append, WRITERS appends in flight."""
    remaining = [-(-total // FILL_PER_APPEND)]
    events = [EVENT] * FILL_PER_APPEND

    async def writer(index: int) -> int:
        stream = f"bulk-{index}"
        version = 0
        while remaining[0] > 0:
            remaining[0] -= 1
            expected: ExpectedVersion = StreamState.NO_STREAM if version == 0 else version
            await store.append(stream, events, expected, tenant, META)
            version += FILL_PER_APPEND
        return version

    start = time.perf_counter()
    counts = await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    return Rate(sum(counts), time.perf_counter() - start)


# ------------------------------------------------------------------------------ export/verify


def cli_command() -> list[str]:
    """The project's `valueledger` entry point: this environment's script, else `uv run`."""
    script = Path(sys.executable).with_name("valueledger")
    if script.exists():
        return [str(script)]
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("neither the valueledger script nor uv is on this machine")
    return [uv, "run", "valueledger"]


@dataclass(frozen=True, slots=True)
class ChildRun:
    exit_code: int
    seconds: float
    peak_rss_kib: int
    output: str


def _tree_rss_kib(pid: int) -> int:
    """The resident memory of `pid` and of all its descendants, now (0 where /proc does not
    list children)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue  # gone meanwhile
        total += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        pending.extend(int(child) for child in children)
    return total


def run_child(command: list[str], env: dict[str, str], timeout: float) -> ChildRun:
    """Run `command`, timing it. Its peak RSS is that of the child and all its processes
    together (a verifier's workers are its children, or a fork server's where it could not
    fork), sampled every 0.1 s, or the child's own from wait4 if that is larger."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                peak[0] = max(peak[0], _tree_rss_kib(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            killer.cancel()
            done.set()
            sampler.join()
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", errors="replace")
    return ChildRun(child.returncode, seconds, max(usage.ru_maxrss, peak[0]), text)


def tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def export_and_verify(url: str, data_dir: Path, records: int) -> VerifyResult:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        VALUELEDGER_DATA_DIR=str(data_dir),
        VALUELEDGER_SIGNING_KEY=str(data_dir / "signing-key.pem"),
    )
    bundle = data_dir / "bundle.out"
    cli = cli_command()
    export = run_child([*cli, "export", "--tenant", VERIFY_TENANT, "-o", str(bundle)], env, 600)
    if export.exit_code != 0 or not bundle.exists():
        return VerifyResult(
            "skipped",
            records=records,
            message=f"`valueledger export` failed (exit {export.exit_code}); verify not timed:\n"
            + tail(export.output),
        )
    progress(f"exported {records} records in {export.seconds:.1f}s; verifying")
    alone = run_child([*cli, "verify", "--bundle", str(bundle), "--jobs", "1"], env, 600)
    verify = run_child([*cli, "verify", "--bundle", str(bundle)], env, 600)
    result = VerifyResult(
        "ok" if verify.exit_code == 0 and alone.exit_code == 0 else "failed",
        records=records,
        seconds=verify.seconds,
        peak_rss_kib=verify.peak_rss_kib,
        export_seconds=export.seconds,
        bundle_bytes=bundle.stat().st_size,
        jobs=usable_cpus(),
        alone_seconds=alone.seconds,
        alone_peak_rss_kib=alone.peak_rss_kib,
    )
    for run in (alone, verify):
        if run.exit_code != 0:
            result.message += f"`valueledger verify` exited {run.exit_code}:\n" + tail(run.output)
    return result


# --------------------------------------------------------------------------------- the run


async def measure(plan: Plan, url: str, data_dir: Path, report: Report) -> None:
    rates = report.rates
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    row = sample_row(key)

    setup = await asyncpg.connect(url)
    try:
        await setup.execute(RAW_TABLE_SQL)
    finally:
        await setup.close()
    for name, connections in ((RAW_1, 1), (RAW_8, WRITERS)):
        progress(name)
        rates[name] = await raw_inserts(url, row, connections, plan.seconds)

    for name, threads in ((SIGN_1, 1), (SIGN_2, 2)):
        progress(name)
        rates[name] = await asyncio.to_thread(signing_rate, key, threads, plan.sign_seconds)

    progress(f"{PEER_1}; {PEER_8}")
    rates[PEER_1], rates[PEER_8] = await asyncio.to_thread(peer_rates, url, row, plan.seconds)

    settings = Settings(database_url=url, data_dir=str(data_dir))
    async with open_store(settings, url) as store:
        progress(STORE_1)
        rates[STORE_1] = await timed_tasks(
            [store_writer(store, "bench-one", "one-0")], plan.seconds
        )
        progress(STORE_8_ONE)
        rates[STORE_8_ONE] = await timed_tasks(
            [store_writer(store, "bench-shared", f"shared-{i}") for i in range(WRITERS)],
            plan.seconds,
        )
        progress(STORE_8_MANY)
        rates[STORE_8_MANY] = await timed_tasks(
            [store_writer(store, f"bench-t{i}", f"own-{i}") for i in range(WRITERS)],
            plan.seconds,
        )
        progress(f"filling {VERIFY_TENANT} with {plan.verify_records} events")
        rates[FILL] = await fill_tenant(store, VERIFY_TENANT, plan.verify_records)

    progress("valueledger export / verify")
    report.verify = await asyncio.to_thread(export_and_verify, url, data_dir, rates[FILL].events)


async def run(plan: Plan, server_url: str) -> Report:
    name = f"vl_bench_{os.getpid()}"
    report = Report(plan=plan, database=name, load_before=os.getloadavg())
    async with throwaway_database(server_url, name) as url:
        await apply_schema(url)
        with tempfile.TemporaryDirectory(prefix="vl_bench_") as data_dir:
            await measure(plan, url, Path(data_dir), report)
    report.load_after = os.getloadavg()
    return report


# ------------------------------------------------------------------------------ reporting


@dataclass(frozen=True, slots=True)
class Comparison:
    case: str
    baseline: str
    ratio: float
    target: float | None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target


def comparisons(rates: dict[str, Rate]) -> list[Comparison]:
    found: list[Comparison] = []
    for case, baseline, target in COMPARISONS:
        reference = rates[baseline].per_second
        ratio = rates[case].per_second / reference if reference > 0 else 0.0
        found.append(Comparison(case, baseline, ratio, target))
    return found


def render(report: Report) -> str:
    lines = [
        f"valueledger ledger benchmark ({'quick' if report.plan.quick else 'full'} run, "
        f"database {report.database}, {os.cpu_count()} CPUs)",
        "load average (1/5/15 min) before: "
        + "/".join(f"{x:.2f}" for x in report.load_before)
        + ", after: "
        + "/".join(f"{x:.2f}" for x in report.load_after)
        + " (other work on the machine skews every figure)",
        "",
        f"{'case':<42} {'events/s':>10}  {'vs baseline':<34} {'ratio':>6} {'target':>7} met",
    ]
    by_case: dict[str, list[Comparison]] = {}
    for comparison in comparisons(report.rates):
        by_case.setdefault(comparison.case, []).append(comparison)
    for case, rate in report.rates.items():
        head = f"{case:<42} {rate.per_second:>10,.0f}"
        rows = by_case.get(case, [])
        if not rows:
            lines.append(head)
        for index, item in enumerate(rows):
            target = "-" if item.target is None else f">={item.target:.1f}"
            met = "-" if item.met is None else ("yes" if item.met else "NO")
            prefix = head if index == 0 else " " * len(head)
            lines.append(f"{prefix}  {item.baseline:<34} {item.ratio:>6.2f} {target:>7} {met}")
    verify = report.verify
    lines.append("")
    if verify.status == "skipped":
        lines.append(f"verify --bundle: SKIPPED. {verify.message}")
    else:
        met = "yes" if verify.status == "ok" and verify.per_second >= VERIFY_TARGET else "NO"
        lines.append(
            f"{'verify --bundle, ' + format(verify.records, ',') + ' records':<42} "
            f"{verify.per_second:>10,.0f}  records/s, target >={VERIFY_TARGET:,.0f}: {met}; "
            f"{verify.seconds:.2f}s, {verify.jobs} workers, peak RSS of all its processes "
            f"{verify.peak_rss_kib / 1024:.0f} MiB"
        )
        speedup = verify.per_second / max(verify.alone_per_second, 1e-9)
        lines.append(
            f"{'  the same, --jobs 1 (one process)':<42} {verify.alone_per_second:>10,.0f}  "
            f"records/s (the default runs {speedup:.2f}x this); {verify.alone_seconds:.2f}s, "
            f"peak RSS {verify.alone_peak_rss_kib / 1024:.0f} MiB"
        )
        lines.append(
            f"  (export took {verify.export_seconds:.1f}s, bundle {verify.bundle_bytes / 2**20:.1f}"
            f" MiB; verify status: {verify.status})"
        )
        if verify.message:
            lines.append(verify.message)
    return "\n".join(lines)


def as_json(report: Report) -> dict[str, Any]:
    verify = report.verify
    return {
        "quick": report.plan.quick,
        "database": report.database,
        "cpus": os.cpu_count(),
        "load_before": list(report.load_before),
        "load_after": list(report.load_after),
        "rates": {
            name: {"events": r.events, "seconds": r.seconds, "per_second": r.per_second}
            for name, r in report.rates.items()
        },
        "comparisons": [
            {
                "case": c.case,
                "baseline": c.baseline,
                "ratio": c.ratio,
                "target": c.target,
                "met": c.met,
            }
            for c in comparisons(report.rates)
        ],
        "verify": {
            "status": verify.status,
            "records": verify.records,
            "seconds": verify.seconds,
            "records_per_second": verify.per_second,
            "target": VERIFY_TARGET,
            "met": verify.status == "ok" and verify.per_second >= VERIFY_TARGET,
            "peak_rss_kib": verify.peak_rss_kib,
            "jobs": verify.jobs,
            "one_process_records_per_second": verify.alone_per_second,
            "one_process_peak_rss_kib": verify.alone_peak_rss_kib,
            "export_seconds": verify.export_seconds,
            "bundle_bytes": verify.bundle_bytes,
            "message": verify.message,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    report = asyncio.run(run(plan, server_url))
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
