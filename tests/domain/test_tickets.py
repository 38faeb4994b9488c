"""Support tickets: each rule as given events, a command (with the customer's current users and
the vendor staff as context), then events or a refusal.

Refusals are pinned with their whole message, since people read them. Hypothesis drives a
state machine with random commands while users are revoked, change roles and staff come and
go: only `DomainError`s escape, deciding is deterministic, replaying the events gives the same
state, every event round-trips through JSON, and every status change follows the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain import DomainError
from domain.tickets import (
    COMMAND_DECODER,
    CUSTOMER_SIDE_ROLES,
    EVENT_DECODER,
    MAX_ID_LENGTH,
    MAX_SEALED_TEXT_LENGTH,
    MAX_SUBJECT_SEALED_LENGTH,
    TRANSITIONS,
    AssigneeUnchangedError,
    AssignTicket,
    AwaitCustomerReply,
    CloseTicket,
    Command,
    DuplicateMessageError,
    Event,
    InvalidAssigneeError,
    InvalidTicketFieldError,
    NotAuthorizedError,
    OpenTicket,
    PostTicketMessage,
    ReopenTicket,
    ResolveTicket,
    Role,
    StartWorkOnTicket,
    StatusChange,
    StatusTransitionError,
    Ticket,
    TicketAlreadyOpenedError,
    TicketAssigned,
    TicketClosedError,
    TicketContext,
    TicketError,
    TicketMessage,
    TicketMessagePosted,
    TicketMismatchError,
    TicketNotOpenedError,
    TicketOpened,
    TicketPriority,
    TicketReopened,
    TicketResolved,
    TicketSide,
    TicketStatus,
    TicketStatusChanged,
    decide,
    evolve,
    initial_state,
)

replace = msgspec.structs.replace

OPEN_, IN_PROGRESS, WAITING, RESOLVED_, CLOSED_ = (
    TicketStatus.OPEN,
    TicketStatus.IN_PROGRESS,
    TicketStatus.WAITING_ON_CUSTOMER,
    TicketStatus.RESOLVED,
    TicketStatus.CLOSED,
)

CUSTOMER = "cust-1"
TICKET = "t-1"
AT = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)


def hours(n: int) -> datetime:
    return AT + timedelta(hours=n)


# alice, bob and carol are the customer's users; vera and victor are vendor staff.
CONTEXT = TicketContext(
    customer_id=CUSTOMER,
    customer_users={"alice": Role.CUSTOMER_ADMIN, "bob": Role.FINANCE, "carol": Role.TECHNICAL},
    vendor_staff=frozenset({"vera", "victor"}),
)
CUSTOMER_ACTORS = [("alice", Role.CUSTOMER_ADMIN), ("bob", Role.FINANCE), ("carol", Role.TECHNICAL)]

OPENED = TicketOpened(
    ticket_id=TICKET,
    customer_id=CUSTOMER,
    subject_sealed="sealed:subject",
    body_sealed="sealed:body",
    priority=TicketPriority.HIGH,
    side=TicketSide.CUSTOMER,
    opened_at=AT,
    opened_by="alice",
    opened_by_role=Role.CUSTOMER_ADMIN,
)
ASSIGNED = TicketAssigned(
    ticket_id=TICKET,
    assignee="vera",
    assigned_at=hours(1),
    assigned_by="victor",
    assigned_by_role=Role.ADMIN,
)
STARTED = TicketStatusChanged(
    ticket_id=TICKET,
    previous_status=OPEN_,
    status=IN_PROGRESS,
    changed_at=hours(1),
    changed_by="victor",
    changed_by_role=Role.ADMIN,
)
AWAITING = TicketStatusChanged(
    ticket_id=TICKET,
    previous_status=IN_PROGRESS,
    status=WAITING,
    changed_at=hours(2),
    changed_by="vera",
    changed_by_role=Role.ADMIN,
)
RESOLVED = TicketResolved(
    ticket_id=TICKET,
    previous_status=IN_PROGRESS,
    resolution_sealed="sealed:resolution",
    resolved_at=hours(3),
    resolved_by="vera",
    resolved_by_role=Role.ADMIN,
)
CLOSED = TicketStatusChanged(
    ticket_id=TICKET,
    previous_status=RESOLVED_,
    status=CLOSED_,
    changed_at=hours(4),
    changed_by="alice",
    changed_by_role=Role.CUSTOMER_ADMIN,
)
REOPENED = TicketReopened(
    ticket_id=TICKET,
    previous_status=CLOSED_,
    reason_sealed="sealed:reason",
    reopened_at=hours(5),
    reopened_by="bob",
    reopened_by_role=Role.FINANCE,
)
MESSAGE_POSTED = TicketMessagePosted(
    ticket_id=TICKET,
    message_id="m-1",
    body_sealed="sealed:message",
    side=TicketSide.CUSTOMER,
    posted_at=hours(1),
    posted_by="bob",
    posted_by_role=Role.FINANCE,
)

HISTORY: dict[TicketStatus, tuple[Event, ...]] = {
    OPEN_: (OPENED,),
    IN_PROGRESS: (OPENED, ASSIGNED, STARTED),
    WAITING: (OPENED, ASSIGNED, STARTED, AWAITING),
    RESOLVED_: (OPENED, ASSIGNED, STARTED, RESOLVED),
    CLOSED_: (OPENED, ASSIGNED, STARTED, RESOLVED, CLOSED),
}
"""A ticket in each status, as its events leave it."""

LATER = hours(10)
OPEN = OpenTicket(
    ticket_id=TICKET,
    customer_id=CUSTOMER,
    subject_sealed="sealed:subject",
    body_sealed="sealed:body",
    priority=TicketPriority.HIGH,
    at=AT,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
POST = PostTicketMessage(
    ticket_id=TICKET,
    message_id="m-2",
    body_sealed="sealed:reply",
    at=LATER,
    by="bob",
    by_role=Role.FINANCE,
)
ASSIGN = AssignTicket(ticket_id=TICKET, assignee="vera", at=LATER, by="victor", by_role=Role.ADMIN)
START = StartWorkOnTicket(ticket_id=TICKET, at=LATER, by="vera", by_role=Role.ADMIN)
AWAIT = AwaitCustomerReply(ticket_id=TICKET, at=LATER, by="vera", by_role=Role.ADMIN)
RESOLVE = ResolveTicket(
    ticket_id=TICKET, resolution_sealed="sealed:fixed", at=LATER, by="vera", by_role=Role.ADMIN
)
CLOSE = CloseTicket(ticket_id=TICKET, at=LATER, by="alice", by_role=Role.CUSTOMER_ADMIN)
REOPEN = ReopenTicket(
    ticket_id=TICKET, reason_sealed="sealed:again", at=LATER, by="bob", by_role=Role.FINANCE
)
TICKET_COMMANDS: list[Command] = [POST, ASSIGN, START, AWAIT, RESOLVE, CLOSE, REOPEN]
"""Every command but opening."""


def state_after(events: Sequence[Event]) -> Ticket:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(given: Sequence[Event], when: Command, context: TicketContext = CONTEXT) -> list[Event]:
    return decide(when, state_after(given), context)


def refusal(
    given: Sequence[Event],
    when: Command,
    error: type[TicketError],
    context: TicketContext = CONTEXT,
) -> str:
    """The message of the refusal, after checking its exact type."""
    with pytest.raises(error) as raised:
        decide(when, state_after(given), context)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


def changed(previous: TicketStatus, status: TicketStatus, command: Command) -> TicketStatusChanged:
    return TicketStatusChanged(
        ticket_id=TICKET,
        previous_status=previous,
        status=status,
        changed_at=command.at,
        changed_by=command.by,
        changed_by_role=command.by_role,
    )


def command_id(command: Command) -> str:
    return type(command).__name__


# Opening.


@pytest.mark.parametrize(("by", "role"), CUSTOMER_ACTORS)
def test_any_current_user_of_the_customer_opens_a_ticket(by: str, role: Role) -> None:
    [event] = then((), replace(OPEN, by=by, by_role=role))
    assert event == replace(OPENED, opened_by=by, opened_by_role=role)


def test_an_opened_ticket_exposes_who_opened_it_when_and_its_priority() -> None:
    assert then((), OPEN) == [OPENED]
    state = state_after([OPENED])
    assert state == Ticket(
        status=OPEN_,
        ticket_id=TICKET,
        customer_id=CUSTOMER,
        subject_sealed="sealed:subject",
        body_sealed="sealed:body",
        priority=TicketPriority.HIGH,
        opened_at=AT,
        opened_by="alice",
        opened_by_role=Role.CUSTOMER_ADMIN,
        opened_by_side=TicketSide.CUSTOMER,
        status_changes=(
            StatusChange(
                previous_status=None,
                status=OPEN_,
                changed_at=AT,
                changed_by="alice",
                changed_by_role=Role.CUSTOMER_ADMIN,
            ),
        ),
    )
    assert (state.assignee, state.messages, state.entered_at(OPEN_)) == (None, {}, AT)


def test_vendor_staff_open_a_ticket_on_the_customers_behalf() -> None:
    [event] = then((), replace(OPEN, by="vera", by_role=Role.ADMIN))
    assert event == replace(
        OPENED, side=TicketSide.VENDOR, opened_by="vera", opened_by_role=Role.ADMIN
    )


@pytest.mark.parametrize("priority", list(TicketPriority))
def test_every_priority_is_accepted(priority: TicketPriority) -> None:
    [event] = then((), replace(OPEN, priority=priority))
    assert isinstance(event, TicketOpened)
    assert event.priority is priority
    assert state_after([event]).priority is priority


def test_priorities_are_low_normal_high_urgent() -> None:
    assert [str(priority) for priority in TicketPriority] == ["low", "normal", "high", "urgent"]
    encoded = msgspec.json.encode(OPEN).replace(b'"high"', b'"critical"')
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'critical'"):
        COMMAND_DECODER.decode(encoded)


@pytest.mark.parametrize("status", list(TicketStatus))
def test_a_ticket_is_opened_only_once(status: TicketStatus) -> None:
    assert refusal(HISTORY[status], OPEN, TicketAlreadyOpenedError) == (
        "ticket 't-1' is already opened; open a new ticket under a new ticket id"
    )


@pytest.mark.parametrize("field", ["ticket_id", "customer_id", "subject_sealed", "body_sealed"])
def test_open_refuses_a_blank_field(field: str) -> None:
    assert refusal((), replace(OPEN, **{field: " "}), InvalidTicketFieldError) == (
        f"{field} must not be blank; fill it in"
    )


@pytest.mark.parametrize(
    ("field", "limit"),
    [("subject_sealed", MAX_SUBJECT_SEALED_LENGTH), ("body_sealed", MAX_SEALED_TEXT_LENGTH)],
)
def test_sealed_texts_are_bounded(field: str, limit: int) -> None:
    assert (MAX_SUBJECT_SEALED_LENGTH, MAX_SEALED_TEXT_LENGTH) == (2_000, 20_000)
    [event] = then((), replace(OPEN, **{field: "s" * limit}))
    assert getattr(event, field) == "s" * limit
    assert refusal((), replace(OPEN, **{field: "s" * (limit + 1)}), InvalidTicketFieldError) == (
        f"{field} is {limit + 1} characters long, more than the {limit} allowed; "
        "shorten the text before it is sealed"
    )


@pytest.mark.parametrize("field", ["ticket_id", "customer_id"])
def test_ids_are_bounded(field: str) -> None:
    assert MAX_ID_LENGTH == 200
    context = replace(CONTEXT, customer_id="i" * 200) if field == "customer_id" else CONTEXT
    assert then((), replace(OPEN, **{field: "i" * 200}), context)
    command = replace(OPEN, **{field: "i" * 201})
    assert refusal((), command, InvalidTicketFieldError) == (
        f"{field} is 201 characters long; ids are at most 200 characters"
    )


def test_a_ticket_is_opened_with_the_users_of_the_customer_it_is_for() -> None:
    command = replace(OPEN, customer_id="cust-2")
    assert refusal((), command, TicketMismatchError) == (
        "the command opens a ticket for customer 'cust-2' but was decided with the users of "
        "customer 'cust-1'; load the users of the customer the command names"
    )


# The stamp every command carries.


@pytest.mark.parametrize("command", [OPEN, *TICKET_COMMANDS], ids=command_id)
def test_a_naive_time_is_refused(command: Command) -> None:
    naive = replace(command, at=command.at.replace(tzinfo=None))
    assert refusal(HISTORY[RESOLVED_], naive, InvalidTicketFieldError) == (
        "at must be a timezone-aware time; stamp commands with the time in UTC"
    )


@pytest.mark.parametrize("command", [OPEN, *TICKET_COMMANDS], ids=command_id)
def test_a_blank_actor_is_refused(command: Command) -> None:
    assert refusal(HISTORY[RESOLVED_], replace(command, by=""), InvalidTicketFieldError) == (
        "by must not be blank; fill it in"
    )


# The ticket the command is for.


@pytest.mark.parametrize("command", TICKET_COMMANDS, ids=command_id)
def test_nothing_but_opening_reaches_a_ticket_not_opened(command: Command) -> None:
    assert refusal((), command, TicketNotOpenedError) == (
        "ticket 't-1' is not opened; open it first"
    )


@pytest.mark.parametrize("command", TICKET_COMMANDS, ids=command_id)
def test_a_command_for_another_ticket_is_refused(command: Command) -> None:
    assert refusal(HISTORY[OPEN_], replace(command, ticket_id="t-2"), TicketMismatchError) == (
        "the command is for ticket 't-2' but was decided against ticket 't-1'; "
        "load the ticket the command names"
    )


@pytest.mark.parametrize("command", TICKET_COMMANDS, ids=command_id)
def test_a_ticket_is_decided_with_the_users_of_its_own_customer(command: Command) -> None:
    # Say the command layer built the context from a cust-2 user's token: nothing passes.
    other = replace(CONTEXT, customer_id="cust-2")
    assert refusal(HISTORY[OPEN_], command, TicketMismatchError, other) == (
        "ticket 't-1' belongs to customer 'cust-1' but was decided with the users of customer "
        "'cust-2'; load the users of the ticket's customer"
    )


@pytest.mark.parametrize("command", TICKET_COMMANDS, ids=command_id)
def test_a_blank_ticket_id_is_refused(command: Command) -> None:
    assert refusal(HISTORY[OPEN_], replace(command, ticket_id=""), InvalidTicketFieldError) == (
        "ticket_id must not be blank; fill it in"
    )


# Who may act at all: the context says who is a current user or current vendor staff.

EITHER_SIDE = [OPEN, POST, CLOSE, REOPEN]
"""Commands the customer's side may issue; the given ticket is resolved, so all may pass."""


