"""A customer's alerts: anomalies raised with a kind, a severity and evidence, then
acknowledged and resolved with a note.

One stream per customer holds all its alerts, so going live reads the open critical ones
(`CustomerAlerts.open_critical`) from a single stream: a critical alert blocks going live until
it is resolved, acknowledged or not. Alerts are raised by ADMIN, by the service itself
(``by="system:<component>"`` as ADMIN, e.g. from disputes) or by the customer's
CUSTOMER_ADMIN and TECHNICAL users, who also acknowledge and resolve them. Resolved alerts are
kept, and an alert id is never reused; raising an existing id again with the same content is
refused with `DuplicateAlertError`, so a retried command can be recognised. The rules are
listed in `decider`.
"""

from __future__ import annotations

from domain.alerts.commands import (
    COMMAND_DECODER,
    AcknowledgeAlert,
    Command,
    RaiseAlert,
    ResolveAlert,
)
from domain.alerts.decider import (
    ALERT_ID_PATTERN,
    KIND_PATTERN,
    MAX_EVIDENCE_ENTRIES,
    MAX_EVIDENCE_VALUE_LENGTH,
    MAX_SOURCE_REFERENCE_LENGTH,
    MAX_SUMMARY_LENGTH,
    SYSTEM_ACTOR_PATTERN,
    SYSTEM_PREFIX,
    decide,
    evolve,
)
from domain.alerts.errors import (
    AlertAlreadyAcknowledgedError,
    AlertAlreadyResolvedError,
    AlertError,
    AlertIdTakenError,
    CustomerMismatchError,
    DuplicateAlertError,
    InvalidAlertFieldError,
    NotAuthorizedError,
    UnknownAlertError,
)
from domain.alerts.events import (
    EVENT_DECODER,
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertSeverity,
    AlertStatus,
    Event,
)
from domain.alerts.state import Alert, CustomerAlerts, initial_state
from domain.roles import CustomerTeam, Role

__all__ = [
    "ALERT_ID_PATTERN",
    "COMMAND_DECODER",
    "EVENT_DECODER",
    "KIND_PATTERN",
    "MAX_EVIDENCE_ENTRIES",
    "MAX_EVIDENCE_VALUE_LENGTH",
    "MAX_SOURCE_REFERENCE_LENGTH",
    "MAX_SUMMARY_LENGTH",
    "SYSTEM_ACTOR_PATTERN",
    "SYSTEM_PREFIX",
    "AcknowledgeAlert",
    "Alert",
    "AlertAcknowledged",
    "AlertAlreadyAcknowledgedError",
    "AlertAlreadyResolvedError",
    "AlertError",
    "AlertIdTakenError",
    "AlertRaised",
    "AlertResolved",
    "AlertSeverity",
    "AlertStatus",
    "Command",
    "CustomerAlerts",
    "CustomerMismatchError",
    "CustomerTeam",
    "DuplicateAlertError",
    "Event",
    "InvalidAlertFieldError",
    "NotAuthorizedError",
    "RaiseAlert",
    "ResolveAlert",
    "Role",
    "UnknownAlertError",
    "decide",
    "evolve",
    "initial_state",
]
