"""The customer dashboard: where each customer is on its way to value-based billing, and what
it has delivered since.

One row per customer (`dashboard_customers`: its stage, setup progress, accuracy, go-live and
counters) and child rows for what a customer has several of: setup steps, value definitions,
the approval outcome of each submitted version, calculated periods, the latest value of each
metric, and alerts. The vendor overview is read from the same tables, across customers.

Only facts in the events are kept: no sealed field, no person's name; people appear by id.
Totals per month are not stored: the queries sum the period rows (`projections/queries.py`),
so a recalculation, which replaces its period's row, corrects every total it falls in.

The customer row is also the tenant's watermark: every event this projector handles moves its
`last_seq`, and an event at or below it has been applied already, so applying it again changes
nothing (the runner never does, but a projector does not rely on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

import msgspec
from msgspec.structs import replace

from domain.accuracy import CalculationConfirmed, CalculationDisputed
from domain.alerts import AlertAcknowledged, AlertRaised, AlertResolved, AlertStatus
from domain.calculation import ValueCalculated, ValueRecalculated
from domain.customer import CustomerReactivated, CustomerRegistered, CustomerSuspended
from domain.definition import (
    STAGES,
    ApprovalVoided,
    ChangesRequested,
    DefinitionApproved,
    DefinitionDrafted,
    DefinitionRevised,
    DefinitionSubmitted,
    StageApproved,
    VersionStatus,
)
from domain.golive import (
    DEFAULT_THRESHOLD,
    AccuracyThresholdSet,
    BillingPaused,
    BillingResumed,
    WentLive,
)
from domain.setup import (
    STEPS,
    AccuracyVerified,
    ApiIntegrationCompleted,
    BaselineEstablished,
    DataSourceConnected,
    LaterStepsInvalidated,
    MetricsMapped,
    Step,
)
from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View


class Stage(StrEnum):
    """Where a customer is on its way to value-based billing; the first that holds wins, in
    the order `stage_of` checks them."""

    REGISTERED = "registered"
    """Registered, and nothing else done yet."""
    SETTING_UP = "setting_up"
    """A setup step is complete or a value definition is drafted, none awaits approval."""
    AWAITING_APPROVAL = "awaiting_approval"
    """A definition's latest version is in review, and no definition is in force."""
    APPROVED = "approved"
    """A definition version is approved and in force; not live yet."""
    LIVE = "live"
    """Went live, and billing is not paused."""
    PAUSED = "paused"
    """Went live, and billing is paused now."""
    SUSPENDED = "suspended"
    """Vendor staff suspended the account, whatever else holds."""


STAGE_ORDER: Final[tuple[Stage, ...]] = tuple(Stage)
"""The stages in the order a customer normally passes them (suspension last)."""


class CustomerRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_customers`: one customer. Counters count what the events say now (a
    definition in review, one in force), so the stage follows from the row alone."""

    tenant: str
    name: str | None = None
    currency: str | None = None
    registered_at: datetime | None = None
    stage: str = Stage.REGISTERED.value
    stage_changed_at: datetime | None = None
    suspended_at: datetime | None = None
    setup_steps_done: int = 0
    setup_completed_at: datetime | None = None
    setup_accuracy: Decimal | None = None
    setup_verified_at: datetime | None = None
    measured_accuracy: Decimal | None = None
    measured_accuracy_at: datetime | None = None
    accuracy_threshold: Decimal = Decimal(DEFAULT_THRESHOLD)
    confirmations: int = 0
    disputes: int = 0
    definitions: int = 0
    definitions_in_review: int = 0
    definitions_in_force: int = 0
    went_live_at: datetime | None = None
    billing_starts_at: datetime | None = None
    billing_paused_at: datetime | None = None
    last_seq: int = 0


class SetupStepRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_setup_steps`: a step that was completed at least once; `status` is
    ``complete`` or ``invalidated`` (a redone earlier step undid it). No row: never done."""

    tenant: str
    step: str
    position: int
    status: str
    completed_at: datetime
    completed_by: str
    times_completed: int
    invalidated_at: datetime | None = None


class DefinitionRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_definitions`: a value definition, its latest version's status and approval
    stage, and the version in force."""

    tenant: str
    definition_id: str
    name: str
    latest_version: int
    status: str
    stage: str | None = None
    in_force_version: int | None = None
    approved_at: datetime | None = None
    changed_at: datetime


class ApprovalOutcomeRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_approval_outcomes`: a version submitted for approval and how its latest
    round ended: ``in_review``, ``approved``, ``changes_requested`` or ``voided``."""

    tenant: str
    definition_id: str
    version: int
    outcome: str
    rounds: int
    first_submitted_at: datetime
    decided_at: datetime | None = None


class CalculationRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_calculations`: a calculated period of a definition, as its current
    calculation has it; `verdict` is the customer's on that calculation, if any."""

    tenant: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    definition_version: int
    result: Decimal
    billable: bool
    currency: str
    amount_minor_units: int | None = None
    calculated_at: datetime
    calculations: int
    verdict: str | None = None


class MetricValueRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_metric_values`: a metric's value in the latest period calculated with it."""

    tenant: str
    metric: str
    value: Decimal
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    calculated_at: datetime


class AlertStateRow(msgspec.Struct, frozen=True, kw_only=True):
    """`dashboard_alerts`: an alert's severity and status, to count the unresolved ones."""

    tenant: str
    alert_id: str
    severity: str
    status: str


CUSTOMERS: Final = Table("dashboard_customers", CustomerRow, key=("tenant",), key_types=("text",))
SETUP_STEPS: Final = Table(
    "dashboard_setup_steps", SetupStepRow, key=("tenant", "step"), key_types=("text", "text")
)
DEFINITIONS: Final = Table(
    "dashboard_definitions",
    DefinitionRow,
    key=("tenant", "definition_id"),
    key_types=("text", "text"),
)
APPROVAL_OUTCOMES: Final = Table(
    "dashboard_approval_outcomes",
    ApprovalOutcomeRow,
    key=("tenant", "definition_id", "version"),
    key_types=("text", "text", "int4"),
)
CALCULATIONS: Final = Table(
    "dashboard_calculations",
    CalculationRow,
    key=("tenant", "definition_id", "period_start"),
    key_types=("text", "text", "timestamptz"),
)
METRIC_VALUES: Final = Table(
    "dashboard_metric_values", MetricValueRow, key=("tenant", "metric"), key_types=("text", "text")
)
ALERT_STATES: Final = Table(
    "dashboard_alerts", AlertStateRow, key=("tenant", "alert_id"), key_types=("text", "text")
)


def stage_of(customer: CustomerRow) -> Stage:
    """The customer's stage, from its row alone."""
    if customer.suspended_at is not None:
        return Stage.SUSPENDED
    if customer.went_live_at is not None:
        return Stage.PAUSED if customer.billing_paused_at is not None else Stage.LIVE
    if customer.definitions_in_force:
        return Stage.APPROVED
    if customer.definitions_in_review:
        return Stage.AWAITING_APPROVAL
    if customer.setup_steps_done or customer.definitions:
        return Stage.SETTING_UP
    return Stage.REGISTERED


_SETUP_STEP_EVENTS: Final = (
    ApiIntegrationCompleted,
    DataSourceConnected,
    MetricsMapped,
    BaselineEstablished,
    AccuracyVerified,
)
_SETUP_EVENTS: Final = (*_SETUP_STEP_EVENTS, LaterStepsInvalidated)
_DEFINITION_EVENTS: Final = (
    DefinitionDrafted,
    DefinitionRevised,
    ApprovalVoided,
    DefinitionSubmitted,
    StageApproved,
    ChangesRequested,
    DefinitionApproved,
)
_ROUND_EVENTS: Final = (ApprovalVoided, DefinitionSubmitted, ChangesRequested, DefinitionApproved)
"""Definition events that start or end an approval round (they read its outcome row)."""
_RECEIPTS: Final = (ValueCalculated, ValueRecalculated)
_VERDICTS: Final = (CalculationConfirmed, CalculationDisputed)
_HANDLED: Final[frozenset[type[msgspec.Struct]]] = frozenset(
    {
        CustomerRegistered,
        CustomerSuspended,
        CustomerReactivated,
        *_SETUP_EVENTS,
        *_DEFINITION_EVENTS,
        WentLive,
        BillingPaused,
        BillingResumed,
        AccuracyThresholdSet,
        *_RECEIPTS,
        *_VERDICTS,
        AlertRaised,
        AlertAcknowledged,
        AlertResolved,
    }
)


class CustomerDashboard:
    """Projects the customer dashboard; see the module docstring."""

    name = "dashboard"
    tables: tuple[Table[Any], ...] = (
        CUSTOMERS,
        SETUP_STEPS,
        DEFINITIONS,
        APPROVAL_OUTCOMES,
        CALCULATIONS,
        METRIC_VALUES,
        ALERT_STATES,
    )

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        if event is None or type(event) not in _HANDLED:
            return ()
        tenant = record.tenant
        wanted: list[tuple[Table[Any], Key]] = [(CUSTOMERS, (tenant,))]
        if isinstance(event, _SETUP_EVENTS):
            wanted.extend((SETUP_STEPS, (tenant, step)) for step in STEPS)
        elif isinstance(event, _DEFINITION_EVENTS):
            wanted.append((DEFINITIONS, (tenant, event.definition_id)))
            if isinstance(event, _ROUND_EVENTS):
                wanted.append((APPROVAL_OUTCOMES, (tenant, event.definition_id, event.version)))
        elif isinstance(event, _RECEIPTS):
            wanted.append((CALCULATIONS, (tenant, event.definition_id, event.period_start)))
            wanted.extend((METRIC_VALUES, (tenant, reading.metric)) for reading in event.inputs)
        elif isinstance(event, _VERDICTS):
            wanted.append((CALCULATIONS, (tenant, event.definition_id, event.period_start)))
        elif isinstance(event, AlertAcknowledged | AlertResolved):
            wanted.append((ALERT_STATES, (tenant, event.alert_id)))
        return wanted

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        if event is None or type(event) not in _HANDLED:
            return False
        tenant = record.tenant
        before = view.get(CUSTOMERS, (tenant,)) or CustomerRow(tenant=tenant)
        if before.last_seq >= record.seq:
            return False  # applied already
        try:
            after, at = _apply(view, tenant, before, event)
        except InvalidOperation:
            # A decimal field that is not a decimal: the domain never records one, so this is
            # an event written around it, and it is skipped like one that does not decode.
            # Every decimal is read before any row is put, so nothing of it was applied.
            return False
        stage = stage_of(after)
        if stage != before.stage or after.stage_changed_at is None:
            after = replace(after, stage=stage.value, stage_changed_at=at)
        view.put(CUSTOMERS, replace(after, last_seq=record.seq))
        return True


def _apply(  # noqa: PLR0911 (one return per kind of event)
    view: View, tenant: str, customer: CustomerRow, event: msgspec.Struct
) -> tuple[CustomerRow, datetime]:
    """The customer row after `event` (its child rows put in the view), and when it happened."""
    match event:
        case CustomerRegistered():
            registered = replace(
                customer,
                name=event.name,
                currency=event.currency,
                registered_at=event.registered_at,
            )
            return registered, event.registered_at
        case CustomerSuspended():
            return replace(customer, suspended_at=event.suspended_at), event.suspended_at
        case CustomerReactivated():
            return replace(customer, suspended_at=None), event.reactivated_at
        case LaterStepsInvalidated():
            return _invalidated(view, tenant, customer, event), event.invalidated_at
        case WentLive():
            live = replace(
                customer,
                went_live_at=event.went_live_at,
                billing_starts_at=event.billing_starts_at,
                accuracy_threshold=Decimal(event.accuracy_threshold),
            )
            return live, event.went_live_at
        case BillingPaused():
            return replace(customer, billing_paused_at=event.paused_at), event.paused_at
        case BillingResumed():
            return replace(customer, billing_paused_at=None), event.resumed_at
        case AccuracyThresholdSet():
            return replace(customer, accuracy_threshold=Decimal(event.threshold)), event.set_at
        case AlertRaised():
            view.put(
                ALERT_STATES,
                AlertStateRow(
                    tenant=tenant,
                    alert_id=event.alert_id,
                    severity=event.severity.value,
                    status=AlertStatus.OPEN.value,
                ),
            )
            return customer, event.raised_at
        case AlertAcknowledged():
            _alert_status(view, tenant, event.alert_id, AlertStatus.ACKNOWLEDGED)
            return customer, event.acknowledged_at
        case AlertResolved():
            _alert_status(view, tenant, event.alert_id, AlertStatus.RESOLVED)
            return customer, event.resolved_at
        case CalculationConfirmed():
            measured = Decimal(event.measured_accuracy)
            _verdict(view, tenant, event, "confirmed")
            confirmed = replace(
                customer,
                measured_accuracy=measured,
                measured_accuracy_at=event.confirmed_at,
                confirmations=customer.confirmations + 1,
            )
            return confirmed, event.confirmed_at
        case CalculationDisputed():
            measured = Decimal(event.measured_accuracy)
            _verdict(view, tenant, event, "disputed")
            disputed = replace(
                customer,
                measured_accuracy=measured,
                measured_accuracy_at=event.disputed_at,
                disputes=customer.disputes + 1,
            )
            return disputed, event.disputed_at
        case (
            ApiIntegrationCompleted()
            | DataSourceConnected()
            | MetricsMapped()
            | BaselineEstablished()
            | AccuracyVerified()
        ):
            return _step_completed(view, tenant, customer, event)
        case (
            DefinitionDrafted()
            | DefinitionRevised()
            | ApprovalVoided()
            | DefinitionSubmitted()
            | StageApproved()
            | ChangesRequested()
            | DefinitionApproved()
        ):
            return _definition_event(view, tenant, customer, event)
        case ValueCalculated() | ValueRecalculated():
            _calculated(view, tenant, event)
            return customer, event.calculated_at
        case _:
            pass
    raise AssertionError(f"unhandled dashboard event {type(event).__name__}")  # pragma: no cover


# --- setup ---------------------------------------------------------------------------------------


def _step_of(
    event: ApiIntegrationCompleted
    | DataSourceConnected
    | MetricsMapped
    | BaselineEstablished
    | AccuracyVerified,
) -> tuple[Step, datetime]:
    match event:
        case ApiIntegrationCompleted():
            return "api_integration", event.completed_at
        case DataSourceConnected():
            return "data_source", event.connected_at
        case MetricsMapped():
            return "metrics_config", event.mapped_at
        case BaselineEstablished():
            return "baseline", event.established_at
        case AccuracyVerified():
            return "testing", event.verified_at


def _steps_done(view: View, tenant: str) -> int:
    """How many steps are complete; they are always steps 1 to N."""
    done = 0
    for step in STEPS:
        row = view.get(SETUP_STEPS, (tenant, step))
        if row is None or row.status != "complete":
            break
        done += 1
    return done


def _step_completed(
    view: View,
    tenant: str,
    customer: CustomerRow,
    event: ApiIntegrationCompleted
    | DataSourceConnected
    | MetricsMapped
    | BaselineEstablished
    | AccuracyVerified,
) -> tuple[CustomerRow, datetime]:
    step, at = _step_of(event)
    accuracy = Decimal(event.accuracy) if isinstance(event, AccuracyVerified) else None
    previous = view.get(SETUP_STEPS, (tenant, step))
    view.put(
        SETUP_STEPS,
        SetupStepRow(
            tenant=tenant,
            step=step,
            position=STEPS.index(step) + 1,
            status="complete",
            completed_at=at,
            completed_by=event.by,
            times_completed=1 if previous is None else previous.times_completed + 1,
        ),
    )
    done = _steps_done(view, tenant)
    completed_at = None
    if done == len(STEPS):
        # A re-test of a complete setup leaves it complete since the first time.
        completed_at = customer.setup_completed_at or at
    customer = replace(customer, setup_steps_done=done, setup_completed_at=completed_at)
    if accuracy is not None:
        # A (re-)test starts the measured accuracy again from the test's accuracy.
        customer = replace(
            customer,
            setup_accuracy=accuracy,
            setup_verified_at=at,
            measured_accuracy=accuracy,
            measured_accuracy_at=at,
        )
    return customer, at


def _invalidated(
    view: View, tenant: str, customer: CustomerRow, event: LaterStepsInvalidated
) -> CustomerRow:
    for step in event.steps:
        row = view.get(SETUP_STEPS, (tenant, step))
        if row is not None:
            view.put(
                SETUP_STEPS, replace(row, status="invalidated", invalidated_at=event.invalidated_at)
            )
    customer = replace(
        customer, setup_steps_done=_steps_done(view, tenant), setup_completed_at=None
    )
    if "testing" in event.steps:
        # The accuracy test no longer stands, so there is no accuracy to measure against
        # (go-live's pre-flight says the same) until the test is done again.
        customer = replace(
            customer,
            setup_accuracy=None,
            setup_verified_at=None,
            measured_accuracy=None,
            measured_accuracy_at=None,
        )
    return customer


# --- definitions and approval ---------------------------------------------------------------------


def _definition_event(
    view: View,
    tenant: str,
    customer: CustomerRow,
    event: DefinitionDrafted
    | DefinitionRevised
    | ApprovalVoided
    | DefinitionSubmitted
    | StageApproved
    | ChangesRequested
    | DefinitionApproved,
) -> tuple[CustomerRow, datetime]:
    key = (tenant, event.definition_id)
    before = view.get(DEFINITIONS, key)
    after: DefinitionRow | None
    match event:
        case DefinitionDrafted() | DefinitionRevised():
            at = event.drafted_at if isinstance(event, DefinitionDrafted) else event.revised_at
            drafted = DefinitionRow(
                tenant=tenant,
                definition_id=event.definition_id,
                name=event.content.name,
                latest_version=event.version,
                status=VersionStatus.DRAFT.value,
                changed_at=at,
            )
            if before is not None:
                drafted = replace(
                    drafted,
                    in_force_version=before.in_force_version,
                    approved_at=before.approved_at,
                )
            after = drafted
        case ApprovalVoided():
            at = event.voided_at
            _round_ended(view, tenant, event.definition_id, event.version, "voided", at)
            after = _latest(before, event.version, VersionStatus.VOIDED, None, at)
        case DefinitionSubmitted():
            at = event.submitted_at
            _round_started(view, tenant, event.definition_id, event.version, at)
            after = _latest(before, event.version, VersionStatus.IN_REVIEW, STAGES[0].value, at)
        case StageApproved():
            at = event.approved_at
            following = STAGES[min(STAGES.index(event.stage) + 1, len(STAGES) - 1)]
            after = _latest(before, event.version, VersionStatus.IN_REVIEW, following.value, at)
        case ChangesRequested():
            at = event.requested_at
            _round_ended(view, tenant, event.definition_id, event.version, "changes_requested", at)
            after = _latest(before, event.version, VersionStatus.DRAFT, None, at)
        case DefinitionApproved():
            at = event.approved_at
            _round_ended(view, tenant, event.definition_id, event.version, "approved", at)
            after = _latest(before, event.version, VersionStatus.APPROVED, None, at)
            if after is not None:
                after = replace(after, in_force_version=event.version, approved_at=at)
    if after is None:
        return customer, at  # about a version the row does not know: nothing to show
    view.put(DEFINITIONS, after)
    return replace(
        customer,
        definitions=customer.definitions + (before is None),
        definitions_in_review=customer.definitions_in_review
        + _in_review(after)
        - _in_review(before),
        definitions_in_force=customer.definitions_in_force + _in_force(after) - _in_force(before),
    ), at


def _latest(
    row: DefinitionRow | None,
    version: int,
    status: VersionStatus,
    stage: str | None,
    at: datetime,
) -> DefinitionRow | None:
    """The row with its latest version's status and stage changed, if `version` is the latest."""
    if row is None or row.latest_version != version:
        return None
    return replace(row, status=status.value, stage=stage, changed_at=at)


def _in_review(row: DefinitionRow | None) -> int:
    return int(row is not None and row.status == VersionStatus.IN_REVIEW.value)


def _in_force(row: DefinitionRow | None) -> int:
    return int(row is not None and row.in_force_version is not None)


def _round_started(view: View, tenant: str, definition_id: str, version: int, at: datetime) -> None:
    previous = view.get(APPROVAL_OUTCOMES, (tenant, definition_id, version))
    view.put(
        APPROVAL_OUTCOMES,
        ApprovalOutcomeRow(
            tenant=tenant,
            definition_id=definition_id,
            version=version,
            outcome="in_review",
            rounds=1 if previous is None else previous.rounds + 1,
            first_submitted_at=at if previous is None else previous.first_submitted_at,
        ),
    )


def _round_ended(
    view: View, tenant: str, definition_id: str, version: int, outcome: str, at: datetime
) -> None:
    row = view.get(APPROVAL_OUTCOMES, (tenant, definition_id, version))
    if row is not None:
        view.put(APPROVAL_OUTCOMES, replace(row, outcome=outcome, decided_at=at))


# --- calculations, verdicts, alerts ---------------------------------------------------------------


def _calculated(view: View, tenant: str, event: ValueCalculated | ValueRecalculated) -> None:
    key = (tenant, event.definition_id, event.period_start)
    result = Decimal(event.result)
    values = [(reading.metric, Decimal(reading.value)) for reading in event.inputs]
    previous = view.get(CALCULATIONS, key)
    view.put(
        CALCULATIONS,
        CalculationRow(
            tenant=tenant,
            definition_id=event.definition_id,
            period_start=event.period_start,
            period_end=event.period_end,
            calculation_id=event.calculation_id,
            definition_version=event.definition_version,
            result=result,
            billable=event.billing.billable,
            currency=event.billing.currency,
            amount_minor_units=event.billing.amount_minor_units,
            calculated_at=event.calculated_at,
            calculations=1 if previous is None else previous.calculations + 1,
        ),
    )
    for metric, value in values:
        latest = view.get(METRIC_VALUES, (tenant, metric))
        # A late calculation of an earlier period does not replace a later period's value.
        if latest is None or event.period_start >= latest.period_start:
            view.put(
                METRIC_VALUES,
                MetricValueRow(
                    tenant=tenant,
                    metric=metric,
                    value=value,
                    definition_id=event.definition_id,
                    period_start=event.period_start,
                    period_end=event.period_end,
                    calculation_id=event.calculation_id,
                    calculated_at=event.calculated_at,
                ),
            )


def _verdict(
    view: View, tenant: str, event: CalculationConfirmed | CalculationDisputed, verdict: str
) -> None:
    row = view.get(CALCULATIONS, (tenant, event.definition_id, event.period_start))
    if row is not None and row.calculation_id == event.calculation_id:
        view.put(CALCULATIONS, replace(row, verdict=verdict))


def _alert_status(view: View, tenant: str, alert_id: str, status: AlertStatus) -> None:
    row = view.get(ALERT_STATES, (tenant, alert_id))
    if row is not None:
        view.put(ALERT_STATES, replace(row, status=status.value))