@pytest.mark.parametrize("command", EITHER_SIDE, ids=command_id)
def test_a_revoked_user_is_refused_even_with_a_valid_token(command: Command) -> None:
    # bob's access was revoked on the customer account: he is no longer in its current users.
    revoked = replace(CONTEXT, customer_users={"alice": Role.CUSTOMER_ADMIN})
    given = () if isinstance(command, OpenTicket) else HISTORY[RESOLVED_]
    command = replace(command, by="bob", by_role=Role.FINANCE)
    assert refusal(given, command, NotAuthorizedError, revoked) == (
        "user 'bob' is not a current user of customer 'cust-1', so cannot act on its support "
        "tickets; ask one of its CUSTOMER_ADMINs for access"
    )


@pytest.mark.parametrize("command", EITHER_SIDE, ids=command_id)
def test_a_user_of_another_customer_is_refused(command: Command) -> None:
    given = () if isinstance(command, OpenTicket) else HISTORY[RESOLVED_]
    command = replace(command, by="mallory", by_role=Role.CUSTOMER_ADMIN)
    assert refusal(given, command, NotAuthorizedError).startswith(
        "user 'mallory' is not a current user of customer 'cust-1'"
    )


@pytest.mark.parametrize("command", EITHER_SIDE, ids=command_id)
def test_a_user_whose_role_changed_must_sign_in_again(command: Command) -> None:
    # bob's token still says FINANCE, but he was made TECHNICAL since.
    changed_role = replace(
        CONTEXT, customer_users={**CONTEXT.customer_users, "bob": Role.TECHNICAL}
    )
    given = () if isinstance(command, OpenTicket) else HISTORY[RESOLVED_]
    command = replace(command, by="bob", by_role=Role.FINANCE)
    assert refusal(given, command, NotAuthorizedError, changed_role) == (
        "user 'bob' now holds role TECHNICAL on customer 'cust-1', not FINANCE; "
        "sign in again to act in their current role"
    )


