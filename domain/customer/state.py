"""A customer account as its events leave it: what deciding the next command needs to know."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

import msgspec

from domain.customer.events import BillingContact
from domain.roles import API_KEY_ACTOR_PREFIX, Role, api_key_actor


class CustomerStatus(StrEnum):
    """Where the account is in its life."""

    UNREGISTERED = "UNREGISTERED"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class CustomerUser(msgspec.Struct, frozen=True, kw_only=True):
    """A person with a role on the customer; name and e-mail are sealed by the command layer."""

    user_id: str
    role: Role
    name_sealed: str
    email_sealed: str
    invited_at: datetime


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An issued key: the SHA-256 hex digest of its secret, the role it acts in (None: a key
    issued before keys could act, which only reads), and when it was revoked if it was."""

    key_id: str
    secret_sha256: str
    role: Role | None
    label: str
    issued_at: datetime
    revoked_at: datetime | None = None


class CustomerAccount(msgspec.Struct, frozen=True, kw_only=True):
    """The account's current state.

    `users` holds current users only (a revoked user's id can be invited again); `api_keys`
    holds every key ever issued, revoked ones included, so a key id is never reused. Both
    mappings are replaced, never changed in place, by `evolve`.
    """

    status: CustomerStatus = CustomerStatus.UNREGISTERED
    customer_id: str = ""
    name: str = ""
    currency: str = ""
    billing_contact: BillingContact | None = None
    suspension_reason: str = ""
    users: Mapping[str, CustomerUser] = msgspec.field(default_factory=dict)
    api_keys: Mapping[str, ApiKey] = msgspec.field(default_factory=dict)

    def roles_by_user(self) -> dict[str, Role]:
        """Each current actor's id and role: what other aggregates' rules check actors against.

        People, and every unrevoked API key as ``api-key:<key id>`` in its issued role, so a
        machine client is held to the same rules as a person of that role.
        """
        roles = {user_id: user.role for user_id, user in self.users.items()}
        for key in self.api_keys.values():
            if key.revoked_at is None and key.role is not None:
                roles.setdefault(api_key_actor(key.key_id), key.role)
        return roles

    def role_of(self, actor: str) -> Role | None:
        """The role `actor` holds now: a current user's, or an unrevoked API key's (as
        ``api-key:<key id>``); None for anyone else."""
        user = self.users.get(actor)
        if user is not None:
            return user.role
        key_id = actor.removeprefix(API_KEY_ACTOR_PREFIX)
        key = self.api_keys.get(key_id) if key_id != actor else None
        return None if key is None or key.revoked_at is not None else key.role

    def customer_admin_count(self) -> int:
        """How many users hold CUSTOMER_ADMIN: the account must never lose its last one."""
        return sum(1 for user in self.users.values() if user.role is Role.CUSTOMER_ADMIN)


def initial_state() -> CustomerAccount:
    """The state before any event: a customer that is not registered yet."""
    return CustomerAccount()
