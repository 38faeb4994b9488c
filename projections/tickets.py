"""Support tickets, per customer and per assignee: status, priority, who has it, and the times
support is measured by (first response, resolution), without a word of the conversation.

Subjects, messages and notes are sealed personal data and are not kept; people appear by id.
`first_response_at` is when vendor staff first posted on the ticket; `first_resolved_at` when
it was first resolved (time to resolve), `resolved_at` the current resolution's time (cleared
by a reopening).

Each ticket row carries the chain seq of the last event applied to it (`last_seq`): an event
at or below it was applied already and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec
from msgspec.structs import replace

from domain.tickets import (
    TicketAssigned,
    TicketMessagePosted,
    TicketOpened,
    TicketReopened,
    TicketResolved,
    TicketSide,
    TicketStatus,
    TicketStatusChanged,
)
from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View


class TicketRow(msgspec.Struct, frozen=True, kw_only=True):
    """`tickets`: one support ticket."""

    tenant: str
    ticket_id: str
    priority: str
    status: str
    opened_side: str
    opened_at: datetime
    opened_by: str
    assignee: str | None = None
    assigned_at: datetime | None = None
    messages: int = 0
    last_message_at: datetime | None = None
    first_response_at: datetime | None = None
    status_changed_at: datetime
    first_resolved_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    reopened: int = 0
    last_seq: int


TICKETS: Final = Table(
    "tickets", TicketRow, key=("tenant", "ticket_id"), key_types=("text", "text")
)

_EVENTS: Final = (
    TicketOpened,
    TicketMessagePosted,
    TicketAssigned,
    TicketStatusChanged,
    TicketResolved,
    TicketReopened,
)


class SupportTickets:
    """Projects `tickets`; see the module docstring."""

    name = "tickets"
    tables: tuple[Table[Any], ...] = (TICKETS,)

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        if not isinstance(event, _EVENTS):
            return ()
        return ((TICKETS, (record.tenant, event.ticket_id)),)

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        if not isinstance(event, _EVENTS):
            return False
        tenant, seq = record.tenant, record.seq
        row = view.get(TICKETS, (tenant, event.ticket_id))
        if row is not None and row.last_seq >= seq:
            return False  # applied already
        match event:
            case TicketOpened():
                row = TicketRow(
                    tenant=tenant,
                    ticket_id=event.ticket_id,
                    priority=event.priority.value,
                    status=TicketStatus.OPEN.value,
                    opened_side=event.side.value,
                    opened_at=event.opened_at,
                    opened_by=event.opened_by,
                    status_changed_at=event.opened_at,
                    last_seq=seq,
                )
            case _:
                if row is None:
                    return False  # a ticket never opened: nothing to show
                row = replace(_changed(row, event), last_seq=seq)
        view.put(TICKETS, row)
        return True


def _changed(
    row: TicketRow,
    event: TicketMessagePosted
    | TicketAssigned
    | TicketStatusChanged
    | TicketResolved
    | TicketReopened,
) -> TicketRow:
    """The ticket after an event on an opened ticket."""
    match event:
        case TicketMessagePosted():
            first_response = row.first_response_at
            if first_response is None and event.side is TicketSide.VENDOR:
                first_response = event.posted_at
            return replace(
                row,
                messages=row.messages + 1,
                last_message_at=event.posted_at,
                first_response_at=first_response,
            )
        case TicketAssigned():
            return replace(row, assignee=event.assignee, assigned_at=event.assigned_at)
        case TicketStatusChanged():
            closed = event.changed_at if event.status is TicketStatus.CLOSED else row.closed_at
            return replace(
                row,
                status=event.status.value,
                status_changed_at=event.changed_at,
                closed_at=closed,
            )
        case TicketResolved():
            return replace(
                row,
                status=TicketStatus.RESOLVED.value,
                status_changed_at=event.resolved_at,
                first_resolved_at=row.first_resolved_at or event.resolved_at,
                resolved_at=event.resolved_at,
            )
        case TicketReopened():
            return replace(
                row,
                status=TicketStatus.OPEN.value,
                status_changed_at=event.reopened_at,
                resolved_at=None,
                closed_at=None,
                reopened=row.reopened + 1,
            )
