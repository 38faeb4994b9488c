"""The support ticket's rules: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor and every id come on the command, and the facts about
people come in a `TicketContext` the command layer builds from freshly loaded streams, so
deciding again from the same events, command and context gives the same events.

Who may act:
- The customer's side is any current user of the ticket's customer acting in the role they
  hold now (CUSTOMER_ADMIN, FINANCE or TECHNICAL): a revoked user, or one whose role changed
  since their token was issued, is refused. The vendor's side is ADMIN (vendor staff), who must
  be current vendor staff and may act on any customer's tickets.
- Either side opens a ticket (vendor staff on a customer's behalf), posts messages, closes a
  resolved ticket (for the customer that confirms the resolution) and reopens one.
- Only vendor staff assign (only to current vendor staff; reassigning records who had it),
  start work, await the customer's reply and resolve.

The status machine (`TRANSITIONS`; anything else is refused naming the current status and
the steps it allows):

    from                 to                   by
    (new)                open                 either side, opening it
    open                 in_progress          vendor staff: assigning it, or starting work
    open                 resolved             vendor staff, with a resolution note
    in_progress          waiting_on_customer  vendor staff
    in_progress          resolved             vendor staff, with a resolution note
    waiting_on_customer  in_progress          the customer posting a message (automatic), or
                                              vendor staff starting work again
    waiting_on_customer  resolved             vendor staff, with a resolution note
    resolved             closed               the customer confirming, or vendor staff
    resolved             open                 either side reopening it, with a reason
    closed               open                 either side reopening it, with a reason

Other rules:
- A closed ticket takes no messages and no assignments: reopen it first. Messages are accepted
  in every other status and change it only in the automatic case above.
- Assigning an open ticket also moves it to in_progress (two events, the assignment first);
  assigning it in any other status leaves the status as it is.
- Message ids are never reused within a ticket.
- Sealed texts must not be blank; subjects are at most `MAX_SUBJECT_SEALED_LENGTH` characters
  and every other sealed text at most `MAX_SEALED_TEXT_LENGTH` (ciphertext is longer than the
  text it seals). Ids are not blank and at most `MAX_ID_LENGTH` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, NamedTuple, assert_never

import msgspec

from domain.roles import Role
from domain.tickets.commands import (
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
from domain.tickets.errors import (
    AssigneeUnchangedError,
    DuplicateMessageError,
    InvalidAssigneeError,
    InvalidTicketFieldError,
    NotAuthorizedError,
    StatusTransitionError,
    TicketAlreadyOpenedError,
    TicketClosedError,
    TicketMismatchError,
    TicketNotOpenedError,
)
from domain.tickets.events import (
    Event,
    TicketAssigned,
    TicketMessagePosted,
    TicketOpened,
    TicketReopened,
    TicketResolved,
    TicketSide,
    TicketStatus,
    TicketStatusChanged,
)
from domain.tickets.state import StatusChange, Ticket, TicketMessage

MAX_SUBJECT_SEALED_LENGTH: Final = 2_000
"""Characters in a sealed subject."""
MAX_SEALED_TEXT_LENGTH: Final = 20_000
"""Characters in a sealed body, message, resolution note or reason."""
MAX_ID_LENGTH: Final = 200
"""Characters in a ticket, customer, message or user id."""

CUSTOMER_SIDE_ROLES: Final = frozenset({Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL})
"""The roles a customer's users act in; ADMIN is the vendor's side."""


class TicketContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who may act, as the command layer reads it from freshly loaded streams for each command.

    `customer_id` is the customer whose users are listed: the ticket's customer (for opening,
    the customer the command names). `customer_users` maps each CURRENT user of that customer to
    the role they hold now (from the customer account; revoked users are absent), and
    `vendor_staff` holds the user ids of current vendor staff (ADMIN). Plain data, no behaviour.
    """

    customer_id: str
    customer_users: Mapping[str, Role]
    vendor_staff: frozenset[str]


class Transition(NamedTuple):
    """One allowed change of status, and how a person makes it (for messages and docs)."""

    from_status: TicketStatus
    to_status: TicketStatus
    how: str


_RESOLVE: Final = "vendor staff resolve it with a resolution note"
_REOPEN: Final = "the customer or vendor staff reopen it with a reason"