def test_a_vendor_staff_member_listed_as_a_customer_user_cannot_act_as_the_customer() -> None:
    listed = replace(CONTEXT, customer_users={**CONTEXT.customer_users, "vera": Role.ADMIN})
    command = replace(POST, by="vera", by_role=Role.CUSTOMER_ADMIN)
    assert refusal(HISTORY[OPEN_], command, NotAuthorizedError, listed) == (
        "user 'vera' now holds role ADMIN on customer 'cust-1', not CUSTOMER_ADMIN; "
        "sign in again to act in their current role"
    )


@pytest.mark.parametrize("command", [OPEN, *TICKET_COMMANDS], ids=command_id)
def test_former_vendor_staff_are_refused(command: Command) -> None:
    given = () if isinstance(command, OpenTicket) else HISTORY[RESOLVED_]
    command = replace(command, by="olga", by_role=Role.ADMIN)
    assert refusal(given, command, NotAuthorizedError) == (
        "user 'olga' is not current vendor staff, so cannot act on support tickets as ADMIN; "
        "ask another ADMIN to check their access"
    )


@pytest.mark.parametrize(("by", "role"), CUSTOMER_ACTORS)
@pytest.mark.parametrize(
    ("command", "action"),
    [
        (ASSIGN, "assign tickets"),
        (START, "start work on a ticket"),
        (AWAIT, "mark a ticket as waiting on the customer"),
        (RESOLVE, "resolve tickets"),
    ],
    ids=["assign", "start", "await", "resolve"],
)
def test_only_vendor_staff_assign_start_await_and_resolve(
    command: Command, action: str, by: str, role: Role
) -> None:
    # In progress, so START is the only one the status would refuse: the role is checked first.
    command = replace(command, by=by, by_role=role)
    assert refusal(HISTORY[IN_PROGRESS], command, NotAuthorizedError) == (
        f"only vendor staff (ADMIN) can {action}, not {role}; "
        "post a message on the ticket to ask vendor support"
    )


