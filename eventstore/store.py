"""The append-only event store: PostgreSQL, one hash chain per tenant, every record signed.

Write path. Each tenant has a lane in this process, where its appends queue; one task per
process commits them (group commit), and every tenant with appends waiting goes into the same
statement: one statement, one commit and one round trip per round, whatever the number of
tenants. Each lane caches its chain head, so records are built and signed before touching the
database; the statement locks the heads it moves in tenant order (so processes cannot
deadlock), moves each head only if it is still the one its records were built on, and inserts
the records of exactly the tenants whose heads moved. While it is in flight, the next round is
built and signed on the heads it will leave. A tenant whose head another process moved (or
whose stream moved) is told so alone; its lane learns what changed, rebuilds, re-signs and
tries again, while the other tenants of the statement are committed.

Read path. Positions come from a sequence, so they are handed out before commit and commit out
of order. Readers therefore order by (epoch, tx_id, position) and only hand out rows whose
writing transaction is older than every transaction still running (below the snapshot's xmin):
no row can later appear behind a cursor. See docs/event-store.md.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import re
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from opentelemetry import context as otel_context

from eventstore.canonical import InvalidPayloadError, canonical_json
from eventstore.db import Connection
from eventstore.errors import (
    AppendOutcomeUnknownError,
    ConcurrencyError,
    EventStoreError,
    IdempotencyKeyReusedError,
    InvalidAppendError,
    LedgerBusyError,
    SigningKeyError,
    StreamOwnershipError,
)
from eventstore.keys import SigningKey
from eventstore.receipts import (
    GENESIS_HASH,
    assemble_canonical,
    format_timestamp,
    record_hash,
)
from eventstore.signing import BatchSigner
from eventstore.tracing import caller_context, sql_span

TENANT_FORMAT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
STREAM_FORMAT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
EVENT_TYPE_FORMAT: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}\Z")
IDEMPOTENCY_KEY_FORMAT: Final = re.compile(r"[\x21-\x7e]{1,200}\Z")
MAX_RECORD_BYTES: Final = 64 * 1024
MAX_EVENTS_PER_APPEND: Final = 500
MAX_BATCH_EVENTS: Final = 1000
# Tenants per statement: bounds the heads one statement holds, and its cost of matching records
# to the heads that moved.
MAX_BATCH_TENANTS: Final = 100
MAX_REBUILDS: Final = 50
NOTIFY_CHANNEL: Final = "valueledger_events"
NOTIFY_SPACING: Final = 0.005
# How long (seconds) an append waits for a tenant's head another session holds before its round
# fails (and its appends go again one by one, so that only those of the held tenant wait again).
HEAD_LOCK_TIMEOUT: Final = 5.0
# How long (seconds) a store whose key was retired waits for the key file to hold the current
# key: a rotation registers the new key and replaces the file in two steps, and a store that
# reloads between them (or on a host the file reaches later) must not fail its appends.
KEY_ROTATION_WAIT: Final = 10.0
KEY_RELOAD_SPACING: Final = 0.05
# How long to wait for a lost writer session to exit before its round's outcome is given up on.
END_SESSION_WAIT_MS: Final = 5000


class StreamState(enum.Enum):
    """Expected versions that are not a number."""

    ANY = "any"
    NO_STREAM = "no_stream"


ExpectedVersion = int | StreamState


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: str
    role: str


class Metadata(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who and why, signed into every record of an append."""

    actor: Actor
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None


_TRACE_FIELDS: Final = tuple(name for name in Metadata.__struct_fields__ if name != "actor")


def _check_meta_shape(metadata: object) -> None:
    """Refuse metadata that would be signed in a shape docs/receipts.md section 3.1 forbids.

    Structs check no types when built in Python, so `Actor(user=5, role=None)` or a dict as the
    actor would otherwise reach the ledger. Exact Struct types, since a subclass could carry
    members the format does not have; strings may be str subclasses (a StrEnum role), which
    are stored as plain strings. Whether the strings are in the value domain (no U+0000, no
    lone surrogate) is canonical_json's to say, with the same paths.
    """
    if type(metadata) is not Metadata:
        raise InvalidAppendError(
            f"meta: must be a Metadata (actor, correlation_id, causation_id, trace_id), "
            f"not {type(metadata).__name__}"
        )
    actor = metadata.actor
    if type(actor) is not Actor:
        raise InvalidAppendError(
            f"meta.actor: must be an Actor (user, role), not {type(actor).__name__}"
        )
    for name, value in (("actor.user", actor.user), ("actor.role", actor.role)):
        if not isinstance(value, str):
            raise InvalidAppendError(f"meta.{name}: must be a string, not {type(value).__name__}")
    for name in _TRACE_FIELDS:
        value = getattr(metadata, name)
        if value is not None and not isinstance(value, str):
            raise InvalidAppendError(
                f"meta.{name}: must be a string or None, not {type(value).__name__}"
            )


def _meta_document(metadata: Metadata) -> dict[str, Any]:
    """The members of checked metadata as they are signed. Built by hand, not with
    msgspec.to_builtins, which refuses str subclasses: every string is passed on as it is, and
    canonical_json writes it as the plain string it holds."""
    actor = metadata.actor
    document: dict[str, Any] = {"actor": {"user": actor.user, "role": actor.role}}
    for name in _TRACE_FIELDS:
        document[name] = getattr(metadata, name)
    return document


class NewEvent(msgspec.Struct, frozen=True):
    type: str
    data: Any


class Cursor(msgspec.Struct, frozen=True, order=True):
    """A point in the commit-safe order. Text form: ``epoch.tx_id.position``."""

    epoch: int
    tx_id: int
    position: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.tx_id}.{self.position}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        parts = text.split(".")
        if len(parts) != 3 or not all(part.isascii() and part.isdigit() for part in parts):
            raise ValueError(f"cursor {text!r} is not of the form epoch.tx_id.position")
        epoch, tx_id, position = (int(part) for part in parts)
        # What the columns hold (integer, xid8, bigint identity): no cursor we gave is larger.
        if epoch >= 2**31 or tx_id >= 2**64 or position >= 2**63:
            raise ValueError(f"cursor {text!r} is beyond any position the ledger can have")
        return cls(epoch, tx_id, position)


START: Final = Cursor(0, 0, 0)


class RecordedEvent(msgspec.Struct, frozen=True):
    position: int
    epoch: int
    tx_id: int
    tenant: str
    seq: int
    stream: str
    version: int
    type: str
    data: Any
    meta: Any
    recorded_at: datetime
    prev_hash: str
    hash: str
    signature: str
    key_id: str
    canonical: bytes

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.epoch, self.tx_id, self.position)


@dataclass(slots=True)
class _Append:
    """An append validated and canonicalised once, waiting in its tenant's lane."""

    tenant: str
    stream: str
    expected: ExpectedVersion
    types: list[str]
    type_jsons: list[bytes]
    data_jsons: list[bytes]
    meta_json: bytes
    idempotency_key: str | None
    content_hash: str
    future: asyncio.Future[list[RecordedEvent]]
    caller: otel_context.Context | None
    """The appending request's trace context, parent of its statement's span (None: no SDK)."""
    # Set when a statement it shared failed as a whole: it is then committed alone, so that it
    # fails alone if it was the cause.
    solo: bool = False
    rebuilds: int = 0


@dataclass(slots=True)
class _Head:
    seq: int
    hash: str
    recorded_at: datetime | None


@dataclass(slots=True, eq=False)
class _Lane:
    """A tenant's queue in this process, and what it knows of the tenant's chain."""

    tenant: str
    tenant_json: bytes
    head: _Head | None = None  # None: read it before building on it
    pending: deque[_Append] = field(default_factory=deque)
    # Stream versions found when a statement refused this tenant: committed facts the next
    # build starts from. Forgotten once a batch of the lane commits.
    known: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Record:
    seq: int
    version: int
    prev_hash: str
    hash: str
    canonical: bytes
    signature: str = ""


