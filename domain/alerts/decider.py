"""The rules of a customer's alerts: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor and every id come on the command, and the customer's
current users and roles come in the `CustomerTeam` the command layer reads from its stream.

Who may do what:
- Raising, acknowledging and resolving: ADMIN (vendor staff, any customer), or a CUSTOMER_ADMIN
  or TECHNICAL user who holds that role on this customer now. FINANCE may not.
- The service itself acts as ``by="system:<component>"`` with ``by_role=ADMIN``; an actor named
  ``system:...`` with any other role, or with a malformed component name, is refused.

Lifecycle: open -> acknowledged -> resolved, or open -> resolved directly. Acknowledging twice,
and acknowledging or resolving a resolved alert, are refused. Resolving needs a note (sealed:
the domain only checks it is not blank). An acknowledgement or resolution may not be dated
before the alert's last change. Resolved alerts stay in the state and their ids are never
reused.

Raising:
- `alert_id`: 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.
- `kind`: a machine word matching `KIND_PATTERN` (a pattern, not a closed list, so a new kind
  of check needs no domain change; what blocks going live depends on severity alone).
- `severity`: info, warning or critical.
- `summary`: 1 to 200 printable characters, not blank.
- `evidence`: 1 to 20 entries; keys match `KIND_PATTERN`; values are 1 to 500 printable
  characters, not blank. Stored with its keys sorted.
- `source_reference`: optional; if given, 1 to 200 printable characters, not blank.
- An id that exists already: refused with `DuplicateAlertError` when kind, severity, summary,
  evidence and source reference are all the same (a retry), with `AlertIdTakenError` otherwise.
  Time and actor are not compared, since a retry may be stamped again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Final, assert_never

import msgspec

from domain.alerts.commands import (
    AcknowledgeAlert,
    Command,
    RaiseAlert,
    ResolveAlert,
)
from domain.alerts.errors import (
    AlertAlreadyAcknowledgedError,
    AlertAlreadyResolvedError,
    AlertIdTakenError,
    CustomerMismatchError,
    DuplicateAlertError,
    InvalidAlertFieldError,
    NotAuthorizedError,
    UnknownAlertError,
)
from domain.alerts.events import (
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertSeverity,
    AlertStatus,
    Event,
)
from domain.alerts.state import Alert, CustomerAlerts
from domain.roles import CustomerTeam, Role

ALERT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
KIND_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A short machine word: a lowercase letter, then up to 39 lowercase letters, digits or '_'."""
SYSTEM_PREFIX: Final = "system:"
SYSTEM_ACTOR_PATTERN: Final = re.compile(r"system:[a-z][a-z0-9_-]{0,39}")
MAX_SUMMARY_LENGTH: Final = 200
MAX_EVIDENCE_ENTRIES: Final = 20
MAX_EVIDENCE_VALUE_LENGTH: Final = 500
MAX_SOURCE_REFERENCE_LENGTH: Final = 200

_ALERT_ROLES: Final = (Role.CUSTOMER_ADMIN, Role.TECHNICAL)
"""The customer's roles that may raise and handle alerts; ADMIN may too, on any customer."""