def test_the_customer_side_is_every_role_but_admin() -> None:
    assert frozenset(Role) - CUSTOMER_SIDE_ROLES == {Role.ADMIN}


# Messages.


@pytest.mark.parametrize("status", [OPEN_, IN_PROGRESS, RESOLVED_])
@pytest.mark.parametrize(("by", "role"), [("bob", Role.FINANCE), ("vera", Role.ADMIN)])
def test_both_sides_post_messages_without_changing_the_status(
    status: TicketStatus, by: str, role: Role
) -> None:
    side = TicketSide.VENDOR if role is Role.ADMIN else TicketSide.CUSTOMER
    assert then(HISTORY[status], replace(POST, by=by, by_role=role)) == [
        TicketMessagePosted(
            ticket_id=TICKET,
            message_id="m-2",
            body_sealed="sealed:reply",
            side=side,
            posted_at=LATER,
            posted_by=by,
            posted_by_role=role,
        )
    ]


def test_the_conversation_keeps_each_messages_id_side_author_and_time() -> None:
    reply = then((OPENED, MESSAGE_POSTED), replace(POST, by="vera", by_role=Role.ADMIN))
    state = state_after([OPENED, MESSAGE_POSTED, *reply])
    assert list(state.messages.values()) == [
        TicketMessage(
            message_id="m-1",
            side=TicketSide.CUSTOMER,
            author="bob",
            author_role=Role.FINANCE,
            posted_at=hours(1),
        ),
        TicketMessage(
            message_id="m-2",
            side=TicketSide.VENDOR,
            author="vera",
            author_role=Role.ADMIN,
            posted_at=LATER,
        ),
    ]


@pytest.mark.parametrize(("by", "role"), CUSTOMER_ACTORS)
def test_a_customer_message_puts_a_ticket_waiting_on_the_customer_back_in_progress(
    by: str, role: Role
) -> None:
    command = replace(POST, by=by, by_role=role)
    events = then(HISTORY[WAITING], command)
    assert events == [
        TicketMessagePosted(
            ticket_id=TICKET,
            message_id="m-2",
            body_sealed="sealed:reply",
            side=TicketSide.CUSTOMER,
            posted_at=LATER,
            posted_by=by,
            posted_by_role=role,
        ),
        changed(WAITING, IN_PROGRESS, command),
    ]
    state = state_after([*HISTORY[WAITING], *events])
    assert (state.status, state.entered_at(IN_PROGRESS)) == (IN_PROGRESS, LATER)


def test_a_vendor_message_leaves_a_ticket_waiting_on_the_customer() -> None:
    [event] = then(HISTORY[WAITING], replace(POST, by="vera", by_role=Role.ADMIN))
    assert isinstance(event, TicketMessagePosted)


def test_messages_on_a_closed_ticket_are_refused() -> None:
    assert refusal(HISTORY[CLOSED_], POST, TicketClosedError) == (
        "ticket 't-1' is closed, so no messages can be posted on it; reopen it first, with a reason"
    )


def test_a_reopened_ticket_takes_messages_again() -> None:
    [event] = then((*HISTORY[CLOSED_], REOPENED), POST)
    assert isinstance(event, TicketMessagePosted)


