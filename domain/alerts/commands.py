"""What can be asked of a customer's alerts, as the command layer hands it over.

Every command carries the customer it is for, when it happens (`at`, timezone-aware), who asks
(`by`, a user id) and with which role (`by_role`, from the caller's verified token): the
application layer stamps them, so deciding never reads a clock or a session.

When the service raises an alert on its own (from a dispute, an anomaly check, a failing data
source), the command layer stamps ``by="system:<component>"`` (for example
``"system:disputes"``) with ``by_role=ADMIN``: the service acts as vendor infrastructure, and
the ledger names which part of it acted.

The resolution note is free text written by a person, so it arrives as ``note_sealed``,
already encrypted by the command layer. `decide` also needs the customer's current users and
roles (`CustomerTeam`), read by the command layer from the customer's stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.alerts.events import AlertSeverity
from domain.roles import Role


class RaiseAlert(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RaiseAlert",
    tag_field="command",
):
    """Report an anomaly under a new `alert_id`, chosen by the command layer.

    `kind` is a short machine word such as ``accuracy_dispute``, ``calculation_anomaly``,
    ``data_source_error`` or ``manual``; `evidence` maps short machine names to text values.
    Raising again with the same id and the same content is refused with `DuplicateAlertError`,
    which a retry after a crash can treat as done.
    """

    customer_id: str
    alert_id: str
    kind: str
    severity: AlertSeverity
    summary: str
    evidence: Mapping[str, str]
    source_reference: str | None = None
    at: datetime
    by: str
    by_role: Role


class AcknowledgeAlert(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="AcknowledgeAlert",
    tag_field="command",
):
    """Say that someone is dealing with the open alert `alert_id`."""

    customer_id: str
    alert_id: str
    at: datetime
    by: str
    by_role: Role


class ResolveAlert(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ResolveAlert",
    tag_field="command",
):
    """Close the alert `alert_id` (open or acknowledged) with a note saying how it was dealt
    with, sealed by the command layer."""

    customer_id: str
    alert_id: str
    note_sealed: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = RaiseAlert | AcknowledgeAlert | ResolveAlert

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads any alert command from its JSON, dispatching on the ``command`` tag."""
