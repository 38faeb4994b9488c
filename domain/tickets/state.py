"""A support ticket as its events leave it: what deciding the next command needs to know, and
the times read models such as "time to resolve" start from."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from domain.roles import Role
from domain.tickets.events import TicketPriority, TicketSide, TicketStatus


class TicketMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the conversation: who wrote it, for which side, and when.

    The sealed body stays in the ledger's event; no rule needs it, so the state does not
    carry it.
    """

    message_id: str
    side: TicketSide
    author: str
    author_role: Role
    posted_at: datetime


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """The ticket entered `status` at `changed_at`; `previous_status` is None for the opening."""

    previous_status: TicketStatus | None
    status: TicketStatus
    changed_at: datetime
    changed_by: str
    changed_by_role: Role


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    """The ticket's current state; `status` is None until it is opened.

    `messages` keeps every message in the order posted, keyed by message id (ids are never
    reused); `status_changes` lists every status the ticket entered, the opening first, so
    `status_changes[-1].status == status` once it is opened. Both are replaced, never changed
    in place, by `evolve`.
    """

    status: TicketStatus | None = None
    ticket_id: str = ""
    customer_id: str = ""
    subject_sealed: str = ""
    body_sealed: str = ""
    priority: TicketPriority = TicketPriority.NORMAL
    opened_at: datetime | None = None
    opened_by: str = ""
    opened_by_role: Role | None = None
    opened_by_side: TicketSide | None = None
    assignee: str | None = None
    resolution_sealed: str | None = None
    """The note of the current resolution: set while resolved or closed, None otherwise."""
    messages: Mapping[str, TicketMessage] = msgspec.field(default_factory=dict)
    status_changes: tuple[StatusChange, ...] = ()

    def entered_at(self, status: TicketStatus) -> datetime | None:
        """When the ticket last entered `status`, or None if it never did."""
        times = [change.changed_at for change in self.status_changes if change.status == status]
        return times[-1] if times else None


def initial_state() -> Ticket:
    """The state before any event: a ticket that is not opened yet."""
    return Ticket()