TRANSITIONS: Final[tuple[Transition, ...]] = (
    Transition(
        TicketStatus.OPEN, TicketStatus.IN_PROGRESS, "vendor staff assign it or start work on it"
    ),
    Transition(TicketStatus.OPEN, TicketStatus.RESOLVED, _RESOLVE),
    Transition(
        TicketStatus.IN_PROGRESS,
        TicketStatus.WAITING_ON_CUSTOMER,
        "vendor staff await the customer's reply",
    ),
    Transition(TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED, _RESOLVE),
    Transition(
        TicketStatus.WAITING_ON_CUSTOMER,
        TicketStatus.IN_PROGRESS,
        "the customer posts a message, or vendor staff start work on it again",
    ),
    Transition(TicketStatus.WAITING_ON_CUSTOMER, TicketStatus.RESOLVED, _RESOLVE),
    Transition(
        TicketStatus.RESOLVED,
        TicketStatus.CLOSED,
        "the customer confirms the resolution, or vendor staff close it",
    ),
    Transition(TicketStatus.RESOLVED, TicketStatus.OPEN, _REOPEN),
    Transition(TicketStatus.CLOSED, TicketStatus.OPEN, _REOPEN),
)
"""Every change of status a ticket allows after it is opened; the module docstring says who."""

_ALLOWED: Final = frozenset((step.from_status, step.to_status) for step in TRANSITIONS)


