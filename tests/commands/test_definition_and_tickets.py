"""Definitions and tickets through their handlers: the facts they read from other streams.

A definition's formula is checked against the metrics and baselines the setup wizard recorded,
its approvers against the customer's users as they are now, and the approval receipt in the
ledger names the content hash an auditor can recompute from the drafted version's receipt. A
ticket stops a revoked user and assigns only to vendor staff.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from commands.customer import handle_customer
from commands.definition import handle_definition
from commands.streams import definition_stream, ticket_stream
from commands.tickets import handle_ticket
from domain import customer, definition, tickets
from domain.definition import content_hash
from domain.roles import Role
from eventstore.store import EventStore
from tests.commands.journey import (
    STAFF,
    START,
    approve,
    assert_chain_verifies,
    complete_setup,
    draft,
    register_with_team,
)


async def test_a_formula_over_metrics_the_setup_never_mapped_is_refused(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    with pytest.raises(definition.DefinitionError, match="metric"):
        await handle_definition(store, draft(tenant, "value"))
    assert await store.read_stream(definition_stream(tenant, "value")) == []


async def test_the_approval_receipt_names_the_hash_of_the_drafted_content(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    await complete_setup(store, tenant)
    drafted = await handle_definition(store, draft(tenant, "value"))
    state = await approve(store, tenant, "value", 1)

    records = await store.read_stream(definition_stream(tenant, "value"))
    assert [record.type for record in records] == [
        "DefinitionDrafted",
        "DefinitionSubmitted",
        "StageApproved",
        "StageApproved",
        "DefinitionApproved",
    ]
    stored_content = records[0].data["content"]
    recomputed = content_hash(msgspec.convert(stored_content, definition.DefinitionContent))
    assert records[-1].data["content_hash"] == recomputed == records[0].data["content_hash"]
    assert drafted.recorded[0].meta["actor"] == {"user": "fay", "role": "FINANCE"}
    assert state.in_force is not None
    assert state.in_force.number == 1
    await assert_chain_verifies(store, tenant)


async def test_an_approver_who_lost_the_role_can_no_longer_approve(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    await complete_setup(store, tenant)
    await handle_definition(store, draft(tenant, "value"))
    await handle_definition(
        store,
        definition.SubmitForApproval(
            customer_id=tenant,
            definition_id="value",
            version=1,
            finance_approver="fay",
            technical_approver="tom",
            executive="cara",
            at=START,
            by="fay",
            by_role=Role.FINANCE,
        ),
    )
    await handle_customer(
        store,
        customer.ChangeUserRole(
            customer_id=tenant,
            user_id="fay",
            role=Role.TECHNICAL,
            at=START,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    with pytest.raises(definition.DefinitionError):
        await handle_definition(
            store,
            definition.ApproveStage(
                customer_id=tenant,
                definition_id="value",
                version=1,
                stage=definition.ApprovalStage.FINANCE_REVIEW,
                at=START,
                by="fay",
                by_role=Role.FINANCE,
            ),
        )
    assert len(await store.read_stream(definition_stream(tenant, "value"))) == 2


async def test_a_suspended_customer_cannot_change_definitions(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    await complete_setup(store, tenant)
    await handle_customer(
        store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="contract ended", at=START, by=STAFF, by_role=Role.ADMIN
        ),
    )
    with pytest.raises(customer.CustomerSuspendedError):
        await handle_definition(store, draft(tenant, "value"))


def _open(tenant: str, by: str, role: Role) -> tickets.OpenTicket:
    return tickets.OpenTicket(
        ticket_id="t-1",
        customer_id=tenant,
        subject_sealed="sealed-subject",
        body_sealed="sealed-body",
        priority=tickets.TicketPriority("high"),
        at=START,
        by=by,
        by_role=role,
    )


async def test_tickets_stop_revoked_users_and_go_only_to_vendor_staff(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    staff = frozenset({STAFF, "staff-2"})
    opened = await handle_ticket(
        store, tenant, _open(tenant, "tom", Role.TECHNICAL), vendor_staff=staff
    )
    assert opened.state.status is not None
    with pytest.raises(tickets.TicketError):
        await handle_ticket(
            store,
            tenant,
            tickets.AssignTicket(
                ticket_id="t-1", assignee="tom", at=START, by=STAFF, by_role=Role.ADMIN
            ),
            vendor_staff=staff,
        )
    assigned = await handle_ticket(
        store,
        tenant,
        tickets.AssignTicket(
            ticket_id="t-1", assignee="staff-2", at=START, by=STAFF, by_role=Role.ADMIN
        ),
        vendor_staff=staff,
    )
    assert assigned.state.assignee == "staff-2"
    recorded = len(await store.read_stream(ticket_stream(tenant, "t-1")))

    await handle_customer(
        store,
        customer.RevokeUserAccess(
            customer_id=tenant, user_id="tom", at=START, by=STAFF, by_role=Role.ADMIN
        ),
    )
    with pytest.raises(tickets.TicketError):
        await handle_ticket(
            store,
            tenant,
            tickets.PostTicketMessage(
                ticket_id="t-1",
                message_id="m-1",
                body_sealed="sealed-message",
                at=START + timedelta(minutes=5),
                by="tom",
                by_role=Role.TECHNICAL,
            ),
            vendor_staff=staff,
        )
    assert len(await store.read_stream(ticket_stream(tenant, "t-1"))) == recorded


async def test_a_suspended_customer_can_still_reach_support(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant)
    await handle_customer(
        store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="unpaid invoice", at=START, by=STAFF, by_role=Role.ADMIN
        ),
    )
    outcome = await handle_ticket(
        store, tenant, _open(tenant, "cara", Role.CUSTOMER_ADMIN), vendor_staff=frozenset()
    )
    assert [record.type for record in outcome.recorded] == ["TicketOpened"]
    with pytest.raises(customer.CustomerNotRegisteredError):
        await handle_ticket(
            store,
            "nobody-" + tenant,
            _open(tenant, "cara", Role.CUSTOMER_ADMIN),
            vendor_staff=frozenset(),
        )