def test_message_ids_are_never_reused() -> None:
    command = replace(POST, message_id="m-1")
    assert refusal((OPENED, MESSAGE_POSTED), command, DuplicateMessageError) == (
        "ticket 't-1' already has message 'm-1' (posted at 2025-02-03T10:00:00+00:00); "
        "post a new message under a new message id"
    )


@pytest.mark.parametrize("field", ["message_id", "body_sealed"])
def test_post_refuses_a_blank_field(field: str) -> None:
    assert refusal(HISTORY[OPEN_], replace(POST, **{field: ""}), InvalidTicketFieldError) == (
        f"{field} must not be blank; fill it in"
    )


def test_message_bodies_are_bounded() -> None:
    assert then(HISTORY[OPEN_], replace(POST, body_sealed="s" * 20_000))
    command = replace(POST, body_sealed="s" * 20_001)
    assert refusal(HISTORY[OPEN_], command, InvalidTicketFieldError) == (
        "body_sealed is 20001 characters long, more than the 20000 allowed; "
        "shorten the text before it is sealed"
    )


# Assignment.


def test_assigning_an_open_ticket_starts_work_on_it() -> None:
    events = then(HISTORY[OPEN_], ASSIGN)
    assert events == [
        TicketAssigned(
            ticket_id=TICKET,
            assignee="vera",
            previous_assignee=None,
            assigned_at=LATER,
            assigned_by="victor",
            assigned_by_role=Role.ADMIN,
        ),
        changed(OPEN_, IN_PROGRESS, ASSIGN),
    ]
    state = state_after([OPENED, *events])
    assert (state.assignee, state.status) == ("vera", IN_PROGRESS)


@pytest.mark.parametrize("status", [IN_PROGRESS, WAITING, RESOLVED_])
def test_reassigning_records_the_previous_assignee_and_keeps_the_status(
    status: TicketStatus,
) -> None:
    command = replace(ASSIGN, assignee="victor")
    assert then(HISTORY[status], command) == [
        TicketAssigned(
            ticket_id=TICKET,
            assignee="victor",
            previous_assignee="vera",
            assigned_at=LATER,
            assigned_by="victor",
            assigned_by_role=Role.ADMIN,
        )
    ]
    state = state_after([*HISTORY[status], *then(HISTORY[status], command)])
    assert (state.assignee, state.status) == ("victor", status)


def test_a_reopened_ticket_keeps_its_assignee_and_reassigning_it_starts_work() -> None:
    reopened = state_after([*HISTORY[CLOSED_], REOPENED])
    assert (reopened.status, reopened.assignee) == (OPEN_, "vera")
    command = replace(ASSIGN, assignee="victor")
    assert then((*HISTORY[CLOSED_], REOPENED), command) == [
        TicketAssigned(
            ticket_id=TICKET,
            assignee="victor",
            previous_assignee="vera",
            assigned_at=LATER,
            assigned_by="victor",
            assigned_by_role=Role.ADMIN,
        ),
        changed(OPEN_, IN_PROGRESS, command),
    ]


@pytest.mark.parametrize("assignee", ["alice", "olga"], ids=["customer-user", "unknown"])
def test_only_current_vendor_staff_can_be_assigned(assignee: str) -> None:
    command = replace(ASSIGN, assignee=assignee)
    assert refusal(HISTORY[OPEN_], command, InvalidAssigneeError) == (
        f"user {assignee!r} is not current vendor staff, so ticket 't-1' cannot be assigned to "
        "them; assign it to a current vendor staff member (ADMIN)"
    )


def test_assigning_to_the_current_assignee_is_refused() -> None:
    assert refusal(HISTORY[IN_PROGRESS], ASSIGN, AssigneeUnchangedError) == (
        "ticket 't-1' is already assigned to 'vera'; nothing to change"
    )


def test_a_closed_ticket_cannot_be_assigned() -> None:
    command = replace(ASSIGN, assignee="victor")
    assert refusal(HISTORY[CLOSED_], command, TicketClosedError) == (
        "ticket 't-1' is closed, so it cannot be assigned; reopen it first, with a reason"
    )


def test_assign_refuses_a_blank_assignee() -> None:
    assert refusal(HISTORY[OPEN_], replace(ASSIGN, assignee=" "), InvalidTicketFieldError) == (
        "assignee must not be blank; fill it in"
    )


# The status machine.

NEXT_STEPS = {
    OPEN_: "in_progress (vendor staff assign it or start work on it); "
    "resolved (vendor staff resolve it with a resolution note)",
    IN_PROGRESS: "waiting_on_customer (vendor staff await the customer's reply); "
    "resolved (vendor staff resolve it with a resolution note)",
    WAITING: "in_progress (the customer posts a message, or vendor staff start work on it "
    "again); resolved (vendor staff resolve it with a resolution note)",
    RESOLVED_: "closed (the customer confirms the resolution, or vendor staff close it); "
    "open (the customer or vendor staff reopen it with a reason)",
    CLOSED_: "open (the customer or vendor staff reopen it with a reason)",
}
"""The next steps a refusal lists from each status, written out to check the table."""

STATUS_COMMANDS: list[tuple[Command, TicketStatus, set[TicketStatus], str]] = [
    (START, IN_PROGRESS, {OPEN_, WAITING}, "have work started on it"),
    (AWAIT, WAITING, {IN_PROGRESS}, "wait on the customer"),
    (RESOLVE, RESOLVED_, {OPEN_, IN_PROGRESS, WAITING}, "be resolved"),
    (CLOSE, CLOSED_, {RESOLVED_}, "be closed"),
    (REOPEN, OPEN_, {RESOLVED_, CLOSED_}, "be reopened"),
]
"""Each status-changing command, the status it leads to, the statuses it is allowed from."""