def decide(command: Command, state: CustomerAlerts, team: CustomerTeam) -> list[Event]:
    """The events the command makes happen, or an `AlertError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    _check_customer(command.customer_id, state, team)
    match command:
        case RaiseAlert():
            _check_may_handle_alerts(command.by, command.by_role, team, "raise alerts")
            return _raise(command, state)
        case AcknowledgeAlert():
            _check_may_handle_alerts(command.by, command.by_role, team, "acknowledge alerts")
            return _acknowledge(command, state)
        case ResolveAlert():
            _check_may_handle_alerts(command.by, command.by_role, team, "resolve alerts")
            return _resolve(command, state)
        case _:
            assert_never(command)


def evolve(state: CustomerAlerts, event: Event) -> CustomerAlerts:
    """The state after the event; events are facts already decided, so nothing is refused."""
    match event:
        case AlertRaised():
            alert = Alert(
                alert_id=event.alert_id,
                kind=event.kind,
                severity=event.severity,
                summary=event.summary,
                evidence=event.evidence,
                source_reference=event.source_reference,
                raised_at=event.raised_at,
                raised_by=event.raised_by,
                raised_by_role=event.raised_by_role,
            )
        case AlertAcknowledged():
            alert = msgspec.structs.replace(
                state.alerts[event.alert_id],
                status=AlertStatus.ACKNOWLEDGED,
                acknowledged_at=event.acknowledged_at,
                acknowledged_by=event.acknowledged_by,
            )
        case AlertResolved():
            alert = msgspec.structs.replace(
                state.alerts[event.alert_id],
                status=AlertStatus.RESOLVED,
                resolved_at=event.resolved_at,
                resolved_by=event.resolved_by,
                resolution_note_sealed=event.note_sealed,
            )
        case _:
            assert_never(event)
    return msgspec.structs.replace(
        state, customer_id=event.customer_id, alerts={**state.alerts, alert.alert_id: alert}
    )


def _raise(command: RaiseAlert, state: CustomerAlerts) -> list[Event]:
    if not ALERT_ID_PATTERN.fullmatch(command.alert_id):
        raise InvalidAlertFieldError(
            f"alert_id {_quoted(command.alert_id)} must be 1 to 64 letters, digits, '_', '.', "
            "':' or '-', starting with a letter or digit; choose another id"
        )
    if not KIND_PATTERN.fullmatch(command.kind):
        raise InvalidAlertFieldError(
            f"kind {_quoted(command.kind)} is not a machine word; use a lowercase letter, then "
            "up to 39 lowercase letters, digits or '_', such as calculation_anomaly"
        )
    severity = _severity(command.severity)
    _check_text("summary", command.summary, MAX_SUMMARY_LENGTH)
    evidence = _evidence(command.evidence)
    if command.source_reference is not None:
        _check_text("source_reference", command.source_reference, MAX_SOURCE_REFERENCE_LENGTH)
    existing = state.alerts.get(command.alert_id)
    if existing is not None:
        same = (
            existing.kind,
            existing.severity,
            existing.summary,
            dict(existing.evidence),
            existing.source_reference,
        ) == (command.kind, severity, command.summary, evidence, command.source_reference)
        if same:
            raise DuplicateAlertError(
                f"alert {existing.alert_id!r} was already raised at "
                f"{existing.raised_at.isoformat()} with this content and is "
                f"{existing.status}; nothing more to do",
                existing,
            )
        raise AlertIdTakenError(
            f"alert id {existing.alert_id!r} already belongs to a {existing.kind} alert raised "
            f"at {existing.raised_at.isoformat()}; alert ids are never reused, so raise this "
            "alert under a new id"
        )
    return [
        AlertRaised(
            customer_id=command.customer_id,
            alert_id=command.alert_id,
            kind=command.kind,
            severity=severity,
            summary=command.summary,
            evidence=evidence,
            source_reference=command.source_reference,
            raised_at=command.at,
            raised_by=command.by,
            raised_by_role=command.by_role,
        )
    ]


def _acknowledge(command: AcknowledgeAlert, state: CustomerAlerts) -> list[Event]:
    alert = _known_alert(command.customer_id, command.alert_id, state)
    if alert.status is AlertStatus.RESOLVED:
        raise AlertAlreadyResolvedError(
            f"alert {alert.alert_id!r} was resolved at {_when(alert.resolved_at)} by "
            f"{alert.resolved_by!r}, so it cannot be acknowledged; if the problem is back, "
            "raise a new alert under a new id"
        )
    if alert.status is AlertStatus.ACKNOWLEDGED:
        raise AlertAlreadyAcknowledgedError(
            f"alert {alert.alert_id!r} was already acknowledged at "
            f"{_when(alert.acknowledged_at)} by {alert.acknowledged_by!r}; resolve it with a "
            "note once it is dealt with"
        )
    _check_in_order(command.at, alert)
    return [
        AlertAcknowledged(
            customer_id=command.customer_id,
            alert_id=alert.alert_id,
            acknowledged_at=command.at,
            acknowledged_by=command.by,
            acknowledged_by_role=command.by_role,
        )
    ]


def _resolve(command: ResolveAlert, state: CustomerAlerts) -> list[Event]:
    alert = _known_alert(command.customer_id, command.alert_id, state)
    if alert.status is AlertStatus.RESOLVED:
        raise AlertAlreadyResolvedError(
            f"alert {alert.alert_id!r} was already resolved at {_when(alert.resolved_at)} by "
            f"{alert.resolved_by!r}; if the problem is back, raise a new alert under a new id"
        )
    if not command.note_sealed.strip():
        raise InvalidAlertFieldError(
            "note_sealed must not be blank; say how the alert was dealt with"
        )
    _check_in_order(command.at, alert)
    return [
        AlertResolved(
            customer_id=command.customer_id,
            alert_id=alert.alert_id,
            previous_status=alert.status,
            note_sealed=command.note_sealed,
            resolved_at=command.at,
            resolved_by=command.by,
            resolved_by_role=command.by_role,
        )
    ]


def _check_stamp(at: datetime, by: str) -> None:
    """The application layer's stamp: a blank actor or a naive time would corrupt the trail."""
    if at.utcoffset() is None:
        raise InvalidAlertFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    if not by.strip():
        raise InvalidAlertFieldError("by must not be blank; stamp commands with the user's id")


