"""A customer's alerts as their events leave them: every alert ever raised, resolved ones
included, so an alert id is never reused."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from domain.alerts.events import AlertSeverity, AlertStatus
from domain.roles import Role


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert: what was raised, and how far it got (acknowledged, resolved)."""

    alert_id: str
    kind: str
    severity: AlertSeverity
    summary: str
    evidence: Mapping[str, str]
    source_reference: str | None
    raised_at: datetime
    raised_by: str
    raised_by_role: Role
    status: AlertStatus = AlertStatus.OPEN
    acknowledged_at: datetime | None = None
    acknowledged_by: str = ""
    resolved_at: datetime | None = None
    resolved_by: str = ""
    resolution_note_sealed: str = ""

    @property
    def last_changed_at(self) -> datetime:
        """When the alert was last raised, acknowledged or resolved: a later change must not be
        dated before it."""
        return self.resolved_at or self.acknowledged_at or self.raised_at


class CustomerAlerts(msgspec.Struct, frozen=True, kw_only=True):
    """All of one customer's alerts, by id, in the order they were raised.

    The mapping is replaced, never changed in place, by `evolve`.
    """

    customer_id: str = ""
    alerts: Mapping[str, Alert] = msgspec.field(default_factory=dict)

    def unresolved(self) -> tuple[Alert, ...]:
        """The alerts not resolved yet (open or acknowledged), in the order they were raised."""
        return tuple(
            alert for alert in self.alerts.values() if alert.status is not AlertStatus.RESOLVED
        )

    def open_critical(self) -> tuple[Alert, ...]:
        """The critical alerts not resolved yet, in the order they were raised: what blocks
        going live. Acknowledged is not resolved, so acknowledged ones are included."""
        return tuple(
            alert for alert in self.unresolved() if alert.severity is AlertSeverity.CRITICAL
        )


def initial_state() -> CustomerAlerts:
    """The state before any event: no alert was ever raised."""
    return CustomerAlerts()
