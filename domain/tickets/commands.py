"""What can be asked of a support ticket, as the command layer hands it over.

Every command names its ticket (`ticket_id`), when it happens (`at`, timezone-aware), who asks
(`by`, a user id) and with which role (`by_role`, from the caller's verified token): the
application layer stamps them and makes the ids, so deciding never reads a clock or draws one.

Subjects, bodies, resolution notes and reopening reasons are free text written by a person, so
they arrive in fields ending in ``_sealed``: already encrypted by the command layer, opaque
here, only checked not to be blank and to fit the ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role
from domain.tickets.events import TicketPriority


class OpenTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="OpenTicket",
    tag_field="command",
):
    """Open a new ticket for `customer_id`, with its subject, first text and priority.

    The customer's users open tickets; vendor staff may open one on a customer's behalf.
    """

    ticket_id: str
    customer_id: str
    subject_sealed: str
    body_sealed: str
    priority: TicketPriority
    at: datetime
    by: str
    by_role: Role


class PostTicketMessage(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="PostTicketMessage",
    tag_field="command",
):
    """Add a message (`message_id`, made by the command layer) to the conversation."""

    ticket_id: str
    message_id: str
    body_sealed: str
    at: datetime
    by: str
    by_role: Role


class AssignTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="AssignTicket",
    tag_field="command",
):
    """Give the ticket to the vendor staff member `assignee` (a user id), or hand it over."""

    ticket_id: str
    assignee: str
    at: datetime
    by: str
    by_role: Role


class StartWorkOnTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="StartWorkOnTicket",
    tag_field="command",
):
    """Move an open ticket, or one waiting on the customer, to in_progress (vendor staff)."""

    ticket_id: str
    at: datetime
    by: str
    by_role: Role


class AwaitCustomerReply(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="AwaitCustomerReply",
    tag_field="command",
):
    """Mark a ticket in progress as waiting on the customer (vendor staff)."""

    ticket_id: str
    at: datetime
    by: str
    by_role: Role


class ResolveTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ResolveTicket",
    tag_field="command",
):
    """Mark the ticket resolved (vendor staff), saying how in a sealed resolution note."""

    ticket_id: str
    resolution_sealed: str
    at: datetime
    by: str
    by_role: Role


class CloseTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="CloseTicket",
    tag_field="command",
):
    """Close a resolved ticket: the customer confirms the resolution, or vendor staff close it."""

    ticket_id: str
    at: datetime
    by: str
    by_role: Role


class ReopenTicket(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ReopenTicket",
    tag_field="command",
):
    """Open a resolved or closed ticket again, saying why in a sealed reason."""

    ticket_id: str
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = (
    OpenTicket
    | PostTicketMessage
    | AssignTicket
    | StartWorkOnTicket
    | AwaitCustomerReply
    | ResolveTicket
    | CloseTicket
    | ReopenTicket
)

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads any ticket command from its JSON, dispatching on the ``command`` tag."""