@dataclass(slots=True)
class _Planned:
    append: _Append
    first_version: int
    records: list[_Record] = field(default_factory=list)


@dataclass(slots=True)
class _Batch:
    """One tenant's share of a statement: its appends laid on a chain head, the records built,
    and signed once _sign has run."""

    lane: _Lane
    appends: list[_Append]
    planned: list[_Planned]
    conflicts: list[tuple[_Append, ConcurrencyError]]
    recorded_at: datetime
    base: tuple[int, str, str]  # head seq and hash it was built on, and the signing key id
    records: list[_Record]

    def end(self) -> _Head:
        """The head this batch leaves once committed."""
        last = self.records[-1]
        return _Head(last.seq, last.hash, self.recorded_at)

    def final_versions(self) -> dict[str, int]:
        return {item.append.stream: item.records[-1].version for item in self.planned}


_EVENT_COLUMNS: Final = """
    position, epoch, tx_id::text::bigint AS tx_id, tenant, seq, stream_id, version, type,
    recorded_at, prev_hash, hash, signature, key_id, canonical
"""
_decode_record = msgspec.json.Decoder()

# One statement, one commit, one round trip per round, for every tenant in it ($1: the
# tenants; $2/$3 the heads their records were built on; $4/$5 the heads they move to).
#
# Locking. `locked` takes the row locks of the statement's heads in tenant order: FOR UPDATE
# locks rows as they leave the sort, and a CTE with a locking clause is never folded into the
# query that uses it. `moved` only updates heads that `locked` has returned, so rows it already
# holds; and the inserts start only once every head has moved (`moved` is read whole by an
# InitPlan, ARRAY(SELECT ...), before the first record row is filtered). So a statement waiting
# for a head holds only heads of lower tenants, and two processes locking overlapping sets cannot
# wait on each other in a cycle. No lock is wider than a row: statements that share no head never
# wait on each other. (Within one process every tenant's appends go through one connection, so
# there a wait for one tenant's head holds up the round behind it: see EventStore._writer.)
#
# Checking. A head moves only if it is still the one its records were built on (re-checked on
# the latest row version when a concurrent commit moved it: READ COMMITTED), every stream is at
# the version the records assume and owned by this tenant, no idempotency key is taken, and the
# key may sign. The stream check reads the statement's snapshot, which is current for the tenant
# whenever the head check passes: every commit to a tenant's streams moves its head, and the
# expected head was committed before the statement began. The key check can trust the snapshot
# for another reason: keys change only under rotate_key's ACCESS EXCLUSIVE lock on
# signing_keys, which waits for every statement reading the table and holds back every later
# one until the rotation has committed. Only the records of
# tenants that moved are inserted; `moved` says which, and _DIAGNOSE_SQL says why the others did
# not (the rare path pays for it).
_APPEND_TEMPLATE: Final = """
WITH heads AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
                         $6::timestamptz[]) AS u(tenant, seq, hash, new_seq, new_hash, recorded_at)
), locked AS MATERIALIZED (
    SELECT tenant, seq, hash FROM chain_heads WHERE tenant = ANY($1::text[])
    ORDER BY tenant
    FOR UPDATE
), records AS (
    SELECT * FROM unnest($8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::text[],
                         $13::bytea[], $14::text[], $15::text[], $16::text[], $17::timestamptz[])
        WITH ORDINALITY AS u(tenant, seq, stream_id, version, type, canonical, prev_hash, hash,
                             signature, recorded_at, i)
), refused AS (
    SELECT f.tenant
    FROM (SELECT tenant, stream_id, min(version) AS first_version FROM records
          GROUP BY tenant, stream_id) f
    LEFT JOIN LATERAL (
        SELECT e.tenant, e.version FROM events e WHERE e.stream_id = f.stream_id
        ORDER BY e.version DESC LIMIT 1) AS cur ON true
    WHERE coalesce(cur.version, 0) <> f.first_version - 1 OR cur.tenant <> f.tenant{taken_keys}
), moved AS (
    UPDATE chain_heads c
       SET seq = h.new_seq, hash = h.new_hash, recorded_at = h.recorded_at, key_id = $7
      FROM heads h
     WHERE c.tenant = h.tenant AND c.seq = h.seq AND c.hash = h.hash
       AND h.tenant IN (SELECT tenant FROM locked)
       AND h.tenant NOT IN (SELECT tenant FROM refused)
       AND EXISTS (SELECT 1 FROM signing_keys
                    WHERE key_id = $7 AND retired_at IS NULL AND created_at <= h.recorded_at)
    RETURNING c.tenant
), inserted AS (
    INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical, data, meta,
                        recorded_at, prev_hash, hash, signature, key_id)
    SELECT (SELECT max(epoch) FROM store_epochs), r.tenant, r.seq, r.stream_id, r.version,
           r.type, r.canonical, j.doc -> 'data', j.doc -> 'meta', r.recorded_at, r.prev_hash,
           r.hash, r.signature, $7
    FROM records r CROSS JOIN LATERAL (SELECT convert_from(r.canonical, 'UTF8')::jsonb AS doc) j
    WHERE r.tenant = ANY(ARRAY(SELECT tenant FROM moved))
    ORDER BY r.i
    RETURNING position, epoch
){remembered}
SELECT (SELECT array_agg(tenant) FROM moved) AS moved,
       array_agg(position ORDER BY position) AS positions, min(epoch) AS epoch,
       pg_current_xact_id()::text::bigint AS tx_id
FROM inserted
"""
# Appends carrying idempotency keys record them in the same statement. A key already taken
# refuses its tenant (above); the table's primary key still guards the rest.
_APPEND_REMEMBERING_SQL: Final = _APPEND_TEMPLATE.format(
    taken_keys="""
    UNION ALL
    SELECT k.tenant FROM unnest($18::text[], $19::text[]) AS k(tenant, key)
    JOIN append_idempotency a ON a.tenant = k.tenant AND a.idempotency_key = k.key""",
    remembered=""", remembered AS (
    INSERT INTO append_idempotency (tenant, idempotency_key, content_hash, first_seq,
                                    event_count)
    SELECT k.tenant, k.key, k.content_hash, k.first_seq, k.event_count
    FROM unnest($18::text[], $19::text[], $20::text[], $21::bigint[], $22::int[])
        AS k(tenant, key, content_hash, first_seq, event_count)
    WHERE k.tenant = ANY(ARRAY(SELECT tenant FROM moved))
)""",
)
_APPEND_SQL: Final = _APPEND_TEMPLATE.format(taken_keys="", remembered="")
# The commonest round, one record without an idempotency key (a lone writer's append): the
# same checks with scalars in place of arrays, which PostgreSQL binds and runs in about two
# thirds of the time. One head, so no lock order to keep. The stream's latest event gives its
# version, or -1 when it belongs to another tenant.
_APPEND_ONE_SQL: Final = """
WITH moved AS (
    UPDATE chain_heads
       SET seq = $2::bigint + 1, hash = $4, recorded_at = $5::timestamptz, key_id = $6
     WHERE tenant = $1 AND seq = $2::bigint AND hash = $3
       AND coalesce((SELECT CASE WHEN e.tenant = $1 THEN e.version ELSE -1 END
                       FROM events e WHERE e.stream_id = $7
                      ORDER BY e.version DESC LIMIT 1), 0) = $8::bigint - 1
       AND EXISTS (SELECT 1 FROM signing_keys
                    WHERE key_id = $6 AND retired_at IS NULL AND created_at <= $5::timestamptz)
    RETURNING tenant
), inserted AS (
    INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical, data, meta,
                        recorded_at, prev_hash, hash, signature, key_id)
    SELECT (SELECT max(epoch) FROM store_epochs), $1, $2::bigint + 1, $7, $8::bigint, $9,
           $10::bytea, j.doc -> 'data', j.doc -> 'meta', $5::timestamptz, $3, $4, $11, $6
    FROM (SELECT convert_from($10::bytea, 'UTF8')::jsonb AS doc) j
    WHERE EXISTS (SELECT 1 FROM moved)
    RETURNING position, epoch
)
SELECT (SELECT array_agg(tenant) FROM moved) AS moved, array_agg(position) AS positions,
       min(epoch) AS epoch, pg_current_xact_id()::text::bigint AS tx_id
FROM inserted
"""
_NOTIFY_SQL: Final = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
# A tenant's head row exists from its first append on (seq 0, the genesis hash), so that every
# append, the first included, is the same conditional move of that row. Created in tenant
# order, so that two processes creating overlapping sets cannot wait on each other in a cycle.
_HEADS_SQL: Final = """
WITH created AS (
    INSERT INTO chain_heads (tenant, seq, hash)
    SELECT tenant, 0, $2 FROM unnest($1::text[]) AS u(tenant) ORDER BY tenant
    ON CONFLICT (tenant) DO NOTHING
    RETURNING tenant, seq, hash, recorded_at
)
SELECT tenant, seq, hash, recorded_at FROM created
UNION ALL
SELECT tenant, seq, hash, recorded_at FROM chain_heads WHERE tenant = ANY($1::text[])
"""
# The writer connection's settings and its session's identity. Generic plans: see
# EventStore._writer. The identity (pid and start, since pids are reused) names the session to
# end if the connection breaks with a statement in flight. Both this and _END_SESSION_SQL run
# as the login role (`SET LOCAL ROLE NONE`), which owns the pool's sessions: the application
# role they run as can neither read their start time nor end them.
_WRITER_SESSION_SQL: Final = """
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('lock_timeout', $1, false),
       pg_backend_pid() AS pid,
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
           AS backend_start
"""
_WRITER_RESET_SQL: Final = "RESET plan_cache_mode; RESET lock_timeout"
# End a lost writer session and wait (up to $3 ms) until it has exited, so that its transaction
# is over, committed or rolled back. No row: it had exited already; false: it did not in time.
_END_SESSION_SQL: Final = """
SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2
"""
# The records at the given chain places, to learn whether a lost statement committed.
_FIND_RECORDS_SQL: Final = """
SELECT e.tenant, e.seq, e.hash, e.position, e.epoch, e.tx_id::text::bigint AS tx_id
FROM unnest($1::text[], $2::bigint[]) AS u(tenant, seq)
JOIN events e ON e.tenant = u.tenant AND e.seq = u.seq
"""
# Why some tenants' heads did not move: read after the fact, outside the lock, on a fresh
# snapshot; their lanes rebuild from it and the next attempt is checked under the lock again.
_DIAGNOSE_SQL: Final = """
WITH firsts AS (
    SELECT tenant, stream_id, min(version) AS first_version
    FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(tenant, stream_id, version)
    GROUP BY tenant, stream_id
), found AS (
    SELECT f.tenant, f.stream_id, f.first_version, cur.tenant AS owner,
           coalesce(cur.version, 0) AS current_version
    FROM firsts f LEFT JOIN LATERAL (
        SELECT e.tenant, e.version FROM events e WHERE e.stream_id = f.stream_id
        ORDER BY e.version DESC LIMIT 1) AS cur ON true
)
SELECT t.tenant, h.seq AS head_seq, h.hash AS head_hash, h.recorded_at AS head_recorded_at,
       (SELECT jsonb_object_agg(stream_id, current_version) FROM found
         WHERE found.tenant = t.tenant AND current_version <> first_version - 1)
           AS stale_streams,
       (SELECT array_agg(stream_id) FROM found
         WHERE found.tenant = t.tenant AND owner <> t.tenant) AS foreign_streams,
       k.created_at AS key_created_at, k.retired_at AS key_retired_at,
       k.key_id IS NOT NULL AS key_known
FROM unnest($1::text[]) AS t(tenant)
LEFT JOIN chain_heads h ON h.tenant = t.tenant
LEFT JOIN signing_keys k ON k.key_id = $5
"""


