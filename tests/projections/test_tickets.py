"""Support tickets per customer and per assignee: statuses, the times support is measured by,
and paging; no sealed text is kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain import tickets
from domain.roles import Role
from eventstore.store import EventStore
from projections.queries import TicketEntry, tickets_for_assignee, tickets_for_customer
from projections.tickets import SupportTickets
from tests.commands.journey import STAFF, START, TEAM, register_with_team
from tests.projections.scenes import catch_up, ticket

HOUR = timedelta(hours=1)
TICKETS = SupportTickets()


def _open(
    tenant: str, ticket_id: str, by: str, role: Role, priority: str, hours: int
) -> tickets.OpenTicket:
    return tickets.OpenTicket(
        ticket_id=ticket_id,
        customer_id=tenant,
        subject_sealed="sealed-subject",
        body_sealed="sealed-body",
        priority=tickets.TicketPriority(priority),
        at=START + hours * HOUR,
        by=by,
        by_role=role,
    )


def _by(user: str, hours: int) -> dict[str, Any]:
    """When and by whom: vendor staff act as ADMIN, the customer's users in their roles."""
    role = TEAM.get(user, Role.ADMIN)
    return {"at": START + hours * HOUR, "by": user, "by_role": role}


async def test_tickets_per_customer_and_per_assignee(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant, START)
    commands: list[tickets.Command] = [
        _open(tenant, "t-1", "tom", Role.TECHNICAL, "high", 0),
        _open(tenant, "t-2", "cara", Role.CUSTOMER_ADMIN, "normal", 1),
        _open(tenant, "t-3", STAFF, Role.ADMIN, "low", 2),
        tickets.AssignTicket(ticket_id="t-1", assignee="staff-2", **_by(STAFF, 3)),
        tickets.PostTicketMessage(
            ticket_id="t-1", message_id="m-1", body_sealed="sealed", **_by("staff-2", 4)
        ),
        tickets.AwaitCustomerReply(ticket_id="t-1", **_by("staff-2", 5)),
        tickets.PostTicketMessage(
            ticket_id="t-1", message_id="m-2", body_sealed="sealed", **_by("tom", 6)
        ),
        tickets.ResolveTicket(ticket_id="t-1", resolution_sealed="sealed", **_by("staff-2", 7)),
        tickets.CloseTicket(ticket_id="t-1", **_by("tom", 8)),
        tickets.ReopenTicket(ticket_id="t-1", reason_sealed="sealed", **_by("tom", 9)),
        tickets.AssignTicket(ticket_id="t-2", assignee="staff-2", **_by(STAFF, 10)),
    ]
    for command in commands:
        await ticket(store, tenant, command)
    await catch_up(store, TICKETS)

    page = await tickets_for_customer(store.pool, tenant)

    assert page.next_after is None
    assert page.items == [
        TicketEntry(
            tenant=tenant,
            ticket_id="t-3",
            priority="low",
            status="open",
            opened_side="vendor",
            opened_at=START + 2 * HOUR,
            opened_by=STAFF,
            assignee=None,
            assigned_at=None,
            messages=0,
            last_message_at=None,
            first_response_at=None,
            status_changed_at=START + 2 * HOUR,
            first_resolved_at=None,
            resolved_at=None,
            closed_at=None,
            reopened=0,
        ),
        TicketEntry(
            tenant=tenant,
            ticket_id="t-2",
            priority="normal",
            status="in_progress",
            opened_side="customer",
            opened_at=START + HOUR,
            opened_by="cara",
            assignee="staff-2",
            assigned_at=START + 10 * HOUR,
            messages=0,
            last_message_at=None,
            first_response_at=None,
            status_changed_at=START + 10 * HOUR,
            first_resolved_at=None,
            resolved_at=None,
            closed_at=None,
            reopened=0,
        ),
        TicketEntry(
            tenant=tenant,
            ticket_id="t-1",
            priority="high",
            status="open",
            opened_side="customer",
            opened_at=START,
            opened_by="tom",
            assignee="staff-2",
            assigned_at=START + 3 * HOUR,
            messages=2,
            last_message_at=START + 6 * HOUR,
            first_response_at=START + 4 * HOUR,
            status_changed_at=START + 9 * HOUR,
            first_resolved_at=START + 7 * HOUR,
            resolved_at=None,
            closed_at=None,
            reopened=1,
        ),
    ]

    async def ids(assignee: str = "staff-2", status: str | None = None) -> list[str]:
        found = await tickets_for_assignee(store.pool, assignee, tenant=tenant, status=status)
        return [entry.ticket_id for entry in found.items]

    assert await ids() == ["t-1", "t-2"]
    assert await ids(status="in_progress") == ["t-2"]
    assert await ids(status="unresolved") == ["t-1", "t-2"]
    assert await ids(assignee=STAFF) == []
    customer_open = await tickets_for_customer(store.pool, tenant, status="open")
    assert [entry.ticket_id for entry in customer_open.items] == ["t-3", "t-1"]

    first = await tickets_for_assignee(store.pool, "staff-2", tenant=tenant, limit=1)
    assert [entry.ticket_id for entry in first.items] == ["t-1"]
    assert first.next_after is not None
    second = await tickets_for_assignee(
        store.pool, "staff-2", tenant=tenant, after=first.next_after, limit=1
    )
    assert [entry.ticket_id for entry in second.items] == ["t-2"]
    assert second.next_after is None
    newest = await tickets_for_customer(store.pool, tenant, limit=1)
    assert newest.next_after is not None
    earlier = await tickets_for_customer(store.pool, tenant, after=newest.next_after)
    assert [entry.ticket_id for entry in earlier.items] == ["t-2", "t-1"]
