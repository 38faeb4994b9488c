"""Commands on a customer account: registration, billing contact, users, API keys, suspension.

The account's stream is read through the customer's upcasters, so an event stored in an older
shape folds as its current one; the stored bytes are never rewritten.
"""

from __future__ import annotations

from typing import Final

from commands.handling import Aggregate, Outcome, Trace, execute, load, receipt_metadata
from commands.streams import customer_stream, tenant_of
from domain import customer
from eventstore.store import EventStore

CUSTOMER: Final = Aggregate(
    kind="customer",
    initial=customer.initial_state(),
    evolve=customer.evolve,
    event_type=customer.Event,
    upcasters=customer.UPCASTERS,
)


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
