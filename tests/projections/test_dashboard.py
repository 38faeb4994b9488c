"""The customer dashboard and the vendor overview, built from a customer's way through the real
handlers: setup, approval, go-live, calculations and a recalculation, feedback, alerts, a
pause. Every figure is worked out by hand from the commands, so a wrong sum shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from commands.customer import handle_customer
from commands.definition import handle_definition
from commands.golive import handle_billing
from commands.setup import handle_setup
from domain import customer, golive, setup
from domain.definition import ApprovalStage
from domain.roles import Role
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from projections.dashboard import CustomerDashboard
from projections.queries import (
    AccuracyBand,
    DefinitionApproval,
    GoLiveStatus,
    LatestCalculation,
    MeasuredAccuracy,
    MetricValue,
    MonthOfOnboarding,
    OpenAlerts,
    SetupStep,
    StageCount,
    ValueInPeriod,
    customer_dashboard,
    vendor_overview,
)
from tests.commands.journey import STAFF, START, approve, complete_setup, draft, register_with_team
from tests.projections.scenes import (
    DAY,
    acknowledge_alert,
    approve_stage,
    calculate,
    catch_up,
    confirm,
    dispute,
    go_live,
    pause_billing,
    raise_alert,
    request_changes,
    resolve_alert,
    submit,
)

HOUR = timedelta(hours=1)
MARCH_2 = datetime(2026, 3, 2, tzinfo=UTC)
DASHBOARD = CustomerDashboard()


async def _stage(store: EventStore, tenant: str) -> str:
    await catch_up(store, DASHBOARD)
    dashboard = await customer_dashboard(store.pool, tenant)
    assert dashboard is not None
    return dashboard.stage


async def test_a_customer_from_signup_to_paused_billing(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant, START)
    assert await _stage(store, tenant) == "registered"
    await complete_setup(store, tenant, at=START + HOUR)
    assert await _stage(store, tenant) == "setting_up"
    await handle_definition(store, draft(tenant, "value", at=START + 2 * HOUR))
    await submit(store, tenant, "value", 1, START + 3 * HOUR)
    assert await _stage(store, tenant) == "awaiting_approval"
    for stage in ApprovalStage:
        await approve_stage(store, tenant, "value", 1, stage, START + 4 * HOUR)
    assert await _stage(store, tenant) == "approved"
    await go_live(store, tenant, START + 5 * HOUR, MARCH_2)
    assert await _stage(store, tenant) == "live"

    february_27 = MARCH_2 - 3 * DAY
    await calculate(store, tenant, february_27, "2000", "c-0", at=START + 6 * HOUR)
    await calculate(store, tenant, MARCH_2, "3000", "c-1")
    await calculate(store, tenant, MARCH_2 + DAY, "5000", "c-2")
    recalculated_at = MARCH_2 + 3 * DAY + 12 * HOUR
    await calculate(
        store, tenant, MARCH_2 + DAY, "2000", "c-3", at=recalculated_at, recalculate=True
    )
    await confirm(store, tenant, MARCH_2, "c-1", MARCH_2 + 4 * DAY)
    alerts_at = MARCH_2 + 4 * DAY
    await raise_alert(store, tenant, "feed-down", "critical", alerts_at + HOUR)
    await raise_alert(store, tenant, "slow-feed", "warning", alerts_at + 2 * HOUR)
    await raise_alert(store, tenant, "note", "info", alerts_at + 3 * HOUR)
    await acknowledge_alert(store, tenant, "feed-down", alerts_at + 4 * HOUR)
    await resolve_alert(store, tenant, "slow-feed", alerts_at + 5 * HOUR)
    paused_at = MARCH_2 + 5 * DAY
    await pause_billing(store, tenant, paused_at)

    await catch_up(store, DASHBOARD)
    dashboard = await customer_dashboard(store.pool, tenant)

    assert dashboard is not None
    assert (dashboard.tenant, dashboard.name, dashboard.currency) == (tenant, "Acme Ltd", "EUR")
    assert (dashboard.registered_at, dashboard.stage) == (START, "paused")
    assert (dashboard.stage_changed_at, dashboard.suspended_at) == (paused_at, None)
    assert dashboard.setup.steps_done == dashboard.setup.steps_total == 5
    assert dashboard.setup.completed_at == START + HOUR
    assert dashboard.setup.steps == [
        SetupStep(
            step=step,
            position=n,
            status="complete",
            completed_at=START + HOUR,
            completed_by="tom",
            times_completed=1,
        )
        for n, step in enumerate(setup.STEPS, 1)
    ]
    assert dashboard.approvals == [
        DefinitionApproval(
            definition_id="value",
            name="Value delivered",
            latest_version=1,
            status="APPROVED",
            stage=None,
            in_force_version=1,
            approved_at=START + 4 * HOUR,
            changed_at=START + 4 * HOUR,
        )
    ]
    assert dashboard.go_live == GoLiveStatus(
        live=True,
        went_live_at=START + 5 * HOUR,
        billing_starts_at=MARCH_2,
        billing_paused_since=paused_at,
        time_to_go_live=5 * HOUR,
        accuracy_threshold=Decimal("85.00"),
    )
    # The setup test: revenue 100 against 98 scores 1 - 2/98, hours are exact, so 98.98; a
    # confirmation scores 100, so (98.98 + 100) / 2 = 99.49.
    assert dashboard.accuracy == MeasuredAccuracy(
        measured=Decimal("99.49"),
        measured_at=MARCH_2 + 4 * DAY,
        setup_test=Decimal("98.98"),
        setup_verified_at=START + HOUR,
        confirmations=1,
        disputes=0,
    )
    # Value = (revenue - 1000) * 0.5 + 2 * 40; billed 20 %, in cents. February 27 is before
    # billing starts; March 3 counts as recalculated (2000), not as first calculated (5000).
    day = [
        (february_27, "580", 0, 0),
        (MARCH_2, "1080", 21600, 1),
        (MARCH_2 + DAY, "580", 11600, 1),
    ]
    assert dashboard.value_by_day == [
        ValueInPeriod(
            definition_id="value",
            period_start=start,
            currency="EUR",
            value=Decimal(value),
            billable_minor_units=cents,
            periods=1,
            billable_periods=billable,
        )
        for start, value, cents, billable in day
    ]
    assert dashboard.value_by_month == [
        ValueInPeriod(
            definition_id="value",
            period_start=datetime(2026, 2, 1, tzinfo=UTC),
            currency="EUR",
            value=Decimal(580),
            billable_minor_units=0,
            periods=1,
            billable_periods=0,
        ),
        ValueInPeriod(
            definition_id="value",
            period_start=datetime(2026, 3, 1, tzinfo=UTC),
            currency="EUR",
            value=Decimal(1660),
            billable_minor_units=33200,
            periods=2,
            billable_periods=2,
        ),
    ]
    assert dashboard.latest_calculations == [
        LatestCalculation(
            definition_id="value",
            period_start=MARCH_2 + DAY,
            period_end=MARCH_2 + 2 * DAY,
            calculation_id="c-3",
            definition_version=1,
            result=Decimal(580),
            billable=True,
            currency="EUR",
            amount_minor_units=11600,
            calculated_at=recalculated_at,
            calculations=2,
            verdict=None,
        )
    ]
    assert dashboard.latest_metric_values == [
        MetricValue(
            metric=metric,
            value=Decimal(value),
            definition_id="value",
            period_start=MARCH_2 + DAY,
            period_end=MARCH_2 + 2 * DAY,
            calculation_id="c-3",
            calculated_at=recalculated_at,
        )
        for metric, value in (("hours_saved", "2"), ("revenue", "2000"))
    ]
    assert dashboard.open_alerts == OpenAlerts(info=1, warning=0, critical=1)
    [*_, last] = await store.read_tenant(tenant)
    assert dashboard.as_of_seq == last.seq


async def test_the_day_and_month_series_end_at_the_latest_period(
    store: EventStore, tenant: str
) -> None:
    """Days and months are counted back from the latest calculated period, so the answer
    depends on the read model only, never on the clock."""
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    await handle_definition(store, draft(tenant, "value", at=START))
    await approve(store, tenant, "value", 1, at=START)
    starts = [datetime(2026, 1, 30, tzinfo=UTC), datetime(2026, 2, 27, tzinfo=UTC), MARCH_2]
    for n, start in enumerate(starts):
        await calculate(store, tenant, start, "3000", f"c-{n}", at=MARCH_2 + 2 * DAY)
    await catch_up(store, DASHBOARD)

    dashboard = await customer_dashboard(store.pool, tenant, days=4, months=2)

    assert dashboard is not None
    assert [value.period_start for value in dashboard.value_by_day] == starts[1:]
    assert [value.period_start for value in dashboard.value_by_month] == [
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    ]
    assert [value.periods for value in dashboard.value_by_month] == [1, 1]
    assert all(value.billable_minor_units == 0 for value in dashboard.value_by_day)  # not live


async def test_measured_accuracy_follows_verdicts_and_restarts_with_a_new_test(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    await handle_definition(store, draft(tenant, "value", at=START))
    await approve(store, tenant, "value", 1, at=START)
    await calculate(store, tenant, MARCH_2, "3000", "c-1")
    await calculate(store, tenant, MARCH_2 + DAY, "3000", "c-2")
    verdicts_at = MARCH_2 + 5 * DAY

    async def accuracy() -> MeasuredAccuracy:
        await catch_up(store, DASHBOARD)
        dashboard = await customer_dashboard(store.pool, tenant)
        assert dashboard is not None
        return dashboard.accuracy

    # 1080 against an expected 1200 scores 90.00: (98.98 + 90.00) / 2 = 94.49.
    await dispute(store, tenant, MARCH_2, "c-1", "1200", verdicts_at)
    assert (await accuracy()).measured == Decimal("94.49")
    assert (await accuracy()).disputes == 1
    # (98.98 + 90.00 + 100) / 3 = 96.326... = 96.33
    await confirm(store, tenant, MARCH_2 + DAY, "c-2", verdicts_at + HOUR)
    assert (await accuracy()).measured == Decimal("96.33")

    # A re-test (step 5 again) starts the measured accuracy again from the test's accuracy.
    await handle_setup(
        store,
        tenant,
        setup.VerifyAccuracy(
            measurements=(
                setup.MeasuredValue(metric="revenue", measured=Decimal(95), expected=Decimal(100)),
                setup.MeasuredValue(
                    metric="hours_saved", measured=Decimal(10), expected=Decimal(10)
                ),
            ),
            at=verdicts_at + 2 * HOUR,
            by="tom",
        ),
        by_role=Role.TECHNICAL,
    )
    assert await accuracy() == MeasuredAccuracy(
        measured=Decimal("97.50"),
        measured_at=verdicts_at + 2 * HOUR,
        setup_test=Decimal("97.50"),
        setup_verified_at=verdicts_at + 2 * HOUR,
        confirmations=1,
        disputes=1,
    )

    # Redoing step 2 undoes steps 3 to 5: no accuracy test stands, so none is measured.
    await handle_setup(
        store,
        tenant,
        setup.ConnectDataSource(
            source_kind="stripe", connection_test_passed=True, at=verdicts_at + 3 * HOUR, by="tom"
        ),
        by_role=Role.TECHNICAL,
    )
    assert (await accuracy()).measured is None
    dashboard = await customer_dashboard(store.pool, tenant)
    assert dashboard is not None
    assert dashboard.setup.steps_done == 2
    assert dashboard.setup.completed_at is None
    assert [(step.step, step.status, step.times_completed) for step in dashboard.setup.steps] == [
        ("api_integration", "complete", 1),
        ("data_source", "complete", 2),
        ("metrics_config", "invalidated", 1),
        ("baseline", "invalidated", 1),
        ("testing", "invalidated", 2),
    ]
    assert dashboard.setup.steps[2].invalidated_at == verdicts_at + 3 * HOUR
    # The approved definition is still in force, so the stage stays "approved".
    assert dashboard.stage == "approved"


async def test_a_suspension_overrides_the_stage_until_reactivation(
    store: EventStore, tenant: str
) -> None:
    await register_with_team(store, tenant, START)
    await handle_customer(
        store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="unpaid", at=START + HOUR, by=STAFF, by_role=Role.ADMIN
        ),
    )
    assert await _stage(store, tenant) == "suspended"
    await handle_customer(
        store,
        customer.ReactivateCustomer(
            customer_id=tenant, reason="paid", at=START + 2 * HOUR, by=STAFF, by_role=Role.ADMIN
        ),
    )
    assert await _stage(store, tenant) == "registered"
    dashboard = await customer_dashboard(store.pool, tenant)
    assert dashboard is not None
    assert dashboard.stage_changed_at == START + 2 * HOUR


async def test_an_unknown_customer_has_no_dashboard(store: EventStore, tenant: str) -> None:
    await catch_up(store, DASHBOARD)
    assert await customer_dashboard(store.pool, tenant) is None


async def test_the_vendor_overview_of_three_customers(store: EventStore, tenant: str) -> None:
    """One customer live a day and 6 hours after registering, one with a version sent back
    and another approved, one only registered."""
    live, approved, fresh = f"{tenant}-a", f"{tenant}-b", f"{tenant}-c"
    for customer_id in (live, approved, fresh):
        await register_with_team(store, customer_id, START)
    await complete_setup(store, live, at=START)
    await handle_definition(store, draft(live, "value", at=START))
    await approve(store, live, "value", 1, at=START)
    await go_live(store, live, START + DAY + 6 * HOUR, MARCH_2 + DAY)
    await handle_billing(
        store,
        golive.SetAccuracyThreshold(
            customer_id=live,
            threshold=Decimal("90.00"),
            at=START + 2 * DAY,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )

    await complete_setup(store, approved, measured=(Decimal(90), Decimal(100)), at=START)
    await handle_definition(store, draft(approved, "value", at=START))
    await submit(store, approved, "value", 1, START + HOUR)
    await approve_stage(store, approved, "value", 1, ApprovalStage.FINANCE_REVIEW, START + HOUR)
    await request_changes(
        store, approved, "value", 1, ApprovalStage.TECHNICAL_REVIEW, START + 2 * HOUR
    )
    await handle_definition(store, draft(approved, "other", at=START))
    await approve(store, approved, "other", 1, at=START + 3 * HOUR)
    await catch_up(store, DASHBOARD)

    overview = await vendor_overview(store.pool, tenants=[live, approved, fresh])

    assert overview.customers == 3
    counts = {"registered": 1, "approved": 1, "live": 1}
    assert overview.by_stage == [
        StageCount(stage=stage, customers=counts.get(stage, 0))
        for stage in (
            "registered",
            "setting_up",
            "awaiting_approval",
            "approved",
            "live",
            "paused",
            "suspended",
        )
    ]
    assert overview.went_live == 1
    assert overview.average_time_to_go_live == DAY + 6 * HOUR
    # Versions decided: live's value v1 (approved), approved's value v1 (sent back) and
    # other v1 (approved): 2 of 3.
    assert (overview.versions_decided, overview.versions_approved) == (3, 2)
    assert overview.approval_success_rate == Decimal("66.67")
    # live: 98.98; approved: revenue 90 of 100 and exact hours, (0.9 + 1) / 2 = 95.00.
    assert overview.accuracy_distribution == [
        AccuracyBand(band="below 85", lower=Decimal(0), upper=Decimal(85), customers=0),
        AccuracyBand(band="85 to 90", lower=Decimal(85), upper=Decimal(90), customers=0),
        AccuracyBand(band="90 to 95", lower=Decimal(90), upper=Decimal(95), customers=0),
        AccuracyBand(band="95 to 99", lower=Decimal(95), upper=Decimal(99), customers=2),
        AccuracyBand(band="99 and above", lower=Decimal(99), upper=None, customers=0),
    ]
    assert overview.accuracy_unmeasured == 1
    assert overview.onboarding_per_month == [
        MonthOfOnboarding(month=datetime(2026, 3, 1, tzinfo=UTC), registered=3, went_live=1)
    ]
    dashboard = await customer_dashboard(store.pool, live)
    assert dashboard is not None
    assert dashboard.go_live.accuracy_threshold == Decimal("90.00")


async def test_an_event_with_a_malformed_decimal_is_skipped_not_fatal(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """The domain never records one, but a projector that stopped on it would stop every
    customer's dashboard: it is skipped like an event that does not decode."""
    await register_with_team(store, tenant, START)
    forged = {
        "customer_id": tenant,
        "threshold": "ninety",
        "previous_threshold": "85.00",
        "set_at": "2026-03-01T10:00:00Z",
        "set_by": STAFF,
        "set_by_role": "ADMIN",
        "schema": 1,
    }
    await store.append(
        f"{tenant}:billing",
        [NewEvent("AccuracyThresholdSet", forged)],
        StreamState.ANY,
        tenant,
        meta,
    )
    await handle_customer(
        store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="unpaid", at=START + HOUR, by=STAFF, by_role=Role.ADMIN
        ),
    )
    await catch_up(store, DASHBOARD)

    dashboard = await customer_dashboard(store.pool, tenant)

    assert dashboard is not None
    assert dashboard.go_live.accuracy_threshold == Decimal("85.00")
    assert dashboard.stage == "suspended"