def test_the_table_of_transitions() -> None:
    assert {(step.from_status, step.to_status) for step in TRANSITIONS} == {
        (OPEN_, IN_PROGRESS),
        (OPEN_, RESOLVED_),
        (IN_PROGRESS, WAITING),
        (IN_PROGRESS, RESOLVED_),
        (WAITING, IN_PROGRESS),
        (WAITING, RESOLVED_),
        (RESOLVED_, CLOSED_),
        (RESOLVED_, OPEN_),
        (CLOSED_, OPEN_),
    }


@pytest.mark.parametrize("status", list(TicketStatus))
@pytest.mark.parametrize(
    ("command", "to", "allowed_from", "action"),
    STATUS_COMMANDS,
    ids=[command_id(command) for command, *_ in STATUS_COMMANDS],
)
def test_every_status_change_follows_the_table(
    command: Command,
    to: TicketStatus,
    allowed_from: set[TicketStatus],
    action: str,
    status: TicketStatus,
) -> None:
    if status not in allowed_from:
        assert refusal(HISTORY[status], command, StatusTransitionError) == (
            f"ticket 't-1' is {status}, so it cannot {action}; "
            f"from {status} the next steps are: {NEXT_STEPS[status]}"
        )
        return
    events = then(HISTORY[status], command)
    state = state_after([*HISTORY[status], *events])
    assert state.status is to
    assert state.status_changes[-1] == StatusChange(
        previous_status=status,
        status=to,
        changed_at=LATER,
        changed_by=command.by,
        changed_by_role=command.by_role,
    )
    assert state.entered_at(to) == LATER


@pytest.mark.parametrize("status", [OPEN_, WAITING])
def test_vendor_staff_start_work(status: TicketStatus) -> None:
    assert then(HISTORY[status], START) == [changed(status, IN_PROGRESS, START)]


def test_vendor_staff_await_the_customers_reply() -> None:
    assert then(HISTORY[IN_PROGRESS], AWAIT) == [changed(IN_PROGRESS, WAITING, AWAIT)]


@pytest.mark.parametrize("status", [OPEN_, IN_PROGRESS, WAITING])
def test_vendor_staff_resolve_with_a_sealed_note(status: TicketStatus) -> None:
    events = then(HISTORY[status], RESOLVE)
    assert events == [
        TicketResolved(
            ticket_id=TICKET,
            previous_status=status,
            resolution_sealed="sealed:fixed",
            resolved_at=LATER,
            resolved_by="vera",
            resolved_by_role=Role.ADMIN,
        )
    ]
    assert state_after([*HISTORY[status], *events]).resolution_sealed == "sealed:fixed"


def test_a_resolution_needs_a_bounded_note() -> None:
    assert refusal(
        HISTORY[IN_PROGRESS], replace(RESOLVE, resolution_sealed=""), InvalidTicketFieldError
    ) == ("resolution_sealed must not be blank; fill it in")
    too_long = replace(RESOLVE, resolution_sealed="s" * 20_001)
    assert refusal(HISTORY[IN_PROGRESS], too_long, InvalidTicketFieldError).startswith(
        "resolution_sealed is 20001 characters long"
    )


@pytest.mark.parametrize(
    ("by", "role"), [*CUSTOMER_ACTORS, ("vera", Role.ADMIN)], ids=["ca", "fin", "tech", "vendor"]
)
def test_the_customer_confirms_or_vendor_staff_close_a_resolved_ticket(by: str, role: Role) -> None:
    command = replace(CLOSE, by=by, by_role=role)
    events = then(HISTORY[RESOLVED_], command)
    assert events == [changed(RESOLVED_, CLOSED_, command)]
    state = state_after([*HISTORY[RESOLVED_], *events])
    assert (state.status, state.resolution_sealed) == (CLOSED_, "sealed:resolution")


@pytest.mark.parametrize("status", [RESOLVED_, CLOSED_])
@pytest.mark.parametrize(("by", "role"), [("bob", Role.FINANCE), ("vera", Role.ADMIN)])
def test_either_side_reopens_with_a_sealed_reason(
    status: TicketStatus, by: str, role: Role
) -> None:
    command = replace(REOPEN, by=by, by_role=role)
    events = then(HISTORY[status], command)
    assert events == [
        TicketReopened(
            ticket_id=TICKET,
            previous_status=status,
            reason_sealed="sealed:again",
            reopened_at=LATER,
            reopened_by=by,
            reopened_by_role=role,
        )
    ]
    state = state_after([*HISTORY[status], *events])
    assert (state.status, state.resolution_sealed, state.entered_at(OPEN_)) == (OPEN_, None, LATER)


def test_a_reopening_needs_a_reason() -> None:
    assert refusal(
        HISTORY[CLOSED_], replace(REOPEN, reason_sealed=" "), InvalidTicketFieldError
    ) == ("reason_sealed must not be blank; fill it in")


