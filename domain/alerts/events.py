"""What the ledger says about a customer's alerts: raised, acknowledged, resolved.

All of a customer's alerts share one stream, so go-live reads the open critical ones from a
single place; `alert_id` tells them apart and is never reused, even after resolution.

Tags are explicit and stable (never class or module names), so a class can be renamed without
touching stored bytes. Every event ends with `schema`; a field added later gets a default, and
a breaking change gets a new event type or an upcaster instead. `*_by` is the acting user's id
(``system:<component>`` when the service raised the alert itself) and `*_by_role` the role
they acted in.

The resolution note is free text written by a person, so it is ``note_sealed``: already
encrypted by the command layer, opaque here, so erasing a person means destroying their key,
not rewriting the ledger. An alert's kind, summary and evidence describe the anomaly (a metric,
a calculation, a data source) and must not name people.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class AlertSeverity(StrEnum):
    """How bad an alert is; only critical alerts block going live."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    """Where an alert is in its life: open, then acknowledged, then resolved (for ever)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertRaised(msgspec.Struct, frozen=True, kw_only=True, tag="AlertRaised", tag_field="type"):
    """An anomaly was reported: what kind, how severe, a one-line summary and its evidence.

    `evidence` maps short machine names to values as text (``{"metric": "revenue",
    "measured": "80.00", "expected": "100.00"}``), its keys in sorted order; `source_reference`
    points at what the alert came from (``"dispute:d-17"``), when it came from something.
    """

    customer_id: str
    alert_id: str
    kind: str
    severity: AlertSeverity
    summary: str
    evidence: Mapping[str, str]
    source_reference: str | None = None
    raised_at: datetime
    raised_by: str
    raised_by_role: Role
    schema: int = 1


class AlertAcknowledged(
    msgspec.Struct, frozen=True, kw_only=True, tag="AlertAcknowledged", tag_field="type"
):
    """Someone took the open alert in hand; it is not resolved, and still blocks going live if
    it is critical."""

    customer_id: str
    alert_id: str
    acknowledged_at: datetime
    acknowledged_by: str
    acknowledged_by_role: Role
    schema: int = 1


class AlertResolved(
    msgspec.Struct, frozen=True, kw_only=True, tag="AlertResolved", tag_field="type"
):
    """The alert was dealt with, with a (sealed) note saying how; `previous_status` is the
    status it left (open or acknowledged), so the trail reads alone."""

    customer_id: str
    alert_id: str
    previous_status: AlertStatus
    note_sealed: str
    resolved_at: datetime
    resolved_by: str
    resolved_by_role: Role
    schema: int = 1


Event: TypeAlias = AlertRaised | AlertAcknowledged | AlertResolved

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes any alert event from JSON by its ``type`` tag; built once, as msgspec advises."""
