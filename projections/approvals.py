"""The approvals queue: for each value definition, the approval of its latest version, and whose
turn it is (`approver`) since when (`waiting_since`).

One row per definition (only the latest version can be under review). While an approval runs,
`stage` and `approver` name the stage that waits and the user assigned to it; when it ends
(approved, sent back, voided by a new version) both are cleared and the row stays, so a
definition's row always shows its latest version. People appear by id, never by name.

Each row carries the chain seq of the last event applied to it (`last_seq`): an event at or
below it was applied already and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec
from msgspec.structs import replace

from domain.definition import (
    STAGES,
    ApprovalStage,
    ApprovalVoided,
    ChangesRequested,
    DefinitionApproved,
    DefinitionDrafted,
    DefinitionRevised,
    DefinitionSubmitted,
    StageApproved,
    VersionStatus,
)
from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View


class ApprovalRow(msgspec.Struct, frozen=True, kw_only=True):
    """`approvals`: a definition's latest version and the state of its approval."""

    tenant: str
    definition_id: str
    definition_name: str
    latest_version: int
    content_hash: str
    status: str
    version_in_review: int | None = None
    stage: str | None = None
    approver: str | None = None
    finance_approver: str | None = None
    technical_approver: str | None = None
    executive: str | None = None
    submitted_at: datetime | None = None
    submitted_by: str | None = None
    waiting_since: datetime | None = None
    in_force_version: int | None = None
    last_seq: int


APPROVALS: Final = Table(
    "approvals", ApprovalRow, key=("tenant", "definition_id"), key_types=("text", "text")
)

_EVENTS: Final = (
    DefinitionDrafted,
    DefinitionRevised,
    ApprovalVoided,
    DefinitionSubmitted,
    StageApproved,
    ChangesRequested,
    DefinitionApproved,
)


def _assigned(row: ApprovalRow, stage: ApprovalStage) -> str | None:
    """Who the latest submission assigned to `stage`."""
    return {
        ApprovalStage.FINANCE_REVIEW: row.finance_approver,
        ApprovalStage.TECHNICAL_REVIEW: row.technical_approver,
        ApprovalStage.FINAL_SIGN_OFF: row.executive,
    }[stage]


def _ended(row: ApprovalRow, status: VersionStatus, seq: int) -> ApprovalRow:
    """The row once its running approval stopped: nothing waits on anyone."""
    return replace(
        row,
        status=status.value,
        version_in_review=None,
        stage=None,
        approver=None,
        waiting_since=None,
        last_seq=seq,
    )


class ApprovalsQueue:
    """Projects `approvals`; see the module docstring."""

    name = "approvals"
    tables: tuple[Table[Any], ...] = (APPROVALS,)

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        if not isinstance(event, _EVENTS):
            return ()
        return ((APPROVALS, (record.tenant, event.definition_id)),)

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        if not isinstance(event, _EVENTS):
            return False
        tenant, seq = record.tenant, record.seq
        row = view.get(APPROVALS, (tenant, event.definition_id))
        if row is not None and row.last_seq >= seq:
            return False  # applied already
        match event:
            case DefinitionDrafted() | DefinitionRevised():
                row = ApprovalRow(
                    tenant=tenant,
                    definition_id=event.definition_id,
                    definition_name=event.content.name,
                    latest_version=event.version,
                    content_hash=event.content_hash,
                    status=VersionStatus.DRAFT.value,
                    in_force_version=None if row is None else row.in_force_version,
                    last_seq=seq,
                )
            case _:
                if row is None or row.latest_version != event.version:
                    return False  # about a version that is not the latest: nothing to show
                row = _approval_event(row, seq, event)
        view.put(APPROVALS, row)
        return True


def _approval_event(
    row: ApprovalRow,
    seq: int,
    event: ApprovalVoided
    | DefinitionSubmitted
    | StageApproved
    | ChangesRequested
    | DefinitionApproved,
) -> ApprovalRow:
    """The row after an event about its latest version's approval."""
    match event:
        case DefinitionSubmitted():
            return replace(
                row,
                status=VersionStatus.IN_REVIEW.value,
                version_in_review=event.version,
                stage=STAGES[0].value,
                approver=event.finance_approver,
                finance_approver=event.finance_approver,
                technical_approver=event.technical_approver,
                executive=event.executive,
                submitted_at=event.submitted_at,
                submitted_by=event.submitted_by,
                waiting_since=event.submitted_at,
                last_seq=seq,
            )
        case StageApproved():
            following = STAGES[min(STAGES.index(event.stage) + 1, len(STAGES) - 1)]
            return replace(
                row,
                stage=following.value,
                approver=_assigned(row, following),
                waiting_since=event.approved_at,
                last_seq=seq,
            )
        case ChangesRequested():
            return _ended(row, VersionStatus.DRAFT, seq)
        case ApprovalVoided():
            return _ended(row, VersionStatus.VOIDED, seq)
        case DefinitionApproved():
            return replace(_ended(row, VersionStatus.APPROVED, seq), in_force_version=event.version)
