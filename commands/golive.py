"""Commands on a customer's billing switch: go live (after the pre-flight checks), pause and
resume billing, set the accuracy threshold."""

from __future__ import annotations

from commands.aggregates import ACCURACY, ALERTS, BILLING, DEFINITION, SETUP
from commands.customer import customer_team
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import (
    accuracy_stream,
    alerts_stream,
    billing_stream,
    definitions_prefix,
    setup_stream,
    tenant_of,
)
from domain import golive, setup
from eventstore.store import EventStore


async def definitions_in_force(
    store: EventStore, tenant: str
) -> tuple[golive.DefinitionInForce, ...]:
    """Every approved definition version in force, read from the definitions' streams."""
    in_force = []
    for stream in await store.stream_ids(tenant, definitions_prefix(tenant)):
        state = (await load(store, DEFINITION, stream)).state
        if state.in_force is not None:
            in_force.append(
                golive.DefinitionInForce(
                    definition_id=state.definition_id,
                    version=state.in_force.number,
                    content_hash=state.in_force.content_hash,
                )
            )
    return tuple(in_force)


async def measured_accuracy(
    store: EventStore, tenant: str, configured: setup.SetupState
) -> str | None:
    """The setup test's accuracy with every verdict given since, or None before the test."""
    if configured.testing is None or configured.accuracy is None:
        return None
    feedback = (await load(store, ACCURACY, accuracy_stream(tenant))).state
    return str(feedback.measured_accuracy(configured.accuracy, configured.testing.verified_at))


async def preflight(store: EventStore, customer_id: str) -> golive.GoLivePreflight:
    """The facts going live is checked against, read from the ledger now (never a cache)."""
    tenant = tenant_of(customer_id)
    team = await customer_team(store, customer_id)
    configured = (await load(store, SETUP, setup_stream(tenant))).state
    alerts = (await load(store, ALERTS, alerts_stream(tenant))).state
    missing = configured.next_step
    return golive.GoLivePreflight(
        customer_id=customer_id,
        user_roles=team.user_roles,
        setup_complete=missing is None,
        setup_missing_step="" if missing is None else setup.STEP_TITLES[missing],
        definitions_in_force=await definitions_in_force(store, tenant),
        measured_accuracy=await measured_accuracy(store, tenant, configured),
        open_critical_alerts=tuple(
            golive.OpenCriticalAlert(alert_id=alert.alert_id, kind=alert.kind)
            for alert in alerts.open_critical()
        ),
    )


async def handle_billing(
    store: EventStore,
    command: golive.Command,
    *,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[golive.GoLiveState, golive.Event]:
    """Decide the command on the customer's billing switch. Going live runs the pre-flight
    checks on facts read fresh from the ledger at every attempt."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: golive.GoLiveState) -> list[golive.Event]:
        if isinstance(command, golive.GoLive):
            return golive.decide(command, state, await preflight(store, command.customer_id))
        return golive.decide(command, state, await customer_team(store, command.customer_id))

    return await execute(
        store,
        BILLING,
        tenant=tenant,
        stream=billing_stream(tenant),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