def test_the_whole_life_of_a_ticket_is_timed() -> None:
    """Every status the ticket entered, when and by whom: what "time to resolve" reads."""
    message = replace(POST, at=hours(3))
    commands: list[Command] = [
        OPEN,
        replace(ASSIGN, at=hours(1)),
        replace(AWAIT, at=hours(2)),
        message,
        replace(RESOLVE, at=hours(4)),
        replace(CLOSE, at=hours(5)),
        replace(REOPEN, at=hours(6)),
        replace(RESOLVE, at=hours(7)),
    ]
    state = initial_state()
    for command in commands:
        for event in decide(command, state, CONTEXT):
            state = evolve(state, event)
    assert [
        (change.previous_status, change.status, change.changed_at, change.changed_by)
        for change in state.status_changes
    ] == [
        (None, OPEN_, AT, "alice"),
        (OPEN_, IN_PROGRESS, hours(1), "victor"),
        (IN_PROGRESS, WAITING, hours(2), "vera"),
        (WAITING, IN_PROGRESS, hours(3), "bob"),
        (IN_PROGRESS, RESOLVED_, hours(4), "vera"),
        (RESOLVED_, CLOSED_, hours(5), "alice"),
        (CLOSED_, OPEN_, hours(6), "bob"),
        (OPEN_, RESOLVED_, hours(7), "vera"),
    ]
    assert state.entered_at(RESOLVED_) == hours(7)
    assert state.entered_at(WAITING) == hours(2)
    assert list(state.messages) == ["m-2"]


# Events as stored.