def _row_to_event(row: asyncpg.Record) -> RecordedEvent:
    canonical = bytes(row["canonical"])
    covered = _decode_record.decode(canonical)
    return RecordedEvent(
        position=row["position"],
        epoch=row["epoch"],
        tx_id=row["tx_id"],
        tenant=row["tenant"],
        seq=row["seq"],
        stream=row["stream_id"],
        version=row["version"],
        type=row["type"],
        data=covered["data"],
        meta=covered["meta"],
        recorded_at=row["recorded_at"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        signature=row["signature"],
        key_id=row["key_id"],
        canonical=canonical,
    )


_READ_COMMITTED_SQL: Final = f"""
SELECT {_EVENT_COLUMNS} FROM events
WHERE (epoch, tx_id, position) > ($1, $2::text::xid8, $3)
  AND (epoch < (SELECT max(epoch) FROM store_epochs)
       OR tx_id < pg_snapshot_xmin(pg_current_snapshot()))
ORDER BY events.epoch, events.tx_id, events.position
LIMIT $4
"""


async def read_committed(
    connection: Connection, after: Cursor = START, limit: int = 1000
) -> list[RecordedEvent]:
    """Committed events after `after`, in commit-safe order, on the caller's connection.

    Only events below the oldest running transaction's id are returned, so none can later
    commit behind the last one returned. Projections call it inside the transaction that also
    moves their checkpoint.
    """
    rows = await connection.fetch(
        _READ_COMMITTED_SQL, after.epoch, str(after.tx_id), after.position, limit
    )
    return [_row_to_event(row) for row in rows]


KeySource = Callable[[], Awaitable[SigningKey]]


class EventStore:
    """Append to and read from the ledger. One instance per process; it is safe to share."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        signing_key: SigningKey,
        *,
        reload_key: KeySource | None = None,
        signer: BatchSigner | None = None,
        poll_interval: float = 1.0,
        head_lock_timeout: float = HEAD_LOCK_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._head_lock_timeout = head_lock_timeout
        self._key = signing_key
        self._reload_key = reload_key
        self._signer = signer or BatchSigner()
        self._poll_interval = poll_interval
        self._lanes: dict[str, _Lane] = {}
        # Lanes with appends queued, in the order they are served (an ordered set).
        self._ready: dict[str, _Lane] = {}
        self._committer: asyncio.Task[None] | None = None
        # Every queued append's future until answered: whatever the commit task holds when it
        # dies, its callers are answered.
        self._unanswered: set[asyncio.Future[list[RecordedEvent]]] = set()
        self._writer_connection: PoolConnectionProxy[asyncpg.Record] | None = None
        self._writer_session: tuple[int, datetime] | None = None  # its pid and start
        # The round whose statement is in flight, and the task building the next one.
        self._in_flight: list[_Batch] | None = None
        self._preparing: asyncio.Task[list[_Batch]] | None = None
        self._notifier: asyncio.Task[None] | None = None
        self._notify_again = False
        # Last known version of streams appended with ANY, so such appends usually need no
        # extra round trip; bounded, and always confirmed by the database.
        self._stream_versions: OrderedDict[str, int] = OrderedDict()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def signing_key(self) -> SigningKey:
        return self._key

    # ----------------------------------------------------------------------------- writing

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected_version: ExpectedVersion,
        tenant: str,
        metadata: Metadata,
        idempotency_key: str | None = None,
    ) -> list[RecordedEvent]:
        """Append `events` to `stream` in `tenant`'s chain, all or nothing.

        Raises ConcurrencyError when the stream is not at `expected_version`,
        IdempotencyKeyReusedError when the key was used for other content, and
        InvalidAppendError (naming the offending path) for malformed input.
        """
        prepared = self._prepare(
            stream, events, expected_version, tenant, metadata, idempotency_key
        )
        if idempotency_key is not None:
            async with self._pool.acquire() as connection:
                replay = await self._replay_idempotent(connection, prepared)
            if replay is not None:
                return replay
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = _Lane(tenant, msgspec.json.encode(tenant))
        lane.pending.append(prepared)
        self._ready[tenant] = lane
        self._unanswered.add(prepared.future)
        prepared.future.add_done_callback(self._unanswered.discard)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
            self._committer.add_done_callback(self._committer_stopped)
        elif self._in_flight is not None and self._preparing is None:
            self._preparing = asyncio.create_task(self._prepare_following(self._in_flight))
        return await prepared.future

    def _prepare(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: ExpectedVersion,
        tenant: str,
        metadata: Metadata,
        idempotency_key: str | None,
    ) -> _Append:
        if not isinstance(tenant, str) or not TENANT_FORMAT.match(tenant):
            raise InvalidAppendError(
                f"tenant {tenant!r} must match {TENANT_FORMAT.pattern} (lowercase, <= 63 chars)"
            )
        if not isinstance(stream, str) or not STREAM_FORMAT.match(stream):
            raise InvalidAppendError(f"stream {stream!r} must match {STREAM_FORMAT.pattern}")
        if isinstance(expected, bool) or not (
            isinstance(expected, StreamState) or (isinstance(expected, int) and expected >= 1)
        ):
            raise InvalidAppendError(
                f"expected_version {expected!r} must be a version >= 1, NO_STREAM or ANY"
            )
        if not events:
            raise InvalidAppendError("an append needs at least one event")
        if len(events) > MAX_EVENTS_PER_APPEND:
            raise InvalidAppendError(
                f"{len(events)} events in one append; at most {MAX_EVENTS_PER_APPEND}"
            )
        if idempotency_key is not None and not IDEMPOTENCY_KEY_FORMAT.match(idempotency_key):
            raise InvalidAppendError("idempotency key must be 1-200 printable ASCII characters")
        _check_meta_shape(metadata)
        try:
            meta = _meta_document(metadata)
            meta_json = canonical_json(meta, "meta", depth=1)
            # Who appends is part of what an idempotency key stands for; the trace ids are not
            # (a retry may carry new ones).
            actor_json = canonical_json(meta["actor"], "meta.actor", depth=2)
            types, type_jsons, data_jsons = [], [], []
            for index, event in enumerate(events):
                if not isinstance(event.type, str) or not EVENT_TYPE_FORMAT.match(event.type):
                    raise InvalidAppendError(
                        f"events[{index}].type {event.type!r} must match "
                        f"{EVENT_TYPE_FORMAT.pattern}"
                    )
                data_json = canonical_json(event.data, f"events[{index}].data", depth=1)
                size = len(data_json) + len(meta_json) + len(stream) + len(tenant) + 400
                if size > MAX_RECORD_BYTES:
                    raise InvalidAppendError(
                        f"events[{index}] would make a record of about {size} bytes; "
                        f"the limit is {MAX_RECORD_BYTES}"
                    )
                types.append(event.type)
                type_jsons.append(msgspec.json.encode(event.type))
                data_jsons.append(data_json)
        except InvalidPayloadError as error:
            raise InvalidAppendError(str(error)) from None
        digest = hashlib.sha256()
        parts = (stream.encode(), str(expected).encode(), actor_json, *type_jsons, *data_jsons)
        for part in parts:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return _Append(
            tenant=tenant,
            stream=stream,
            expected=expected,
            types=types,
            type_jsons=type_jsons,
            data_jsons=data_jsons,
            meta_json=meta_json,
            idempotency_key=idempotency_key,
            content_hash=digest.hexdigest(),
            future=asyncio.get_running_loop().create_future(),
            caller=caller_context(),
        )

    async def _commit_queued(self) -> None:
        """Commit every lane's queued appends, round after round, until none are left.

        A round is one statement for every tenant with appends waiting. While it is in flight
        the next round is built and signed on the heads this one will leave (pipelining:
        signing is CPU, the commit waits on the disk); it is sent as built only where those
        heads are what the statement left."""
        following: list[_Batch] = []
        try:
            while following or self._ready:
                if following and self._solo_waiting():
                    # Appends to be committed alone go first: a busy pipeline of other tenants
                    # must not keep them waiting (the prepared round is built again after).
                    self._give_back(following)
                    following = []
                group = self._still_valid(following)
                if not group:
                    group = await self._build_group()
                following = await self._commit_isolating_failures(group) if group else []
        except BaseException as error:
            # A fault of the store itself, or the task cancelled as the loop shuts down: no
            # caller may be left waiting for an answer that will never come.
            self._fail_everything(error)
            raise
        finally:
            self._committer = None

    def _committer_stopped(self, task: asyncio.Task[None]) -> None:
        """A commit task cancelled before it ever ran has no handler of its own: its appends
        are all still queued, and fail here (unless a new task has taken them over)."""
        if self._committer is not task:
            return
        self._committer = None
        if task.cancelled():
            self._fail_everything(asyncio.CancelledError())

    def _solo_waiting(self) -> bool:
        return any(lane.pending and lane.pending[0].solo for lane in self._ready.values())

    def _fail_everything(self, error: BaseException) -> None:
        failure = AppendOutcomeUnknownError(
            f"the store's commit task stopped ({type(error).__name__}: {error}); "
            "read the stream to learn whether the append went in"
        )
        for lane in self._lanes.values():
            lane.pending.clear()
            lane.head = None
        self._ready.clear()
        for future in list(self._unanswered):
            if not future.done():
                future.set_exception(failure)

    def _take_group(self, *, pipelined: bool) -> list[tuple[_Lane, list[_Append]]]:
        """The appends of the next round, lane by lane in turn. A solo append goes alone, in a
        round of its own that is never prepared ahead. A stream is never claimed by two tenants
        in one round, nor an idempotency key used twice in one lane's share: the later one waits
        for the next round, where the first is committed."""
        if not pipelined:
            for lane in list(self._ready.values()):
                self._drop_settled(lane)
                if lane.pending and lane.pending[0].solo:
                    alone = [lane.pending.popleft()]
                    if not lane.pending:
                        del self._ready[lane.tenant]
                    return [(lane, alone)]
        taken: list[tuple[_Lane, list[_Append]]] = []
        claimed: dict[str, str] = {}
        size = 0
        for lane in list(self._ready.values()):
            if size >= MAX_BATCH_EVENTS or len(taken) >= MAX_BATCH_TENANTS:
                break
            appends: list[_Append] = []
            keys: set[str] = set()
            self._drop_settled(lane)
            while lane.pending and size < MAX_BATCH_EVENTS:
                item = lane.pending[0]
                key = item.idempotency_key
                if item.solo or (key is not None and key in keys):
                    break
                if claimed.setdefault(item.stream, lane.tenant) != lane.tenant:
                    break
                appends.append(lane.pending.popleft())
                size += len(item.types)
                if key is not None:
                    keys.add(key)
            del self._ready[lane.tenant]
            if lane.pending:
                self._ready[lane.tenant] = lane  # the rest waits, behind the other lanes
            if appends:
                taken.append((lane, appends))
        return taken

    def _drop_settled(self, lane: _Lane) -> None:
        """Appends answered while queued (their caller was cancelled, or the ledger answered
        their idempotency key) leave the queue."""
        while lane.pending and lane.pending[0].future.done():
            lane.pending.popleft()

    def _requeue(self, lane: _Lane, appends: list[_Append]) -> None:
        """Put appends back at the front of their lane, in their order."""
        waiting = [append for append in appends if not append.future.done()]
        if waiting:
            lane.pending.extendleft(reversed(waiting))
            self._ready[lane.tenant] = lane

    def _isolate(self, parts: list[tuple[_Lane, list[_Append]]], error: Exception) -> None:
        """A statement (or building it) failed as a whole: its only append fails with the error
        (a lock timeout in a round of its lane alone fails the lane's whole queue: see
        _refuse_busy); several are each committed alone from now on, so that only the cause
        fails."""
        waiting = [append for _, appends in parts for append in appends if not append.future.done()]
        for lane, _ in parts:
            lane.head = None  # whatever happened, read the head again before building on it
        if len(waiting) == 1:
            if not isinstance(error, asyncpg.LockNotAvailableError):
                waiting[0].future.set_exception(error)
                return
            if len(parts) == 1:  # its own round: the held head was its lane's
                self._refuse_busy(parts[0][0], waiting, error)
                return
            # Another lane's head may be the held one: the append goes again alone (below).
        for lane, appends in reversed(parts):
            for append in appends:
                append.solo = True
            self._requeue(lane, appends)

    def _refuse_busy(
        self, lane: _Lane, appends: list[_Append], error: asyncpg.LockNotAvailableError
    ) -> None:
        """Another session holds the lane's head: the appends and every other one queued in
        the lane fail at once, rather than each waiting out the lock timeout in turn on the
        connection every tenant's rounds share."""
        appends = [*appends, *lane.pending]
        lane.pending.clear()
        self._ready.pop(lane.tenant, None)
        for append in appends:
            if append.future.done():
                continue
            busy = LedgerBusyError(
                f"tenant {lane.tenant!r}: its chain head (or, during a key rotation, the "
                f"signing keys) was held by another session for more than "
                f"{self._head_lock_timeout:g} s; nothing was written, try again"
            )
            busy.__cause__ = error
            append.future.set_exception(busy)

    async def _build_group(self) -> list[_Batch]:
        taken = self._take_group(pipelined=False)
        try:
            group = await self._lay(taken, {})
        except Exception as error:
            self._isolate(taken, error)
            return []
        return self._sendable(group)

    def _still_valid(self, following: list[_Batch]) -> list[_Batch]:
        """The prepared round, less the batches whose base is no longer the lane's head (the
        signing key changed meanwhile): those go back to be built again."""
        group: list[_Batch] = []
        for batch in following:
            head = batch.lane.head
            if head is not None and batch.base == self._base(head):
                group.append(batch)
            else:
                self._requeue(batch.lane, batch.appends)
        return self._sendable(group)

    def _sendable(self, group: list[_Batch]) -> list[_Batch]:
        """Batches with records to write. One whose appends all conflict is answered now: its
        conflicts come from committed versions (found by the database, or left by a batch that
        has committed since this one was built on it)."""
        sendable: list[_Batch] = []
        for batch in group:
            if batch.planned:
                sendable.append(batch)
            else:
                self._refuse_conflicts(batch)
        return sendable

    async def _commit_isolating_failures(self, group: list[_Batch]) -> list[_Batch]:
        """Commit a round; if it fails as a whole, its appends are each committed alone from
        then on, so that one bad append fails alone and the others still go in. Returns the
        next round if it was prepared while this one was committing."""
        try:
            return await self._commit_group(group)
        except _StatementLost as lost:
            await self._give_up_writer()
            unsettled = await self._settle_lost(group, lost)
            # Not the appends' fault (the connection broke): they go again as they were.
            self._count_attempts(unsettled, "as the database connection kept breaking")
            self._give_back(unsettled)
            return []
        except Exception as error:
            await self._writer_failed(error)
            self._isolate([(batch.lane, batch.appends) for batch in group], error)
            return []

    async def _commit_group(self, group: list[_Batch]) -> list[_Batch]:
        connection = await self._writer()
        session = self._writer_session
        following: list[_Batch] = []
        self._in_flight = group
        if self._ready:  # left for the next round: build it while this one commits
            self._preparing = asyncio.create_task(self._prepare_following(group))
        try:
            try:
                callers = [
                    append.caller
                    for batch in group
                    for append in batch.appends
                    if append.caller is not None
                ]
                with sql_span("append", "events", callers):
                    outcome = await self._call_append(connection, group)
            finally:
                # The next round may be built already, or still being signed: it is needed
                # (or given back) whatever happened to this one.
                self._in_flight = None
                preparing, self._preparing = self._preparing, None
                following = await preparing if preparing is not None else []
        except BaseException as error:
            self._give_back(following)
            if isinstance(error, Exception) and _outcome_unknown(error, connection):
                raise _StatementLost(error, session) from error
            if not isinstance(error, asyncpg.UniqueViolationError):
                raise
            if error.constraint_name != "append_idempotency_pkey":
                raise
            # An idempotency key of this round was committed meanwhile by a writer that did not
            # move the tenant's head (another version of this code): nothing was written;
            # answer those appends from the ledger and lay the rest again.
            await self._resolve_idempotent(
                connection, [append for batch in group for append in batch.appends]
            )
            self._give_back(group)
            return []
        moved = set(outcome["moved"] or ())
        positions = iter(outcome["positions"] or ())
        refused: list[_Batch] = []
        for batch in group:
            if batch.lane.tenant in moved:
                self._settle(batch, positions, outcome["epoch"], outcome["tx_id"])
                # Only now: a conflict with an append of this batch is real once it is
                # committed, and a caller deciding again must find it in the ledger.
                self._refuse_conflicts(batch)
            else:
                refused.append(batch)
        if moved:
            self._announce()
        if not refused:
            return following
        # Built on heads the refused batches would have left: build those again.
        again = {batch.lane.tenant for batch in refused}
        self._give_back([batch for batch in following if batch.lane.tenant in again])
        following = [batch for batch in following if batch.lane.tenant not in again]
        try:
            await self._diagnose(connection, refused)
        except Exception as error:
            await self._writer_failed(error)
            self._isolate([(batch.lane, batch.appends) for batch in refused], error)
        else:
            self._give_back(refused)
        return following

    async def _writer(self) -> PoolConnectionProxy[asyncpg.Record]:
        """The connection the appends go through, held while the store is open.

        Its statements run with generic plans: the append statement is always the same shape,
        and planning it anew for each call (what PostgreSQL does by default, because its
        estimate for an array of unknown length makes the generic plan look dearer) costs
        more than executing it. Set on this connection alone, and reset before it goes back.

        A lock wait on a tenant's head held by another session is bounded too
        (`head_lock_timeout`): this one connection carries every tenant's appends, so an
        unbounded wait for one would hold up all of them."""
        held = self._writer_connection
        if held is not None and not _is_open(held):  # broke while idle between rounds
            await self._give_up_writer()
        if self._writer_connection is None:
            connection = await self._pool.acquire()
            try:
                async with _as_login_role(connection):
                    session = await connection.fetchrow(
                        _WRITER_SESSION_SQL, f"{round(self._head_lock_timeout * 1000)}ms"
                    )
            except BaseException:
                await self._pool.release(connection)
                raise
            self._writer_connection = connection
            assert session is not None  # noqa: S101 - a SELECT without FROM returns its row
            # None when the server hides it: a lost statement's outcome is then unknowable.
            if session["backend_start"] is not None:
                self._writer_session = (session["pid"], session["backend_start"])
        return self._writer_connection

    async def _writer_failed(self, error: BaseException) -> None:
        """After an error that may have broken the writer connection, give it up: the pool
        replaces it (closed, never with our settings left on it)."""
        connection = self._writer_connection
        if connection is None:
            return
        if isinstance(error, asyncpg.PostgresError) and _is_open(connection):
            return  # the statement failed, the session is sound
        await self._give_up_writer()

    async def _give_up_writer(self) -> None:
        connection, self._writer_connection = self._writer_connection, None
        self._writer_session = None
        if connection is None:
            return
        if _is_open(connection):
            connection.terminate()
        # A connection lost to the server was handed back by the pool already: a no-op then.
        await self._pool.release(connection)

    async def _settle_lost(self, group: list[_Batch], lost: _StatementLost) -> list[_Batch]:
        """The writer connection broke with the round's statement in flight, so whether it
        committed is unknown, and sending it again blindly could write an append twice (or fail
        it as a conflict with itself). First end the old session for certain (the server may
        not have noticed the break yet): once it has exited, its transaction is over either
        way. Then look in the ledger: a batch whose records are there committed and is answered
        from them; the others did not, and are returned, to go again. If this cannot be learned
        (the database is unreachable), the appends fail with AppendOutcomeUnknownError."""
        for batch in group:
            batch.lane.head = None
        tenants = [batch.lane.tenant for batch in group for _ in batch.records]
        seqs = [record.seq for batch in group for record in batch.records]
        try:
            if lost.session is None:
                raise LookupError("the lost writer session's identity is unknown")
            async with self._pool.acquire() as connection:
                async with _as_login_role(connection):
                    ended = await connection.fetchval(
                        _END_SESSION_SQL, *lost.session, END_SESSION_WAIT_MS
                    )
                if ended is False:
                    raise TimeoutError("the lost writer session did not exit in time")
                rows = await connection.fetch(_FIND_RECORDS_SQL, tenants, seqs)
        except (OSError, LookupError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            failure = AppendOutcomeUnknownError(
                f"the database connection broke during the commit ({lost.cause!r}) and whether "
                f"it went in cannot be learned now ({error!r}); read the stream before deciding "
                "again, or retry with the same idempotency key"
            )
            for batch in group:
                for append in batch.appends:
                    if not append.future.done():
                        append.future.set_exception(failure)
            return []
        found = {(row["tenant"], row["seq"]): row for row in rows}
        unsettled: list[_Batch] = []
        settled = False
        for batch in group:
            tenant = batch.lane.tenant
            stored = [found.get((tenant, record.seq)) for record in batch.records]
            if all(
                row is not None and row["hash"] == record.hash
                for row, record in zip(stored, batch.records, strict=True)
            ):
                first = stored[0]
                assert first is not None  # noqa: S101 - checked just above
                positions = iter([row["position"] for row in stored if row is not None])
                self._settle(batch, positions, first["epoch"], first["tx_id"])
                self._refuse_conflicts(batch)
                settled = True
            else:
                unsettled.append(batch)
        if settled:
            self._announce()
        return unsettled

    async def _prepare_following(self, current: list[_Batch]) -> list[_Batch]:
        """Build and sign the next round while `current` is being committed: on the heads
        `current` will leave for its tenants, on the known heads for the others. Started by the
        first append queued while a statement is in flight (usually a caller answered by the
        round before). Nothing is decided: conflicts found are only applied if the prepared
        batch is sent."""
        taken = self._take_group(pipelined=True)
        if not taken:
            return []
        try:
            return await self._lay(taken, {batch.lane.tenant: batch for batch in current})
        except Exception:  # never leave `current` unawaited: its commit decides its appends
            for lane, appends in reversed(taken):
                self._requeue(lane, appends)
            return []

    def _give_back(self, batches: list[_Batch]) -> None:
        for batch in reversed(batches):
            self._requeue(batch.lane, batch.appends)

    async def _lay(
        self, taken: list[tuple[_Lane, list[_Append]]], in_flight: dict[str, _Batch]
    ) -> list[_Batch]:
        """Build and sign each lane's share on its head: the head the lane's batch in flight
        will leave, else the lane's known head (read first where unknown)."""
        unknown = [lane for lane, _ in taken if lane.head is None and lane.tenant not in in_flight]
        if unknown:
            await self._read_heads(unknown)
        batches: list[_Batch] = []
        for lane, appends in taken:
            before = in_flight.get(lane.tenant)
            if before is not None:
                batches.append(self._plan(lane, before.end(), appends, before.final_versions()))
            else:
                assert lane.head is not None  # noqa: S101 - read just above
                batches.append(self._plan(lane, lane.head, appends, lane.known))
        await self._sign(batches)
        return batches

    @staticmethod
    def _refuse_conflicts(batch: _Batch) -> None:
        for append, conflict in batch.conflicts:
            if not append.future.done():
                append.future.set_exception(conflict)

    def _base(self, head: _Head) -> tuple[int, str, str]:
        return (head.seq, head.hash, self._key.key_id)

    async def _diagnose(self, connection: Connection, refused: list[_Batch]) -> None:
        """Some tenants' heads did not move: learn why on a fresh snapshot, set their lanes up
        to build again, and fail the appends that building again cannot help."""
        tenants: list[str] = []
        record_tenants: list[str] = []
        streams: list[str] = []
        versions: list[int] = []
        for batch in refused:
            tenants.append(batch.lane.tenant)
            for item in batch.planned:
                for record in item.records:
                    record_tenants.append(batch.lane.tenant)
                    streams.append(item.append.stream)
                    versions.append(record.version)
        rows = await connection.fetch(
            _DIAGNOSE_SQL, tenants, record_tenants, streams, versions, self._key.key_id
        )
        key_failure: SigningKeyError | None = None
        if not rows[0]["key_known"] or rows[0]["key_retired_at"] is not None:
            try:
                await self._refresh_key(rows[0])
            except SigningKeyError as error:
                key_failure = error
        found = {row["tenant"]: row for row in rows}
        for batch in refused:
            row = found[batch.lane.tenant]
            foreign = set(row["foreign_streams"] or ())
            failure = key_failure
            if (
                failure is None
                and row["key_created_at"] is not None
                and (row["key_created_at"] > batch.recorded_at and row["key_retired_at"] is None)
            ):
                failure = SigningKeyError(
                    "records would be stamped before the signing key's validity"
                )
            for append in batch.appends:
                if append.future.done():
                    continue
                if failure is not None:
                    append.future.set_exception(failure)
                elif append.stream in foreign:
                    append.future.set_exception(
                        StreamOwnershipError(f"stream {append.stream!r} belongs to another tenant")
                    )
            lane = batch.lane
            if row["head_seq"] is None:
                lane.head = None
            else:
                lane.head = _Head(row["head_seq"], row["head_hash"], row["head_recorded_at"])
            if row["stale_streams"]:
                lane.known.update(msgspec.json.decode(row["stale_streams"]))
        await self._resolve_idempotent(
            connection, [append for batch in refused for append in batch.appends]
        )
        self._count_attempts(refused, "under contention")

    @staticmethod
    def _count_attempts(batches: list[_Batch], why: str) -> None:
        """The unanswered appends of `batches` are about to go again: one that has gone
        MAX_REBUILDS times fails instead, so that no condition can keep it looping."""
        for batch in batches:
            for append in batch.appends:
                if append.future.done():
                    continue
                append.rebuilds += 1
                if append.rebuilds >= MAX_REBUILDS:
                    append.future.set_exception(
                        EventStoreError(
                            f"tenant {append.tenant!r}: gave up after {MAX_REBUILDS} attempts {why}"
                        )
                    )

    async def _refresh_key(self, outcome: asyncpg.Record) -> None:
        """The key was retired (rotated by another process) or is unknown: load the current one.
        A rotation in progress may not have put the new key file in place yet (the file still
        holds a retired key, or a key not registered yet): the load is tried again, for up to
        KEY_ROTATION_WAIT, before signing is given up and the caller told."""
        what = "is not registered" if not outcome["key_known"] else "was retired"
        if self._reload_key is None:
            raise SigningKeyError(
                f"signing key {self._key.key_id} {what}; configure the current key"
            )
        deadline = asyncio.get_running_loop().time() + KEY_ROTATION_WAIT
        while True:
            try:
                fresh = await self._reload_key()
            except SigningKeyError:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
            else:
                if fresh.key_id != self._key.key_id:
                    self._key = fresh
                    return
                if asyncio.get_running_loop().time() >= deadline:
                    raise SigningKeyError(
                        f"signing key {self._key.key_id} {what}; configure the current key"
                    )
            await asyncio.sleep(KEY_RELOAD_SPACING)

    def _plan(
        self, lane: _Lane, head: _Head, batch: list[_Append], known: dict[str, int]
    ) -> _Batch:
        """Lay the batch's appends on `head` in order, setting aside (as conflicts) those whose
        expected version cannot hold. `known` holds stream versions as they will be when this
        batch commits (reported by the database, or left by the batch before it)."""
        versions = dict(known)
        planned: list[_Planned] = []
        conflicts: list[tuple[_Append, ConcurrencyError]] = []
        for append in batch:
            if append.future.done():
                continue
            current = versions.get(append.stream)
            if append.expected is StreamState.ANY:
                base = (
                    current if current is not None else self._stream_versions.get(append.stream, 0)
                )
            else:
                base = 0 if append.expected is StreamState.NO_STREAM else int(append.expected)
                if current is not None and current != base:
                    conflicts.append(
                        (append, ConcurrencyError(append.stream, _shown(append.expected), current))
                    )
                    continue
            versions[append.stream] = base + len(append.types)
            planned.append(_Planned(append, base + 1))
        # One instant per batch, never before the chain's last record nor the key's validity:
        # recorded_at then never runs backwards along a chain, whatever the clocks say.
        now = datetime.now(UTC)
        stamp = max(now, self._key.valid_from, head.recorded_at or now)
        stamp_text = format_timestamp(stamp)
        seq, prev_hash = head.seq, head.hash
        records: list[_Record] = []
        for item in planned:
            append = item.append
            stream_json = msgspec.json.encode(append.stream)
            for offset, (type_json, data_json) in enumerate(
                zip(append.type_jsons, append.data_jsons, strict=True)
            ):
                seq += 1
                canonical = assemble_canonical(
                    tenant_json=lane.tenant_json,
                    seq=seq,
                    stream_json=stream_json,
                    version=item.first_version + offset,
                    type_json=type_json,
                    data_json=data_json,
                    meta_json=append.meta_json,
                    recorded_at=stamp_text,
                    prev_hash=prev_hash,
                )
                record = _Record(
                    seq, item.first_version + offset, prev_hash, record_hash(canonical), canonical
                )
                prev_hash = record.hash
                item.records.append(record)
                records.append(record)
        return _Batch(lane, batch, planned, conflicts, stamp, self._base(head), records)

    async def _sign(self, batches: list[_Batch]) -> None:
        records = [record for batch in batches for record in batch.records]
        if not records:
            return
        signatures = await self._signer.sign(
            self._key.private_key, [r.hash for r in records], alone=self._in_flight is None
        )
        for record, signature in zip(records, signatures, strict=True):
            record.signature = signature

    async def _call_append(self, connection: Connection, group: list[_Batch]) -> asyncpg.Record:
        if len(group) == 1 and len(group[0].records) == 1:
            outcome = await self._call_append_one(connection, group[0])
            if outcome is not None:
                return outcome
        tenants: list[str] = []
        bases: list[int] = []
        base_hashes: list[str] = []
        ends: list[int] = []
        end_hashes: list[str] = []
        stamps: list[datetime] = []
        record_tenants: list[str] = []
        streams: list[str] = []
        types: list[str] = []
        stamped: list[datetime] = []
        keys: tuple[list[str], list[str], list[str], list[int], list[int]] = ([], [], [], [], [])
        for batch in group:
            tenant = batch.lane.tenant
            last = batch.records[-1]
            tenants.append(tenant)
            bases.append(batch.base[0])
            base_hashes.append(batch.base[1])
            ends.append(last.seq)
            end_hashes.append(last.hash)
            stamps.append(batch.recorded_at)
            count = len(batch.records)
            record_tenants.extend([tenant] * count)
            stamped.extend([batch.recorded_at] * count)
            for item in batch.planned:
                append = item.append
                streams.extend([append.stream] * len(item.records))
                types.extend(append.types)
                if append.idempotency_key is not None:
                    keys[0].append(tenant)
                    keys[1].append(append.idempotency_key)
                    keys[2].append(append.content_hash)
                    keys[3].append(item.records[0].seq)
                    keys[4].append(len(item.records))
        records = [record for batch in group for record in batch.records]
        outcome = await connection.fetchrow(
            _APPEND_REMEMBERING_SQL if keys[0] else _APPEND_SQL,
            tenants,
            bases,
            base_hashes,
            ends,
            end_hashes,
            stamps,
            self._key.key_id,
            record_tenants,
            [r.seq for r in records],
            streams,
            [r.version for r in records],
            types,
            [r.canonical for r in records],
            [r.prev_hash for r in records],
            [r.hash for r in records],
            [r.signature for r in records],
            stamped,
            *(keys if keys[0] else ()),
        )
        assert outcome is not None  # noqa: S101 - the statement always returns one row
        return outcome

    async def _call_append_one(
        self, connection: Connection, batch: _Batch
    ) -> asyncpg.Record | None:
        """The round of one record, or None when its append carries an idempotency key (the
        general statement records keys)."""
        append = batch.planned[0].append
        if append.idempotency_key is not None:
            return None
        record = batch.records[0]
        outcome: asyncpg.Record | None = await connection.fetchrow(
            _APPEND_ONE_SQL,
            batch.lane.tenant,
            batch.base[0],
            batch.base[1],
            record.hash,
            batch.recorded_at,
            self._key.key_id,
            append.stream,
            record.version,
            append.types[0],
            record.canonical,
            record.signature,
        )
        assert outcome is not None  # noqa: S101 - the statement always returns one row
        return outcome

    def _settle(self, batch: _Batch, positions: Iterator[int], epoch: int, tx_id: int) -> None:
        lane = batch.lane
        key_id = batch.base[2]
        for item in batch.planned:
            append = item.append
            recorded: list[RecordedEvent] = []
            for offset, record in enumerate(item.records):
                covered = _decode_record.decode(record.canonical)
                recorded.append(
                    RecordedEvent(
                        position=next(positions),
                        epoch=epoch,
                        tx_id=tx_id,
                        tenant=lane.tenant,
                        seq=record.seq,
                        stream=append.stream,
                        version=record.version,
                        type=append.types[offset],
                        data=covered["data"],
                        meta=covered["meta"],
                        recorded_at=batch.recorded_at,
                        prev_hash=record.prev_hash,
                        hash=record.hash,
                        signature=record.signature,
                        key_id=key_id,
                        canonical=record.canonical,
                    )
                )
            if append.expected is StreamState.ANY:
                self._remember_version(append.stream, item.records[-1].version)
            if not append.future.done():
                append.future.set_result(recorded)
        lane.head = batch.end()
        lane.known.clear()

    def _announce(self) -> None:
        """Wake subscribers (in every process) after a commit. NOTIFY inside the append would
        hold PostgreSQL's cluster-wide notify lock until the commit is on disk, serialising
        every tenant's commits; sent afterwards, from one coalescing task, it costs nothing on
        the write path. A notification lost to a crash only delays subscribers, which poll."""
        if self._notifier is None:
            self._notifier = asyncio.create_task(self._notify())
        else:
            self._notify_again = True

    async def _notify(self) -> None:
        try:
            while True:
                self._notify_again = False
                async with self._pool.acquire() as connection:
                    await connection.execute(_NOTIFY_SQL)
                # At most one notification per spacing: a busy writer's commits share one,
                # for a few milliseconds of subscriber latency.
                await asyncio.sleep(NOTIFY_SPACING)
                if not self._notify_again:
                    return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return  # subscribers poll anyway
        finally:
            self._notifier = None

    def _remember_version(self, stream: str, version: int) -> None:
        self._stream_versions[stream] = version
        self._stream_versions.move_to_end(stream)
        if len(self._stream_versions) > 100_000:
            self._stream_versions.popitem(last=False)

    async def _read_heads(self, lanes: list[_Lane]) -> None:
        rows = await self._pool.fetch(_HEADS_SQL, [lane.tenant for lane in lanes], GENESIS_HASH)
        found = {row["tenant"]: row for row in rows}
        for lane in lanes:
            row = found.get(lane.tenant)
            if row is None:  # created concurrently and not yet visible: the move will tell
                lane.head = _Head(0, GENESIS_HASH, None)
            else:
                lane.head = _Head(row["seq"], row["hash"], row["recorded_at"])

    async def _replay_idempotent(
        self, connection: Connection, append: _Append
    ) -> list[RecordedEvent] | None:
        row = await connection.fetchrow(
            """
            SELECT content_hash, first_seq, event_count FROM append_idempotency
            WHERE tenant = $1 AND idempotency_key = $2
            """,
            append.tenant,
            append.idempotency_key,
        )
        if row is None:
            return None
        if row["content_hash"] != append.content_hash:
            assert append.idempotency_key is not None  # noqa: S101 - only called with a key
            raise IdempotencyKeyReusedError(append.tenant, append.idempotency_key)
        rows = await connection.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND seq >= $2 AND seq < $3"
            " ORDER BY seq",
            append.tenant,
            row["first_seq"],
            row["first_seq"] + row["event_count"],
        )
        return [_row_to_event(r) for r in rows]

    async def _resolve_idempotent(self, connection: Connection, appends: list[_Append]) -> None:
        """Answer from the ledger the appends whose idempotency key is already committed."""
        for append in appends:
            if append.idempotency_key is None or append.future.done():
                continue
            try:
                replay = await self._replay_idempotent(connection, append)
            except IdempotencyKeyReusedError as error:
                append.future.set_exception(error)
                continue
            if replay is not None:
                append.future.set_result(replay)

    # ----------------------------------------------------------------------------- reading

    async def read_stream(self, stream: str, from_version: int = 0) -> list[RecordedEvent]:
        """The stream's events with version >= from_version, in version order."""
        with sql_span("SELECT", "events"):
            rows = await self._pool.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2"
                " ORDER BY version",
                stream,
                from_version,
            )
        return [_row_to_event(row) for row in rows]

    async def stream_ids(self, tenant: str, prefix: str = "") -> list[str]:
        """The ids of `tenant`'s streams that start with `prefix`, in id order."""
        with sql_span("SELECT", "events"):
            rows = await self._pool.fetch(
                "SELECT stream_id FROM events WHERE tenant = $1 AND version = 1"
                " AND starts_with(stream_id, $2) ORDER BY stream_id",
                tenant,
                prefix,
            )
        return [row["stream_id"] for row in rows]

    async def read_tenant(
        self, tenant: str, from_seq: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        """A slice of one tenant's chain in seq order."""
        with sql_span("SELECT", "events"):
            rows = await self._pool.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND seq >= $2"
                " ORDER BY seq LIMIT $3",
                tenant,
                from_seq,
                limit,
            )
        return [_row_to_event(row) for row in rows]

    async def read_all(self, after: Cursor = START, limit: int = 1000) -> list[RecordedEvent]:
        """Committed events after `after`, in commit-safe order; never one that could later
        turn up behind a cursor already handed out."""
        with sql_span("SELECT", "events"):
            async with self._pool.acquire() as connection:
                return await read_committed(connection, after, limit)

    async def held_back(self, after: Cursor) -> tuple[int, float]:
        """Events committed after `after` that readers may not have yet, because an older
        transaction somewhere in the cluster is still running; and that transaction's age in
        seconds. Non-zero values for long mean a long transaction is stalling every reader."""
        row = await self._pool.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM events
                WHERE (epoch, tx_id, position) > ($1, $2::text::xid8, $3)
                  AND epoch = (SELECT max(epoch) FROM store_epochs)
                  AND tx_id >= pg_snapshot_xmin(pg_current_snapshot())) AS held,
              coalesce((SELECT extract(epoch FROM max(clock_timestamp() - xact_start))
                 FROM pg_stat_activity
                WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL), 0)::float8 AS age
            """,
            after.epoch,
            str(after.tx_id),
            after.position,
        )
        assert row is not None  # noqa: S101 - a SELECT without FROM always yields one row
        return int(row["held"]), float(row["age"])

    async def subscribe(
        self, after: Cursor = START, batch_size: int = 500
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Every committed event after `after`, exactly once, in commit-safe order, forever.

        Woken by LISTEN/NOTIFY; polls every poll_interval as well, so a lost notification or a
        dropped listening connection only delays delivery, never loses events. Close it
        (`aclose`, `contextlib.aclosing`) to give its listening connection back at once.
        """
        wake = asyncio.Event()

        def on_notify(*_args: object) -> None:
            wake.set()

        listener: PoolConnectionProxy[asyncpg.Record] | None = None
        try:
            listener = await self._pool.acquire()
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
        except (OSError, asyncpg.PostgresError):
            listener = None  # polling alone still delivers everything
        cursor = after
        settle = 0.005
        try:
            while True:
                wake.clear()
                events = await self.read_all(cursor, batch_size)
                for event in events:
                    yield event
                    cursor = event.cursor
                if len(events) == batch_size:
                    continue
                if events:
                    settle = 0.005
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), self._poll_interval)
                except TimeoutError:
                    continue
                # Notified: the rows may still sit behind an older running transaction, so
                # look again soon, backing off up to the poll interval.
                await asyncio.sleep(settle)
                settle = min(settle * 2, self._poll_interval)
        finally:
            if listener is not None:
                try:
                    await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    # Its session ended (the pool may have taken it back already): a lost
                    # listener only ever delays events, and must not fail the subscription's end.
                    if _is_open(listener):
                        listener.terminate()
                await self._pool.release(listener)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        connection, self._writer_connection = self._writer_connection, None
        self._writer_session = None
        if connection is not None:
            # The pool does not reset what it takes back (eventstore.db): this store does.
            try:
                await connection.execute(_WRITER_RESET_SQL)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if _is_open(connection):
                    connection.terminate()
            await self._pool.release(connection)
        if self._notifier is not None:
            await asyncio.gather(self._notifier, return_exceptions=True)
        self._signer.close()


