"""Commands on a period's value calculation: calculate, and recalculate with a reason."""

from __future__ import annotations

from commands.aggregates import BILLING, CALCULATION, DEFINITION, SETUP
from commands.customer import open_account
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import (
    billing_stream,
    calculation_stream,
    definition_stream,
    setup_stream,
    tenant_of,
)
from domain import calculation, definition
from eventstore.store import EventStore


def terms_in_force(state: definition.DefinitionState) -> calculation.DefinitionInForce | None:
    """The approved version in force, as the calculation's rules need it."""
    version = state.in_force
    if version is None:
        return None
    pricing = version.content.pricing
    return calculation.DefinitionInForce(
        definition_id=state.definition_id,
        version=version.number,
        content_hash=version.content_hash,
        formula=version.content.formula,
        metrics=tuple(metric.name for metric in version.content.metrics),
        share_percent=pricing.share_percent,
        floor_minor_units=pricing.floor_minor_units,
        cap_minor_units=pricing.cap_minor_units,
        currency=pricing.currency,
    )


async def calculation_context(
    store: EventStore, command: calculation.Command
) -> calculation.CalculationContext:
    """The definition in force, the baselines and whether billing ran for the whole period,
    read from the ledger now."""
    await open_account(store, command.customer_id)
    tenant = tenant_of(command.customer_id)
    defined = (
        await load(store, DEFINITION, definition_stream(tenant, command.definition_id))
    ).state
    configured = (await load(store, SETUP, setup_stream(tenant))).state
    billing = (await load(store, BILLING, billing_stream(tenant))).state
    baselines = () if configured.baseline is None else configured.baseline.baselines
    inactive = (
        billing.billing_inactive_reason(command.period_start, command.period_end)
        if command.period_end > command.period_start
        else "the period is empty"
    )
    return calculation.CalculationContext(
        definition=terms_in_force(defined),
        baselines={baseline.metric: baseline.value for baseline in baselines},
        billing_active=not inactive,
        billing_inactive_reason=inactive,
    )


async def handle_calculation(
    store: EventStore,
    command: calculation.Command,
    *,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[calculation.CalculationState, calculation.Event]:
    """Decide the calculation of its period and record the receipt."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: calculation.CalculationState) -> list[calculation.Event]:
        return calculation.decide(command, state, await calculation_context(store, command))

    return await execute(
        store,
        CALCULATION,
        tenant=tenant,
        stream=calculation_stream(tenant, command.definition_id, command.period_start),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
