"""What the ledger says about one value definition: its versions and their approvals.

One stream per definition holds every version of it and every approval of those versions.
Tags are explicit and stable (never class or module names), so a class can be renamed without
touching stored bytes. Every event ends with `schema`; a field added later gets a default.
`*_by` is the acting user's id and `*_by_role` the role they acted in. Free text written by a
person (the reason for a request for changes) is in a field ending in ``_sealed``: encrypted by
the command layer, opaque here.

A version's content (`DefinitionContent`) travels whole on the event that records the version,
with `content_hash`: the SHA-256 (lowercase hex) of the RFC 8785 canonical JSON of exactly the
``content`` object as it is stored, so an auditor can check it from the event alone. The
content's Structs leave out members that hold their default (`omit_defaults`), so a member added
later with a default does not change the hash of content written before it. The final sign-off
(`DefinitionApproved`) is the approval receipt and names the same hash.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class ApprovalStage(StrEnum):
    """The stages of a version's approval, in the only order they can be passed."""

    FINANCE_REVIEW = "FINANCE_REVIEW"
    TECHNICAL_REVIEW = "TECHNICAL_REVIEW"
    FINAL_SIGN_OFF = "FINAL_SIGN_OFF"


STAGES: Final[tuple[ApprovalStage, ...]] = tuple(ApprovalStage)
"""The approval's stages, in order."""

STAGE_TITLES: Final[dict[ApprovalStage, str]] = {
    ApprovalStage.FINANCE_REVIEW: "Finance review",
    ApprovalStage.TECHNICAL_REVIEW: "Technical review",
    ApprovalStage.FINAL_SIGN_OFF: "Final executive sign-off",
}
"""How messages name each stage to a person."""

STAGE_ROLES: Final[dict[ApprovalStage, Role]] = {
    ApprovalStage.FINANCE_REVIEW: Role.FINANCE,
    ApprovalStage.TECHNICAL_REVIEW: Role.TECHNICAL,
    ApprovalStage.FINAL_SIGN_OFF: Role.CUSTOMER_ADMIN,
}
"""The role a stage's approver must hold on the customer, when named and when acting."""


class MetricDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A metric the definition uses, and the unit its values are in (``EUR``, ``hours``)."""

    name: str
    unit: str


class PricingTerms(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the vendor bills per period: a share of the value, within an optional floor and cap.

    `share_percent` is a decimal percentage as a plain decimal string in its shortest form
    (``"35.5"`` means 35.5 %); `floor_minor_units` and `cap_minor_units` are whole minor units of
    `currency` (cents for EUR), absent when there is none.
    """

    share_percent: str
    floor_minor_units: int | None = None
    cap_minor_units: int | None = None
    currency: str


class DefinitionContent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a version says, and all that its content hash covers.

    `metrics` are sorted by name, so the order they were entered in does not change the hash;
    `formula` is the formula's text as submitted.
    """

    name: str
    metrics: tuple[MetricDefinition, ...]
    formula: str
    pricing: PricingTerms


class DefinitionDrafted(
    msgspec.Struct, frozen=True, kw_only=True, tag="DefinitionDrafted", tag_field="type"
):
    """The definition was created with its first version (always version 1), as a draft."""

    customer_id: str
    definition_id: str
    version: int
    content: DefinitionContent
    content_hash: str
    drafted_at: datetime
    drafted_by: str
    drafted_by_role: Role
    schema: int = 1


class DefinitionRevised(
    msgspec.Struct, frozen=True, kw_only=True, tag="DefinitionRevised", tag_field="type"
):
    """A new version (`previous_version` + 1) was drafted from the latest one."""

    customer_id: str
    definition_id: str
    version: int
    previous_version: int
    content: DefinitionContent
    content_hash: str
    revised_at: datetime
    revised_by: str
    revised_by_role: Role
    schema: int = 1


class ApprovalVoided(
    msgspec.Struct, frozen=True, kw_only=True, tag="ApprovalVoided", tag_field="type"
):
    """The running approval of `version` stopped because `voided_by_version` was drafted.

    Recorded just before that version's `DefinitionRevised`; `stage` is where the approval was.
    """

    customer_id: str
    definition_id: str
    version: int
    stage: ApprovalStage
    voided_by_version: int
    reason: str
    voided_at: datetime
    voided_by: str
    voided_by_role: Role
    schema: int = 1


class DefinitionSubmitted(
    msgspec.Struct, frozen=True, kw_only=True, tag="DefinitionSubmitted", tag_field="type"
):
    """A draft version went for approval, starting at Finance review, with its three approvers."""

    customer_id: str
    definition_id: str
    version: int
    finance_approver: str
    technical_approver: str
    executive: str
    submitted_at: datetime
    submitted_by: str
    submitted_by_role: Role
    schema: int = 1


class StageApproved(
    msgspec.Struct, frozen=True, kw_only=True, tag="StageApproved", tag_field="type"
):
    """The assigned approver approved Finance review or Technical review; the next stage opens.

    The final sign-off is recorded as `DefinitionApproved` instead.
    """

    customer_id: str
    definition_id: str
    version: int
    stage: ApprovalStage
    approved_at: datetime
    approved_by: str
    approved_by_role: Role
    schema: int = 1


class ChangesRequested(
    msgspec.Struct, frozen=True, kw_only=True, tag="ChangesRequested", tag_field="type"
):
    """The assigned approver of `stage` sent the version back to draft, saying why.

    `reason_sealed` is the approver's text, sealed by the command layer (personal data).
    """

    customer_id: str
    definition_id: str
    version: int
    stage: ApprovalStage
    reason_sealed: str
    requested_at: datetime
    requested_by: str
    requested_by_role: Role
    schema: int = 1


class DefinitionApproved(
    msgspec.Struct, frozen=True, kw_only=True, tag="DefinitionApproved", tag_field="type"
):
    """The approval receipt: the executive signed the version off, and it is now in force.

    It names the content hash it approves and all three approvals of this round, so it can be
    read alone; `supersedes_version` is the version that was in force until now, if any.
    """

    customer_id: str
    definition_id: str
    version: int
    content_hash: str
    finance_approved_by: str
    finance_approved_at: datetime
    technical_approved_by: str
    technical_approved_at: datetime
    supersedes_version: int | None = None
    approved_at: datetime
    approved_by: str
    approved_by_role: Role
    schema: int = 1


Event: TypeAlias = (
    DefinitionDrafted
    | DefinitionRevised
    | ApprovalVoided
    | DefinitionSubmitted
    | StageApproved
    | ChangesRequested
    | DefinitionApproved
)

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes any definition event from JSON by its ``type`` tag; built once, as msgspec advises."""
