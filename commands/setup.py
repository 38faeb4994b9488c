"""Commands on a customer's setup wizard: complete or redo one of its five steps."""

from __future__ import annotations

from typing import Final

from commands.aggregates import SETUP
from commands.customer import open_account
from commands.handling import Outcome, Trace, execute, receipt_metadata
from commands.streams import setup_stream, tenant_of
from domain import customer, setup
from domain.roles import Role
from eventstore.store import EventStore

SETUP_ROLES: Final = frozenset({Role.CUSTOMER_ADMIN, Role.TECHNICAL})
"""Who of the customer's users may complete setup steps (vendor staff always may)."""


async def handle_setup(
    store: EventStore,
    customer_id: str,
    command: setup.Command,
    *,
    by_role: Role,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[setup.SetupState, setup.Event]:
    """Decide a setup step for an open customer, by an ADMIN or one of its CUSTOMER_ADMIN or
    TECHNICAL users, and record it."""
    tenant = tenant_of(customer_id)

    async def decide(state: setup.SetupState) -> list[setup.Event]:
        account = await open_account(store, customer_id)
        customer.authorize(account, command.by, by_role, SETUP_ROLES, "complete setup steps")
        return setup.decide(command, state)

    return await execute(
        store,
        SETUP,
        tenant=tenant,
        stream=setup_stream(tenant),
        metadata=receipt_metadata(command.by, by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
