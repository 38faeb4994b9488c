"""The append-only event store: PostgreSQL, one hash chain per tenant, every record signed.

Write path. Each tenant has a lane in this process; appends queue on it and one task commits
them in batches (group commit): one statement and one round trip per batch, which moves the
tenant's chain head and inserts the records. The lane caches the chain head, so records are
built and signed before touching the database, and the statement only confirms that head under
its row lock; while it is in flight, the next batch is already built and signed. Another
process having moved the head (or a stream) makes the statement write nothing; the lane learns
what it found, rebuilds, re-signs and tries again. Different tenants never wait on each other.

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
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from eventstore.canonical import InvalidPayloadError, canonical_json
from eventstore.db import Connection
from eventstore.errors import (
    ConcurrencyError,
    EventStoreError,
    IdempotencyKeyReusedError,
    InvalidAppendError,
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

TENANT_FORMAT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
STREAM_FORMAT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
EVENT_TYPE_FORMAT: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}\Z")
IDEMPOTENCY_KEY_FORMAT: Final = re.compile(r"[\x21-\x7e]{1,200}\Z")
MAX_RECORD_BYTES: Final = 64 * 1024
MAX_EVENTS_PER_APPEND: Final = 500
MAX_BATCH_EVENTS: Final = 1000
MAX_REBUILDS: Final = 50
NOTIFY_CHANNEL: Final = "valueledger_events"
NOTIFY_SPACING: Final = 0.005


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
        if len(parts) != 3 or not all(part.isdigit() for part in parts):
            raise ValueError(f"cursor {text!r} is not of the form epoch.tx_id.position")
        epoch, tx_id, position = (int(part) for part in parts)
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


@dataclass(slots=True)
class _Head:
    seq: int
    hash: str
    recorded_at: datetime | None


@dataclass(slots=True)
class _Lane:
    tenant: str
    tenant_json: bytes
    head: _Head | None = None
    pending: list[_Append] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Record:
    seq: int
    version: int
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
    """Appends laid on a chain head: records built, and signed once _sign has run."""

    appends: list[_Append]
    planned: list[_Planned]
    conflicts: list[tuple[_Append, ConcurrencyError]]
    recorded_at: datetime
    base: tuple[int, str, str]  # head seq and hash it was built on, and the signing key id

    def records(self) -> list[_Record]:
        return [record for item in self.planned for record in item.records]

    def final_versions(self) -> dict[str, int]:
        return {item.append.stream: item.records[-1].version for item in self.planned}


_EVENT_COLUMNS: Final = """
    position, epoch, tx_id::text::bigint AS tx_id, tenant, seq, stream_id, version, type,
    recorded_at, prev_hash, hash, signature, key_id, canonical
"""
_decode_record = msgspec.json.Decoder()

# One statement, one round trip, per batch. The conditional move of the tenant's chain head is
# the lock and the check at once: it succeeds only if the head is still the one the records were
# built on, every stream is at the version they assume and owned by this tenant, and the key may
# sign; only then are the records and idempotency keys written. If the head was moved
# concurrently, the row lock's re-check fails the move. On failure nothing is
# written, positions come back NULL, and _DIAGNOSE_SQL says why (the rare path pays for it).
_APPEND_TEMPLATE: Final = """
WITH args AS (
    SELECT * FROM unnest($5::text[], $6::bigint[], $7::text[], $8::bytea[], $9::text[],
                         $10::text[]) WITH ORDINALITY
        AS u(stream_id, version, type, canonical, hash, signature, i)
), moved AS (
    UPDATE chain_heads
       SET seq = $2 + cardinality($9::text[]), hash = ($9::text[])[cardinality($9::text[])],
           recorded_at = $11, key_id = $4
     WHERE tenant = $1 AND seq = $2 AND hash = $3
       AND EXISTS (SELECT 1 FROM signing_keys
                    WHERE key_id = $4 AND retired_at IS NULL AND created_at <= $11)
       AND NOT EXISTS (
            SELECT 1
            FROM (SELECT stream_id, min(version) AS first_version FROM args GROUP BY stream_id) f
            LEFT JOIN LATERAL (
                SELECT e.tenant, e.version FROM events e WHERE e.stream_id = f.stream_id
                ORDER BY e.version DESC LIMIT 1) AS cur ON true
            WHERE coalesce(cur.version, 0) <> f.first_version - 1 OR cur.tenant <> $1)
    RETURNING 1
), inserted AS (
    INSERT INTO events (epoch, tenant, seq, stream_id, version, type, canonical, data, meta,
                        recorded_at, prev_hash, hash, signature, key_id)
    SELECT (SELECT max(epoch) FROM store_epochs), $1, $2 + a.i, a.stream_id, a.version, a.type,
           a.canonical, j.doc -> 'data', j.doc -> 'meta', $11,
           CASE WHEN a.i = 1 THEN $3 ELSE ($9::text[])[a.i - 1] END, a.hash, a.signature, $4
    FROM args a CROSS JOIN LATERAL (SELECT convert_from(a.canonical, 'UTF8')::jsonb AS doc) j
    WHERE EXISTS (SELECT 1 FROM moved)
    ORDER BY a.i
    RETURNING position, epoch
){remembered}
SELECT array_agg(position ORDER BY position) AS positions, min(epoch) AS epoch,
       pg_current_xact_id()::text::bigint AS tx_id
