"""The customer account: each rule as given events, a command, then events or a refusal.

Refusals are pinned with their whole message, since people read them. Hypothesis sends random
command sequences and checks that only `DomainError`s escape, that deciding and replaying are
deterministic, and that a customer never loses its last CUSTOMER_ADMIN. Every event round-trips
through JSON by its tag.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import given as hypothesis_given
from hypothesis import settings
from hypothesis import strategies as st

from domain import DomainError
from domain.customer import (
    EVENT_DECODER,
    ApiKeyAlreadyRevokedError,
    ApiKeyIssued,
    ApiKeyRevoked,
    BillingContact,
    BillingContactChanged,
    ChangeBillingContact,
    ChangeUserRole,
    Command,
    CustomerAccount,
    CustomerAlreadyRegisteredError,
    CustomerError,
    CustomerMismatchError,
    CustomerNotRegisteredError,
    CustomerNotSuspendedError,
    CustomerReactivated,
    CustomerRegistered,
    CustomerStatus,
    CustomerSuspended,
    CustomerSuspendedError,
    DuplicateApiKeyError,
    DuplicateUserError,
    Event,
    InvalidCustomerFieldError,
    InviteUser,
    IssueApiKey,
    LastCustomerAdminError,
    NotAuthorizedError,
    ReactivateCustomer,
    RegisterCustomer,
    RevokeApiKey,
    RevokeUserAccess,
    Role,
    RoleUnchangedError,
    SuspendCustomer,
    UnknownApiKeyError,
    UnknownUserError,
    UnsupportedCurrencyError,
    UserAccessRevoked,
    UserInvited,
    UserRoleChanged,
    authorize,
    decide,
    evolve,
    initial_state,
)

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
STAFF = "staff-1"
AT = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
LATER = AT + timedelta(hours=1)
SECRET_SHA256 = hashlib.sha256(b"vl_test_secret").hexdigest()
CONTACT = BillingContact(name_sealed="sealed:name", email_sealed="sealed:email")
NEW_CONTACT = BillingContact(
    name_sealed="sealed:new-name", email_sealed="sealed:new-email", phone_sealed="sealed:phone"
)

REGISTERED = CustomerRegistered(
    customer_id=CUSTOMER,
    name="Acme Ltd",
    currency="EUR",
    billing_contact=CONTACT,
    registered_at=AT,
    registered_by=STAFF,
    registered_by_role=Role.ADMIN,
)
ALICE_INVITED = UserInvited(
    customer_id=CUSTOMER,
    user_id="alice",
    role=Role.CUSTOMER_ADMIN,
    name_sealed="sealed:alice",
    email_sealed="sealed:alice@",
    invited_at=AT,
    invited_by=STAFF,
    invited_by_role=Role.ADMIN,
)
BOB_INVITED = replace(ALICE_INVITED, user_id="bob", role=Role.FINANCE, name_sealed="sealed:bob")
VERA_INVITED = replace(ALICE_INVITED, user_id="vera", role=Role.ADMIN, name_sealed="sealed:vera")
KEY_ISSUED = ApiKeyIssued(
    customer_id=CUSTOMER,
    key_id="key-1",
    secret_sha256=SECRET_SHA256,
    role=Role.TECHNICAL,
    label="ingest",
    issued_at=AT,
    issued_by="alice",
    issued_by_role=Role.CUSTOMER_ADMIN,
)
KEY_REVOKED = ApiKeyRevoked(
    customer_id=CUSTOMER,
    key_id="key-1",
    revoked_at=LATER,
    revoked_by="alice",
    revoked_by_role=Role.CUSTOMER_ADMIN,
)
SUSPENDED = CustomerSuspended(
    customer_id=CUSTOMER,
    reason="invoices unpaid",
    suspended_at=LATER,
    suspended_by=STAFF,
    suspended_by_role=Role.ADMIN,
)
REACTIVATED = CustomerReactivated(
    customer_id=CUSTOMER,
    reason="paid in full",
    reactivated_at=LATER,
    reactivated_by=STAFF,
    reactivated_by_role=Role.ADMIN,
)
ALICE_DEMOTED = UserRoleChanged(
    customer_id=CUSTOMER,
    user_id="alice",
    previous_role=Role.CUSTOMER_ADMIN,
    role=Role.TECHNICAL,
    changed_at=LATER,
    changed_by=STAFF,
    changed_by_role=Role.ADMIN,
)
CONTACT_CHANGED = BillingContactChanged(
    customer_id=CUSTOMER,
    billing_contact=NEW_CONTACT,
    changed_at=LATER,
    changed_by="alice",
    changed_by_role=Role.CUSTOMER_ADMIN,
)
BOB_REVOKED = UserAccessRevoked(
    customer_id=CUSTOMER,
    user_id="bob",
    previous_role=Role.FINANCE,
    revoked_at=LATER,
    revoked_by="alice",
    revoked_by_role=Role.CUSTOMER_ADMIN,
)
ALL_EVENTS: list[Event] = [
    REGISTERED,
    CONTACT_CHANGED,
    ALICE_INVITED,
    ALICE_DEMOTED,
    BOB_REVOKED,
    KEY_ISSUED,
    KEY_REVOKED,
    SUSPENDED,
    REACTIVATED,
]

REGISTER = RegisterCustomer(
    customer_id=CUSTOMER,
    name="Acme Ltd",
    currency="EUR",
    billing_contact=CONTACT,
    at=AT,
    by=STAFF,
    by_role=Role.ADMIN,
)
# Alice, the customer's CUSTOMER_ADMIN, acts in the commands below unless a test says otherwise.
CHANGE_CONTACT = ChangeBillingContact(
    customer_id=CUSTOMER,
    billing_contact=NEW_CONTACT,
    at=LATER,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
INVITE_CAROL = InviteUser(
    customer_id=CUSTOMER,
    user_id="carol",
    role=Role.TECHNICAL,
    name_sealed="sealed:carol",
    email_sealed="sealed:carol@",
    at=LATER,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
CHANGE_BOB = ChangeUserRole(
    customer_id=CUSTOMER,
    user_id="bob",
    role=Role.CUSTOMER_ADMIN,
    at=LATER,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
REVOKE_BOB = RevokeUserAccess(
    customer_id=CUSTOMER, user_id="bob", at=LATER, by="alice", by_role=Role.CUSTOMER_ADMIN
)
ISSUE_KEY = IssueApiKey(
    customer_id=CUSTOMER,
    key_id="key-1",
    secret_sha256=SECRET_SHA256,
    role=Role.TECHNICAL,
    label="ingest",
    at=AT,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
REVOKE_KEY = RevokeApiKey(
    customer_id=CUSTOMER, key_id="key-1", at=LATER, by="alice", by_role=Role.CUSTOMER_ADMIN
)
SUSPEND = SuspendCustomer(
    customer_id=CUSTOMER, reason="invoices unpaid", at=LATER, by=STAFF, by_role=Role.ADMIN
)
REACTIVATE = ReactivateCustomer(
    customer_id=CUSTOMER, reason="paid in full", at=LATER, by=STAFF, by_role=Role.ADMIN
)
ACCOUNT_COMMANDS: list[Command] = [
    CHANGE_CONTACT,
    INVITE_CAROL,
    CHANGE_BOB,
    REVOKE_BOB,
    ISSUE_KEY,
    REVOKE_KEY,
    SUSPEND,
    REACTIVATE,
]
"""Every command but registration."""

TEAM = (REGISTERED, ALICE_INVITED, BOB_INVITED)


def state_after(events: tuple[Event, ...] | list[Event]) -> CustomerAccount:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(given: tuple[Event, ...], when: Command) -> list[Event]:
    return decide(when, state_after(given))


def refusal(given: tuple[Event, ...], when: Command, error: type[CustomerError]) -> str:
    """The message of the refusal, after checking its type."""
    with pytest.raises(error) as raised:
        decide(when, state_after(given))
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


# Registration.


def test_register_opens_the_account() -> None:
    assert then((), REGISTER) == [REGISTERED]
    state = state_after([REGISTERED])
    assert state.status is CustomerStatus.ACTIVE
    assert (state.customer_id, state.name, state.currency) == (CUSTOMER, "Acme Ltd", "EUR")
    assert state.billing_contact == CONTACT
    assert initial_state().billing_contact is None


def test_register_keeps_the_optional_sealed_phone() -> None:
    with_phone = replace(CONTACT, phone_sealed="sealed:phone")
    [event] = then((), replace(REGISTER, billing_contact=with_phone))
    assert isinstance(event, CustomerRegistered)
    assert event.billing_contact.phone_sealed == "sealed:phone"
    assert state_after([event]).billing_contact == with_phone


def test_register_only_once() -> None:
    assert refusal((REGISTERED,), REGISTER, CustomerAlreadyRegisteredError) == (
        "customer 'cust-1' is already registered; register a new customer under a new id"
    )


@pytest.mark.parametrize("role", [Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL])
def test_register_only_by_vendor_staff(role: Role) -> None:
    assert refusal((), replace(REGISTER, by_role=role), NotAuthorizedError) == (
        f"only vendor staff (ADMIN) can register a customer, not {role}; ask vendor support"
    )


@pytest.mark.parametrize("field", ["customer_id", "name"])
def test_register_refuses_a_blank_field(field: str) -> None:
    command = replace(REGISTER, **{field: "  "})
    assert refusal((), command, InvalidCustomerFieldError) == (
        f"{field} must not be blank; fill it in"
    )


BLANK_CONTACT_FIELDS = [
    ("name_sealed", "billing_contact.name_sealed must not be blank; fill it in"),
    ("email_sealed", "billing_contact.email_sealed must not be blank; fill it in"),
    (
        "phone_sealed",
        "billing_contact.phone_sealed must not be blank; fill it in, or leave it out (null) "
        "when the contact has no phone",
    ),
]


@pytest.mark.parametrize(("field", "message"), BLANK_CONTACT_FIELDS)
def test_register_refuses_a_blank_contact_field(field: str, message: str) -> None:
    command = replace(REGISTER, billing_contact=replace(CONTACT, **{field: " "}))
    assert refusal((), command, InvalidCustomerFieldError) == message


# The billing contact.


def test_a_customer_admin_changes_the_billing_contact() -> None:
    assert then(TEAM, CHANGE_CONTACT) == [CONTACT_CHANGED]
    assert state_after([*TEAM, CONTACT_CHANGED]).billing_contact == NEW_CONTACT


def test_vendor_staff_change_the_billing_contact_without_being_users_of_the_customer() -> None:
    [event] = then((REGISTERED,), replace(CHANGE_CONTACT, by=STAFF, by_role=Role.ADMIN))
    assert event == replace(CONTACT_CHANGED, changed_by=STAFF, changed_by_role=Role.ADMIN)


def test_the_contact_is_replaced_whole_so_a_contact_without_phone_has_none() -> None:
    without_phone = BillingContact(name_sealed="sealed:n", email_sealed="sealed:e")
    [event] = then((*TEAM, CONTACT_CHANGED), replace(CHANGE_CONTACT, billing_contact=without_phone))
    assert state_after([*TEAM, CONTACT_CHANGED, event]).billing_contact == without_phone


def test_the_same_sealed_contact_again_is_recorded_not_refused() -> None:
    # Sealing gives new bytes every time (a fresh nonce), so the domain cannot tell a contact
    # that did not change; it records what it is given.
    assert then((*TEAM, CONTACT_CHANGED), CHANGE_CONTACT) == [CONTACT_CHANGED]


@pytest.mark.parametrize("role", [Role.FINANCE, Role.TECHNICAL])
def test_finance_and_technical_cannot_change_the_billing_contact(role: Role) -> None:
    command = replace(CHANGE_CONTACT, by="bob", by_role=role)
    assert refusal(TEAM, command, NotAuthorizedError) == (
        f"role {role} cannot change the billing contact; "
        "ask a CUSTOMER_ADMIN of the customer or an ADMIN"
    )


def test_a_customer_admin_of_another_customer_cannot_change_the_billing_contact() -> None:
    assert refusal(TEAM, replace(CHANGE_CONTACT, by="mallory"), NotAuthorizedError) == (
        "user 'mallory' is not a CUSTOMER_ADMIN of customer 'cust-1', so cannot change the "
        "billing contact; ask a CUSTOMER_ADMIN of the customer or an ADMIN"
    )


@pytest.mark.parametrize(("field", "message"), BLANK_CONTACT_FIELDS)
def test_change_billing_contact_refuses_a_blank_field(field: str, message: str) -> None:
    command = replace(CHANGE_CONTACT, billing_contact=replace(NEW_CONTACT, **{field: ""}))
    assert refusal(TEAM, command, InvalidCustomerFieldError) == message


def test_register_refuses_an_unsupported_currency() -> None:
    assert refusal((), replace(REGISTER, currency="XYZ"), UnsupportedCurrencyError) == (
        "currency 'XYZ' is not an ISO 4217 code we bill in; use one of "
        "AUD, CAD, CHF, DKK, EUR, GBP, JPY, NOK, NZD, SEK, USD"
    )


def test_register_asks_for_the_currency_in_capitals() -> None:
    assert refusal((), replace(REGISTER, currency="eur"), UnsupportedCurrencyError) == (
        "currency 'eur' is not an ISO 4217 code we bill in; write it in capitals, as EUR"
    )


# The stamp every command carries.


def test_a_naive_time_is_refused() -> None:
    assert refusal(
        (), replace(REGISTER, at=AT.replace(tzinfo=None)), InvalidCustomerFieldError
    ) == ("at must be a timezone-aware time; stamp commands with the time in UTC")


def test_a_blank_actor_is_refused() -> None:
    assert refusal(TEAM, replace(INVITE_CAROL, by=""), InvalidCustomerFieldError) == (
        "by must not be blank; fill it in"
    )


@pytest.mark.parametrize("command", ACCOUNT_COMMANDS, ids=lambda command: type(command).__name__)
def test_nothing_but_registration_reaches_an_unregistered_customer(command: Command) -> None:
    assert refusal((), command, CustomerNotRegisteredError) == (
        "customer 'cust-1' is not registered; register it first"
    )


@pytest.mark.parametrize("command", ACCOUNT_COMMANDS, ids=lambda command: type(command).__name__)
def test_a_command_for_another_customer_is_refused(command: Command) -> None:
    other = replace(command, customer_id="cust-2")
    assert refusal((*TEAM, SUSPENDED), other, CustomerMismatchError) == (
        "the command is for customer 'cust-2' but was decided against customer 'cust-1'; "
        "load the account the command names"
    )


# Who may administer the account.


def test_a_customer_admin_invites_a_user() -> None:
    assert then(TEAM, INVITE_CAROL) == [
        UserInvited(
            customer_id=CUSTOMER,
            user_id="carol",
            role=Role.TECHNICAL,
            name_sealed="sealed:carol",
            email_sealed="sealed:carol@",
            invited_at=LATER,
            invited_by="alice",
            invited_by_role=Role.CUSTOMER_ADMIN,
        )
    ]


def test_vendor_staff_invite_without_being_users_of_the_customer() -> None:
    [event] = then((REGISTERED,), replace(INVITE_CAROL, by=STAFF, by_role=Role.ADMIN))
    assert isinstance(event, UserInvited)
    assert (event.invited_by, event.invited_by_role) == (STAFF, Role.ADMIN)


@pytest.mark.parametrize("role", [Role.FINANCE, Role.TECHNICAL])
@pytest.mark.parametrize(
    ("command", "action"),
    [
        (CHANGE_CONTACT, "change the billing contact"),
        (INVITE_CAROL, "invite users"),
        (CHANGE_BOB, "change users' roles"),
        (REVOKE_BOB, "revoke users' access"),
        (ISSUE_KEY, "issue API keys"),
        (REVOKE_KEY, "revoke API keys"),
    ],
)
def test_finance_and_technical_cannot_administer(role: Role, command: Command, action: str) -> None:
    assert refusal((*TEAM, KEY_ISSUED), replace(command, by_role=role), NotAuthorizedError) == (
        f"role {role} cannot {action}; ask a CUSTOMER_ADMIN of the customer or an ADMIN"
    )


@pytest.mark.parametrize("actor", ["mallory", "bob"])
def test_a_customer_admin_claim_needs_the_role_on_this_customer(actor: str) -> None:
    # mallory is no user of this customer (a CUSTOMER_ADMIN elsewhere); bob holds FINANCE here.
    assert refusal(TEAM, replace(INVITE_CAROL, by=actor), NotAuthorizedError) == (
        f"user {actor!r} is not a CUSTOMER_ADMIN of customer 'cust-1', so cannot invite users; "
        "ask a CUSTOMER_ADMIN of the customer or an ADMIN"
    )


def test_a_demoted_customer_admin_loses_the_right_at_once() -> None:
    second_admin = replace(BOB_INVITED, role=Role.CUSTOMER_ADMIN)
    given = (REGISTERED, ALICE_INVITED, second_admin, ALICE_DEMOTED)
    assert refusal(given, INVITE_CAROL, NotAuthorizedError).startswith(
        "user 'alice' is not a CUSTOMER_ADMIN of customer 'cust-1'"
    )


@pytest.mark.parametrize("command", [INVITE_CAROL, CHANGE_BOB], ids=["invite", "change"])
def test_a_customer_admin_cannot_grant_admin(command: InviteUser | ChangeUserRole) -> None:
    assert refusal(TEAM, replace(command, role=Role.ADMIN), NotAuthorizedError) == (
        "only vendor staff (ADMIN) can grant the ADMIN role; "
        "choose CUSTOMER_ADMIN, FINANCE or TECHNICAL"
    )


def test_vendor_staff_can_grant_admin() -> None:
    command = replace(INVITE_CAROL, role=Role.ADMIN, by=STAFF, by_role=Role.ADMIN)
    [event] = then(TEAM, command)
    assert isinstance(event, UserInvited)
    assert event.role is Role.ADMIN


@pytest.mark.parametrize(
    "command", [replace(CHANGE_BOB, role=Role.FINANCE), REVOKE_BOB], ids=["change", "revoke"]
)
def test_a_customer_admin_cannot_manage_vendor_staff(
    command: ChangeUserRole | RevokeUserAccess,
) -> None:
    command = replace(command, user_id="vera")
    assert refusal((*TEAM, VERA_INVITED), command, NotAuthorizedError) == (
        "user 'vera' is vendor staff (ADMIN); only an ADMIN can change or revoke their access"
    )


# Users.


def test_no_duplicate_user_ids() -> None:
    assert refusal(TEAM, replace(INVITE_CAROL, user_id="bob"), DuplicateUserError) == (
        "user 'bob' is already a user of customer 'cust-1' with role FINANCE; "
        "change their role instead of inviting them again"
    )


def test_a_revoked_user_can_be_invited_again() -> None:
    [event] = then((*TEAM, BOB_REVOKED), replace(INVITE_CAROL, user_id="bob"))
    assert isinstance(event, UserInvited)


@pytest.mark.parametrize("field", ["user_id", "name_sealed", "email_sealed"])
def test_invite_refuses_a_blank_field(field: str) -> None:
    assert refusal(TEAM, replace(INVITE_CAROL, **{field: ""}), InvalidCustomerFieldError) == (
        f"{field} must not be blank; fill it in"
    )


def test_change_role_records_the_previous_role() -> None:
    assert then(TEAM, CHANGE_BOB) == [
        UserRoleChanged(
            customer_id=CUSTOMER,
            user_id="bob",
            previous_role=Role.FINANCE,
            role=Role.CUSTOMER_ADMIN,
            changed_at=LATER,
            changed_by="alice",
            changed_by_role=Role.CUSTOMER_ADMIN,
        )
    ]
    assert state_after([*TEAM, *then(TEAM, CHANGE_BOB)]).customer_admin_count() == 2


def test_change_role_to_the_same_role_is_refused() -> None:
    command = replace(CHANGE_BOB, role=Role.FINANCE)
    assert refusal(TEAM, command, RoleUnchangedError) == (
        "user 'bob' already has role FINANCE; nothing to change"
    )


@pytest.mark.parametrize("command", [CHANGE_BOB, REVOKE_BOB], ids=["change", "revoke"])
def test_unknown_users_are_refused(command: ChangeUserRole | RevokeUserAccess) -> None:
    assert refusal(TEAM, replace(command, user_id="zoe"), UnknownUserError) == (
        "customer 'cust-1' has no user 'zoe'; check the user id, or invite them first"
    )


@pytest.mark.parametrize("by", ["alice", STAFF])
def test_the_last_customer_admin_cannot_be_demoted(by: str) -> None:
    role = Role.CUSTOMER_ADMIN if by == "alice" else Role.ADMIN
    command = replace(CHANGE_BOB, user_id="alice", role=Role.TECHNICAL, by=by, by_role=role)
    assert refusal(TEAM, command, LastCustomerAdminError) == (
        "cannot change the role of user 'alice': they are the last CUSTOMER_ADMIN of customer "
        "'cust-1'; make another user CUSTOMER_ADMIN first"
    )


@pytest.mark.parametrize("by", ["alice", STAFF])
def test_the_last_customer_admin_cannot_be_revoked(by: str) -> None:
    role = Role.CUSTOMER_ADMIN if by == "alice" else Role.ADMIN
    command = replace(REVOKE_BOB, user_id="alice", by=by, by_role=role)
    assert refusal(TEAM, command, LastCustomerAdminError) == (
        "cannot revoke the access of user 'alice': they are the last CUSTOMER_ADMIN of "
        "customer 'cust-1'; make another user CUSTOMER_ADMIN first"
    )


def test_a_customer_admin_who_is_not_the_last_can_step_down() -> None:
    given = (REGISTERED, ALICE_INVITED, replace(BOB_INVITED, role=Role.CUSTOMER_ADMIN))
    command = replace(CHANGE_BOB, user_id="alice", role=Role.TECHNICAL)
    [event] = then(given, command)
    assert isinstance(event, UserRoleChanged)
    [revoked] = then(given, replace(REVOKE_BOB, user_id="alice"))
    assert isinstance(revoked, UserAccessRevoked)


def test_revoke_user_access() -> None:
    assert then(TEAM, REVOKE_BOB) == [BOB_REVOKED]
    assert "bob" not in state_after([*TEAM, BOB_REVOKED]).users


# API keys.


def test_issue_api_key_keeps_only_the_hash() -> None:
    assert then(TEAM, ISSUE_KEY) == [KEY_ISSUED]
    assert b"vl_test_secret" not in msgspec.json.encode(KEY_ISSUED)


@pytest.mark.parametrize(
    "digest",
    ["", "vl_test_secret", SECRET_SHA256.upper(), SECRET_SHA256[:-1], SECRET_SHA256 + "0"],
)
def test_issue_api_key_needs_a_sha256_hex_digest(digest: str) -> None:
    command = replace(ISSUE_KEY, secret_sha256=digest)
    assert refusal(TEAM, command, InvalidCustomerFieldError) == (
        "secret_sha256 must be the SHA-256 digest of the key's secret as 64 lowercase "
        f"hexadecimal characters (got {len(digest)} characters that are not); "
        "hash the secret in the command layer and never send the secret itself"
    )


def test_issue_api_key_refuses_a_blank_key_id() -> None:
    assert refusal(TEAM, replace(ISSUE_KEY, key_id=" "), InvalidCustomerFieldError) == (
        "key_id must not be blank; fill it in"
    )


@pytest.mark.parametrize("history", [(KEY_ISSUED,), (KEY_ISSUED, KEY_REVOKED)])
def test_key_ids_are_never_reused(history: tuple[Event, ...]) -> None:
    assert refusal((*TEAM, *history), ISSUE_KEY, DuplicateApiKeyError) == (
        "API key 'key-1' already exists for customer 'cust-1'; issue the new key under a new key id"
    )


@pytest.mark.parametrize("role", [Role.FINANCE, Role.TECHNICAL])
def test_a_key_is_issued_with_the_role_its_client_acts_in(role: Role) -> None:
    [event] = then(TEAM, replace(ISSUE_KEY, role=role))
    assert event == replace(KEY_ISSUED, role=role)
    account = state_after([*TEAM, event])
    assert account.role_of("api-key:key-1") is role
    assert account.roles_by_user()["api-key:key-1"] is role


@pytest.mark.parametrize("role", [Role.ADMIN, Role.CUSTOMER_ADMIN])
def test_no_key_administers(role: Role) -> None:
    assert refusal(TEAM, replace(ISSUE_KEY, role=role), NotAuthorizedError) == (
        f"an API key cannot hold {role}: machine clients act as FINANCE or TECHNICAL, and "
        "administering the account or the vendor is left to people"
    )


def test_a_key_acts_in_its_role_until_revoked() -> None:
    issued = state_after([*TEAM, KEY_ISSUED])
    authorize(issued, "api-key:key-1", Role.TECHNICAL, frozenset({Role.TECHNICAL}), "map metrics")
    with pytest.raises(NotAuthorizedError, match="'api-key:key-1' is not a FINANCE"):
        authorize(issued, "api-key:key-1", Role.FINANCE, frozenset({Role.FINANCE}), "approve")
    revoked = state_after([*TEAM, KEY_ISSUED, KEY_REVOKED])
    assert revoked.role_of("api-key:key-1") is None
    assert "api-key:key-1" not in revoked.roles_by_user()
    with pytest.raises(NotAuthorizedError, match="'api-key:key-1' is not a TECHNICAL"):
        authorize(revoked, "api-key:key-1", Role.TECHNICAL, frozenset({Role.TECHNICAL}), "map")
    # The key's id alone, without the actor prefix, names nobody.
    assert issued.role_of("key-1") is None


def test_nobody_is_invited_under_an_api_key_id() -> None:
    command = replace(INVITE_CAROL, user_id="api-key:key-1")
    assert refusal((*TEAM, KEY_ISSUED), command, InvalidCustomerFieldError) == (
        "user_id 'api-key:key-1' starts with 'api-key:', which names API keys; choose another "
        "id for the person"
    )


def test_revoke_api_key() -> None:
    assert then((*TEAM, KEY_ISSUED), REVOKE_KEY) == [KEY_REVOKED]
    assert state_after([*TEAM, KEY_ISSUED, KEY_REVOKED]).api_keys["key-1"].revoked_at == LATER


def test_revoke_an_unknown_api_key() -> None:
    assert refusal(TEAM, REVOKE_KEY, UnknownApiKeyError) == (
        "customer 'cust-1' has no API key 'key-1'; check the key id in the list of the "
        "customer's keys"
    )


def test_revoking_a_revoked_key_is_refused() -> None:
    assert refusal((*TEAM, KEY_ISSUED, KEY_REVOKED), REVOKE_KEY, ApiKeyAlreadyRevokedError) == (
        "API key 'key-1' was already revoked at 2025-01-06T10:00:00+00:00; "
        "it is no longer accepted, so there is nothing more to do"
    )


# Suspension.


def test_vendor_staff_suspend_and_reactivate() -> None:
    assert then(TEAM, SUSPEND) == [SUSPENDED]
    assert state_after([*TEAM, SUSPENDED]).status is CustomerStatus.SUSPENDED
    assert then((*TEAM, SUSPENDED), REACTIVATE) == [REACTIVATED]
    reactivated = state_after([*TEAM, SUSPENDED, REACTIVATED])
    assert (reactivated.status, reactivated.suspension_reason) == (CustomerStatus.ACTIVE, "")


@pytest.mark.parametrize(
    ("command", "given", "action"),
    [(SUSPEND, TEAM, "suspend"), (REACTIVATE, (*TEAM, SUSPENDED), "reactivate")],
)
@pytest.mark.parametrize("by", ["alice", "bob"])
def test_only_vendor_staff_suspend_or_reactivate(
    command: SuspendCustomer | ReactivateCustomer, given: tuple[Event, ...], action: str, by: str
) -> None:
    role = state_after(given).users[by].role
    assert refusal(given, replace(command, by=by, by_role=role), NotAuthorizedError) == (
        f"only vendor staff (ADMIN) can {action} a customer, not {role}; ask vendor support"
    )


@pytest.mark.parametrize(("command", "given"), [(SUSPEND, TEAM), (REACTIVATE, (*TEAM, SUSPENDED))])
def test_suspend_and_reactivate_need_a_reason(
    command: SuspendCustomer | ReactivateCustomer, given: tuple[Event, ...]
) -> None:
    assert refusal(given, replace(command, reason=""), InvalidCustomerFieldError) == (
        "reason must not be blank; fill it in"
    )


@pytest.mark.parametrize(
    "command",
    [CHANGE_CONTACT, INVITE_CAROL, CHANGE_BOB, REVOKE_BOB, ISSUE_KEY, REVOKE_KEY, SUSPEND],
    ids=lambda command: type(command).__name__,
)
@pytest.mark.parametrize("by_staff", [False, True], ids=["customer-admin", "admin"])
def test_a_suspended_customer_refuses_all_but_reactivation(
    command: Command, by_staff: bool
) -> None:
    if by_staff:
        command = replace(command, by=STAFF, by_role=Role.ADMIN)
    given = (*TEAM, KEY_ISSUED, SUSPENDED)
    assert refusal(given, command, CustomerSuspendedError) == (
        "customer 'cust-1' is suspended (invoices unpaid); "
        "nothing can change until an ADMIN reactivates it"
    )


def test_reactivating_an_active_customer_is_refused() -> None:
    assert refusal(TEAM, REACTIVATE, CustomerNotSuspendedError) == (
        "customer 'cust-1' is not suspended, so there is nothing to reactivate"
    )


# Events as stored.

EXPECTED_TAGS = {
    CustomerRegistered: "CustomerRegistered",
    BillingContactChanged: "BillingContactChanged",
    UserInvited: "UserInvited",
    UserRoleChanged: "UserRoleChanged",
    UserAccessRevoked: "UserAccessRevoked",
    ApiKeyIssued: "ApiKeyIssued",
    ApiKeyRevoked: "ApiKeyRevoked",
    CustomerSuspended: "CustomerSuspended",
    CustomerReactivated: "CustomerReactivated",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    assert {type(event) for event in ALL_EVENTS} == set(EXPECTED_TAGS)
    for event in ALL_EVENTS:
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


CURRENT_SCHEMAS: dict[type[msgspec.Struct], int] = {CustomerRegistered: 2, ApiKeyIssued: 2}
"""Events whose shape changed; an upcaster reads each older schema (tests/commands/
test_upcasting.py folds a stored schema 1 record)."""


@pytest.mark.parametrize("event_type", list(EXPECTED_TAGS), ids=lambda cls: cls.__name__)
def test_events_follow_the_ledger_conventions(event_type: type[msgspec.Struct]) -> None:
    config = event_type.__struct_config__
    assert (config.frozen, config.tag_field, config.tag) == (
        True,
        "type",
        EXPECTED_TAGS[event_type],
    )
    fields = msgspec.structs.fields(event_type)
    assert (fields[-1].name, fields[-1].default) == ("schema", CURRENT_SCHEMAS.get(event_type, 1))
    assert any(field.name.endswith("_at") and field.type is datetime for field in fields)


def test_an_unknown_event_type_is_not_decoded() -> None:
    with pytest.raises(msgspec.ValidationError):
        EVENT_DECODER.decode(b'{"type": "CustomerDeleted", "customer_id": "cust-1"}')


def test_commands_refuse_unknown_fields() -> None:
    decoder = msgspec.json.Decoder(Command)
    encoded = msgspec.json.encode(REVOKE_KEY)
    assert decoder.decode(encoded) == REVOKE_KEY
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decoder.decode(encoded[:-1] + b', "secret": "x"}')


# Invariants over random command sequences.


def command_strategy(*, valid: bool) -> st.SearchStrategy[Command]:
    """Commands drawn from small pools of ids, so they collide; `valid` ones pass field checks
    and mostly come from authorised actors, the others mix in every kind of bad value."""
    actors = [("alice", Role.CUSTOMER_ADMIN), ("carol", Role.CUSTOMER_ADMIN), (STAFF, Role.ADMIN)]
    texts = ["Acme", "sealed:x"]
    stamp = {
        "customer_id": st.just(CUSTOMER),
        "at": st.sampled_from([AT, LATER]),
    }
    user_ids = st.sampled_from(["alice", "bob", "carol", "dave", STAFF])
    key_ids = st.sampled_from(["key-1", "key-2"])
    digests = st.just(SECRET_SHA256)
    currencies = st.just("EUR")
    phones: st.SearchStrategy[str | None] = st.none() | st.just("sealed:phone")
    if not valid:
        actors += [("bob", Role.FINANCE), ("mallory", Role.CUSTOMER_ADMIN), ("", Role.ADMIN)]
        texts += ["", " "]
        stamp["customer_id"] = st.sampled_from([CUSTOMER, "cust-2"])
        stamp["at"] = st.sampled_from([AT, AT.replace(tzinfo=None)])
        user_ids = st.sampled_from(["alice", "bob", "", "zoe"])
        key_ids = st.sampled_from(["key-1", "", "key-9"])
        digests = st.sampled_from([SECRET_SHA256, "vl_test_secret"])
        currencies = st.sampled_from(["EUR", "usd", "XYZ"])
        phones = st.none() | st.sampled_from(["sealed:phone", "", " "])
    actor = st.sampled_from(actors)
    text = st.sampled_from(texts)
    contacts = st.builds(BillingContact, name_sealed=text, email_sealed=text, phone_sealed=phones)

    def stamped(build: st.SearchStrategy[Command]) -> st.SearchStrategy[Command]:
        return st.tuples(build, actor).map(
            lambda pair: replace(pair[0], by=pair[1][0], by_role=pair[1][1])
        )

    common = {**stamp, "by": st.just(""), "by_role": st.just(Role.ADMIN)}
    return st.one_of(
        stamped(
            st.builds(
                RegisterCustomer,
                name=text,
                currency=currencies,
                billing_contact=contacts,
                **common,
            )
        ),
        stamped(st.builds(ChangeBillingContact, billing_contact=contacts, **common)),
        stamped(
            st.builds(
                InviteUser,
                user_id=user_ids,
                role=st.sampled_from(Role),
                name_sealed=text,
                email_sealed=text,
                **common,
            )
        ),
        stamped(st.builds(ChangeUserRole, user_id=user_ids, role=st.sampled_from(Role), **common)),
        stamped(st.builds(RevokeUserAccess, user_id=user_ids, **common)),
        stamped(
            st.builds(IssueApiKey, key_id=key_ids, secret_sha256=digests, label=text, **common)
        ),
        stamped(st.builds(RevokeApiKey, key_id=key_ids, **common)),
        stamped(st.builds(SuspendCustomer, reason=text, **common)),
        stamped(st.builds(ReactivateCustomer, reason=text, **common)),
    )


COMMANDS = st.one_of(
    command_strategy(valid=True), command_strategy(valid=True), command_strategy(valid=False)
)


@settings(max_examples=300, deadline=None)
@hypothesis_given(
    start=st.sampled_from([(), (REGISTERED,), TEAM, (*TEAM, VERA_INVITED, KEY_ISSUED)]),
    commands=st.lists(COMMANDS, max_size=40),
)
def test_random_commands_are_refused_only_with_domain_errors_and_replay_exactly(
    start: tuple[Event, ...], commands: list[Command]
) -> None:
    history: list[Event] = list(start)
    state = state_after(history)
    had_customer_admin = state.customer_admin_count() > 0
    for command in commands:
        try:
            events = decide(command, state)
        except DomainError as refused:
            hypothesis_event(f"refused: {type(refused).__name__}")
            continue
        hypothesis_event(f"decided: {type(command).__name__}")
        assert decide(command, state) == events
        for event in events:
            state = evolve(state, event)
        history.extend(events)
        # Once a customer has a CUSTOMER_ADMIN, it never loses the last one.
        had_customer_admin = had_customer_admin or state.customer_admin_count() > 0
        assert not had_customer_admin or state.customer_admin_count() > 0
    assert state_after(history) == state
    assert state_after(history) == state_after(history)
    decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in history]
    assert decoded == history
    assert state_after(decoded) == state
