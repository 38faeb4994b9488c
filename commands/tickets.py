"""Commands on a support ticket: open, message, assign, move through its statuses, reopen."""

from __future__ import annotations

from commands.aggregates import CUSTOMER, TICKET
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import customer_stream, tenant_of, ticket_stream
from domain import customer, tickets
from eventstore.store import EventStore


async def handle_ticket(
    store: EventStore,
    customer_id: str,
    command: tickets.Command,
    *,
    vendor_staff: frozenset[str],
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[tickets.Ticket, tickets.Event]:
    """Decide the command on the customer's ticket.

    A suspended customer can still reach support, so the account only has to be registered.
    `vendor_staff` lists the user ids of current vendor staff (ADMIN), who alone take tickets.
    """
    tenant = tenant_of(customer_id)

    async def decide(state: tickets.Ticket) -> list[tickets.Event]:
        account = (await load(store, CUSTOMER, customer_stream(tenant))).state
        customer.ensure_registered(customer_id, account)
        context = tickets.TicketContext(
            customer_id=customer_id,
            customer_users=account.roles_by_user(),
            vendor_staff=vendor_staff,
        )
        return tickets.decide(command, state, context)

    return await execute(
        store,
        TICKET,
        tenant=tenant,
        stream=ticket_stream(tenant, command.ticket_id),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