FROM inserted
"""
# Appends carrying idempotency keys record them in the same statement; a key committed by a
# concurrent append makes its primary key refuse the whole statement.
_APPEND_REMEMBERING_SQL: Final = _APPEND_TEMPLATE.format(
    remembered=""", remembered AS (
    INSERT INTO append_idempotency (tenant, idempotency_key, content_hash, first_seq,
                                    event_count)
    SELECT $1, k, h, f, c FROM unnest($12::text[], $13::text[], $14::bigint[], $15::int[])
        AS u(k, h, f, c)
    WHERE EXISTS (SELECT 1 FROM moved)
)"""
)
_APPEND_SQL: Final = _APPEND_TEMPLATE.format(remembered="")
_NOTIFY_SQL: Final = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"
# Why an append did not go in: read after the fact, outside the lock; the caller rebuilds
# from it and the next attempt is checked under the lock again.
# A tenant's head row exists from its first append on (seq 0, the genesis hash), so that every
# append, the first included, is the same conditional move of that row.
_HEAD_SQL: Final = """
WITH created AS (
    INSERT INTO chain_heads (tenant, seq, hash) VALUES ($1, 0, $2)
    ON CONFLICT (tenant) DO NOTHING
    RETURNING seq, hash, recorded_at
)
SELECT seq, hash, recorded_at FROM created
UNION ALL
SELECT seq, hash, recorded_at FROM chain_heads WHERE tenant = $1
"""
_DIAGNOSE_SQL: Final = """
WITH firsts AS (
    SELECT stream_id, min(version) AS first_version
    FROM unnest($2::text[], $3::bigint[]) AS u(stream_id, version) GROUP BY stream_id
), found AS (
    SELECT f.stream_id, f.first_version, cur.tenant AS owner,
           coalesce(cur.version, 0) AS current_version
    FROM firsts f LEFT JOIN LATERAL (
        SELECT e.tenant, e.version FROM events e WHERE e.stream_id = f.stream_id
        ORDER BY e.version DESC LIMIT 1) AS cur ON true
)
SELECT h.seq AS head_seq, h.hash AS head_hash, h.recorded_at AS head_recorded_at,
       (SELECT jsonb_object_agg(stream_id, current_version) FROM found
         WHERE current_version <> first_version - 1) AS stale_streams,
       (SELECT array_agg(stream_id) FROM found WHERE owner <> $1) AS foreign_streams,
       k.created_at AS key_created_at, k.retired_at AS key_retired_at,
       k.key_id IS NOT NULL AS key_known
