"""A Redis cache in front of the read models, which can always be thrown away.

Freshness. Every entry sits under its tenant's *generation*, a counter in Redis, and carries
the generation it was loaded under:

    key = f"{prefix}:rm:{tenant}:{view}:{shape}:{params}"    value = b"<generation>:<json>"

A read fetches the generation (a missing one is 0) and the entry in one MGET, and the entry
counts only if it was stored under that generation; on a miss it loads from PostgreSQL and
stores the value tagged with the generation it read *before* loading. After each batch the
projection runner commits rows and checkpoint, then calls `invalidate`, which INCRs the
generation of every tenant the batch changed, and the global generation that cross-tenant
views (tenant None, such as the vendor overview) are keyed by. So a reader sees a change as
soon as the INCR lands, and a reader that loaded the old rows before the commit can only ever
store them under an old generation, which no reader accepts again: it cannot bring stale rows
back. (Tagging by a version bump, not deleting entries, is what makes that race safe: a delete
followed by a slow reader's store would resurrect the old rows. A slow reader may overwrite a
newer entry with its old-tagged one: that costs the next reader a miss, never a stale answer.)

The store is sent with a read of the generation in one MULTI; if the generation moved while
loading (an invalidation, or a FLUSHALL or an eviction that reset it to 0), the entry is
deleted at once instead of waiting for its TTL, so an entry that survives was fresh when it
was stored (else a generation reset to 0 and counted up again could meet it).

`shape` is a digest of the view type's JSON schema, so an entry stored by a release whose view
had other fields is never read by this one: it is a miss, and expires with its TTL. That is
what lets `get_or_load_json` answer stored bytes as they are, without decoding them.

One round trip. A caller that already talks to Redis before the read (the API's
authentication, which reads the token's revocations) can add the two `keys` of the read to its
own MGET and hand the values to `get_or_load_json` as `read`: a warm read then costs no round
trip of its own.

The bound. Every entry also expires after its view's TTL (DASHBOARD_TTL, CALCULATION_TTL).
Whatever goes wrong on the Redis side (an INCR lost because Redis was unreachable from the
projector, a generation key evicted, a FLUSHALL), a reader never sees data older than its
projection by more than the TTL, and usually sees it at once.

Redis down, slow or flushed: reads are served from PostgreSQL (`load`), counted in
`valueledger_cache_fallbacks_total{operation}`, and logged. After a failure this process
skips Redis for reads for `retry_after` seconds, so a dead Redis costs a read at most one
short socket timeout now and then. Invalidation is always attempted, and its failure is
logged and counted, never raised: the projector's rows are already committed, and a missed
INCR is bounded by the TTL.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec
import redis.asyncio
import structlog
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from eventstore.store import TENANT_FORMAT
from projections.request_redis import ClientRedis, RequestRedis

T = TypeVar("T")

DASHBOARD_TTL: Final = 300
"""Seconds a dashboard view may be served from the cache."""
CALCULATION_TTL: Final = 3600
"""Seconds a calculation result may be served from the cache."""

SOCKET_TIMEOUT: Final = 0.25
"""Seconds to connect to Redis or wait for its answer before serving from PostgreSQL."""
RETRY_AFTER: Final = 1.0
"""Seconds reads skip Redis after it failed, so an outage costs little."""

ALL_TENANTS: Final = "_all"
"""The key segment of cross-tenant views; no tenant id can be spelled so (they start with a
letter or digit)."""

REDIS_ERRORS: Final = (RedisError, OSError)
"""What a Redis call may raise when Redis is down, slow or refusing (TimeoutError is an
OSError; redis-py's ConnectionError and TimeoutError are RedisErrors)."""

FALLBACKS: Final = Counter(
    "valueledger_cache_fallbacks_total",
    "Read-model cache operations that failed on Redis (reads were served from PostgreSQL).",
    ["operation"],
)
REQUESTS: Final = Counter(
    "valueledger_cache_requests_total",
    "Read-model cache reads by view and outcome (hit, miss, unavailable).",
    ["view", "outcome"],
)

log = structlog.get_logger(__name__)

_ENCODER: Final = msgspec.json.Encoder()


def connect_cache(url: str, *, timeout: float = SOCKET_TIMEOUT) -> redis.asyncio.Redis:
    """A client for the cache: short timeouts and no retries, since PostgreSQL is always
    there to answer instead. Connects lazily, on the first command."""
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


@dataclass(frozen=True, slots=True)
class _Lookup:
    """What a read found: the keys, the generation, and the entry's JSON if it is current."""

    generation_key: str
    entry_key: str
    generation: int
    cached: bytes | None


class ReadModelCache:
    """Caches read-model views (msgspec values) per tenant, invalidated by generation."""

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        prefix: str,
        *,
        reads: RequestRedis | None = None,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        """`reads` serves the lookups (by default, `redis` itself); `redis` everything else."""
        self._redis = redis
        self._reads = reads if reads is not None else ClientRedis(redis)
        self._prefix = prefix
        self._retry_after = retry_after
        self._skip_until = 0.0
        self._failing = False
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        self._shapes: dict[Any, str] = {}

    def generation_key(self, tenant: str | None) -> str:
        return f"{self._prefix}:gen:{_scope(tenant)}"

    def entry_key(self, tenant: str | None, view: str, params: str, type: Any) -> str:
        if ":" in view or not view:
            raise ValueError(f"view name {view!r} must be non-empty and contain no ':'")
        return f"{self._prefix}:rm:{_scope(tenant)}:{view}:{self._shape(type)}:{params}"

    def keys(self, tenant: str | None, view: str, params: str, type: Any) -> tuple[str, str]:
        """The generation's key and the entry's: what a read fetches, in this order."""
        return self.generation_key(tenant), self.entry_key(tenant, view, params, type)

    async def get_or_load(
        self,
        tenant: str | None,
        view: str,
        params: str,
        ttl: float,
        load: Callable[[], Awaitable[T]],
        type: type[T],
    ) -> T:
        """The view from the cache, or from `load` (PostgreSQL), stored for `ttl` seconds.

        `view` names the read model and must not contain ':'; `params` is anything that
        tells apart the view's variants (a page, a period).
        """
        lookup = await self._lookup(tenant, view, params, ttl, type, None)
        if lookup is None:
            return await load()
        if lookup.cached is not None:
            try:
                value: T = self._decoder(type).decode(lookup.cached)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # Not JSON of this shape (written by hand?): a miss, overwritten below.
                log.info("read_model_cache_entry_undecodable", view=view)
            else:
                REQUESTS.labels(view, "hit").inc()
                return value
        REQUESTS.labels(view, "miss").inc()
        value = await load()
        await self._store(lookup, _ENCODER.encode(value), ttl)
        return value

    async def get_or_load_json(
        self,
        tenant: str | None,
        view: str,
        params: str,
        ttl: float,
        load: Callable[[], Awaitable[T]],
        type: type[T],
        *,
        read: Sequence[bytes | None] | None = None,
    ) -> bytes:
        """`get_or_load`'s view as JSON: a hit is the stored bytes, answered as they are (the
        key's shape guarantees they are this `type`'s); a miss is `load`'s value, encoded.

        `read`: the values of `keys(...)`, when the caller has just read them (see the module
        docstring); None reads them here.
        """
        lookup = await self._lookup(tenant, view, params, ttl, type, read)
        if lookup is None:
            return _ENCODER.encode(await load())
        if lookup.cached is not None:
            REQUESTS.labels(view, "hit").inc()
            return lookup.cached
        REQUESTS.labels(view, "miss").inc()
        body = _ENCODER.encode(await load())
        await self._store(lookup, body, ttl)
        return body

    async def _lookup(
        self,
        tenant: str | None,
        view: str,
        params: str,
        ttl: float,
        type: Any,
        read: Sequence[bytes | None] | None,
    ) -> _Lookup | None:
        """What the cache holds for the read; None when Redis is skipped or failed, so the
        caller loads from PostgreSQL and stores nothing."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        generation_key, entry_key = self.keys(tenant, view, params, type)  # validates them
        if read is None:
            if time.monotonic() < self._skip_until:
                FALLBACKS.labels("get").inc()
                REQUESTS.labels(view, "unavailable").inc()
                return None
            try:
                # bytes or None: cache clients never decode responses.
                read = await self._reads.mget(generation_key, entry_key)
            except REDIS_ERRORS as error:
                self._failed("get", error)
                REQUESTS.labels(view, "unavailable").inc()
                return None
            self._answered()
        raw_generation, raw_entry = read
        generation = int(raw_generation or 0)
        cached = None
        if raw_entry is not None:
            tag, colon, body = bytes(raw_entry).partition(b":")
            if colon and tag == b"%d" % generation:
                cached = body
        return _Lookup(generation_key, entry_key, generation, cached)

    async def invalidate(self, tenants: Iterable[str]) -> None:
        """Retire the entries of `tenants` and every cross-tenant entry: the runner's
        `Invalidate` callback, called after its batch committed. Never raises on a Redis
        failure (logged and counted; the entries then expire within their TTL)."""
        keys = [self.generation_key(tenant) for tenant in sorted(set(tenants))]
        if not keys:
            return
        keys.append(self.generation_key(None))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._failed("invalidate", error)
            return
        self._answered()

    async def _store(self, lookup: _Lookup, body: bytes, ttl: float) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    lookup.entry_key,
                    b"%d:%b" % (lookup.generation, body),
                    px=max(1, round(ttl * 1000)),
                )
                pipe.get(lookup.generation_key)
                _, now = await pipe.execute()
            if int(now or 0) != lookup.generation:
                # Invalidated (or reset by a flush) while loading: never let it be read.
                await self._redis.delete(lookup.entry_key)
        except REDIS_ERRORS as error:
            self._failed("set", error)

    def _decoder(self, type_: Any) -> msgspec.json.Decoder[Any]:
        decoder = self._decoders.get(type_)
        if decoder is None:
            decoder = self._decoders[type_] = msgspec.json.Decoder(type_)
        return decoder

    def _shape(self, type_: Any) -> str:
        shape = self._shapes.get(type_)
        if shape is None:
            schema = msgspec.json.encode(msgspec.json.schema(type_), order="sorted")
            shape = self._shapes[type_] = hashlib.sha256(schema).hexdigest()[:12]
        return shape

    def _failed(self, operation: str, error: BaseException) -> None:
        FALLBACKS.labels(operation).inc()
        self._skip_until = time.monotonic() + self._retry_after
        # The error's class and message name the host at most, never a password.
        details = {"operation": operation, "error": type(error).__name__, "detail": str(error)}
        if self._failing:
            log.debug("read_model_cache_unavailable", **details)
        else:
            self._failing = True
            log.warning("read_model_cache_unavailable", **details)

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("read_model_cache_recovered")


def _scope(tenant: str | None) -> str:
    if tenant is None:
        return ALL_TENANTS
    if not TENANT_FORMAT.match(tenant):
        raise ValueError(f"tenant {tenant!r} is not a valid tenant id")
    return tenant