def decide(command: Command, state: Ticket, context: TicketContext) -> list[Event]:  # noqa: PLR0911 (one return per kind of command)
    """The events the command makes happen, or a `TicketError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    _check_id("ticket_id", command.ticket_id)
    if isinstance(command, OpenTicket):
        return _open(command, state, context)
    status = _check_opened(command.ticket_id, state, context)
    side = _side_of(command.by, command.by_role, state.customer_id, context)
    match command:
        case PostTicketMessage():
            return _post(command, state, status, side)
        case AssignTicket():
            return _assign(command, state, status, context)
        case StartWorkOnTicket():
            _check_vendor(command.by_role, "start work on a ticket")
            _check_transition(state, status, TicketStatus.IN_PROGRESS, "have work started on it")
            return [_status_changed(command, status, TicketStatus.IN_PROGRESS)]
        case AwaitCustomerReply():
            _check_vendor(command.by_role, "mark a ticket as waiting on the customer")
            _check_transition(
                state, status, TicketStatus.WAITING_ON_CUSTOMER, "wait on the customer"
            )
            return [_status_changed(command, status, TicketStatus.WAITING_ON_CUSTOMER)]
        case ResolveTicket():
            return _resolve(command, state, status)
        case CloseTicket():
            _check_transition(state, status, TicketStatus.CLOSED, "be closed")
            return [_status_changed(command, status, TicketStatus.CLOSED)]
        case ReopenTicket():
            return _reopen(command, state, status)
        case _:
            assert_never(command)


def evolve(state: Ticket, event: Event) -> Ticket:
    """The state after the event; events are facts already decided, so nothing is refused."""
    match event:
        case TicketOpened():
            return Ticket(
                status=TicketStatus.OPEN,
                ticket_id=event.ticket_id,
                customer_id=event.customer_id,
                subject_sealed=event.subject_sealed,
                body_sealed=event.body_sealed,
                priority=event.priority,
                opened_at=event.opened_at,
                opened_by=event.opened_by,
                opened_by_role=event.opened_by_role,
                opened_by_side=event.side,
                status_changes=(
                    StatusChange(
                        previous_status=None,
                        status=TicketStatus.OPEN,
                        changed_at=event.opened_at,
                        changed_by=event.opened_by,
                        changed_by_role=event.opened_by_role,
                    ),
                ),
            )
        case TicketMessagePosted():
            message = TicketMessage(
                message_id=event.message_id,
                side=event.side,
                author=event.posted_by,
                author_role=event.posted_by_role,
                posted_at=event.posted_at,
            )
            return msgspec.structs.replace(
                state, messages={**state.messages, event.message_id: message}
            )
        case TicketAssigned():
            return msgspec.structs.replace(state, assignee=event.assignee)
        case TicketStatusChanged():
            return _entered(
                state, event.status, event.changed_at, event.changed_by, event.changed_by_role
            )
        case TicketResolved():
            resolved = _entered(
                state,
                TicketStatus.RESOLVED,
                event.resolved_at,
                event.resolved_by,
                event.resolved_by_role,
            )
            return msgspec.structs.replace(resolved, resolution_sealed=event.resolution_sealed)
        case TicketReopened():
            reopened = _entered(
                state,
                TicketStatus.OPEN,
                event.reopened_at,
                event.reopened_by,
                event.reopened_by_role,
            )
            return msgspec.structs.replace(reopened, resolution_sealed=None)
        case _:
            assert_never(event)


def next_steps(status: TicketStatus) -> str:
    """The transitions allowed from `status`, as a refusal message lists them."""
    steps = [f"{step.to_status} ({step.how})" for step in TRANSITIONS if step.from_status == status]
    return "; ".join(steps)


def _entered(state: Ticket, status: TicketStatus, at: datetime, by: str, by_role: Role) -> Ticket:
    change = StatusChange(
        previous_status=state.status,
        status=status,
        changed_at=at,
        changed_by=by,
        changed_by_role=by_role,
    )
    return msgspec.structs.replace(
        state, status=status, status_changes=(*state.status_changes, change)
    )


def _open(command: OpenTicket, state: Ticket, context: TicketContext) -> list[Event]:
    if state.status is not None:
        raise TicketAlreadyOpenedError(
            f"ticket {state.ticket_id!r} is already opened; open a new ticket under a new ticket id"
        )
    _check_id("customer_id", command.customer_id)
    if context.customer_id != command.customer_id:
        raise TicketMismatchError(
            f"the command opens a ticket for customer {command.customer_id!r} but was decided "
            f"with the users of customer {context.customer_id!r}; load the users of the "
            "customer the command names"
        )
    side = _side_of(command.by, command.by_role, command.customer_id, context)
    _check_sealed("subject_sealed", command.subject_sealed, MAX_SUBJECT_SEALED_LENGTH)
    _check_sealed("body_sealed", command.body_sealed, MAX_SEALED_TEXT_LENGTH)
    return [
        TicketOpened(
            ticket_id=command.ticket_id,
            customer_id=command.customer_id,
            subject_sealed=command.subject_sealed,
            body_sealed=command.body_sealed,
            priority=command.priority,
            side=side,
            opened_at=command.at,
            opened_by=command.by,
            opened_by_role=command.by_role,
        )
    ]


def _post(
    command: PostTicketMessage, state: Ticket, status: TicketStatus, side: TicketSide
) -> list[Event]:
    _check_id("message_id", command.message_id)
    _check_sealed("body_sealed", command.body_sealed, MAX_SEALED_TEXT_LENGTH)
    earlier = state.messages.get(command.message_id)
    if earlier is not None:
        raise DuplicateMessageError(
            f"ticket {state.ticket_id!r} already has message {command.message_id!r} "
            f"(posted at {earlier.posted_at.isoformat()}); post a new message under a new "
            "message id"
        )
    _check_not_closed(state, status, "no messages can be posted on it")
    posted: list[Event] = [
        TicketMessagePosted(
            ticket_id=state.ticket_id,
            message_id=command.message_id,
            body_sealed=command.body_sealed,
            side=side,
            posted_at=command.at,
            posted_by=command.by,
            posted_by_role=command.by_role,
        )
    ]
    if side is TicketSide.CUSTOMER and status is TicketStatus.WAITING_ON_CUSTOMER:
        # The customer answered: the ticket is back with vendor staff.
        posted.append(_status_changed(command, status, TicketStatus.IN_PROGRESS))
    return posted


def _assign(
    command: AssignTicket, state: Ticket, status: TicketStatus, context: TicketContext
) -> list[Event]:
    _check_vendor(command.by_role, "assign tickets")
    _check_id("assignee", command.assignee)
    _check_not_closed(state, status, "it cannot be assigned")
    if command.assignee not in context.vendor_staff:
        raise InvalidAssigneeError(
            f"user {command.assignee!r} is not current vendor staff, so ticket "
            f"{state.ticket_id!r} cannot be assigned to them; assign it to a current vendor "
            "staff member (ADMIN)"
        )
    if command.assignee == state.assignee:
        raise AssigneeUnchangedError(
            f"ticket {state.ticket_id!r} is already assigned to {command.assignee!r}; "
            "nothing to change"
        )
    assigned: list[Event] = [
        TicketAssigned(
            ticket_id=state.ticket_id,
            assignee=command.assignee,
            previous_assignee=state.assignee,
            assigned_at=command.at,
            assigned_by=command.by,
            assigned_by_role=command.by_role,
        )
    ]
    if status is TicketStatus.OPEN:
        assigned.append(_status_changed(command, status, TicketStatus.IN_PROGRESS))
    return assigned


def _resolve(command: ResolveTicket, state: Ticket, status: TicketStatus) -> list[Event]:
    _check_vendor(command.by_role, "resolve tickets")
    _check_sealed("resolution_sealed", command.resolution_sealed, MAX_SEALED_TEXT_LENGTH)
    _check_transition(state, status, TicketStatus.RESOLVED, "be resolved")
    return [
        TicketResolved(
            ticket_id=state.ticket_id,
            previous_status=status,
            resolution_sealed=command.resolution_sealed,
            resolved_at=command.at,
            resolved_by=command.by,
            resolved_by_role=command.by_role,
        )
    ]


def _reopen(command: ReopenTicket, state: Ticket, status: TicketStatus) -> list[Event]:
    _check_sealed("reason_sealed", command.reason_sealed, MAX_SEALED_TEXT_LENGTH)
    _check_transition(state, status, TicketStatus.OPEN, "be reopened")
    return [
        TicketReopened(
            ticket_id=state.ticket_id,
            previous_status=status,
            reason_sealed=command.reason_sealed,
            reopened_at=command.at,
            reopened_by=command.by,
            reopened_by_role=command.by_role,
        )
    ]


def _status_changed(
    command: Command, previous: TicketStatus, status: TicketStatus
) -> TicketStatusChanged:
    return TicketStatusChanged(
        ticket_id=command.ticket_id,
        previous_status=previous,
        status=status,
        changed_at=command.at,
        changed_by=command.by,
        changed_by_role=command.by_role,
    )


def _check_stamp(at: datetime, by: str) -> None:
    """The application layer's stamp: a blank actor or a naive time would corrupt the trail."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidTicketFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    _check_id("by", by)


