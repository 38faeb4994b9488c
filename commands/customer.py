"""Commands on a customer account: registration, billing contact, users, API keys, suspension.

The account's stream is read through the customer's upcasters, so an event stored in an older
shape folds as its current one; the stored bytes are never rewritten.
"""

from __future__ import annotations

from commands.aggregates import CUSTOMER
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import customer_stream, tenant_of
from domain import customer
from domain.roles import CustomerTeam
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
        user_roles={user_id: user.role for user_id, user in account.users.items()},
    )
