"""What can be asked of a customer's billing switch, as the command layer hands it over.

Every command carries the customer it is for, when it happens (`at`, timezone-aware), who asks
(`by`, a user id) and with which role (`by_role`, from the caller's verified token): the
application layer stamps them, so deciding never reads a clock or a session.

Reasons for pausing and resuming are free text written by a person, so they arrive in
``reason_sealed``, already encrypted by the command layer; the domain only checks they are not
blank and never reads them.

Going live also needs facts from other streams (the setup, the value definitions, the alerts,
the customer's users); the command layer reads them freshly from those streams into a
`GoLivePreflight` and passes it to `decide` next to the command. The other commands need only
the customer's current users and roles, as a `CustomerTeam`. Both are defined here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, TypeAlias

import msgspec

from domain.golive.events import DefinitionInForce
from domain.roles import Role


class GoLive(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="GoLive",
    tag_field="command",
):
    """Switch the customer to value-based billing, billed from `billing_starts_at` onwards.

    `billing_starts_at` may be the command's own time or later, never earlier: billing is not
    switched on retroactively.
    """

    customer_id: str
    billing_starts_at: datetime
    at: datetime
    by: str
    by_role: Role


class PauseBilling(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="PauseBilling",
    tag_field="command",
):
    """Stop billing from `at` until it is resumed, saying why (sealed) for the audit trail."""

    customer_id: str
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


class ResumeBilling(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ResumeBilling",
    tag_field="command",
):
    """Bill again from `at`, ending the current pause, saying why (sealed) for the audit trail."""

    customer_id: str
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


class SetAccuracyThreshold(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="SetAccuracyThreshold",
    tag_field="command",
):
    """Set the measured accuracy the customer needs to go live (vendor staff only).

    `threshold` is a percentage, 85 to 100 with at most 2 decimal places; in JSON, a decimal
    string such as ``"90.50"``.
    """

    customer_id: str
    threshold: Decimal
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = GoLive | PauseBilling | ResumeBilling | SetAccuracyThreshold

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads any go-live command from its JSON, dispatching on the ``command`` tag."""


class OpenCriticalAlert(msgspec.Struct, frozen=True, kw_only=True):
    """A critical alert of the customer that is not resolved (acknowledged ones included)."""

    alert_id: str
    kind: str


class GoLivePreflight(msgspec.Struct, frozen=True, kw_only=True):
    """Everything going live is checked against, as plain facts read from the event streams.

    The command layer builds it from freshly loaded streams (never from read models or a
    cache) just before deciding; `decide` evaluates every check itself. No field has a default,
    so a fact cannot be left out by mistake.
    """

    customer_id: str
    user_roles: Mapping[str, Role]
    """The customer's current user id -> role, from the customer's stream."""
    setup_complete: bool
    """Whether all five setup steps are complete, from the setup stream."""
    setup_missing_step: str
    """When the setup is not complete, the title of its first missing step, such as
    ``"step 4 (baseline)"``; empty when it is complete."""
    definitions_in_force: tuple[DefinitionInForce, ...]
    """The approved value definitions in force; empty when none is approved."""
    measured_accuracy: str | None
    """The setup's measured accuracy as a decimal percentage string (``"97.50"``), or None if
    it was never measured."""
    open_critical_alerts: tuple[OpenCriticalAlert, ...]
    """The customer's critical alerts that are not resolved, from its alerts stream."""
