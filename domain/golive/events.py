"""What the ledger says about a customer's billing: going live, pauses and resumptions, and the
accuracy threshold going live was held to.

`WentLive` is the go-live receipt: it records every pre-flight check with its result and
reason, the value definitions in force (id, version, content hash), the measured accuracy and
the threshold it was compared with, and when billing starts. A refused go-live records nothing.

Tags are explicit and stable (never class or module names), so a class can be renamed without
touching stored bytes. Every event ends with `schema`; a field added later gets a default, and a
breaking change gets a new event type or an upcaster instead. Percentages are plain decimal
strings, never floats. `*_by` is the acting user's id and `*_by_role` the role they acted in.

Fields ending in ``_sealed`` hold free text written by a person (why billing was paused or
resumed), already encrypted by the command layer: opaque here, so erasing a person means
destroying their key, not rewriting the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, TypeAlias

import msgspec

from domain.roles import Role

PreflightCheckId: TypeAlias = Literal[
    "setup_complete", "approved_definition", "accuracy", "no_critical_alerts"
]

PREFLIGHT_CHECKS: Final[tuple[PreflightCheckId, ...]] = (
    "setup_complete",
    "approved_definition",
    "accuracy",
    "no_critical_alerts",
)
"""Every pre-flight check, in the order they are evaluated and reported."""


class PreflightCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One pre-flight check's result, and the reason for it in words."""

    check: PreflightCheckId
    passed: bool
    reason: str


class DefinitionInForce(msgspec.Struct, frozen=True, kw_only=True):
    """An approved value definition in force: which one, which version, and its content hash."""

    definition_id: str
    version: int
    content_hash: str


class WentLive(msgspec.Struct, frozen=True, kw_only=True, tag="WentLive", tag_field="type"):
    """The go-live receipt: every pre-flight check passed, and billing starts at
    `billing_starts_at`.

    `checks` holds all four checks in `PREFLIGHT_CHECKS` order, each passed, with its reason;
    `accuracy` is the measured accuracy and `accuracy_threshold` the threshold it met, both
    percentages as decimal strings (``"97.50"``, ``"85.00"``).
    """

    customer_id: str
    checks: tuple[PreflightCheck, ...]
    definitions_in_force: tuple[DefinitionInForce, ...]
    accuracy: str
    accuracy_threshold: str
    billing_starts_at: datetime
    went_live_at: datetime
    went_live_by: str
    went_live_by_role: Role
    schema: int = 1


class BillingPaused(
    msgspec.Struct, frozen=True, kw_only=True, tag="BillingPaused", tag_field="type"
):
    """Billing stopped at `paused_at`, until it is resumed; why is sealed."""

    customer_id: str
    reason_sealed: str
    paused_at: datetime
    paused_by: str
    paused_by_role: Role
    schema: int = 1


class BillingResumed(
    msgspec.Struct, frozen=True, kw_only=True, tag="BillingResumed", tag_field="type"
):
    """Billing started again at `resumed_at`; `paused_at` names the pause this ends, so the
    paused interval [paused_at, resumed_at) reads from this event alone."""

    customer_id: str
    reason_sealed: str
    paused_at: datetime
    resumed_at: datetime
    resumed_by: str
    resumed_by_role: Role
    schema: int = 1


class AccuracyThresholdSet(
    msgspec.Struct, frozen=True, kw_only=True, tag="AccuracyThresholdSet", tag_field="type"
):
    """Vendor staff set the measured accuracy this customer needs to go live.

    Both thresholds are percentages with exactly 2 decimal places (``"90.00"``).
    """

    customer_id: str
    threshold: str
    previous_threshold: str
    set_at: datetime
    set_by: str
    set_by_role: Role
    schema: int = 1


Event: TypeAlias = WentLive | BillingPaused | BillingResumed | AccuracyThresholdSet

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes any go-live event from JSON by its ``type`` tag; built once, as msgspec advises."""
