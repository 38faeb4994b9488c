"""Projection lag: how far each projector's checkpoint is behind the ledger's head.

Shown by `valueledger projections status` and exported as Prometheus gauges, refreshed by
`refresh_lag_gauges`. Events behind are the committed events after the checkpoint, including
any the projector may not read yet because an older transaction is still running (see
`EventStore.held_back`): they are lag all the same. Seconds behind is the age of the oldest
of them, so it grows while a projector is stuck even if nothing new is appended.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, Protocol

import asyncpg
import msgspec
from prometheus_client import Gauge

from eventstore.store import START, Cursor
from projections.runner import checkpoint_name

EVENTS_BEHIND_CAP: Final = 1_000_000
"""Events behind are counted up to this many (the count costs an index scan of them); a
projector showing exactly this many is at least that far behind."""
OLDEST_SCAN: Final = 1000
"""Seconds behind takes the oldest `recorded_at` among this many next events in commit order
(commit order and recording time differ only by the moments an append spends in flight)."""

LAG_EVENTS: Final = Gauge(
    "valueledger_projection_lag_events",
    "Committed events after the projector's checkpoint (counted up to 1,000,000).",
    ["projector"],
)
LAG_SECONDS: Final = Gauge(
    "valueledger_projection_lag_seconds",
    "Age of the oldest committed event after the projector's checkpoint (0 when caught up).",
    ["projector"],
)


class Named(Protocol):
    """All lag needs of a projector: its name (see projections.projector.Projector)."""

    @property
    def name(self) -> str: ...


class ProjectionStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    checkpoint: Cursor
    """START when the projector has never run."""
    events_behind: int
    seconds_behind: float
    updated_at: datetime | None
    """When the checkpoint last moved; None when the projector has never run."""


_CHECKPOINTS_SQL: Final = """
SELECT name, epoch, tx_id::text AS tx_id, position, updated_at
FROM subscription_checkpoints WHERE name = ANY($1::text[])
"""

_LAG_SQL: Final = """
SELECT
  (SELECT count(*) FROM (
     SELECT 1 FROM events WHERE (epoch, tx_id, position) > ($1, $2::text::xid8, $3)
     LIMIT $4) AS behind) AS events_behind,
  coalesce((SELECT extract(epoch FROM clock_timestamp() - min(recorded_at)) FROM (
     SELECT recorded_at FROM events WHERE (epoch, tx_id, position) > ($1, $2::text::xid8, $3)
     ORDER BY epoch, tx_id, position LIMIT $5) AS next), 0)::float8 AS seconds_behind
"""


async def projection_status(
    pool: asyncpg.Pool, projectors: Iterable[Named], *, cap: int = EVENTS_BEHIND_CAP
) -> list[ProjectionStatus]:
    """Each projector's checkpoint and lag, in the order given, from one snapshot."""
    names = [projector.name for projector in projectors]
    statuses = []
    async with (
        pool.acquire() as connection,
        connection.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await connection.fetch(_CHECKPOINTS_SQL, [checkpoint_name(n) for n in names])
        checkpoints = {row["name"]: row for row in rows}
        for name in names:
            row = checkpoints.get(checkpoint_name(name))
            cursor = (
                START if row is None else Cursor(row["epoch"], int(row["tx_id"]), row["position"])
            )
            lag = await connection.fetchrow(
                _LAG_SQL, cursor.epoch, str(cursor.tx_id), cursor.position, cap, OLDEST_SCAN
            )
            assert lag is not None  # noqa: S101 - a SELECT without FROM always yields one row
            statuses.append(
                ProjectionStatus(
                    name=name,
                    checkpoint=cursor,
                    events_behind=int(lag["events_behind"]),
                    seconds_behind=max(0.0, float(lag["seconds_behind"])),
                    updated_at=None if row is None else row["updated_at"],
                )
            )
    return statuses


async def refresh_lag_gauges(
    pool: asyncpg.Pool, projectors: Iterable[Named]
) -> list[ProjectionStatus]:
    """Set the lag gauges of every projector from a fresh status; returns that status."""
    statuses = await projection_status(pool, projectors)
    for status in statuses:
        LAG_EVENTS.labels(status.name).set(status.events_behind)
        LAG_SECONDS.labels(status.name).set(status.seconds_behind)
    return statuses
