"""The customer account's rules: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor and every id come on the command, so deciding again from
the same events and command gives the same events, and replaying events the same state.

Who may do what:
- ADMIN is vendor staff and may act on any customer; its role comes from the caller's token.
- CUSTOMER_ADMIN manages the users, API keys and billing contact of its own customer only:
  the actor must be one of this customer's current users holding CUSTOMER_ADMIN now, so a
  token issued before a demotion or revocation no longer works. It may not grant ADMIN, nor
  change or revoke an ADMIN's access.
- Registering, suspending and reactivating a customer are for ADMIN alone.
- A suspended customer accepts nothing but reactivation (reads are queries, not commands).
- The last CUSTOMER_ADMIN can be neither revoked nor demoted, whoever asks.
- The billing contact's name and e-mail must not be blank, nor its phone when one is given.
  A change of contact is always recorded: sealed values differ at every sealing (a fresh
  nonce), so "the same contact again" cannot be told apart and is not refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, assert_never

import msgspec

from domain.customer.commands import (
    ChangeBillingContact,
    ChangeUserRole,
    Command,
    InviteUser,
    IssueApiKey,
    ReactivateCustomer,
    RegisterCustomer,
    RevokeApiKey,
    RevokeUserAccess,
    SuspendCustomer,
)
from domain.customer.errors import (
    ApiKeyAlreadyRevokedError,
    CustomerAlreadyRegisteredError,
    CustomerMismatchError,
    CustomerNotRegisteredError,
    CustomerNotSuspendedError,
    CustomerSuspendedError,
    DuplicateApiKeyError,
    DuplicateUserError,
    InvalidCustomerFieldError,
    LastCustomerAdminError,
    NotAuthorizedError,
    RoleUnchangedError,
    UnknownApiKeyError,
    UnknownUserError,
    UnsupportedCurrencyError,
)
from domain.customer.events import (
    ApiKeyIssued,
    ApiKeyRevoked,
    BillingContact,
    BillingContactChanged,
    CustomerReactivated,
    CustomerRegistered,
    CustomerSuspended,
    Event,
    UserAccessRevoked,
    UserInvited,
    UserRoleChanged,
)
from domain.customer.state import ApiKey, CustomerAccount, CustomerStatus, CustomerUser
from domain.roles import API_KEY_ACTOR_PREFIX, Role, is_api_key_actor

SUPPORTED_CURRENCIES: Final = frozenset(
    {"AUD", "CAD", "CHF", "DKK", "EUR", "GBP", "JPY", "NOK", "NZD", "SEK", "USD"}
)
"""ISO 4217 codes we invoice in; adding one is a business decision, so the list is explicit."""

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
API_KEY_ROLES: Final = frozenset({Role.FINANCE, Role.TECHNICAL})
"""The roles an API key can be issued with."""


def decide(command: Command, state: CustomerAccount) -> list[Event]:  # noqa: PLR0911 (one return per kind of command)
    """The events the command makes happen, or a `CustomerError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    # The account must exist for everything but registering, and be open (not suspended) for
    # everything but reactivating it.
    if isinstance(command, ReactivateCustomer):
        _check_registered(command.customer_id, state)
    elif not isinstance(command, RegisterCustomer):
        _check_open(command.customer_id, state)
    match command:
        case RegisterCustomer():
            return _register(command, state)
        case ChangeBillingContact():
            return _change_billing_contact(command, state)
        case InviteUser():
            return _invite(command, state)
        case ChangeUserRole():
            return _change_role(command, state)
        case RevokeUserAccess():
            return _revoke_user(command, state)
        case IssueApiKey():
            return _issue_key(command, state)
        case RevokeApiKey():
            return _revoke_key(command, state)
        case SuspendCustomer():
            return _suspend(command, state)
        case ReactivateCustomer():
            return _reactivate(command, state)
        case _:
            assert_never(command)


def evolve(state: CustomerAccount, event: Event) -> CustomerAccount:  # noqa: PLR0911 (one return per kind of event)
    """The state after the event; events are facts already decided, so nothing is refused."""
    match event:
        case CustomerRegistered():
            return CustomerAccount(
                status=CustomerStatus.ACTIVE,
                customer_id=event.customer_id,
                name=event.name,
                currency=event.currency,
                billing_contact=event.billing_contact,
            )
        case BillingContactChanged():
            return msgspec.structs.replace(state, billing_contact=event.billing_contact)
        case UserInvited():
            user = CustomerUser(
                user_id=event.user_id,
                role=event.role,
                name_sealed=event.name_sealed,
                email_sealed=event.email_sealed,
                invited_at=event.invited_at,
            )
            return msgspec.structs.replace(state, users={**state.users, event.user_id: user})
        case UserRoleChanged():
            changed = msgspec.structs.replace(state.users[event.user_id], role=event.role)
            return msgspec.structs.replace(state, users={**state.users, event.user_id: changed})
        case UserAccessRevoked():
            users = {key: user for key, user in state.users.items() if key != event.user_id}
            return msgspec.structs.replace(state, users=users)
        case ApiKeyIssued():
            key = ApiKey(
                key_id=event.key_id,
                secret_sha256=event.secret_sha256,
                role=event.role,
                label=event.label,
                issued_at=event.issued_at,
            )
            return msgspec.structs.replace(state, api_keys={**state.api_keys, event.key_id: key})
        case ApiKeyRevoked():
            revoked = msgspec.structs.replace(
                state.api_keys[event.key_id], revoked_at=event.revoked_at
            )
            return msgspec.structs.replace(
                state, api_keys={**state.api_keys, event.key_id: revoked}
            )
        case CustomerSuspended():
            return msgspec.structs.replace(
                state, status=CustomerStatus.SUSPENDED, suspension_reason=event.reason
            )
        case CustomerReactivated():
            return msgspec.structs.replace(
                state, status=CustomerStatus.ACTIVE, suspension_reason=""
            )
        case _:
            assert_never(event)


def _register(command: RegisterCustomer, state: CustomerAccount) -> list[Event]:
    _check_vendor(command.by_role, "register a customer")
    if state.status is not CustomerStatus.UNREGISTERED:
        raise CustomerAlreadyRegisteredError(
            f"customer {state.customer_id!r} is already registered; "
            "register a new customer under a new id"
        )
    _check_filled("customer_id", command.customer_id)
    _check_filled("name", command.name)
    _check_currency(command.currency)
    _check_contact(command.billing_contact)
    return [
        CustomerRegistered(
            customer_id=command.customer_id,
            name=command.name,
            currency=command.currency,
            billing_contact=command.billing_contact,
            registered_at=command.at,
            registered_by=command.by,
            registered_by_role=command.by_role,
        )
    ]


def _change_billing_contact(command: ChangeBillingContact, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "change the billing contact")
    _check_contact(command.billing_contact)
    return [
        BillingContactChanged(
            customer_id=state.customer_id,
            billing_contact=command.billing_contact,
            changed_at=command.at,
            changed_by=command.by,
            changed_by_role=command.by_role,
        )
    ]


def _invite(command: InviteUser, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "invite users")
    _check_may_grant(command.by_role, command.role)
    _check_filled("user_id", command.user_id)
    if is_api_key_actor(command.user_id):
        raise InvalidCustomerFieldError(
            f"user_id {command.user_id!r} starts with {API_KEY_ACTOR_PREFIX!r}, which names "
            "API keys; choose another id for the person"
        )
    _check_filled("name_sealed", command.name_sealed)
    _check_filled("email_sealed", command.email_sealed)
    if command.user_id in state.users:
        existing = state.users[command.user_id]
        raise DuplicateUserError(
            f"user {command.user_id!r} is already a user of customer {state.customer_id!r} "
            f"with role {existing.role}; change their role instead of inviting them again"
        )
    return [
        UserInvited(
            customer_id=state.customer_id,
            user_id=command.user_id,
            role=command.role,
            name_sealed=command.name_sealed,
            email_sealed=command.email_sealed,
            invited_at=command.at,
            invited_by=command.by,
            invited_by_role=command.by_role,
        )
    ]


def _change_role(command: ChangeUserRole, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "change users' roles")
    user = _known_user(command.user_id, state)
    _check_may_manage(command.by_role, user)
    _check_may_grant(command.by_role, command.role)
    if command.role is user.role:
        raise RoleUnchangedError(
            f"user {user.user_id!r} already has role {user.role}; nothing to change"
        )
    if user.role is Role.CUSTOMER_ADMIN:
        _check_not_last_customer_admin(state, f"change the role of user {user.user_id!r}")
    return [
        UserRoleChanged(
            customer_id=state.customer_id,
            user_id=user.user_id,
            previous_role=user.role,
            role=command.role,
            changed_at=command.at,
            changed_by=command.by,
            changed_by_role=command.by_role,
        )
    ]


def _revoke_user(command: RevokeUserAccess, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "revoke users' access")
    user = _known_user(command.user_id, state)
    _check_may_manage(command.by_role, user)
    if user.role is Role.CUSTOMER_ADMIN:
        _check_not_last_customer_admin(state, f"revoke the access of user {user.user_id!r}")
    return [
        UserAccessRevoked(
            customer_id=state.customer_id,
            user_id=user.user_id,
            previous_role=user.role,
            revoked_at=command.at,
            revoked_by=command.by,
            revoked_by_role=command.by_role,
        )
    ]


def _issue_key(command: IssueApiKey, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "issue API keys")
    _check_filled("key_id", command.key_id)
    if not _SHA256_HEX.fullmatch(command.secret_sha256):
        raise InvalidCustomerFieldError(
            "secret_sha256 must be the SHA-256 digest of the key's secret as 64 lowercase "
            f"hexadecimal characters (got {len(command.secret_sha256)} characters that are not); "
            "hash the secret in the command layer and never send the secret itself"
        )
    if command.role not in API_KEY_ROLES:
        raise NotAuthorizedError(
            f"an API key cannot hold {command.role}: machine clients act as FINANCE or "
            "TECHNICAL, and administering the account or the vendor is left to people"
        )
    if command.key_id in state.api_keys:
        raise DuplicateApiKeyError(
            f"API key {command.key_id!r} already exists for customer {state.customer_id!r}; "
            "issue the new key under a new key id"
        )
    return [
        ApiKeyIssued(
            customer_id=state.customer_id,
            key_id=command.key_id,
            secret_sha256=command.secret_sha256,
            role=command.role,
            label=command.label,
            issued_at=command.at,
            issued_by=command.by,
            issued_by_role=command.by_role,
        )
    ]


def _revoke_key(command: RevokeApiKey, state: CustomerAccount) -> list[Event]:
    _check_account_admin(command.by, command.by_role, state, "revoke API keys")
    key = state.api_keys.get(command.key_id)
    if key is None:
        raise UnknownApiKeyError(
            f"customer {state.customer_id!r} has no API key {command.key_id!r}; "
            "check the key id in the list of the customer's keys"
        )
    if key.revoked_at is not None:
        raise ApiKeyAlreadyRevokedError(
            f"API key {key.key_id!r} was already revoked at {key.revoked_at.isoformat()}; "
            "it is no longer accepted, so there is nothing more to do"
        )
    return [
        ApiKeyRevoked(
            customer_id=state.customer_id,
            key_id=key.key_id,
            revoked_at=command.at,
            revoked_by=command.by,
            revoked_by_role=command.by_role,
        )
    ]


def _suspend(command: SuspendCustomer, state: CustomerAccount) -> list[Event]:
    _check_vendor(command.by_role, "suspend a customer")
    _check_filled("reason", command.reason)
    return [
        CustomerSuspended(
            customer_id=state.customer_id,
            reason=command.reason,
            suspended_at=command.at,
            suspended_by=command.by,
            suspended_by_role=command.by_role,
        )
    ]


def _reactivate(command: ReactivateCustomer, state: CustomerAccount) -> list[Event]:
    _check_vendor(command.by_role, "reactivate a customer")
    _check_filled("reason", command.reason)
    if state.status is not CustomerStatus.SUSPENDED:
        raise CustomerNotSuspendedError(
            f"customer {state.customer_id!r} is not suspended, so there is nothing to reactivate"
        )
    return [
        CustomerReactivated(
            customer_id=state.customer_id,
            reason=command.reason,
            reactivated_at=command.at,
            reactivated_by=command.by,
            reactivated_by_role=command.by_role,
        )
    ]


def _check_stamp(at: datetime, by: str) -> None:
    """The application layer's stamp: a blank actor or a naive time would corrupt the trail."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidCustomerFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    _check_filled("by", by)


def _check_registered(customer_id: str, state: CustomerAccount) -> None:
    if state.status is CustomerStatus.UNREGISTERED:
        raise CustomerNotRegisteredError(
            f"customer {customer_id!r} is not registered; register it first"
        )
    if customer_id != state.customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {customer_id!r} but was decided against customer "
            f"{state.customer_id!r}; load the account the command names"
        )


def _check_open(customer_id: str, state: CustomerAccount) -> None:
    _check_registered(customer_id, state)
    if state.status is CustomerStatus.SUSPENDED:
        raise CustomerSuspendedError(
            f"customer {state.customer_id!r} is suspended ({state.suspension_reason}); "
            "nothing can change until an ADMIN reactivates it"
        )


def _check_vendor(by_role: Role, action: str) -> None:
    if by_role is not Role.ADMIN:
        raise NotAuthorizedError(
            f"only vendor staff (ADMIN) can {action}, not {by_role}; ask vendor support"
        )


def _check_account_admin(by: str, by_role: Role, state: CustomerAccount, action: str) -> None:
    """ADMIN anywhere; CUSTOMER_ADMIN only as a current CUSTOMER_ADMIN of this customer."""
    authorize(state, by, by_role, frozenset({Role.CUSTOMER_ADMIN}), action)


def authorize(
    state: CustomerAccount, by: str, by_role: Role, allowed: frozenset[Role], action: str
) -> None:
    """Refuse unless the actor is vendor staff (ADMIN), or a current user of this customer who
    holds one of the `allowed` roles now (so a token issued before a demotion no longer works),
    or an unrevoked API key of this customer issued with one of them.

    Other aggregates' handlers call it with the customer's account before deciding.
    """
    if by_role is Role.ADMIN:
        return
    roles = " or ".join(sorted(allowed))
    if by_role not in allowed:
        raise NotAuthorizedError(
            f"role {by_role} cannot {action}; ask a {roles} of the customer or an ADMIN"
        )
    if state.role_of(by) is not by_role:
        raise NotAuthorizedError(
            f"user {by!r} is not a {by_role} of customer {state.customer_id!r}, so cannot "
            f"{action}; ask a {roles} of the customer or an ADMIN"
        )


def ensure_registered(customer_id: str, state: CustomerAccount) -> None:
    """Refuse unless the customer is registered (suspended or not): for what a suspended
    customer may still do, such as asking support for help."""
    _check_registered(customer_id, state)


def ensure_open(customer_id: str, state: CustomerAccount) -> None:
    """Refuse unless the customer is registered and not suspended: every other aggregate's
    handler checks this first, as a suspended customer accepts nothing but reactivation."""
    _check_open(customer_id, state)


def _check_may_grant(by_role: Role, role: Role) -> None:
    if role is Role.ADMIN and by_role is not Role.ADMIN:
        raise NotAuthorizedError(
            "only vendor staff (ADMIN) can grant the ADMIN role; "
            "choose CUSTOMER_ADMIN, FINANCE or TECHNICAL"
        )


def _check_may_manage(by_role: Role, user: CustomerUser) -> None:
    if user.role is Role.ADMIN and by_role is not Role.ADMIN:
        raise NotAuthorizedError(
            f"user {user.user_id!r} is vendor staff (ADMIN); only an ADMIN can change "
            "or revoke their access"
        )


def _check_not_last_customer_admin(state: CustomerAccount, action: str) -> None:
    if state.customer_admin_count() <= 1:
        raise LastCustomerAdminError(
            f"cannot {action}: they are the last CUSTOMER_ADMIN of customer "
            f"{state.customer_id!r}; make another user CUSTOMER_ADMIN first"
        )


def _known_user(user_id: str, state: CustomerAccount) -> CustomerUser:
    user = state.users.get(user_id)
    if user is None:
        raise UnknownUserError(
            f"customer {state.customer_id!r} has no user {user_id!r}; "
            "check the user id, or invite them first"
        )
    return user


def _check_filled(field: str, value: str) -> None:
    if not value.strip():
        raise InvalidCustomerFieldError(f"{field} must not be blank; fill it in")


def _check_contact(contact: BillingContact) -> None:
    _check_filled("billing_contact.name_sealed", contact.name_sealed)
    _check_filled("billing_contact.email_sealed", contact.email_sealed)
    if contact.phone_sealed is not None and not contact.phone_sealed.strip():
        raise InvalidCustomerFieldError(
            "billing_contact.phone_sealed must not be blank; fill it in, or leave it out "
            "(null) when the contact has no phone"
        )


def _check_currency(currency: str) -> None:
    if currency in SUPPORTED_CURRENCIES:
        return
    supported = ", ".join(sorted(SUPPORTED_CURRENCIES))
    if currency.upper() in SUPPORTED_CURRENCIES:
        remedy = f"write it in capitals, as {currency.upper()}"
    else:
        remedy = f"use one of {supported}"
    raise UnsupportedCurrencyError(
        f"currency {currency!r} is not an ISO 4217 code we bill in; {remedy}"
    )
