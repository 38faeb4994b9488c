"""Random sequences of commands through the real handlers and store, and the ledger's promises.

A hypothesis state machine plays the customer's team and vendor staff: setup steps with good
and bad accuracy, definitions drafted, revised and taken through approval (sometimes by the
wrong person or out of order), alerts raised and resolved, go-live tried at any moment, billing
paused and resumed, periods calculated and recalculated, calculations disputed. Refusals are
part of the game. Afterwards an auditor's walk over the tenant's chain, in seq order, checks:

- no `WentLive` without every pre-condition holding at that point of the chain;
- every stage approval is by the approver assigned to that stage, in stage order;
- every billable amount comes from the approved definition version in force, and billing was
  live for the period;
- the chain verifies.

The machine runs on its own event loop (hypothesis' state machines are synchronous) with a
store of its own on the test database.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from commands.accuracy import handle_feedback
from commands.aggregates import AGGREGATES, DEFINITION
from commands.alerts import handle_alert
from commands.calculation import handle_calculation
from commands.definition import handle_definition
from commands.golive import handle_billing
from commands.handling import Aggregate, load
from commands.setup import handle_setup
from domain import DomainError, accuracy, alerts, calculation, definition, golive, setup
from domain.roles import Role
from eventstore.store import EventStore, NewEvent, RecordedEvent, StreamState
from eventstore.verify import KeyRing, verify_database
from tests.commands.journey import (
    FORMULA,
    METRICS,
    STAFF,
    TEAM,
    approve,
    complete_setup,
    draft,
    register_with_team,
)
from tests.conftest import settings_for
from valueledger.bootstrap import open_store

T = TypeVar("T")

DAY = timedelta(days=1)
EPOCH = datetime(2026, 3, 1, tzinfo=UTC)
STAGES = tuple(definition.ApprovalStage)
ANYONE = (*TEAM, STAFF)


def role_of(user: str) -> Role:
    return TEAM.get(user, Role.ADMIN)


REACHED: Counter[str] = Counter()
"""How many runs recorded each event type: the test checks the machine gets somewhere."""


class LifecycleMachine(RuleBasedStateMachine):
    """One customer per run; `loop` and `store` are set by the test before running."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    store: ClassVar[EventStore]

    def __init__(self) -> None:
        super().__init__()
        self.tenant = f"sm-{secrets.token_hex(5)}"
        self.clock = EPOCH
        self.definition_versions = 0
        self.calculations: dict[datetime, list[str]] = {}
        self.alert_ids: list[str] = []
        self.sequence = 0

    def run(self, step: Awaitable[T]) -> T | None:
        """Run one command; a refusal by the rules is a legitimate outcome."""
        try:
            return self.loop.run_until_complete(step)
        except DomainError:
            return None

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=7)
        return self.clock

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-{self.sequence}"

    @initialize(head_start=st.sampled_from(["none", "setup", "draft", "approved", "live"]))
    def register(self, head_start: str) -> None:
        """Register the customer; most runs also start further on (setup done, a draft, an
        approved definition, or live with a first billed day), so that their random steps
        are spent on approval, go-live and billing rather than on the first steps again."""
        self.loop.run_until_complete(register_with_team(self.store, self.tenant, EPOCH))
        if head_start != "none":
            self.complete_setup("98")
        if head_start in {"draft", "approved", "live"}:
            self.draft_or_revise("20", "fay")
        if head_start in {"approved", "live"}:
            self.submit("fay", "cara")
            for _ in STAGES:
                self.approve_as_assigned()
        if head_start == "live":
            self.go_live(0)
            self.clock += 2 * DAY  # so that whole days of billing have passed
            self.calculate(0, "1500")

    # --- setup -------------------------------------------------------------------------------

    @rule(revenue_measured=st.sampled_from(["98", "100", "98", "80", "40"]))
    def complete_setup(self, revenue_measured: str) -> None:
        at = self.tick()
        steps: list[setup.Command] = [
            setup.CompleteApiIntegration(
                credential_fingerprint="a" * 64,
                credential_reference="vault://kv/key",
                validation_passed=True,
                at=at,
                by="tom",
            ),
            setup.ConnectDataSource(
                source_kind="hubspot", connection_test_passed=True, at=at, by="tom"
            ),
            setup.MapMetrics(
                mappings=tuple(setup.FieldMapping(source_field=m, metric=m) for m in METRICS),
                at=at,
                by="tom",
            ),
            setup.EstablishBaseline(
                baselines=(
                    setup.BaselineValue(metric="revenue", value=Decimal("1000")),
                    setup.BaselineValue(metric="hours_saved", value=Decimal("0")),
                ),
                period_start=EPOCH - 60 * DAY,
                period_end=EPOCH - 30 * DAY,
                at=at,
                by="tom",
            ),
            setup.VerifyAccuracy(
                measurements=(
                    setup.MeasuredValue(
                        metric="revenue", measured=Decimal(revenue_measured), expected=Decimal(100)
                    ),
                    setup.MeasuredValue(
                        metric="hours_saved", measured=Decimal(5), expected=Decimal(5)
                    ),
                ),
                at=at,
                by="tom",
            ),
        ]
        for step in steps:
            self.run(handle_setup(self.store, self.tenant, step, by_role=Role.TECHNICAL))

    @rule(first=st.booleans(), roll=st.integers(0, 3))
    def redo_a_step(self, first: bool, roll: int) -> None:
        if roll != 3:  # rare: each redo undoes the later steps
            return
        at = self.tick()
        redo: list[setup.Command] = [
            setup.CompleteApiIntegration(
                credential_fingerprint="b" * 64,
                credential_reference="vault://kv/key-2",
                validation_passed=True,
                at=at,
                by="tom",
            ),
            setup.ConnectDataSource(
                source_kind="stripe", connection_test_passed=True, at=at, by="tom"
            ),
        ]
        step = redo[0 if first else 1]
        self.run(handle_setup(self.store, self.tenant, step, by_role=Role.TECHNICAL))

    # --- definitions and approval ------------------------------------------------------------

    @rule(share=st.sampled_from(["20", "35.5", "50"]), by=st.sampled_from(ANYONE))
    def draft_or_revise(self, share: str, by: str) -> None:
        content: dict[str, Any] = {
            "customer_id": self.tenant,
            "definition_id": "value",
            "name": "Value delivered",
            "metrics": tuple(definition.MetricInput(name=m, unit="units") for m in METRICS),
            "formula": FORMULA,
            "pricing": definition.PricingInput(share_percent=share, currency="EUR"),
            "at": self.tick(),
            "by": by,
            "by_role": role_of(by),
        }
        command: definition.Command
        if self.definition_versions == 0:
            command = definition.DraftDefinition(**content)
        else:
            command = definition.ReviseDefinition(
                revises_version=self.definition_versions, **content
            )
        if self.run(handle_definition(self.store, command)) is not None:
            self.definition_versions += 1

    @rule(
        finance=st.sampled_from(("fay", "fay", *ANYONE)),
        executive=st.sampled_from(("cara", "cara", *ANYONE)),
    )
    def submit(self, finance: str, executive: str) -> None:
        self.run(
            handle_definition(
                self.store,
                definition.SubmitForApproval(
                    customer_id=self.tenant,
                    definition_id="value",
                    version=max(self.definition_versions, 1),
                    finance_approver=finance,
                    technical_approver="tom",
                    executive=executive,
                    at=self.tick(),
                    by="fay",
                    by_role=Role.FINANCE,
                ),
            )
        )

    @rule(stage=st.sampled_from(STAGES), by=st.sampled_from(ANYONE), back=st.booleans())
    def act_on_a_stage(self, stage: definition.ApprovalStage, by: str, back: bool) -> None:
        common: dict[str, Any] = {
            "customer_id": self.tenant,
            "definition_id": "value",
            "version": max(self.definition_versions, 1),
            "stage": stage,
            "at": self.tick(),
            "by": by,
            "by_role": role_of(by),
        }
        command: definition.Command = (
            definition.RequestChanges(reason_sealed="sealed-reason", **common)
            if back
            else definition.ApproveStage(**common)
        )
        self.run(handle_definition(self.store, command))

    @rule()
    def approve_as_assigned(self) -> None:
        """The assigned approver of the running stage approves it (the random rule above
        rarely finds the right person and stage)."""
        stream = f"{self.tenant}:definition:value"
        defined = self.loop.run_until_complete(load(self.store, DEFINITION, stream)).state
        version = defined.under_review
        if version is None or version.stage is None or version.approvers is None:
            return
        approver = version.approvers.for_stage(version.stage)
        self.run(
            handle_definition(
                self.store,
                definition.ApproveStage(
                    customer_id=self.tenant,
                    definition_id="value",
                    version=version.number,
                    stage=version.stage,
                    at=self.tick(),
                    by=approver,
                    by_role=role_of(approver),
                ),
            )
        )

    # --- alerts ------------------------------------------------------------------------------

    @rule(severity=st.sampled_from(["info", "warning", "critical"]))
    def raise_alert(self, severity: str) -> None:
        alert_id = self.next_id("alert")
        raised = self.run(
            handle_alert(
                self.store,
                alerts.RaiseAlert(
                    customer_id=self.tenant,
                    alert_id=alert_id,
                    kind="manual",
                    severity=alerts.AlertSeverity(severity),
                    summary="something looks off",
                    evidence={"seen": "yes"},
                    at=self.tick(),
                    by="tom",
                    by_role=Role.TECHNICAL,
                ),
            )
        )
        if raised is not None:
            self.alert_ids.append(alert_id)

    @rule(data=st.data())
    def resolve_alert(self, data: st.DataObject) -> None:
        if not self.alert_ids:
            return
        self.run(
            handle_alert(
                self.store,
                alerts.ResolveAlert(
                    customer_id=self.tenant,
                    alert_id=data.draw(st.sampled_from(self.alert_ids)),
                    note_sealed="sealed-note",
                    at=self.tick(),
                    by="tom",
                    by_role=Role.TECHNICAL,
                ),
            )
        )

    # --- go-live and billing -----------------------------------------------------------------

    @rule(delay_hours=st.sampled_from([0, 20, 50]))
    def go_live(self, delay_hours: int) -> None:
        at = self.tick()
        self.run(
            handle_billing(
                self.store,
                golive.GoLive(
                    customer_id=self.tenant,
                    billing_starts_at=at + timedelta(hours=delay_hours),
                    at=at,
                    by="cara",
                    by_role=Role.CUSTOMER_ADMIN,
                ),
            )
        )

    @rule(pause=st.booleans())
    def pause_or_resume(self, pause: bool) -> None:
        common: dict[str, Any] = {
            "customer_id": self.tenant,
            "reason_sealed": "sealed-reason",
            "at": self.tick(),
            "by": "cara",
            "by_role": Role.CUSTOMER_ADMIN,
        }
        command = golive.PauseBilling(**common) if pause else golive.ResumeBilling(**common)
        self.run(handle_billing(self.store, command))

    # --- calculations and feedback -----------------------------------------------------------

    @rule(days_back=st.integers(0, 3), revenue=st.sampled_from(["900", "1500", "4000"]))
    def calculate(self, days_back: int, revenue: str) -> None:
        """A day ending at most four days ago, calculated (or recalculated) now."""
        today = self.clock.replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - (days_back + 1) * DAY
        calculation_id = self.next_id("calc")
        inputs = tuple(
            calculation.MetricInput(
                metric=metric,
                value=revenue if metric == "revenue" else "3",
                source=f"hubspot:{metric}",
                fingerprint="d" * 64,
            )
            for metric in METRICS
        )
        common: dict[str, Any] = {
            "customer_id": self.tenant,
            "definition_id": "value",
            "period_start": start,
            "period_end": start + DAY,
            "calculation_id": calculation_id,
            "inputs": inputs,
            "at": self.tick(),
            "by": STAFF,
            "by_role": Role.ADMIN,
        }
        command: calculation.Command = (
            calculation.RecalculateValue(reason_sealed="sealed-reason", **common)
            if self.calculations.get(start)
            else calculation.CalculateValue(**common)
        )
        if self.run(handle_calculation(self.store, command)) is not None:
            self.calculations.setdefault(start, []).append(calculation_id)

    @rule(hours=st.sampled_from([6, 30, 54]))
    def time_passes(self, hours: int) -> None:
        self.clock += timedelta(hours=hours)

    @rule(data=st.data(), dispute=st.booleans())
    def give_feedback(self, data: st.DataObject, dispute: bool) -> None:
        if not self.calculations:
            return
        start = data.draw(st.sampled_from(sorted(self.calculations)))
        calculation_id = data.draw(st.sampled_from(self.calculations[start]))
        common: dict[str, Any] = {
            "customer_id": self.tenant,
            "calculation_id": calculation_id,
            "at": self.tick(),
            "by": "fay",
            "by_role": Role.FINANCE,
        }
        command: accuracy.Command = (
            accuracy.DisputeCalculation(
                expected_result="1", reason_sealed="sealed-reason", **common
            )
            if dispute
            else accuracy.ConfirmCalculation(**common)
        )
        self.run(handle_feedback(self.store, command, definition_id="value", period_start=start))

    def teardown(self) -> None:
        records = self.loop.run_until_complete(self.store.read_tenant(self.tenant, limit=100_000))
        audit_chain(self.tenant, records)
        types = {record.type for record in records}
        if any(record.data.get("billing", {}).get("billable") for record in records):
            types.add("billable calculation")
        REACHED.update(types)

        async def verify() -> None:
            async with self.store.pool.acquire() as connection:
                report = await verify_database(connection, KeyRing(), tenants=[self.tenant])
            assert report.ok, report.failure

        self.loop.run_until_complete(verify())


# --- the auditor's walk ------------------------------------------------------------------------

_KINDS: dict[str, Aggregate[Any, Any]] = {aggregate.kind: aggregate for aggregate in AGGREGATES}
_STREAM_KINDS = {
    "customer": "customer",
    "setup": "setup",
    "definition": "definition",
    "billing": "billing",
    "alerts": "alerts",
    "calculation": "calculation",
    "accuracy": "accuracy",
    "ticket": "ticket",
}


def audit_chain(tenant: str, records: list[RecordedEvent]) -> None:
    """Fold the tenant's streams in chain order and check the ledger's promises at each event."""
    states: dict[str, Any] = {}

    def state(stream: str) -> Any:
        return states.get(stream, _aggregate(tenant, stream).initial)

    assert [record.seq for record in records] == list(range(1, len(records) + 1))
    for record in records:
        aggregate = _aggregate(tenant, record.stream)
        event = aggregate.event_of(record)
        actor = record.meta["actor"]["user"]
        match event:
            case golive.WentLive():
                _check_preconditions(tenant, states, state)
            case definition.StageApproved() | definition.DefinitionApproved():
                before: definition.DefinitionState = state(record.stream)
                version = before.under_review
                assert version is not None, record
                assert version.number == event.version
                assert version.approvers is not None
                assert version.stage is not None
                if isinstance(event, definition.StageApproved):
                    assert event.stage == version.stage, (event.stage, version.stage)
                else:
                    assert version.stage == definition.ApprovalStage.FINAL_SIGN_OFF
                assert actor == version.approvers.for_stage(version.stage), (actor, version)
            case calculation.ValueCalculated() | calculation.ValueRecalculated():
                if event.billing.billable:
                    defined: definition.DefinitionState = state(f"{tenant}:definition:value")
                    assert defined.in_force is not None
                    assert defined.in_force.number == event.definition_version
                    assert defined.in_force.content_hash == event.definition_content_hash
                    billing: golive.GoLiveState = state(f"{tenant}:billing")
                    assert billing.live
                    assert (
                        billing.billing_inactive_reason(event.period_start, event.period_end) == ""
                    )
            case _:
                pass
        states[record.stream] = aggregate.evolve(state(record.stream), event)


