"""What happened to a support ticket, as it is kept in the ledger.

Tags are explicit and stable (never class or module names), so a class can be renamed without
touching stored bytes. Every event ends with `schema`; a field added later gets a default, and
a breaking change gets a new event type or an upcaster instead. `*_by` is the acting user's id
and `*_by_role` the role they acted in; `side` says whether a person wrote as the customer or
as vendor staff, so the conversation reads the same even if roles are renamed later.

Fields ending in ``_sealed`` hold free text written by a person, already encrypted by the
command layer: opaque here, so erasing a person means destroying their key, not rewriting the
ledger.

Every change of status is recorded with the status it left (`previous_status`), so "time to
resolve" and similar read models can be built from these events alone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class TicketStatus(StrEnum):
    """Where a ticket is in its life; the values are the stored text."""

    OPEN = "open"
    """Opened or reopened, and nobody has started on it yet."""
    IN_PROGRESS = "in_progress"
    """Vendor staff are working on it."""
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    """Vendor staff need an answer from the customer before they can go on."""
    RESOLVED = "resolved"
    """Vendor staff consider it solved; the customer may confirm (close) or reopen it."""
    CLOSED = "closed"
    """Finished: nothing more happens to it unless it is reopened."""


class TicketPriority(StrEnum):
    """How urgent the customer says the ticket is; the values are the stored text."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketSide(StrEnum):
    """Who a person acts for on a ticket: the customer, or the vendor (ADMIN, vendor staff)."""

    CUSTOMER = "customer"
    VENDOR = "vendor"


class TicketOpened(msgspec.Struct, frozen=True, kw_only=True, tag="TicketOpened", tag_field="type"):
    """A ticket was opened for a customer; its status is now ``open``."""

    ticket_id: str
    customer_id: str
    subject_sealed: str
    body_sealed: str
    priority: TicketPriority
    side: TicketSide
    opened_at: datetime
    opened_by: str
    opened_by_role: Role
    schema: int = 1


class TicketMessagePosted(
    msgspec.Struct, frozen=True, kw_only=True, tag="TicketMessagePosted", tag_field="type"
):
    """Someone from `side` added a message to the ticket's conversation."""

    ticket_id: str
    message_id: str
    body_sealed: str
    side: TicketSide
    posted_at: datetime
    posted_by: str
    posted_by_role: Role
    schema: int = 1


class TicketAssigned(
    msgspec.Struct, frozen=True, kw_only=True, tag="TicketAssigned", tag_field="type"
):
    """The ticket was given to a vendor staff member; `previous_assignee` is who had it, if
    anyone, so a handover reads alone."""

    ticket_id: str
    assignee: str
    previous_assignee: str | None = None
    assigned_at: datetime
    assigned_by: str
    assigned_by_role: Role
    schema: int = 1


class TicketStatusChanged(
    msgspec.Struct, frozen=True, kw_only=True, tag="TicketStatusChanged", tag_field="type"
):
    """The ticket moved from `previous_status` to `status`, by a step that carries no text.

    Recorded for: open -> in_progress (vendor staff started work, or assigned the ticket),
    waiting_on_customer -> in_progress (the customer posted a message, recorded just before,
    or vendor staff started work again), in_progress -> waiting_on_customer, and
    resolved -> closed. Resolving and reopening have events of their own, as they carry text.
    """

    ticket_id: str
    previous_status: TicketStatus
    status: TicketStatus
    changed_at: datetime
    changed_by: str
    changed_by_role: Role
    schema: int = 1


class TicketResolved(
    msgspec.Struct, frozen=True, kw_only=True, tag="TicketResolved", tag_field="type"
):
    """Vendor staff resolved the ticket (status ``resolved``), with a sealed resolution note."""

    ticket_id: str
    previous_status: TicketStatus
    resolution_sealed: str
    resolved_at: datetime
    resolved_by: str
    resolved_by_role: Role
    schema: int = 1


class TicketReopened(
    msgspec.Struct, frozen=True, kw_only=True, tag="TicketReopened", tag_field="type"
):
    """A resolved or closed ticket was opened again (status ``open``), with a sealed reason."""

    ticket_id: str
    previous_status: TicketStatus
    reason_sealed: str
    reopened_at: datetime
    reopened_by: str
    reopened_by_role: Role
    schema: int = 1


Event: TypeAlias = (
    TicketOpened
    | TicketMessagePosted
    | TicketAssigned
    | TicketStatusChanged
    | TicketResolved
    | TicketReopened
)

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes any ticket event from JSON by its ``type`` tag; built once, as msgspec advises."""