ALL_EVENTS: list[Event] = [
    OPENED,
    MESSAGE_POSTED,
    ASSIGNED,
    replace(ASSIGNED, assignee="victor", previous_assignee="vera"),
    STARTED,
    RESOLVED,
    REOPENED,
]
EXPECTED_TAGS = {
    TicketOpened: "TicketOpened",
    TicketMessagePosted: "TicketMessagePosted",
    TicketAssigned: "TicketAssigned",
    TicketStatusChanged: "TicketStatusChanged",
    TicketResolved: "TicketResolved",
    TicketReopened: "TicketReopened",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    assert {type(event) for event in ALL_EVENTS} == set(EXPECTED_TAGS)
    for event in ALL_EVENTS:
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


def test_statuses_priorities_and_sides_are_stored_as_lowercase_words() -> None:
    stored = msgspec.json.decode(msgspec.json.encode(OPENED))
    assert (stored["priority"], stored["side"], stored["opened_by_role"]) == (
        "high",
        "customer",
        "CUSTOMER_ADMIN",
    )
    stored = msgspec.json.decode(msgspec.json.encode(AWAITING))
    assert (stored["previous_status"], stored["status"]) == ("in_progress", "waiting_on_customer")


@pytest.mark.parametrize("event_type", list(EXPECTED_TAGS), ids=lambda cls: cls.__name__)
def test_events_follow_the_ledger_conventions(event_type: type[msgspec.Struct]) -> None:
    config = event_type.__struct_config__
    assert (config.frozen, config.tag_field, config.tag) == (
        True,
        "type",
        EXPECTED_TAGS[event_type],
    )
    fields = msgspec.structs.fields(event_type)
    assert (fields[-1].name, fields[-1].default) == ("schema", 1)
    assert any(field.name.endswith("_at") and field.type is datetime for field in fields)


def test_an_event_from_a_newer_writer_with_an_extra_field_still_decodes() -> None:
    encoded = msgspec.json.encode(OPENED)
    assert EVENT_DECODER.decode(encoded[:-1] + b',"channel":"email"}') == OPENED


def test_an_unknown_event_type_is_not_decoded() -> None:
    with pytest.raises(msgspec.ValidationError):
        EVENT_DECODER.decode(b'{"type": "TicketDeleted", "ticket_id": "t-1"}')


@pytest.mark.parametrize("command", [OPEN, *TICKET_COMMANDS], ids=command_id)
def test_commands_decode_by_tag_and_refuse_unknown_fields(command: Command) -> None:
    encoded = msgspec.json.encode(command)
    assert msgspec.json.decode(encoded)["command"] == type(command).__name__
    assert COMMAND_DECODER.decode(encoded) == command
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        COMMAND_DECODER.decode(encoded[:-1] + b', "subject": "plain text"}')


# Invariants over random command sequences.

ACTORS = st.sampled_from(
    [
        ("alice", Role.CUSTOMER_ADMIN),
        ("bob", Role.FINANCE),
        ("carol", Role.TECHNICAL),
        ("vera", Role.ADMIN),
        ("victor", Role.ADMIN),
        ("vera", Role.ADMIN),
        ("olga", Role.ADMIN),
        ("bob", Role.CUSTOMER_ADMIN),
        ("mallory", Role.TECHNICAL),
        ("", Role.ADMIN),
    ]
)
TIMES = st.sampled_from([AT, hours(1), hours(2), AT.replace(tzinfo=None)])
TICKET_IDS = st.sampled_from([TICKET, TICKET, "t-2", ""])
TEXTS = st.sampled_from(["sealed:a", "sealed:b", "", " ", "s" * (MAX_SUBJECT_SEALED_LENGTH + 1)])
PEOPLE = st.sampled_from(["alice", "vera", "victor", "olga", ""])


def stamped(build: st.SearchStrategy[Command]) -> st.SearchStrategy[Command]:
    return st.tuples(build, ACTORS).map(
        lambda pair: replace(pair[0], by=pair[1][0], by_role=pair[1][1])
    )


STAMP = {"ticket_id": TICKET_IDS, "at": TIMES, "by": st.just(""), "by_role": st.just(Role.ADMIN)}
RANDOM_COMMANDS: st.SearchStrategy[Command] = st.one_of(
    stamped(
        st.builds(
            OpenTicket,
            customer_id=st.sampled_from([CUSTOMER, CUSTOMER, "cust-2"]),
            subject_sealed=TEXTS,
            body_sealed=TEXTS,
            priority=st.sampled_from(TicketPriority),
            **STAMP,
        )
    ),
    stamped(
        st.builds(
            PostTicketMessage,
            message_id=st.sampled_from(["m-1", "m-2", "m-3", ""]),
            body_sealed=TEXTS,
            **STAMP,
        )
    ),
    stamped(st.builds(AssignTicket, assignee=PEOPLE, **STAMP)),
    stamped(st.builds(StartWorkOnTicket, **STAMP)),
    stamped(st.builds(AwaitCustomerReply, **STAMP)),
    stamped(st.builds(ResolveTicket, resolution_sealed=TEXTS, **STAMP)),
    stamped(st.builds(CloseTicket, **STAMP)),
    stamped(st.builds(ReopenTicket, reason_sealed=TEXTS, **STAMP)),
)

NEXT_COMMAND: dict[TicketStatus | None, list[Command]] = {
    None: [OPEN, replace(OPEN, by="victor", by_role=Role.ADMIN)],
    OPEN_: [ASSIGN, START, RESOLVE, POST],
    IN_PROGRESS: [AWAIT, RESOLVE, replace(ASSIGN, assignee="victor"), POST],
    WAITING: [POST, START, RESOLVE],
    RESOLVED_: [CLOSE, REOPEN, replace(CLOSE, by="vera", by_role=Role.ADMIN), POST],
    CLOSED_: [REOPEN, replace(REOPEN, by="victor", by_role=Role.ADMIN), POST, ASSIGN],
}
"""Commands that mostly pass from each status (messages and assignments on a closed ticket
are refused), so the machine gets past the early statuses."""


class TicketMachine(RuleBasedStateMachine):
    """Any sequence of commands, while people gain and lose access: the ledger stays coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.ledger: list[Event] = []
        self.users: dict[str, Role] = dict(CONTEXT.customer_users)
        self.staff: set[str] = set(CONTEXT.vendor_staff)

    def context(self) -> TicketContext:
        return TicketContext(
            customer_id=CUSTOMER,
            customer_users=dict(self.users),
            vendor_staff=frozenset(self.staff),
        )

    @initialize(opened=st.booleans())
    def start_with_an_open_ticket_or_none(self, opened: bool) -> None:
        if opened:
            self.record(OPEN)

    @rule(command=RANDOM_COMMANDS)
    def decide_a_random_command(self, command: Command) -> None:
        self.record(command)

    @rule(pick=st.integers(min_value=0, max_value=3), message_id=st.integers(0, 1000))
    def take_a_step_the_table_allows(self, pick: int, message_id: int) -> None:
        options = NEXT_COMMAND[self.state.status]
        command = options[pick % len(options)]
        if isinstance(command, PostTicketMessage):
            command = replace(command, message_id=f"m-{message_id}")
        self.record(command)

    @rule(user=st.sampled_from(["alice", "bob", "carol"]), role=st.sampled_from(Role))
    def a_customer_user_is_invited_or_changes_role(self, user: str, role: Role) -> None:
        self.users[user] = role

    @rule(user=st.sampled_from(["alice", "bob", "carol"]))
    def a_customer_user_is_revoked(self, user: str) -> None:
        self.users.pop(user, None)

    @rule(person=st.sampled_from(["vera", "victor", "olga"]), joins=st.booleans())
    def vendor_staff_come_and_go(self, person: str, joins: bool) -> None:
        if joins:
            self.staff.add(person)
        else:
            self.staff.discard(person)

    def record(self, command: Command) -> None:
        context = self.context()
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, context)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            # Nothing but a ticket's own refusal, with a message for a person, escapes.
            assert isinstance(refused, TicketError)
            assert refused.message
            hypothesis_event(f"refused: {type(refused).__name__}")
            return
        assert events
        hypothesis_event(f"decided: {type(command).__name__} on {self.state.status}")
        assert decide(command, self.state, context) == events
        # Whoever acted was allowed to, by the context of the moment.
        if command.by_role is Role.ADMIN:
            assert command.by in context.vendor_staff
        else:
            assert context.customer_users.get(command.by) is command.by_role
        for event in events:
            if isinstance(event, TicketAssigned):
                assert event.assignee in context.vendor_staff
            if isinstance(event, TicketMessagePosted):
                assert self.state.status is not CLOSED_
            self.state = evolve(self.state, event)
            self.ledger.append(event)

    @invariant()
    def status_changes_follow_the_table(self) -> None:
        changes = self.state.status_changes
        if self.state.status is None:
            assert changes == ()
            return
        allowed = {(step.from_status, step.to_status) for step in TRANSITIONS}
        assert changes[0].previous_status is None
        assert changes[0].status is OPEN_
        for before, after in itertools.pairwise(changes):
            assert after.previous_status is before.status
            assert (before.status, after.status) in allowed
        assert changes[-1].status is self.state.status
        resolved = self.state.status in {RESOLVED_, CLOSED_}
        assert (self.state.resolution_sealed is not None) == resolved

    @invariant()
    def the_ticket_is_one_ticket_of_one_customer(self) -> None:
        opened = [event for event in self.ledger if isinstance(event, TicketOpened)]
        assert len(opened) <= 1
        assert not self.ledger or self.ledger[0] == opened[0]
        assert {event.ticket_id for event in self.ledger} <= {self.state.ticket_id}
        assert self.state.customer_id in {"", CUSTOMER}
        posted = [event for event in self.ledger if isinstance(event, TicketMessagePosted)]
        assert list(self.state.messages) == [event.message_id for event in posted]

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger


TicketMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
TestTicketMachine = TicketMachine.TestCase