FROM (SELECT 1) AS one
LEFT JOIN chain_heads h ON h.tenant = $1
LEFT JOIN signing_keys k ON k.key_id = $4
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
    ) -> None:
        self._pool = pool
        self._key = signing_key
        self._reload_key = reload_key
        self._signer = signer or BatchSigner()
        self._poll_interval = poll_interval
        self._lanes: dict[str, _Lane] = {}
        self._committing = 0
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
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(lane))
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
        if not isinstance(metadata, Metadata):
            raise InvalidAppendError("metadata must be a Metadata (actor, correlation...)")
        try:
            meta_json = canonical_json(msgspec.to_builtins(metadata), "meta", depth=1)
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
        for part in (stream.encode(), str(expected).encode(), *type_jsons, *data_jsons):
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
        )

    async def _drain(self, lane: _Lane) -> None:
        prepared: _Batch | None = None
        try:
            while lane.pending or prepared is not None:
                batch = prepared.appends if prepared is not None else self._take(lane)
                prepared = await self._commit_isolating_failures(lane, batch, prepared)
        finally:
            lane.task = None

    @staticmethod
    def _take(lane: _Lane) -> list[_Append]:
        """The next batch from the lane's queue. A batch never holds one idempotency key twice:
        the second use waits for the next batch, where it finds the first committed."""
        batch: list[_Append] = []
        keys: set[str] = set()
        size = 0
        while lane.pending and size < MAX_BATCH_EVENTS:
            key = lane.pending[0].idempotency_key
            if key is not None and key in keys:
                break
            item = lane.pending.pop(0)
            batch.append(item)
            size += len(item.types)
            if key is not None:
                keys.add(key)
        return batch

    async def _commit_isolating_failures(
        self, lane: _Lane, batch: list[_Append], prepared: _Batch | None
    ) -> _Batch | None:
        """Commit a batch; if it fails as a whole, retry its appends one by one, so that one
        bad append fails alone and the others still go in. Returns the next batch if it was
        already prepared while this one was committing."""
        try:
            return await self._commit(lane, batch, prepared)
        except Exception as error:
            lane.head = None  # whatever happened, re-read the head before building again
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(error)
                return None
            for single in batch:
                if not single.future.done():
                    self._give_back(
                        lane, await self._commit_isolating_failures(lane, [single], None)
                    )
            return None

    async def _commit(
        self, lane: _Lane, batch: list[_Append], prepared: _Batch | None
    ) -> _Batch | None:
        self._committing += 1
        try:
            return await self._commit_batch(lane, batch, prepared)
        finally:
            self._committing -= 1

    async def _commit_batch(
        self, lane: _Lane, batch: list[_Append], prepared: _Batch | None
    ) -> _Batch | None:
        """Commit `batch`, using `prepared` if it was built on the head the lane has now.

        While the statement is in flight, the next batch queued on the lane is laid on the
        head this one will leave and signed (pipelining: signing is CPU, the commit waits on
        the disk). It is handed back only if this batch went in exactly as built; otherwise
        its appends go back to the front of the queue, to be built again.
        """
        known_versions: dict[str, int] = {}
        async with self._pool.acquire() as connection:
            for _ in range(MAX_REBUILDS):
                if lane.head is None:
                    lane.head = await self._read_head(connection, lane.tenant)
                if prepared is not None and prepared.base == self._base(lane.head):
                    planned, prepared = prepared, None
                else:
                    planned = self._plan(lane.tenant_json, lane.head, batch, known_versions)
                    await self._sign(planned)
                if not planned.planned:
                    self._refuse_conflicts(planned)
                    return None
                call = asyncio.ensure_future(self._call_append(connection, lane, planned))
                following = await self._prepare_following(lane, planned, call)
                try:
                    outcome = await call
                except asyncpg.UniqueViolationError as error:
                    self._give_back(lane, following)
                    if error.constraint_name != "append_idempotency_pkey":
                        raise
                    # An idempotency key of this batch committed meanwhile: answer those
                    # appends from the ledger and lay the rest again.
                    lane.head = None
                    await self._resolve_idempotent(connection, planned.planned)
                    continue
                except BaseException:
                    self._give_back(lane, following)
                    raise
                if outcome["positions"] is not None:
                    self._settle(lane, planned, outcome)
                    # Only now: a conflict with an append of this batch is real once it is
                    # committed, and a caller deciding again must find it in the ledger.
                    self._refuse_conflicts(planned)
                    self._announce()
                    return following
                self._give_back(lane, following)
                await self._diagnose(connection, lane, planned, known_versions)
        raise EventStoreError(
            f"tenant {lane.tenant!r}: gave up after {MAX_REBUILDS} rebuilds under contention"
        )

    @staticmethod
    def _refuse_conflicts(batch: _Batch) -> None:
        for append, conflict in batch.conflicts:
            if not append.future.done():
                append.future.set_exception(conflict)

    async def _prepare_following(
        self, lane: _Lane, current: _Batch, call: asyncio.Future[asyncpg.Record]
    ) -> _Batch | None:
        """Build and sign the lane's next batch on the head `current` will leave, while
        `current` is being committed. Nothing is decided: conflicts found are only applied
        if the prepared batch is used."""
        if not lane.pending:
            return None
        appends = self._take(lane)
        last = current.records()[-1]
        projected = _Head(last.seq, last.hash, current.recorded_at)
        following = self._plan(lane.tenant_json, projected, appends, current.final_versions())
        try:
            await self._sign(following)
        except Exception:  # never leave `current` unawaited: its commit decides its appends
            self._give_back(lane, following)
            return None
        return following

    @staticmethod
    def _give_back(lane: _Lane, prepared: _Batch | None) -> None:
        if prepared is not None:
            lane.pending[:0] = prepared.appends

    def _base(self, head: _Head) -> tuple[int, str, str]:
        return (head.seq, head.hash, self._key.key_id)

    async def _diagnose(
        self,
        connection: Connection,
        lane: _Lane,
        planned: _Batch,
        known_versions: dict[str, int],
    ) -> None:
        """The append did not go in: learn why, and prepare the lane to build again (or raise
        when building again cannot help)."""
        records = planned.records()
        found = await connection.fetchrow(
            _DIAGNOSE_SQL,
            lane.tenant,
            [item.append.stream for item in planned.planned for _ in item.records],
            [record.version for record in records],
            self._key.key_id,
        )
        assert found is not None  # noqa: S101 - the diagnosis always returns one row
        if found["foreign_streams"]:
            raise StreamOwnershipError(
                f"stream {found['foreign_streams'][0]!r} belongs to another tenant"
            )
        if not found["key_known"] or found["key_retired_at"] is not None:
            await self._refresh_key(found)
        elif found["key_created_at"] > planned.recorded_at:
            raise SigningKeyError("records would be stamped before the signing key's validity")
        if found["head_seq"] is None:
            lane.head = await self._read_head(connection, lane.tenant)
        else:
            lane.head = _Head(found["head_seq"], found["head_hash"], found["head_recorded_at"])
        if found["stale_streams"]:
            known_versions.update(msgspec.json.decode(found["stale_streams"]))

    async def _refresh_key(self, outcome: asyncpg.Record) -> None:
        """The key was retired (rotated by another process) or is unknown: load the current one
        once; if that is the same key, signing cannot go on and the caller must be told."""
        what = "is not registered" if not outcome["key_known"] else "was retired"
        if self._reload_key is not None:
            fresh = await self._reload_key()
            if fresh.key_id != self._key.key_id:
                self._key = fresh
                return
        raise SigningKeyError(f"signing key {self._key.key_id} {what}; configure the current key")

    def _plan(
        self, tenant_json: bytes, head: _Head, batch: list[_Append], known: dict[str, int]
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
        for item in planned:
            append = item.append
            stream_json = msgspec.json.encode(append.stream)
            for offset, (type_json, data_json) in enumerate(
                zip(append.type_jsons, append.data_jsons, strict=True)
            ):
                seq += 1
                canonical = assemble_canonical(
                    tenant_json=tenant_json,
                    seq=seq,
                    stream_json=stream_json,
                    version=item.first_version + offset,
                    type_json=type_json,
                    data_json=data_json,
                    meta_json=append.meta_json,
                    recorded_at=stamp_text,
                    prev_hash=prev_hash,
                )
                prev_hash = record_hash(canonical)
                item.records.append(_Record(seq, item.first_version + offset, prev_hash, canonical))
        return _Batch(batch, planned, conflicts, stamp, self._base(head))

    async def _sign(self, batch: _Batch) -> None:
        records = batch.records()
        signatures = await self._signer.sign(
            self._key.private_key, [r.hash for r in records], alone=self._committing == 1
        )
        for record, signature in zip(records, signatures, strict=True):
            record.signature = signature

    async def _call_append(
        self, connection: Connection, lane: _Lane, batch: _Batch
    ) -> asyncpg.Record:
        records = batch.records()
        streams: list[str] = []
        types: list[str] = []
        idem_keys: list[str] = []
        idem_hashes: list[str] = []
        idem_first: list[int] = []
        idem_counts: list[int] = []
        for item in batch.planned:
            append = item.append
            streams.extend([append.stream] * len(item.records))
            types.extend(append.types)
            if append.idempotency_key is not None:
                idem_keys.append(append.idempotency_key)
                idem_hashes.append(append.content_hash)
                idem_first.append(item.records[0].seq)
                idem_counts.append(len(item.records))
        head = lane.head
        assert head is not None  # noqa: S101 - _commit reads it before planning
        outcome = await connection.fetchrow(
            _APPEND_REMEMBERING_SQL if idem_keys else _APPEND_SQL,
            lane.tenant,
            head.seq,
            head.hash,
            self._key.key_id,
            streams,
            [r.version for r in records],
            types,
            [r.canonical for r in records],
            [r.hash for r in records],
            [r.signature for r in records],
            batch.recorded_at,
            *((idem_keys, idem_hashes, idem_first, idem_counts) if idem_keys else ()),
        )
        assert outcome is not None  # noqa: S101 - the statement always returns one row
        return outcome

    def _settle(self, lane: _Lane, batch: _Batch, outcome: asyncpg.Record) -> None:
        positions = iter(outcome["positions"])
        epoch: int = outcome["epoch"]
        tx_id: int = outcome["tx_id"]
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
                        tenant=append.tenant,
                        seq=record.seq,
                        stream=append.stream,
                        version=record.version,
                        type=append.types[offset],
                        data=covered["data"],
                        meta=covered["meta"],
                        recorded_at=batch.recorded_at,
                        prev_hash=covered["prev_hash"],
                        hash=record.hash,
                        signature=record.signature,
                        key_id=self._key.key_id,
                        canonical=record.canonical,
                    )
                )
            if append.expected is StreamState.ANY:
                self._remember_version(append.stream, item.records[-1].version)
            if not append.future.done():
                append.future.set_result(recorded)
        last = batch.planned[-1].records[-1]
        lane.head = _Head(last.seq, last.hash, batch.recorded_at)

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

    async def _read_head(self, connection: Connection, tenant: str) -> _Head:
        row = await connection.fetchrow(_HEAD_SQL, tenant, GENESIS_HASH)
        if row is None:  # created concurrently and not yet visible: the move will tell
            return _Head(0, GENESIS_HASH, None)
        return _Head(row["seq"], row["hash"], row["recorded_at"])

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

    async def _resolve_idempotent(self, connection: Connection, planned: list[_Planned]) -> None:
        for item in planned:
            append = item.append
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
        rows = await self._pool.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2"
            " ORDER BY version",
            stream,
            from_version,
        )
        return [_row_to_event(row) for row in rows]

    async def stream_ids(self, tenant: str, prefix: str = "") -> list[str]:
        """The ids of `tenant`'s streams that start with `prefix`, in id order."""
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
    ) -> AsyncIterator[RecordedEvent]:
        """Every committed event after `after`, exactly once, in commit-safe order, forever.

        Woken by LISTEN/NOTIFY; polls every poll_interval as well, so a lost notification or a
        dropped listening connection only delays delivery, never loses events.
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
                await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
                await self._pool.release(listener)

    async def close(self) -> None:
        if self._notifier is not None:
            await asyncio.gather(self._notifier, return_exceptions=True)
        self._signer.close()


def _shown(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected
