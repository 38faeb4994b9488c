"""From signup to value-based billing through the real handlers and store, with every refusal
on the way: go-live blocked by each missing pre-condition, billing only from an approved
definition in force, recalculation superseding, disputes feeding accuracy and raising alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from commands.accuracy import dispute_alert_id, handle_feedback
from commands.alerts import handle_alert
from commands.calculation import handle_calculation
from commands.definition import handle_definition
from commands.golive import handle_billing, preflight
from commands.streams import alerts_stream, billing_stream
from domain import accuracy, alerts, calculation, golive
from domain.roles import Role
from eventstore.store import EventStore
from tests.commands.journey import (
    STAFF,
    START,
    approve,
    assert_chain_verifies,
    complete_setup,
    draft,
    register_with_team,
)

DAY = timedelta(days=1)
LIVE_FROM = datetime(2026, 4, 1, tzinfo=UTC)


def go_live(tenant: str, at: datetime = START) -> golive.GoLive:
    return golive.GoLive(
        customer_id=tenant,
        billing_starts_at=LIVE_FROM,
        at=at,
        by="cara",
        by_role=Role.CUSTOMER_ADMIN,
    )


def critical_alert(tenant: str) -> alerts.RaiseAlert:
    return alerts.RaiseAlert(
        customer_id=tenant,
        alert_id="feed-down",
        kind="data_source_error",
        severity=alerts.AlertSeverity("critical"),
        summary="salesforce feed returns 500",
        evidence={"status": "500"},
        at=START,
        by="tom",
        by_role=Role.TECHNICAL,
    )


def calculate(
    tenant: str, start: datetime, revenue: str, calculation_id: str, at: datetime | None = None
) -> calculation.CalculateValue:
    return calculation.CalculateValue(
        customer_id=tenant,
        definition_id="value",
        period_start=start,
        period_end=start + DAY,
        calculation_id=calculation_id,
        inputs=(
            calculation.MetricInput(
                metric="revenue", value=revenue, source="salesforce:amount", fingerprint="b" * 64
            ),
            calculation.MetricInput(
                metric="hours_saved", value="2", source="salesforce:hours", fingerprint="c" * 64
            ),
        ),
        at=at or start + 2 * DAY,
        by=STAFF,
        by_role=Role.ADMIN,
    )


async def test_go_live_lists_every_failing_check_and_writes_nothing(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    await handle_alert(store, critical_alert(tenant))
    with pytest.raises(golive.PreflightFailedError) as refused:
        await handle_billing(store, go_live(tenant))
    assert [(check.check, check.passed) for check in refused.value.checks] == [
        (check, False) for check in golive.PREFLIGHT_CHECKS
    ]
    message = str(refused.value)
    assert "step 1 (API integration)" in message
    assert "feed-down" in message
    assert await store.read_stream(billing_stream(tenant)) == []


async def test_each_pre_condition_in_turn_and_then_billing(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant)
    await complete_setup(store, tenant)
    await handle_definition(store, draft(tenant, "value"))
    await handle_alert(store, critical_alert(tenant))

    # Not approved yet, and a critical alert open: exactly those two fail.
    with pytest.raises(golive.PreflightFailedError) as refused:
        await handle_billing(store, go_live(tenant))
    assert [check.check for check in refused.value.failed] == [
        "approved_definition",
        "no_critical_alerts",
    ]
    await approve(store, tenant, "value", 1)
    await handle_alert(
        store,
        alerts.AcknowledgeAlert(
            customer_id=tenant, alert_id="feed-down", at=START, by="tom", by_role=Role.TECHNICAL
        ),
    )
    facts = await preflight(store, tenant)
    assert [alert.alert_id for alert in facts.open_critical_alerts] == ["feed-down"]
    await handle_alert(
        store,
        alerts.ResolveAlert(
            customer_id=tenant,
            alert_id="feed-down",
            note_sealed="sealed-note",
            at=START,
            by="tom",
            by_role=Role.TECHNICAL,
        ),
    )

    live = await handle_billing(store, go_live(tenant))
    [receipt] = live.events
    assert isinstance(receipt, golive.WentLive)
    assert all(check.passed for check in receipt.checks)
    assert [(d.definition_id, d.version) for d in receipt.definitions_in_force] == [("value", 1)]

    # Before billing starts: calculated, not billable.
    early = await handle_calculation(store, calculate(tenant, LIVE_FROM - 2 * DAY, "1500", "c-0"))
    assert not early.events[0].billing.billable
    assert early.events[0].billing.not_billable_reason == "the period starts before billing started"

    # (1500 - 1000) * 0.5 + 2 * 40 = 330 -> 20 % = 66.00 EUR = 6600 cents.
    first = await handle_calculation(store, calculate(tenant, LIVE_FROM, "1500", "c-1"))
    billed = first.events[0]
    assert billed.result == "330.000000000000"
    assert (billed.billing.billable, billed.billing.amount_minor_units) == (True, 6600)
    assert billed.definition_content_hash == receipt.definitions_in_force[0].content_hash

    with pytest.raises(calculation.CalculationError):
        await handle_calculation(store, calculate(tenant, LIVE_FROM, "1600", "c-2"))
    again = await handle_calculation(
        store,
        calculation.RecalculateValue(
            customer_id=tenant,
            definition_id="value",
            period_start=LIVE_FROM,
            period_end=LIVE_FROM + DAY,
            calculation_id="c-2",
            inputs=calculate(tenant, LIVE_FROM, "1600", "c-2").inputs,
            reason_sealed="sealed-reason",
            at=LIVE_FROM + 3 * DAY,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    assert again.state.current is not None
    assert again.state.current.calculation_id == "c-2"
    assert [r.calculation_id for r in again.state.superseded] == ["c-1"]

    # Pausing makes the next period unbillable.
    await handle_billing(
        store,
        golive.PauseBilling(
            customer_id=tenant,
            reason_sealed="sealed-reason",
            at=LIVE_FROM + 2 * DAY + timedelta(hours=6),
            by="cara",
            by_role=Role.CUSTOMER_ADMIN,
        ),
    )
    paused = await handle_calculation(store, calculate(tenant, LIVE_FROM + 2 * DAY, "1500", "c-3"))
    assert paused.events[0].billing.not_billable_reason == "billing was paused during the period"

    await assert_chain_verifies(store, tenant)


async def test_a_dispute_lowers_the_accuracy_and_raises_an_alert_once(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant)
    await complete_setup(store, tenant)
    await handle_definition(store, draft(tenant, "value"))
    await approve(store, tenant, "value", 1)
    await handle_billing(store, go_live(tenant))
    await handle_calculation(store, calculate(tenant, LIVE_FROM, "1500", "c-1"))

    disputed = await handle_feedback(
        store,
        accuracy.DisputeCalculation(
            customer_id=tenant,
            calculation_id="c-1",
            expected_result="100",
            reason_sealed="sealed-reason",
            at=LIVE_FROM + 3 * DAY,
            by="fay",
            by_role=Role.FINANCE,
        ),
        definition_id="value",
        period_start=LIVE_FROM,
    )
    [verdict] = disputed.events
    assert isinstance(verdict, accuracy.CalculationDisputed)
    assert verdict.raises_alert
    raised = await store.read_stream(alerts_stream(tenant))
    assert [record.type for record in raised] == ["AlertRaised"]
    assert raised[0].data["alert_id"] == dispute_alert_id("c-1")
    assert raised[0].meta["actor"] == {"user": "system:accuracy", "role": "ADMIN"}

    facts = await preflight(store, tenant)
    assert facts.measured_accuracy == verdict.measured_accuracy
    with pytest.raises(accuracy.AccuracyError):  # one verdict per calculation
        await handle_feedback(
            store,
            accuracy.ConfirmCalculation(
                customer_id=tenant,
                calculation_id="c-1",
                at=LIVE_FROM + 4 * DAY,
                by="fay",
                by_role=Role.FINANCE,
            ),
            definition_id="value",
            period_start=LIVE_FROM,
        )
    assert len(await store.read_stream(alerts_stream(tenant))) == 1
