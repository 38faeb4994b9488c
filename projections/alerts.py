"""The alerts list: every alert of every customer, its severity and where it is in its life
(open, acknowledged, resolved), with its evidence in rows of their own.

An alert's kind, summary and evidence describe the anomaly and never name people, so they are
kept in clear; the resolution note is sealed and is not kept. Who acted appears by id (or as
``system:<component>`` when the service did).

Each alert row carries the chain seq of the last event applied to it (`last_seq`): an event at
or below it was applied already and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec
from msgspec.structs import replace

from domain.alerts import AlertAcknowledged, AlertRaised, AlertResolved, AlertStatus
from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View


class AlertRow(msgspec.Struct, frozen=True, kw_only=True):
    """`alerts`: one alert."""

    tenant: str
    alert_id: str
    kind: str
    severity: str
    status: str
    summary: str
    source_reference: str | None = None
    raised_at: datetime
    raised_by: str
    raised_by_role: str
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    last_seq: int


class AlertEvidenceRow(msgspec.Struct, frozen=True, kw_only=True):
    """`alert_evidence`: one member of an alert's evidence, as raised."""

    tenant: str
    alert_id: str
    name: str
    value: str


ALERTS: Final = Table("alerts", AlertRow, key=("tenant", "alert_id"), key_types=("text", "text"))
ALERT_EVIDENCE: Final = Table(
    "alert_evidence",
    AlertEvidenceRow,
    key=("tenant", "alert_id", "name"),
    key_types=("text", "text", "text"),
)

_EVENTS: Final = (AlertRaised, AlertAcknowledged, AlertResolved)


class AlertsList:
    """Projects `alerts` and `alert_evidence`; see the module docstring."""

    name = "alerts"
    tables: tuple[Table[Any], ...] = (ALERTS, ALERT_EVIDENCE)

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        if not isinstance(event, _EVENTS):
            return ()
        return ((ALERTS, (record.tenant, event.alert_id)),)

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        if not isinstance(event, _EVENTS):
            return False
        tenant, seq = record.tenant, record.seq
        row = view.get(ALERTS, (tenant, event.alert_id))
        if row is not None and row.last_seq >= seq:
            return False  # applied already
        match event:
            case AlertRaised():
                row = AlertRow(
                    tenant=tenant,
                    alert_id=event.alert_id,
                    kind=event.kind,
                    severity=event.severity.value,
                    status=AlertStatus.OPEN.value,
                    summary=event.summary,
                    source_reference=event.source_reference,
                    raised_at=event.raised_at,
                    raised_by=event.raised_by,
                    raised_by_role=event.raised_by_role.value,
                    last_seq=seq,
                )
                for name, value in event.evidence.items():
                    view.put(
                        ALERT_EVIDENCE,
                        AlertEvidenceRow(
                            tenant=tenant, alert_id=event.alert_id, name=name, value=value
                        ),
                    )
            case AlertAcknowledged():
                if row is None:
                    return False
                row = replace(
                    row,
                    status=AlertStatus.ACKNOWLEDGED.value,
                    acknowledged_at=event.acknowledged_at,
                    acknowledged_by=event.acknowledged_by,
                    last_seq=seq,
                )
            case AlertResolved():
                if row is None:
                    return False
                row = replace(
                    row,
                    status=AlertStatus.RESOLVED.value,
                    resolved_at=event.resolved_at,
                    resolved_by=event.resolved_by,
                    last_seq=seq,
                )
        view.put(ALERTS, row)
        return True
