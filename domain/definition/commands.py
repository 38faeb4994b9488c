"""What can be asked of a value definition, as the command layer hands it over.

Every command carries the customer and the definition it is for, when it happens (`at`,
timezone-aware), who asks (`by`, a user id) and with which role (`by_role`, from the caller's
verified token): the application layer stamps them, so deciding never reads a clock or a
session. Commands that act on a version name it, so a command built from a stale view is
refused rather than applied to a version its author never saw.

The reason for a request for changes is free text written by a person, so it arrives in
``reason_sealed``, already encrypted by the command layer (which checks the text is 1 to
`MAX_REASON_LENGTH` characters before sealing it); the domain only checks the sealed text is
there and not over `MAX_REASON_SEALED_LENGTH`, and never reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.definition.events import ApprovalStage
from domain.roles import Role


class MetricInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A metric the definition uses (a configured metric's name) and its unit, such as ``EUR``."""

    name: str
    unit: str


class PricingInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The pricing terms as entered.

    `share_percent` is a decimal percentage written as text (``"35.5"`` for 35.5 %), more than 0
    and at most 100, with at most 4 decimal places; `floor_minor_units` and `cap_minor_units`
    are optional whole minor units of `currency` per period (``150000`` is EUR 1,500.00).
    """

    share_percent: str
    floor_minor_units: int | None = None
    cap_minor_units: int | None = None
    currency: str


class DraftDefinition(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="DraftDefinition",
    tag_field="command",
):
    """Create the definition `definition_id` with its first version, as a draft."""

    customer_id: str
    definition_id: str
    name: str
    metrics: tuple[MetricInput, ...]
    formula: str
    pricing: PricingInput
    at: datetime
    by: str
    by_role: Role


class ReviseDefinition(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ReviseDefinition",
    tag_field="command",
):
    """Make a new version from the latest one, `revises_version`, with the content given whole."""

    customer_id: str
    definition_id: str
    revises_version: int
    name: str
    metrics: tuple[MetricInput, ...]
    formula: str
    pricing: PricingInput
    at: datetime
    by: str
    by_role: Role


class SubmitForApproval(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="SubmitForApproval",
    tag_field="command",
):
    """Send the latest, draft `version` for approval, naming the approver of each stage.

    `finance_approver` must hold FINANCE, `technical_approver` TECHNICAL and `executive`
    CUSTOMER_ADMIN on the customer.
    """

    customer_id: str
    definition_id: str
    version: int
    finance_approver: str
    technical_approver: str
    executive: str
    at: datetime
    by: str
    by_role: Role


class ApproveStage(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ApproveStage",
    tag_field="command",
):
    """Approve `stage` of `version`'s running approval, as its assigned approver."""

    customer_id: str
    definition_id: str
    version: int
    stage: ApprovalStage
    at: datetime
    by: str
    by_role: Role


class RequestChanges(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RequestChanges",
    tag_field="command",
):
    """Send `version` back to draft from `stage`, as its assigned approver, saying why (sealed)."""

    customer_id: str
    definition_id: str
    version: int
    stage: ApprovalStage
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = (
    DraftDefinition | ReviseDefinition | SubmitForApproval | ApproveStage | RequestChanges
)

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads any definition command from its JSON, dispatching on the ``command`` tag."""