def _aggregate(tenant: str, stream: str) -> Aggregate[Any, Any]:
    kind = stream.removeprefix(f"{tenant}:").split(":")[0]
    return _KINDS[_STREAM_KINDS[kind]]


def _check_preconditions(tenant: str, states: dict[str, Any], state: Any) -> None:
    configured: setup.SetupState = state(f"{tenant}:setup")
    assert configured.is_complete
    assert configured.accuracy is not None
    assert configured.testing is not None
    in_force = [
        s for stream, s in states.items() if ":definition:" in stream and s.in_force is not None
    ]
    assert in_force, "went live without an approved definition in force"
    feedback: accuracy.AccuracyState = state(f"{tenant}:accuracy")
    billing: golive.GoLiveState = state(f"{tenant}:billing")
    measured = feedback.measured_accuracy(configured.accuracy, configured.testing.verified_at)
    assert measured >= billing.threshold >= Decimal(85), (measured, billing.threshold)
    open_alerts: alerts.CustomerAlerts = state(f"{tenant}:alerts")
    assert not open_alerts.open_critical()


@pytest.fixture
def machine_store(database_url: str, key_folder: Path) -> Any:
    """A store on a loop of the machine's own, for the synchronous state machine."""
    loop = asyncio.new_event_loop()
    opened = open_store(settings_for(database_url, key_folder), database_url)
    store = loop.run_until_complete(opened.__aenter__())
    try:
        yield loop, store
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()


