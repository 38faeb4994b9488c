"""Commands on a value definition: draft, revise, submit for approval, approve, request changes."""

from __future__ import annotations

from commands.aggregates import DEFINITION, SETUP
from commands.customer import open_account
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import definition_stream, setup_stream, tenant_of
from domain import definition, setup
from eventstore.store import EventStore


async def definition_context(store: EventStore, customer_id: str) -> definition.DefinitionContext:
    """What a definition's rules need from the customer's account and setup, read fresh."""
    account = await open_account(store, customer_id)
    configured = await load(store, SETUP, setup_stream(tenant_of(customer_id)))
    return definition.DefinitionContext(
        customer_id=customer_id,
        currency=account.currency,
        users=account.roles_by_user(),
        metrics=frozenset(configured.state.metrics),
        baselines=_baselines(configured.state),
    )


def _baselines(state: setup.SetupState) -> frozenset[str]:
    if state.baseline is None:
        return frozenset()
    return frozenset(baseline.metric for baseline in state.baseline.baselines)


async def handle_definition(
    store: EventStore,
    command: definition.Command,
    *,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[definition.DefinitionState, definition.Event]:
    """Decide the command on its definition, against the customer as the ledger has it now."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: definition.DefinitionState) -> list[definition.Event]:
        context = await definition_context(store, command.customer_id)
        return definition.decide(command, state, context)

    return await execute(
        store,
        DEFINITION,
        tenant=tenant,
        stream=definition_stream(tenant, command.definition_id),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
