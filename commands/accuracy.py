"""Commands on a customer's accuracy feedback: confirm or dispute a calculation.

A dispute that the rules say must raise an alert raises it here, as the service
(``system:accuracy``), right after the dispute is recorded: two appends to two streams, so
not one transaction. The alert's id is derived from the disputed calculation, so raising it
again is harmless; but if the process dies between the two appends the alert is missing until
a reactor following the ledger raises it from the dispute's receipt (the workers issue; see
docs/domain.md, Known limits).
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import datetime

from commands.aggregates import ACCURACY, BILLING, CALCULATION, SETUP
from commands.alerts import handle_alert
from commands.customer import open_account
from commands.handling import Outcome, Trace, execute, load, receipt_metadata
from commands.streams import (
    accuracy_stream,
    billing_stream,
    calculation_stream,
    setup_stream,
    tenant_of,
)
from domain import accuracy, alerts
from domain.roles import Role
from eventstore.store import EventStore

SYSTEM_ACTOR = "system:accuracy"


async def judged_calculation(
    store: EventStore, tenant: str, definition_id: str, period_start: datetime, calculation_id: str
) -> accuracy.JudgedCalculation | None:
    """The calculation a verdict is about, current or superseded, from its period's stream."""
    stream = calculation_stream(tenant, definition_id, period_start)
    period = (await load(store, CALCULATION, stream)).state
    receipt = period.receipt(calculation_id)
    if receipt is None:
        return None
    superseding = period.superseded_by(calculation_id)
    return accuracy.JudgedCalculation(
        calculation_id=receipt.calculation_id,
        definition_id=receipt.definition_id,
        period_start=receipt.period_start,
        period_end=receipt.period_end,
        result=receipt.result,
        inputs={reading.metric: reading.value for reading in receipt.inputs},
        superseded_by=None if superseding is None else superseding.calculation_id,
    )


async def handle_feedback(
    store: EventStore,
    command: accuracy.Command,
    *,
    definition_id: str,
    period_start: datetime,
    trace: Trace | None = None,
    expected_version: int | None = None,
) -> Outcome[accuracy.AccuracyState, accuracy.Event]:
    """Record the customer's verdict on the calculation (found by its definition and period),
    and raise the alert a dispute calls for."""
    tenant = tenant_of(command.customer_id)

    async def decide(state: accuracy.AccuracyState) -> list[accuracy.Event]:
        account = await open_account(store, command.customer_id)
        configured = (await load(store, SETUP, setup_stream(tenant))).state
        billing = (await load(store, BILLING, billing_stream(tenant))).state
        context = accuracy.AccuracyContext(
            calculation=await judged_calculation(
                store, tenant, definition_id, period_start, command.calculation_id
            ),
            users=account.roles_by_user(),
            setup_accuracy=None if configured.accuracy is None else str(configured.accuracy),
            setup_verified_at=None
            if configured.testing is None
            else configured.testing.verified_at,
            accuracy_threshold=billing.accuracy_threshold,
        )
        return accuracy.decide(command, state, context)

    outcome = await execute(
        store,
        ACCURACY,
        tenant=tenant,
        stream=accuracy_stream(tenant),
        metadata=receipt_metadata(command.by, command.by_role, trace),
        decide=decide,
        expected_version=expected_version,
    )
    for event in outcome.events:
        if isinstance(event, accuracy.CalculationDisputed) and event.alert_severity is not None:
            await _raise_dispute_alert(store, event, trace)
    return outcome


def dispute_alert_id(calculation_id: str) -> str:
    """The id of the alert a dispute of `calculation_id` raises: derived, so that raising it
    twice is refused as a duplicate, and hashed, so that any calculation id gives a valid one."""
    return "dispute-" + hashlib.sha256(calculation_id.encode()).hexdigest()[:32]


async def _raise_dispute_alert(
    store: EventStore, dispute: accuracy.CalculationDisputed, trace: Trace | None
) -> None:
    assert dispute.alert_severity is not None  # noqa: S101 (checked by the caller)
    command = alerts.RaiseAlert(
        customer_id=dispute.customer_id,
        alert_id=dispute_alert_id(dispute.calculation_id),
        kind="accuracy_dispute",
        severity=alerts.AlertSeverity(dispute.alert_severity),
        summary=(
            f"calculation {dispute.calculation_id} disputed: score {dispute.score}%, measured "
            f"accuracy now {dispute.measured_accuracy}% (threshold {dispute.accuracy_threshold}%)"
        )[:200],
        evidence={
            "calculation_id": dispute.calculation_id,
            "definition_id": dispute.definition_id,
            "period_start": dispute.period_start.isoformat(),
            "score": dispute.score,
            "measured_accuracy": dispute.measured_accuracy,
            "accuracy_threshold": dispute.accuracy_threshold,
        },
        at=dispute.disputed_at,
        by=SYSTEM_ACTOR,
        by_role=Role.ADMIN,
    )
    with contextlib.suppress(alerts.DuplicateAlertError):  # raised before for this dispute
        await handle_alert(store, command, trace=trace)