def _check_opened(ticket_id: str, state: Ticket, context: TicketContext) -> TicketStatus:
    """The ticket's status, once it is known to exist and to match the command and context."""
    if state.status is None:
        raise TicketNotOpenedError(f"ticket {ticket_id!r} is not opened; open it first")
    if ticket_id != state.ticket_id:
        raise TicketMismatchError(
            f"the command is for ticket {ticket_id!r} but was decided against ticket "
            f"{state.ticket_id!r}; load the ticket the command names"
        )
    if context.customer_id != state.customer_id:
        raise TicketMismatchError(
            f"ticket {state.ticket_id!r} belongs to customer {state.customer_id!r} but was "
            f"decided with the users of customer {context.customer_id!r}; load the users of "
            "the ticket's customer"
        )
    return state.status


def _side_of(by: str, by_role: Role, customer_id: str, context: TicketContext) -> TicketSide:
    """The side the actor acts for, once they are known to be allowed to act at all."""
    if by_role in CUSTOMER_SIDE_ROLES:
        current_role = context.customer_users.get(by)
        if current_role is None:
            raise NotAuthorizedError(
                f"user {by!r} is not a current user of customer {customer_id!r}, so cannot act "
                "on its support tickets; ask one of its CUSTOMER_ADMINs for access"
            )
        if current_role is not by_role:
            raise NotAuthorizedError(
                f"user {by!r} now holds role {current_role} on customer {customer_id!r}, not "
                f"{by_role}; sign in again to act in their current role"
            )
        return TicketSide.CUSTOMER
    # ADMIN (and any role added later, until it is given a side) must be current vendor staff.
    if by_role is not Role.ADMIN or by not in context.vendor_staff:
        raise NotAuthorizedError(
            f"user {by!r} is not current vendor staff, so cannot act on support tickets as "
            f"{by_role}; ask another ADMIN to check their access"
        )
    return TicketSide.VENDOR


def _check_vendor(by_role: Role, action: str) -> None:
    if by_role is not Role.ADMIN:
        raise NotAuthorizedError(
            f"only vendor staff (ADMIN) can {action}, not {by_role}; "
            "post a message on the ticket to ask vendor support"
        )


def _check_not_closed(state: Ticket, status: TicketStatus, consequence: str) -> None:
    if status is TicketStatus.CLOSED:
        raise TicketClosedError(
            f"ticket {state.ticket_id!r} is closed, so {consequence}; "
            "reopen it first, with a reason"
        )


def _check_transition(state: Ticket, status: TicketStatus, to: TicketStatus, action: str) -> None:
    if (status, to) not in _ALLOWED:
        raise StatusTransitionError(
            f"ticket {state.ticket_id!r} is {status}, so it cannot {action}; "
            f"from {status} the next steps are: {next_steps(status)}"
        )


def _check_id(field: str, value: str) -> None:
    if not value.strip():
        raise InvalidTicketFieldError(f"{field} must not be blank; fill it in")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidTicketFieldError(
            f"{field} is {len(value)} characters long; ids are at most {MAX_ID_LENGTH} characters"
        )


def _check_sealed(field: str, value: str, limit: int) -> None:
    """Sealed text is opaque: only its presence and its length are checked, never its content."""
    if not value.strip():
        raise InvalidTicketFieldError(f"{field} must not be blank; fill it in")
    if len(value) > limit:
        raise InvalidTicketFieldError(
            f"{field} is {len(value)} characters long, more than the {limit} allowed; "
            "shorten the text before it is sealed"
        )