def _check_customer(customer_id: str, state: CustomerAlerts, team: CustomerTeam) -> None:
    if not customer_id.strip():
        raise InvalidAlertFieldError("customer_id must not be blank; name the customer")
    if state.customer_id and state.customer_id != customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {customer_id!r} but was decided against the alerts "
            f"of customer {state.customer_id!r}; load the alerts of the customer the command "
            "names"
        )
    if team.customer_id != customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {customer_id!r} but the team it was decided against "
            f"belongs to customer {team.customer_id!r}; read the users of the customer the "
            "command names"
        )


def _check_may_handle_alerts(by: str, by_role: Role, team: CustomerTeam, action: str) -> None:
    """ADMIN (staff or the system) anywhere; CUSTOMER_ADMIN or TECHNICAL as a current holder of
    that role on this customer."""
    if by.startswith(SYSTEM_PREFIX):
        if by_role != Role.ADMIN:
            raise NotAuthorizedError(
                f"actor {_quoted(by)} is the system, which acts only as ADMIN, not {by_role}; "
                "stamp system commands with by_role ADMIN"
            )
        if not SYSTEM_ACTOR_PATTERN.fullmatch(by):
            raise InvalidAlertFieldError(
                f"system actor {_quoted(by)} must be 'system:' and a component name (a lowercase "
                "letter, then up to 39 lowercase letters, digits, '_' or '-'), such as "
                "system:disputes"
            )
        return
    if by_role == Role.ADMIN:
        return
    if by_role not in _ALERT_ROLES:
        raise NotAuthorizedError(
            f"role {by_role} cannot {action}; ask a CUSTOMER_ADMIN or TECHNICAL user of the "
            "customer, or an ADMIN"
        )
    if team.user_roles.get(by) != by_role:
        raise NotAuthorizedError(
            f"user {by!r} is not a {by_role} of customer {team.customer_id!r}, so cannot "
            f"{action}; ask one of its CUSTOMER_ADMIN or TECHNICAL users, or an ADMIN"
        )


def _severity(value: str) -> AlertSeverity:
    try:
        return AlertSeverity(value)
    except ValueError:
        raise InvalidAlertFieldError(
            f"severity {_quoted(str(value))} is not one of info, warning, critical; choose one "
            "(only critical blocks going live)"
        ) from None


def _evidence(evidence: Mapping[str, str]) -> dict[str, str]:
    """The evidence checked, with its keys sorted so equal evidence is stored identically."""
    if not evidence:
        raise InvalidAlertFieldError(
            "evidence is empty; give at least one entry, such as metric: revenue"
        )
    if len(evidence) > MAX_EVIDENCE_ENTRIES:
        raise InvalidAlertFieldError(
            f"evidence has {len(evidence)} entries; keep it to {MAX_EVIDENCE_ENTRIES}, and "
            "point at the rest with source_reference"
        )
    for key, value in evidence.items():
        if not KIND_PATTERN.fullmatch(key):
            raise InvalidAlertFieldError(
                f"evidence key {_quoted(key)} is not a machine word; use a lowercase letter, "
                "then up to 39 lowercase letters, digits or '_'"
            )
        _check_text(f"evidence {key!r}", value, MAX_EVIDENCE_VALUE_LENGTH)
    return {key: evidence[key] for key in sorted(evidence)}


def _check_text(field: str, text: str, limit: int) -> None:
    if not text.strip():
        raise InvalidAlertFieldError(f"{field} must not be blank; fill it in")
    if len(text) > limit:
        raise InvalidAlertFieldError(
            f"{field} is {len(text)} characters long; keep it to {limit} characters"
        )
    if not text.isprintable():
        raise InvalidAlertFieldError(
            f"{field} contains control characters; remove line breaks, tabs and the like"
        )


def _known_alert(customer_id: str, alert_id: str, state: CustomerAlerts) -> Alert:
    alert = state.alerts.get(alert_id)
    if alert is None:
        raise UnknownAlertError(
            f"customer {customer_id!r} has no alert {_quoted(alert_id)}; check the alert id "
            "in the customer's list of alerts"
        )
    return alert


def _check_in_order(at: datetime, alert: Alert) -> None:
    last = alert.last_changed_at
    if at < last:
        raise InvalidAlertFieldError(
            f"at {at.isoformat()} is before alert {alert.alert_id!r} last changed at "
            f"{last.isoformat()}; stamp the command with the current time"
        )


def _when(at: datetime | None) -> str:
    return "an unknown time" if at is None else at.isoformat()


def _quoted(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