def test_random_command_sequences_keep_the_ledgers_promises(machine_store: Any) -> None:
    LifecycleMachine.loop, LifecycleMachine.store = machine_store
    REACHED.clear()
    run_state_machine_as_test(
        LifecycleMachine,
        settings=settings(
            max_examples=80,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=True,
        ),
    )
    # The promises are only tested where the runs got to: make sure they get there.
    reached = {kind for kind, runs in REACHED.items() if runs}
    assert {"DefinitionApproved", "WentLive", "billable calculation"} <= reached, REACHED


async def test_the_audit_catches_a_go_live_and_a_bill_that_skipped_the_rules(
    store: EventStore, tenant: str, meta: Any
) -> None:
    """The auditor's walk is not vacuous: receipts written around the handlers (straight into
    the store) are caught."""
    honest, forged_live, forged_bill = f"{tenant}-a", f"{tenant}-b", f"{tenant}-c"
    for customer_id in (honest, forged_live, forged_bill):
        await register_with_team(store, customer_id, EPOCH)
    records = await _live_with_a_billed_day(store, honest)
    audit_chain(honest, records)
    went_live = next(record for record in records if record.type == "WentLive")
    billed = next(record for record in records if record.type == "ValueCalculated")

    forgeries = (
        (forged_live, f"{forged_live}:billing", went_live, "is_complete"),
        (forged_bill, f"{forged_bill}:calculation:value:x", billed, "in_force"),
    )
    for customer_id, stream, genuine, caught in forgeries:
        forged = NewEvent(genuine.type, genuine.data)
        await store.append(stream, [forged], StreamState.ANY, customer_id, meta)
        with pytest.raises(AssertionError, match=caught):
            audit_chain(customer_id, await store.read_tenant(customer_id))


async def _live_with_a_billed_day(store: EventStore, customer_id: str) -> list[RecordedEvent]:
    await complete_setup(store, customer_id, at=EPOCH)
    await handle_definition(store, draft(customer_id, "value", at=EPOCH))
    await approve(store, customer_id, "value", 1, at=EPOCH)
    await handle_billing(
        store,
        golive.GoLive(
            customer_id=customer_id,
            billing_starts_at=EPOCH + DAY,
            at=EPOCH,
            by="cara",
            by_role=Role.CUSTOMER_ADMIN,
        ),
    )
    await handle_calculation(
        store,
        calculation.CalculateValue(
            customer_id=customer_id,
            definition_id="value",
            period_start=EPOCH + DAY,
            period_end=EPOCH + 2 * DAY,
            calculation_id="c-1",
            inputs=tuple(
                calculation.MetricInput(
                    metric=metric, value="1500", source="s", fingerprint="e" * 64
                )
                for metric in METRICS
            ),
            at=EPOCH + 3 * DAY,
            by=STAFF,
            by_role=Role.ADMIN,
        ),
    )
    return await store.read_tenant(customer_id)
