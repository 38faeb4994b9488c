"""Commands on a customer's alerts: raise, acknowledge, resolve."""

from __future__ import annotations

from commands.aggregates import ALERTS
from commands.customer import customer_team
from commands.handling import Outcome, Trace, execute, receipt_metadata
from commands.streams import alerts_stream, tenant_of
from domain import alerts
from eventstore.store import EventStore


async def handle_alert(
    store: EventStore,
    command: alerts.Command,
    *,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[alerts.CustomerAlerts, alerts.Event]:
    """Decide the command on the customer's alerts, by a user holding an allowed role now."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: alerts.CustomerAlerts) -> list[alerts.Event]:
        return alerts.decide(command, state, await customer_team(store, command.customer_id))

    return await execute(
        store,
        ALERTS,
        tenant=tenant,
        stream=alerts_stream(tenant),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