class _StatementLost(Exception):
    """The writer connection broke with a statement in flight: its outcome is unknown."""

    def __init__(self, cause: Exception, session: tuple[int, datetime] | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.session = session


@asynccontextmanager
async def _as_login_role(connection: Connection) -> AsyncIterator[None]:
    """A transaction run as the login role, which owns the pool's sessions: only it may read
    their start time and end them (see _WRITER_SESSION_SQL)."""
    async with connection.transaction():
        await connection.execute("SET LOCAL ROLE NONE")
        yield


def _outcome_unknown(error: Exception, connection: PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Whether a statement that raised `error` may have committed all the same. It did not
    when the server answered it with an error and the session lives on, nor when the client
    refused it before sending (bad input, a bug: the connection is still open). But when the
    connection broke (an OSError, asyncpg's PostgresConnectionError, a connection now closed)
    or the server ended the session (SQLSTATE class 57P: shut down, crashed), the answer may
    have been lost after the commit."""
    if isinstance(error, OSError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(error, asyncpg.PostgresError) and error.sqlstate.startswith("57P"):
        return True
    return not _is_open(connection)


def _is_open(connection: PoolConnectionProxy[asyncpg.Record]) -> bool:
    """Whether a held pool connection can still be used: one the server dropped is closed, and
    the pool may have taken it back already (its proxy is then detached, and says so by
    raising)."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


def _shown(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected
