"""Signed outbound webhooks: the ledger's events, delivered to the vendor's endpoints.

The operator lists the endpoints in a JSON file (VALUELEDGER_WEBHOOKS; workers.webhook_format
and docs/webhooks.md). Three parts, each safe to crash at any point:

1. The dispatcher follows the ledger once per endpoint, from the ledger's beginning
   (checkpoint ``webhooks:<endpoint id>``), and in the transaction that moves the checkpoint
   writes a `webhook_deliveries` row for every event the endpoint wants: exactly once per
   event and endpoint, in the same commit-safe order the projectors use.
2. After the commit it queues an arq job per new row on the endpoint's own queue, the job id
   being the row's key, so one delivery is never queued twice at once. Each endpoint has its
   own arq worker, running at most PER_ENDPOINT attempts at a time: an endpoint that hangs
   holds its own slots, never another's. The jobs run in any worker process on the same Redis
   and cache prefix that has the endpoint configured (`valueledger serve`, `--role worker`).
   While an endpoint has MAX_PENDING deliveries pending, its dispatch waits, so a long history
   or a long outage never floods Redis.
3. A job claims its row (counting the attempt, and taking a lease: next_attempt_at moves past
   the request's timeout), POSTs the signed body within REQUEST_TIMEOUT for the whole
   exchange, and records the answer: delivered on a 2xx; otherwise tried again after each of
   the configured delays (by default the architecture's 5 minutes, 30 minutes and 2 hours),
   then failed. An attempt that never finished (its worker died) counts as failed.

The dispatcher also prunes, once an hour: the rows of finished deliveries (delivered, or
failed for good) go once they are older than the retention (VALUELEDGER_WEBHOOK_RETENTION_DAYS,
30 by default), so the table holds what is owed and the recent past, not all of history. A
pending row is never pruned: it is still owed.

The dispatcher also sweeps: a pending row due for longer than SWEEP_GRACE has no job (Redis
lost its queue, or a worker died during an attempt and its lease lapsed), so it is queued
again. Delivery is therefore at least once, and a receiver drops repeats by ``webhook-id``.
Order is not promised: a retried event arrives after later ones; ``data.seq`` orders them.

Redis going away stops nothing for good: the dispatcher and each arq worker wait and go on
(rows committed meanwhile are queued by the sweep), and the rest of `serve` never notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import httpx
import msgspec
import structlog
from arq.connections import ArqRedis
from arq.worker import Retry, Worker, func
from prometheus_client import Counter
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from eventstore.store import NOTIFY_CHANNEL, EventStore, read_committed
from projections.runner import locked_checkpoint, save_checkpoint, wait_until
from valueledger.settings import REDACTED_TEXT, redact_urls_in, url_secrets
from workers.webhook_format import Endpoint, body, message_id, signature

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT: Final = 10.0
"""Seconds an endpoint has for one attempt, from connecting to the status line."""
PER_ENDPOINT: Final = 4
"""Attempts one endpoint may have running at once, in one process."""
MAX_PENDING: Final = 10_000
"""Pending deliveries beyond which an endpoint's dispatch waits for them to drain."""
BACKOFF: Final = (0.5, 30.0)
"""First and longest wait, in seconds, before trying Redis again after it failed."""
LEASE_SECONDS: Final = 60.0
"""How long a claimed attempt holds its row: longer than any attempt can take."""
SWEEP_INTERVAL: Final = 15.0
"""Seconds between sweeps for pending rows that lost their job."""
SWEEP_GRACE: Final = 5.0
"""How long past due a pending row must be before the sweep queues it again."""
BATCH_SIZE: Final = 500
"""Events read per endpoint and transaction."""
POLL_INTERVAL: Final = 1.0
"""Seconds between looks at the ledger when no notification came."""
STOP_GRACE: Final = 5.0
"""On stop, how long running attempts may finish before they are cancelled (their rows are
then picked up again when their lease lapses)."""
RETENTION_DAYS: Final = 30
"""Days a finished delivery's row is kept by default (VALUELEDGER_WEBHOOK_RETENTION_DAYS)."""
PRUNE_INTERVAL: Final = 3600.0
"""Seconds between prunings of finished deliveries past their retention."""
PRUNE_BATCH: Final = 5000
"""Rows deleted per statement when pruning, so no one statement holds many row locks."""
JOB: Final = "deliver_webhook"

DELIVERIES: Final = Counter(
    "valueledger_webhook_attempts_total",
    "Webhook delivery attempts, by endpoint and outcome (delivered, retried, failed).",
    ["endpoint", "outcome"],
)

_PENDING_SQL: Final = (
    "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'pending'"
)
_CLAIM_SQL: Final = """
UPDATE webhook_deliveries
   SET attempts = attempts + 1,
       next_attempt_at = clock_timestamp() + make_interval(secs => $4)
 WHERE endpoint_id = $1 AND tenant = $2 AND seq = $3 AND status = 'pending'
   AND next_attempt_at <= clock_timestamp() + interval '1 second'
RETURNING attempts
"""
_DELIVERED_SQL: Final = """
UPDATE webhook_deliveries
   SET status = 'delivered', delivered_at = clock_timestamp(), last_status = $5, last_error = NULL
 WHERE endpoint_id = $1 AND tenant = $2 AND seq = $3 AND status = 'pending' AND attempts = $4
"""
_RETRY_SQL: Final = """
UPDATE webhook_deliveries
   SET next_attempt_at = clock_timestamp() + make_interval(secs => $5), last_status = $6,
       last_error = $7
 WHERE endpoint_id = $1 AND tenant = $2 AND seq = $3 AND status = 'pending' AND attempts = $4
"""
_FAILED_SQL: Final = """
UPDATE webhook_deliveries SET status = 'failed', last_status = $5, last_error = $6
 WHERE endpoint_id = $1 AND tenant = $2 AND seq = $3 AND status = 'pending' AND attempts = $4
"""
# (Each outcome names the attempt it records: a stale attempt, overtaken after its lease
# lapsed, changes nothing.)
# A finished delivery's age: since it was delivered, or since its last attempt's lease ran out.
_PRUNE_SQL: Final = """
WITH finished AS (
    SELECT endpoint_id, tenant, seq FROM webhook_deliveries
     WHERE status <> 'pending'
       AND coalesce(delivered_at, next_attempt_at) < clock_timestamp() - make_interval(days => $1)
     LIMIT $2
)
DELETE FROM webhook_deliveries AS d USING finished AS f
 WHERE (d.endpoint_id, d.tenant, d.seq) = (f.endpoint_id, f.tenant, f.seq)
"""


def checkpoint_of(endpoint_id: str) -> str:
    """The endpoint's row in subscription_checkpoints."""
    return f"webhooks:{endpoint_id}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one endpoint: a row of webhook_deliveries."""

    endpoint_id: str
    tenant: str
    seq: int


class Webhooks:
    """Queues and delivers the ledger's events to `endpoints`; one per process."""

    def __init__(
        self,
        store: EventStore,
        queue: ArqRedis,
        endpoints: Sequence[Endpoint],
        *,
        prefix: str,
        retry_delays: Sequence[float],
        client: httpx.AsyncClient,
        sweep_grace: float = SWEEP_GRACE,
        request_timeout: float = REQUEST_TIMEOUT,
        retention_days: int = RETENTION_DAYS,
    ) -> None:
        self._store = store
        self._retention_days = retention_days
        self._queue = queue
        self._endpoints = {endpoint.id: endpoint for endpoint in endpoints}
        # An endpoint's URL may carry a token (?token=...), which an attempt's error can repeat:
        # as configured, and as httpx sent it (a server's answer quoting the request back).
        self._url_secrets = {
            endpoint.id: url_secrets(endpoint.url) | url_secrets(str(httpx.URL(endpoint.url)))
            for endpoint in endpoints
        }
        self._prefix = prefix
        self._retry_delays = tuple(retry_delays)
        self._client = client
        self._sweep_grace = sweep_grace
        self._request_timeout = request_timeout

    @property
    def endpoint_ids(self) -> list[str]:
        return list(self._endpoints)

    def queue_name(self, endpoint_id: str) -> str:
        """The endpoint's own queue: only workers that have it configured take its jobs."""
        return f"{self._prefix}:webhooks:{endpoint_id}"

    def job_id(self, delivery: Delivery) -> str:
        return f"{self._prefix}:webhook:{delivery.endpoint_id}:{delivery.tenant}:{delivery.seq}"

    # --- queueing ---------------------------------------------------------------------------

    async def dispatch(self) -> int:
        """One batch per endpoint: rows written and jobs queued; returns the most events any
        endpoint read (BATCH_SIZE: behind, call again at once)."""
        most = 0
        for endpoint in self._endpoints.values():
            name = checkpoint_of(endpoint.id)
            async with self._store.pool.acquire() as connection, connection.transaction():
                if await connection.fetchval(_PENDING_SQL, endpoint.id) >= MAX_PENDING:
                    continue  # let the backlog drain before queueing more
                cursor = await locked_checkpoint(connection, name)
                records = await read_committed(connection, cursor, BATCH_SIZE)
                if not records:
                    continue
                wanted = [record for record in records if endpoint.wants(record.type)]
                rows = await connection.fetch(
                    "INSERT INTO webhook_deliveries (endpoint_id, tenant, seq, event_type)"
                    " SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[])"
                    " ON CONFLICT DO NOTHING RETURNING tenant, seq",
                    endpoint.id,
                    [record.tenant for record in wanted],
                    [record.seq for record in wanted],
                    [record.type for record in wanted],
                )
                await save_checkpoint(connection, name, records[-1].cursor)
            await self._enqueue([Delivery(endpoint.id, row["tenant"], row["seq"]) for row in rows])
            most = max(most, len(records))
        return most

    async def sweep(self) -> int:
        """Queue again the pending rows that are past due and so have lost their job."""
        rows = await self._store.pool.fetch(
            "SELECT endpoint_id, tenant, seq FROM webhook_deliveries"
            " WHERE status = 'pending' AND endpoint_id = ANY($1::text[])"
            "   AND next_attempt_at < clock_timestamp() - make_interval(secs => $2)"
            " ORDER BY next_attempt_at LIMIT 1000",
            list(self._endpoints),
            self._sweep_grace,
        )
        await self._enqueue(
            [Delivery(row["endpoint_id"], row["tenant"], row["seq"]) for row in rows]
        )
        return len(rows)

    async def prune(self) -> int:
        """Delete the rows of deliveries finished longer ago than the retention, of every
        endpoint (configured here or not); returns how many. None with a retention of 0."""
        if self._retention_days <= 0:
            return 0
        pruned = 0
        while True:
            status = await self._store.pool.execute(_PRUNE_SQL, self._retention_days, PRUNE_BATCH)
            deleted = int(status.rsplit(" ", 1)[-1])
            pruned += deleted
            if deleted < PRUNE_BATCH:
                if pruned:
                    log.info("webhooks_pruned", rows=pruned, days=self._retention_days)
                return pruned

    async def _enqueue(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            await self._queue.enqueue_job(
                JOB,
                delivery.endpoint_id,
                delivery.tenant,
                delivery.seq,
                _job_id=self.job_id(delivery),
                _queue_name=self.queue_name(delivery.endpoint_id),
            )

    # --- delivering -------------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> str:
        """One attempt, if the row is due; raises arq's Retry when another attempt will come."""
        endpoint = self._endpoints.get(delivery.endpoint_id)
        if endpoint is None:  # removed from the configuration: its rows wait, untouched
            return "endpoint not configured"
        key = (delivery.endpoint_id, delivery.tenant, delivery.seq)
        pool = self._store.pool
        attempts = await pool.fetchval(_CLAIM_SQL, *key, LEASE_SECONDS)
        if attempts is None:
            return "not due"  # delivered, failed, or another attempt holds it
        if attempts > len(self._retry_delays) + 1:  # the last attempt never finished
            unfinished = f"attempt {attempts - 1} never finished (its worker stopped)"
            await pool.execute(_FAILED_SQL, *key, attempts, None, unfinished)
            DELIVERIES.labels(endpoint.id, "failed").inc()
            return "failed"
        [record] = await self._store.read_tenant(delivery.tenant, delivery.seq, 1)
        payload = body(record)
        webhook_id = message_id(record.tenant, record.seq)
        stamp = int(time.time())
        status: int | None = None
        error: str | None
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature(endpoint.key, webhook_id, stamp, payload),
        }
        try:
            # The whole exchange is timed (httpx's timeouts are per read: a server trickling
            # bytes would outlast them); the answer is streamed and never read, since only its
            # status counts, whatever its size.
            async with (
                asyncio.timeout(self._request_timeout),
                self._client.stream(
                    "POST", endpoint.url, content=payload, headers=headers
                ) as answer,
            ):
                status = answer.status_code
            error = None if 200 <= status < 300 else f"answered HTTP {status}"
        except Exception as failure:  # whatever stopped it, the attempt failed
            error = _failure_text(failure, self._url_secrets[endpoint.id])
        if error is None:
            await pool.execute(_DELIVERED_SQL, *key, attempts, status)
            DELIVERIES.labels(endpoint.id, "delivered").inc()
            return "delivered"
        if attempts <= len(self._retry_delays):
            delay = self._retry_delays[attempts - 1]
            await pool.execute(_RETRY_SQL, *key, attempts, delay, status, error)
            DELIVERIES.labels(endpoint.id, "retried").inc()
            log.info("webhook_retry", endpoint=endpoint.id, webhook_id=webhook_id, error=error)
            raise Retry(defer=delay)
        await pool.execute(_FAILED_SQL, *key, attempts, status, error)
        DELIVERIES.labels(endpoint.id, "failed").inc()
        log.warning("webhook_failed", endpoint=endpoint.id, webhook_id=webhook_id, error=error)
        return "failed"

    # --- running ----------------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event, *, sweep_interval: float = SWEEP_INTERVAL) -> None:
        """Dispatch as the ledger grows, sweep now and then and prune once an hour, until
        `stop` is set."""
        wake = asyncio.Event()

        def on_notify(*_args: object) -> None:
            wake.set()

        swept = pruned = -PRUNE_INTERVAL  # both at once, on the first round
        backoff = BACKOFF[0]
        async with self._store.pool.acquire() as listener:
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    try:
                        if time.monotonic() - pruned >= PRUNE_INTERVAL:
                            await self.prune()
                            pruned = time.monotonic()
                        if time.monotonic() - swept >= sweep_interval:
                            await self.sweep()
                            swept = time.monotonic()
                        read = await self.dispatch()
                    except (RedisError, OSError) as error:
                        # Rows already written wait in PostgreSQL; the sweep queues them.
                        log.warning(
                            "webhooks_redis_unavailable", error=str(error), retry_in=backoff
                        )
                        await wait_until(stop, backoff)
                        backoff = min(backoff * 2, BACKOFF[1])
                        continue
                    backoff = BACKOFF[0]
                    if read == BATCH_SIZE:
                        continue
                    await wait_until(stop, min(POLL_INTERVAL, sweep_interval), wake)
            finally:
                await listener.remove_listener(NOTIFY_CHANNEL, on_notify)


async def _deliver_job(ctx: dict[str, Any], endpoint_id: str, tenant: str, seq: int) -> str:
    webhooks: Webhooks = ctx["webhooks"]
    return await webhooks.deliver(Delivery(endpoint_id, tenant, seq))


def connect_queue(redis_url: str) -> ArqRedis:
    """arq's client, with jobs as msgpack (arq's default, pickle, would run whatever a writer
    to Redis put there)."""
    return ArqRedis(
        ConnectionPool.from_url(redis_url),
        job_serializer=msgspec.msgpack.encode,
        job_deserializer=msgspec.msgpack.decode,
    )


async def _run_endpoint_worker(
    webhooks: Webhooks, redis_url: str, endpoint_id: str, stop: asyncio.Event
) -> None:
    """One endpoint's arq worker until `stop` is set; restarted, after a pause, whenever it
    fails (Redis went away), so a hiccup never silently ends deliveries."""
    backoff = BACKOFF[0]
    while not stop.is_set():
        queue = connect_queue(redis_url)
        worker = Worker(
            # Attempts are counted in webhook_deliveries, not by arq: its count would carry
            # over when a lost job is queued again under the same id.
            [func(_deliver_job, name=JOB, max_tries=1_000_000)],
            queue_name=webhooks.queue_name(endpoint_id),
            redis_pool=queue,
            handle_signals=False,
            ctx={"webhooks": webhooks},
            max_jobs=PER_ENDPOINT,
            keep_result=0,
            poll_delay=0.2,
            job_timeout=LEASE_SECONDS,
            job_serializer=msgspec.msgpack.encode,
            job_deserializer=msgspec.msgpack.decode,
        )
        running = asyncio.create_task(worker.main())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if running.done() and not running.cancelled() and running.exception() is not None:
                log.warning(
                    "webhook_worker_failed",
                    endpoint=endpoint_id,
                    error=str(running.exception()),
                    retry_in=backoff,
                )
        finally:
            stopping.cancel()
            await _close_worker(worker, running, queue)
        if not stop.is_set():
            await wait_until(stop, backoff)
            backoff = min(backoff * 2, BACKOFF[1])


async def _close_worker(worker: Worker, running: asyncio.Task[None], queue: ArqRedis) -> None:
    """Let running attempts finish for up to STOP_GRACE, cancel the rest (their rows wait for
    their leases to lapse), and let go of Redis: what Worker.close does, but with redis-py's
    current aclose and without failing when Redis is gone."""
    worker.allow_pick_jobs = False
    attempts = [task for task in worker.tasks.values() if not task.done()]
    if attempts:
        await asyncio.wait(attempts, timeout=STOP_GRACE)
    worker.handle_sig(signal.SIGTERM)
    running.cancel()
    await asyncio.gather(running, *worker.tasks.values(), return_exceptions=True)
    with contextlib.suppress(RedisError, OSError):
        await queue.delete(worker.health_check_key)
    await queue.aclose(close_connection_pool=True)


def _failure_text(failure: Exception, secrets: frozenset[str]) -> str:
    """What stopped an attempt, as it is stored and logged: at most 500 characters, without the
    endpoint URL's secrets (`secrets`, wherever they stand) nor those of any URL in it
    (redact_url's rules)."""
    text = f"{type(failure).__name__}: {failure}"
    for secret in sorted(secrets, key=len, reverse=True):  # a secret inside another: the longer
        text = text.replace(secret, REDACTED_TEXT)
    return redact_urls_in(text).rstrip(": ")[:500]


async def run_webhooks(
    store: EventStore,
    redis_url: str,
    endpoints: Sequence[Endpoint],
    stop: asyncio.Event,
    *,
    prefix: str,
    retry_delays: Sequence[float],
    sweep_interval: float = SWEEP_INTERVAL,
    sweep_grace: float = SWEEP_GRACE,
    request_timeout: float = REQUEST_TIMEOUT,
    retention_days: int = RETENTION_DAYS,
) -> None:
    """The webhook worker: the dispatcher and one arq worker per endpoint, in this loop, until
    `stop` is set."""
    if not endpoints:
        log.info("webhooks_idle", reason="no endpoints configured (VALUELEDGER_WEBHOOKS)")
        await stop.wait()
        return
    queue = connect_queue(redis_url)
    # httpx's own timeouts sit past the attempt's, which is what ends a slow exchange.
    async with httpx.AsyncClient(timeout=request_timeout + 1, follow_redirects=False) as client:
        webhooks = Webhooks(
            store,
            queue,
            endpoints,
            prefix=prefix,
            retry_delays=retry_delays,
            client=client,
            sweep_grace=sweep_grace,
            request_timeout=request_timeout,
            retention_days=retention_days,
        )
        log.info("webhooks_starting", endpoints=webhooks.endpoint_ids)
        try:
            await asyncio.gather(
                webhooks.follow(stop, sweep_interval=sweep_interval),
                *(
                    _run_endpoint_worker(webhooks, redis_url, endpoint_id, stop)
                    for endpoint_id in webhooks.endpoint_ids
                ),
            )
        finally:
            stop.set()  # one part failing stops the others, and then the service
            await queue.aclose(close_connection_pool=True)
        log.info("webhooks_stopped")


async def delivery_counts(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    """How many deliveries each endpoint has in each status: for `valueledger webhooks`."""
    rows = await pool.fetch(
        "SELECT endpoint_id, status, count(*) AS n FROM webhook_deliveries GROUP BY 1, 2"
    )
    return {(row["endpoint_id"], row["status"]): row["n"] for row in rows}
