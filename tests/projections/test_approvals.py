"""The approvals queue: what waits for each approver and since when, as a version moves through
its stages, is sent back, resubmitted, and voided by a new version."""

from __future__ import annotations

from datetime import timedelta

import pytest

from commands.definition import handle_definition
from domain.definition import ApprovalStage, DefinitionDrafted
from eventstore.store import EventStore
from projections.approvals import ApprovalsQueue
from projections.queries import InvalidCursorError, WaitingApproval, approvals_queue
from tests.commands.journey import START, complete_setup, draft, register_with_team
from tests.projections.scenes import (
    approve_stage,
    catch_up,
    request_changes,
    revise,
    submit,
)

HOUR = timedelta(hours=1)
QUEUE = ApprovalsQueue()


async def _waiting(store: EventStore, tenant: str, approver: str) -> list[tuple[str, int, str]]:
    await catch_up(store, QUEUE)
    page = await approvals_queue(store.pool, approver, tenant=tenant)
    return [(item.definition_id, item.version, item.stage) for item in page.items]


async def test_each_stage_waits_for_its_approver_from_the_moment_it_opens(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    [drafted] = (await handle_definition(store, draft(tenant, "value", at=START))).events
    assert isinstance(drafted, DefinitionDrafted)
    await submit(store, tenant, "value", 1, START + HOUR)
    await catch_up(store, QUEUE)

    fays = await approvals_queue(store.pool, "fay", tenant=tenant)
    assert fays.items == [
        WaitingApproval(
            tenant=tenant,
            definition_id="value",
            definition_name="Value delivered",
            version=1,
            content_hash=drafted.content_hash,
            stage="FINANCE_REVIEW",
            waiting_since=START + HOUR,
            submitted_at=START + HOUR,
            submitted_by="fay",
        )
    ]
    assert fays.next_after is None
    assert await _waiting(store, tenant, "tom") == []

    await approve_stage(store, tenant, "value", 1, ApprovalStage.FINANCE_REVIEW, START + 2 * HOUR)
    assert await _waiting(store, tenant, "fay") == []
    [toms] = (await approvals_queue(store.pool, "tom", tenant=tenant)).items
    assert (toms.stage, toms.waiting_since, toms.submitted_at) == (
        "TECHNICAL_REVIEW",
        START + 2 * HOUR,
        START + HOUR,
    )

    await request_changes(
        store, tenant, "value", 1, ApprovalStage.TECHNICAL_REVIEW, START + 3 * HOUR
    )
    assert await _waiting(store, tenant, "tom") == []

    await submit(store, tenant, "value", 1, START + 4 * HOUR)  # again, as it is
    assert await _waiting(store, tenant, "fay") == [("value", 1, "FINANCE_REVIEW")]

    await revise(store, tenant, "value", 1, START + 5 * HOUR)  # voids the running approval
    assert await _waiting(store, tenant, "fay") == []

    await submit(store, tenant, "value", 2, START + 6 * HOUR)
    for stage in (ApprovalStage.FINANCE_REVIEW, ApprovalStage.TECHNICAL_REVIEW):
        await approve_stage(store, tenant, "value", 2, stage, START + 7 * HOUR)
    assert await _waiting(store, tenant, "cara") == [("value", 2, "FINAL_SIGN_OFF")]
    await approve_stage(store, tenant, "value", 2, ApprovalStage.FINAL_SIGN_OFF, START + 8 * HOUR)
    assert await _waiting(store, tenant, "cara") == []

    row = await store.pool.fetchrow(
        "SELECT latest_version, status, in_force_version, stage, approver"
        " FROM read_models.approvals WHERE tenant = $1 AND definition_id = 'value'",
        tenant,
    )
    assert row is not None
    assert tuple(row) == (2, "APPROVED", 2, None, None)


async def test_the_queue_pages_longest_waiting_first(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    # Drafted in one order, submitted at times in another: the queue follows the times.
    for definition_id, hours in (("late", 3), ("early", 1), ("middle", 2)):
        await handle_definition(store, draft(tenant, definition_id, at=START))
        await submit(store, tenant, definition_id, 1, START + hours * HOUR)
    await catch_up(store, QUEUE)

    seen: list[str] = []
    after = None
    for _ in range(3):
        page = await approvals_queue(store.pool, "fay", tenant=tenant, after=after, limit=2)
        seen += [item.definition_id for item in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["early", "middle", "late"]
    assert (await approvals_queue(store.pool, "fay", tenant=f"{tenant}-other")).items == []
    with pytest.raises(InvalidCursorError):
        await approvals_queue(store.pool, "fay", tenant=tenant, after="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        await approvals_queue(store.pool, "fay", limit=0)
