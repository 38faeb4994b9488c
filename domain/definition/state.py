"""A value definition as its events leave it: every version, its approval, and the one in force.

Other aggregates read `DefinitionState.in_force` (the approved version that calculations and
go-live use: number, content, content hash, approved_at) and, per version, its status, stage
and approvers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

from domain.definition.events import STAGE_ROLES, ApprovalStage, DefinitionContent
from domain.roles import Role


class VersionStatus(StrEnum):
    """Where a version is in its life."""

    DRAFT = "DRAFT"
    """Being edited, or sent back by an approver; only the latest draft can be submitted."""
    IN_REVIEW = "IN_REVIEW"
    """Its approval is running; `stage` says where."""
    APPROVED = "APPROVED"
    """Signed off and in force; at most one version is."""
    SUPERSEDED = "SUPERSEDED"
    """Was in force until a later version was approved."""
    VOIDED = "VOIDED"
    """Its approval was running when a later version was drafted, which voided it."""
    REPLACED = "REPLACED"
    """Was a draft when a later version was drafted; it can no longer be submitted."""


class Approvers(msgspec.Struct, frozen=True, kw_only=True):
    """Who was assigned to each stage when the version was (last) submitted."""

    finance: str
    technical: str
    executive: str

    def for_stage(self, stage: ApprovalStage) -> str:
        """The user id assigned to `stage`."""
        return {
            ApprovalStage.FINANCE_REVIEW: self.finance,
            ApprovalStage.TECHNICAL_REVIEW: self.technical,
            ApprovalStage.FINAL_SIGN_OFF: self.executive,
        }[stage]


class StageSignOff(msgspec.Struct, frozen=True, kw_only=True):
    """One stage approved in the running (or last) approval round."""

    stage: ApprovalStage
    by: str
    at: datetime


class ChangeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Which stage sent the version back to draft, who, when and why."""

    stage: ApprovalStage
    by: str
    reason_sealed: str
    at: datetime


class DefinitionVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One version: its content and hash, and where its approval stands.

    `stage` is set only while `status` is IN_REVIEW. `approvers` are those of the latest
    submission (kept after it ends, for display); `sign_offs` the stages approved in the latest
    round, cleared by a new submission. `changes_requested` is the latest request for changes
    on this version, kept after a resubmission so the reviewers can read it.
    """

    number: int
    content: DefinitionContent
    content_hash: str
    status: VersionStatus
    drafted_at: datetime
    drafted_by: str
    stage: ApprovalStage | None = None
    approvers: Approvers | None = None
    sign_offs: tuple[StageSignOff, ...] = ()
    changes_requested: ChangeRequest | None = None
    approved_at: datetime | None = None
    superseded_at: datetime | None = None

    @property
    def current_approver(self) -> str | None:
        """The user id who may act now, while the version's approval is running."""
        if self.stage is None or self.approvers is None:
            return None
        return self.approvers.for_stage(self.stage)

    @property
    def current_role(self) -> Role | None:
        """The role the current stage's approver must hold."""
        return None if self.stage is None else STAGE_ROLES[self.stage]


class DefinitionState(msgspec.Struct, frozen=True, kw_only=True):
    """One definition of one customer: all its versions, numbered from 1, in order."""

    customer_id: str = ""
    definition_id: str = ""
    versions: tuple[DefinitionVersion, ...] = ()
    in_force_version: int | None = None

    @property
    def exists(self) -> bool:
        """Whether the definition has been drafted."""
        return bool(self.versions)

    @property
    def latest(self) -> DefinitionVersion | None:
        """The newest version, the only one that can be submitted or revised from."""
        return self.versions[-1] if self.versions else None

    @property
    def in_force(self) -> DefinitionVersion | None:
        """The approved version in force, if any: the one value calculations use."""
        if self.in_force_version is None:
            return None
        return self.versions[self.in_force_version - 1]

    @property
    def under_review(self) -> DefinitionVersion | None:
        """The version whose approval is running, if any (only ever the latest)."""
        latest = self.latest
        if latest is None or latest.status is not VersionStatus.IN_REVIEW:
            return None
        return latest

    def version(self, number: int) -> DefinitionVersion | None:
        """The version numbered `number`, or None."""
        if 1 <= number <= len(self.versions):
            return self.versions[number - 1]
        return None

    def statuses(self) -> Mapping[int, VersionStatus]:
        """Each version's status, by number."""
        return {version.number: version.status for version in self.versions}


initial_state: Final = DefinitionState()
"""A definition not drafted yet."""
