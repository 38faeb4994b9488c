"""Commands on a customer account: registration, billing contact, users, API keys, suspension.

The account's stream is read through the customer's upcasters, so an event stored in an older
shape folds as its current one; the stored bytes are never rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from commands.aggregates import CUSTOMER
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import customer_stream, tenant_of
from domain import customer
from domain.roles import CustomerTeam, Role
from eventstore.store import EventStore


async def handle_customer(
    store: EventStore,
    command: customer.Command,
    *,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[customer.CustomerAccount, customer.Event]:
    """Decide the command on the customer's account and record its events."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: customer.CustomerAccount) -> list[customer.Event]:
        return customer.decide(command, state)

    return await execute(
        store,
        CUSTOMER,
        tenant=tenant,
        stream=customer_stream(tenant),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )


async def open_account(store: EventStore, customer_id: str) -> customer.CustomerAccount:
    """The customer's account as the ledger has it now, refused unless registered and open.

    Every other aggregate's handler starts here: it gives the users and roles the rules check,
    and a suspended customer accepts nothing but reactivation.
    """
    account = (await load(store, CUSTOMER, customer_stream(tenant_of(customer_id)))).state
    customer.ensure_open(customer_id, account)
    return account


async def customer_team(store: EventStore, customer_id: str) -> CustomerTeam:
    """The open customer's current users and roles, read from its stream."""
    account = await open_account(store, customer_id)
    return CustomerTeam(
        customer_id=customer_id,
        user_roles=account.roles_by_user(),
    )


API_KEY_PREFIX: Final = "vlk"
"""API keys read ``vlk_<key id>_<secret>``: the id finds the key, the secret proves it."""


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A key just issued: `presented` is what the client sends, shown to the caller once and
    kept nowhere (the ledger holds only its SHA-256 digest)."""

    outcome: Outcome[customer.CustomerAccount, customer.Event]
    key_id: str
    presented: str


def api_key_digest(presented: str) -> str:
    """The SHA-256 hex digest recorded for a presented key."""
    return hashlib.sha256(presented.encode()).hexdigest()


async def issue_api_key(
    store: EventStore,
    customer_id: str,
    *,
    label: str,
    role: Role,
    at: datetime,
    by: str,
    by_role: Role,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> IssuedApiKey:
    """Make a new key with 256 random bits of secret and record only its digest."""
    key_id = secrets.token_hex(8)
    presented = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    command = customer.IssueApiKey(
        customer_id=customer_id,
        key_id=key_id,
        secret_sha256=api_key_digest(presented),
        role=role,
        label=label,
        at=at,
        by=by,
        by_role=by_role,
    )
    outcome = await handle_customer(store, command, trace=trace, expected_version=expected_version)
    return IssuedApiKey(outcome, key_id, presented)


def matching_api_key(account: customer.CustomerAccount, presented: str) -> customer.ApiKey | None:
    """The account's unrevoked key that `presented` is, or None; compared in constant time."""
    prefix, _, rest = presented.partition("_")
    key_id, _, _ = rest.partition("_")
    key = account.api_keys.get(key_id) if prefix == API_KEY_PREFIX else None
    if key is None or key.revoked_at is not None:
        return None
    return key if hmac.compare_digest(key.secret_sha256, api_key_digest(presented)) else None
