"""Support tickets: one stream per ticket, a conversation between a customer and vendor staff.

A customer's current users (CUSTOMER_ADMIN, FINANCE, TECHNICAL), or vendor staff (ADMIN) on
the customer's behalf, open a ticket with a sealed subject and body and a priority (low,
normal, high, urgent). Both sides post messages; only vendor staff assign a ticket, and only
to current vendor staff (a reassignment records who had it). The status goes open ->
in_progress -> waiting_on_customer -> resolved -> closed along the table in `decider`: vendor
staff start work (assigning an open ticket starts it too), wait on the customer and resolve
with a sealed note; a customer's message on a ticket waiting on them puts it back in progress;
the customer confirms (closes) a resolved ticket, or vendor staff close it; either side
reopens a resolved or closed ticket with a sealed reason. A closed ticket takes nothing else.

Who the customer's current users are, and who is vendor staff, are facts from other streams:
they come in a `TicketContext`, so a revoked user or a former staff member is refused even with
a token that is still valid. Free text arrives sealed, in fields ending in ``_sealed``.
"""

from __future__ import annotations

from domain.roles import Role
from domain.tickets.commands import (
    COMMAND_DECODER,
    AssignTicket,
    AwaitCustomerReply,
    CloseTicket,
    Command,
    OpenTicket,
    PostTicketMessage,
    ReopenTicket,
    ResolveTicket,
    StartWorkOnTicket,
)
from domain.tickets.decider import (
    CUSTOMER_SIDE_ROLES,
    MAX_ID_LENGTH,
    MAX_SEALED_TEXT_LENGTH,
    MAX_SUBJECT_SEALED_LENGTH,
    TRANSITIONS,
    TicketContext,
    Transition,
    decide,
    evolve,
    next_steps,
)
from domain.tickets.errors import (
    AssigneeUnchangedError,
    DuplicateMessageError,
    InvalidAssigneeError,
    InvalidTicketFieldError,
    NotAuthorizedError,
    StatusTransitionError,
    TicketAlreadyOpenedError,
    TicketClosedError,
    TicketError,
    TicketMismatchError,
    TicketNotOpenedError,
)
from domain.tickets.events import (
    EVENT_DECODER,
    Event,
    TicketAssigned,
    TicketMessagePosted,
    TicketOpened,
    TicketPriority,
    TicketReopened,
    TicketResolved,
    TicketSide,
    TicketStatus,
    TicketStatusChanged,
)
from domain.tickets.state import StatusChange, Ticket, TicketMessage, initial_state

__all__ = [
    "COMMAND_DECODER",
    "CUSTOMER_SIDE_ROLES",
    "EVENT_DECODER",
    "MAX_ID_LENGTH",
    "MAX_SEALED_TEXT_LENGTH",
    "MAX_SUBJECT_SEALED_LENGTH",
    "TRANSITIONS",
    "AssignTicket",
    "AssigneeUnchangedError",
    "AwaitCustomerReply",
    "CloseTicket",
    "Command",
    "DuplicateMessageError",
    "Event",
    "InvalidAssigneeError",
    "InvalidTicketFieldError",
    "NotAuthorizedError",
    "OpenTicket",
    "PostTicketMessage",
    "ReopenTicket",
    "ResolveTicket",
    "Role",
    "StartWorkOnTicket",
    "StatusChange",
    "StatusTransitionError",
    "Ticket",
    "TicketAlreadyOpenedError",
    "TicketAssigned",
    "TicketClosedError",
    "TicketContext",
    "TicketError",
    "TicketMessage",
    "TicketMessagePosted",
    "TicketMismatchError",
    "TicketNotOpenedError",
    "TicketOpened",
    "TicketPriority",
    "TicketReopened",
    "TicketResolved",
    "TicketSide",
    "TicketStatus",
    "TicketStatusChanged",
    "Transition",
    "decide",
    "evolve",
    "initial_state",
    "next_steps",
]
