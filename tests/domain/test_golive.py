"""The go-live switch: pre-flight checks, the go-live receipt, pauses and the threshold.

Given/when/then: the given events are evolved from the initial state, the command decided
against a context of facts, and the events or the refusal (with its exact message) checked.
Hypothesis drives random command sequences through a state machine: nothing but a DomainError
escapes, replaying the ledger gives the same state, every event round-trips through JSON, a
receipt only ever records passed checks, and `billing_active_at` agrees with a plain walk over
the pauses and resumptions.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.golive import (
    COMMAND_DECODER,
    DEFAULT_THRESHOLD,
    EVENT_DECODER,
    PREFLIGHT_CHECKS,
    AccuracyThresholdSet,
    AlreadyLiveError,
    BillingAlreadyPausedError,
    BillingNotPausedError,
    BillingPause,
    BillingPaused,
    BillingResumed,
    Command,
    CustomerMismatchError,
    CustomerTeam,
    DefinitionInForce,
    Event,
    GoLive,
    GoLiveError,
    GoLivePreflight,
    GoLiveState,
    InvalidGoLiveFieldError,
    InvalidThresholdError,
    NotAuthorizedError,
    NotLiveError,
    OpenCriticalAlert,
    PauseBilling,
    PreflightCheck,
    PreflightFailedError,
    ResumeBilling,
    Role,
    SetAccuracyThreshold,
    ThresholdUnchangedError,
    WentLive,
    decide,
    evolve,
    initial_state,
    preflight_checks,
)

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
STAFF = "staff-1"
AT = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
STARTS = datetime(2025, 4, 2, tzinfo=UTC)
LATER = STARTS + timedelta(days=10)
LATEST = LATER + timedelta(days=5)
HASH = "ab" * 32

USER_ROLES = {"alice": Role.CUSTOMER_ADMIN, "bob": Role.FINANCE, "tina": Role.TECHNICAL}
TEAM = CustomerTeam(customer_id=CUSTOMER, user_roles=USER_ROLES)
DEFINITION = DefinitionInForce(definition_id="value", version=2, content_hash=HASH)
READY = GoLivePreflight(
    customer_id=CUSTOMER,
    user_roles=USER_ROLES,
    setup_complete=True,
    setup_missing_step="",
    definitions_in_force=(DEFINITION,),
    measured_accuracy="97.50",
    open_critical_alerts=(),
)
"""Facts under which every pre-flight check passes."""

PASSED = (
    PreflightCheck(check="setup_complete", passed=True, reason="all 5 setup steps are complete"),
    PreflightCheck(
        check="approved_definition",
        passed=True,
        reason="approved value definition in force: 'value' version 2",
    ),
    PreflightCheck(check="accuracy", passed=True, reason="accuracy 97.50% >= threshold 85.00%"),
    PreflightCheck(check="no_critical_alerts", passed=True, reason="no critical alert is open"),
)

# Alice, the customer's CUSTOMER_ADMIN, acts in the commands below unless a test says otherwise.
GO_LIVE = GoLive(
    customer_id=CUSTOMER, billing_starts_at=STARTS, at=AT, by="alice", by_role=Role.CUSTOMER_ADMIN
)
WENT_LIVE = WentLive(
    customer_id=CUSTOMER,
    checks=PASSED,
    definitions_in_force=(DEFINITION,),
    accuracy="97.50",
    accuracy_threshold="85.00",
    billing_starts_at=STARTS,
    went_live_at=AT,
    went_live_by="alice",
    went_live_by_role=Role.CUSTOMER_ADMIN,
)
PAUSE = PauseBilling(
    customer_id=CUSTOMER,
    reason_sealed="pii:v1:sealed-pause",
    at=LATER,
    by="alice",
    by_role=Role.CUSTOMER_ADMIN,
)
PAUSED = BillingPaused(
    customer_id=CUSTOMER,
    reason_sealed="pii:v1:sealed-pause",
    paused_at=LATER,
    paused_by="alice",
    paused_by_role=Role.CUSTOMER_ADMIN,
)
RESUME = ResumeBilling(
    customer_id=CUSTOMER,
    reason_sealed="pii:v1:sealed-resume",
    at=LATEST,
    by=STAFF,
    by_role=Role.ADMIN,
)
RESUMED = BillingResumed(
    customer_id=CUSTOMER,
    reason_sealed="pii:v1:sealed-resume",
    paused_at=LATER,
    resumed_at=LATEST,
    resumed_by=STAFF,
    resumed_by_role=Role.ADMIN,
)
SET_THRESHOLD = SetAccuracyThreshold(
    customer_id=CUSTOMER, threshold=Decimal("90.5"), at=AT, by=STAFF, by_role=Role.ADMIN
)
THRESHOLD_SET = AccuracyThresholdSet(
    customer_id=CUSTOMER,
    threshold="90.50",
    previous_threshold="85.00",
    set_at=AT,
    set_by=STAFF,
    set_by_role=Role.ADMIN,
)
ALL_EVENTS: list[Event] = [THRESHOLD_SET, WENT_LIVE, PAUSED, RESUMED]


def state_after(events: tuple[Event, ...] | list[Event]) -> GoLiveState:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(
    given: tuple[Event, ...], when: Command, context: CustomerTeam | GoLivePreflight = READY
) -> list[Event]:
    return decide(when, state_after(given), context)


def refusal(
    given: tuple[Event, ...],
    when: Command,
    error: type[GoLiveError],
    context: CustomerTeam | GoLivePreflight = READY,
) -> str:
    """The message of the refusal, after checking its type."""
    with pytest.raises(error) as raised:
        then(given, when, context)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


def preflight_refusal(
    context: GoLivePreflight, given: tuple[Event, ...] = ()
) -> PreflightFailedError:
    with pytest.raises(PreflightFailedError) as raised:
        then(given, GO_LIVE, context)
    return raised.value


# Going live.


def test_a_new_switch_is_not_live_at_the_default_threshold() -> None:
    state = initial_state()
    assert (state.live, state.billing_starts_at, state.paused) == (False, None, False)
    assert (state.paused_since, state.pause_reason_sealed) == (None, "")
    assert state.accuracy_threshold == DEFAULT_THRESHOLD == "85.00"
    assert state.threshold == Decimal("85.00")
    assert not state.billing_active_at(LATEST)


def test_going_live_records_the_receipt_with_every_check() -> None:
    assert then((), GO_LIVE) == [WENT_LIVE]
    state = state_after([WENT_LIVE])
    assert state.live
    assert state.billing_starts_at == STARTS
    assert state.receipt == WENT_LIVE
    assert not state.paused


def test_the_receipt_lists_every_definition_in_force() -> None:
    second = DefinitionInForce(definition_id="savings", version=1, content_hash="cd" * 32)
    context = replace(READY, definitions_in_force=(DEFINITION, second))
    [event] = then((), GO_LIVE, context)
    assert isinstance(event, WentLive)
    assert event.definitions_in_force == (DEFINITION, second)
    assert event.checks[1] == PreflightCheck(
        check="approved_definition",
        passed=True,
        reason="approved value definitions in force: 'value' version 2, 'savings' version 1",
    )


def test_vendor_staff_go_live_without_being_users_of_the_customer() -> None:
    [event] = then((), replace(GO_LIVE, by=STAFF, by_role=Role.ADMIN))
    assert isinstance(event, WentLive)
    assert (event.went_live_by, event.went_live_by_role) == (STAFF, Role.ADMIN)


def test_billing_may_start_at_the_moment_of_going_live() -> None:
    [event] = then((), replace(GO_LIVE, billing_starts_at=AT))
    assert isinstance(event, WentLive)
    assert event.billing_starts_at == AT


def test_billing_cannot_start_in_the_past() -> None:
    command = replace(GO_LIVE, billing_starts_at=AT - timedelta(seconds=1))
    assert refusal((), command, InvalidGoLiveFieldError) == (
        "billing_starts_at 2025-04-01T08:59:59+00:00 is before the command's time "
        "2025-04-01T09:00:00+00:00; billing cannot start in the past, so give a start at or "
        "after it"
    )


def test_billing_start_needs_a_timezone() -> None:
    command = replace(GO_LIVE, billing_starts_at=STARTS.replace(tzinfo=None))
    assert refusal((), command, InvalidGoLiveFieldError) == (
        "billing_starts_at must be a timezone-aware time; give it in UTC"
    )


def test_going_live_twice_is_refused() -> None:
    assert refusal((WENT_LIVE,), replace(GO_LIVE, at=LATER), AlreadyLiveError) == (
        "customer 'cust-1' already went live at 2025-04-01T09:00:00+00:00, billed from "
        "2025-04-02T00:00:00+00:00; it cannot go live twice, so pause or resume billing instead"
    )


# The pre-flight checks.


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        (
            {"setup_complete": False, "setup_missing_step": "step 4 (baseline)"},
            PreflightCheck(
                check="setup_complete",
                passed=False,
                reason="step 4 (baseline) is not complete; finish the setup wizard from there",
            ),
        ),
        (
            {"setup_complete": False, "setup_missing_step": ""},
            PreflightCheck(
                check="setup_complete",
                passed=False,
                reason="a setup step is not complete; finish the setup wizard from there",
            ),
        ),
        (
            {"definitions_in_force": ()},
            PreflightCheck(
                check="approved_definition",
                passed=False,
                reason="no approved value definition is in force; have a value definition "
                "approved first",
            ),
        ),
        (
            {"measured_accuracy": None},
            PreflightCheck(
                check="accuracy",
                passed=False,
                reason="accuracy has never been measured; verify it in step 5 (testing) of the "
                "setup",
            ),
        ),
        (
            {"measured_accuracy": "84.99"},
            PreflightCheck(
                check="accuracy",
                passed=False,
                reason="accuracy 84.99% is below the threshold 85.00%; improve the measurement "
                "and verify accuracy again in step 5 (testing) of the setup",
            ),
        ),
        (
            {"measured_accuracy": "100.01"},
            PreflightCheck(
                check="accuracy",
                passed=False,
                reason="the measured accuracy '100.01' is not a percentage from 0 to 100; "
                "verify accuracy again in step 5 (testing) of the setup",
            ),
        ),
        (
            {"open_critical_alerts": (OpenCriticalAlert(alert_id="a-1", kind="manual"),)},
            PreflightCheck(
                check="no_critical_alerts",
                passed=False,
                reason="1 critical alert is open: 'a-1' (manual); resolve them first (an "
                "acknowledged alert still blocks going live)",
            ),
        ),
    ],
    ids=[
        "setup",
        "setup-unnamed-step",
        "definition",
        "never-measured",
        "below-threshold",
        "malformed-accuracy",
        "critical-alert",
    ],
)
def test_a_failed_check_refuses_going_live_and_names_itself(
    changes: dict[str, object], failed: PreflightCheck
) -> None:
    error = preflight_refusal(replace(READY, **changes))
    assert error.failed == (failed,)
    assert error.checks == tuple(failed if c.check == failed.check else c for c in PASSED)
    assert error.message == (
        f"customer 'cust-1' cannot go live, 1 of 4 pre-flight checks failed: [{failed.check}] "
        f"{failed.reason}; nothing was recorded, so go live again once every check passes"
    )


def test_every_failed_check_is_listed_in_one_refusal() -> None:
    context = replace(
        READY,
        setup_complete=False,
        setup_missing_step="step 2 (data source)",
        definitions_in_force=(),
        measured_accuracy=None,
        open_critical_alerts=(
            OpenCriticalAlert(alert_id="a-1", kind="calculation_anomaly"),
            OpenCriticalAlert(alert_id="a-2", kind="data_source_error"),
        ),
    )
    error = preflight_refusal(context)
    assert [check.check for check in error.checks] == list(PREFLIGHT_CHECKS)
    assert error.failed == error.checks
    assert error.message == (
        "customer 'cust-1' cannot go live, 4 of 4 pre-flight checks failed: "
        "[setup_complete] step 2 (data source) is not complete; finish the setup wizard from "
        "there; [approved_definition] no approved value definition is in force; have a value "
        "definition approved first; [accuracy] accuracy has never been measured; verify it in "
        "step 5 (testing) of the setup; [no_critical_alerts] 2 critical alerts are open: 'a-1' "
        "(calculation_anomaly), 'a-2' (data_source_error); resolve them first (an acknowledged "
        "alert still blocks going live); nothing was recorded, so go live again once every "
        "check passes"
    )


def test_a_long_list_of_open_critical_alerts_is_cut_short() -> None:
    alerts = tuple(OpenCriticalAlert(alert_id=f"a-{n}", kind="manual") for n in range(12))
    [failed] = preflight_refusal(replace(READY, open_critical_alerts=alerts)).failed
    listed = ", ".join(f"'a-{n}' (manual)" for n in range(10))
    assert failed.reason == (
        f"12 critical alerts are open: {listed} and 2 more; resolve them first "
        "(an acknowledged alert still blocks going live)"
    )


@pytest.mark.parametrize("accuracy", ["85.00", "85", "85.000", "100.00"])
def test_accuracy_at_the_threshold_passes(accuracy: str) -> None:
    [event] = then((), GO_LIVE, replace(READY, measured_accuracy=accuracy))
    assert isinstance(event, WentLive)
    assert event.accuracy == accuracy
    assert event.checks[2].reason == f"accuracy {accuracy}% >= threshold 85.00%"


@pytest.mark.parametrize("accuracy", ["84.999", "abc", "", "-90", " 90", "9E1", "1_00", "NaN"])
def test_accuracy_below_the_threshold_or_malformed_fails(accuracy: str) -> None:
    [failed] = preflight_refusal(replace(READY, measured_accuracy=accuracy)).failed
    assert failed.check == "accuracy"


def test_a_raised_threshold_is_applied_and_recorded() -> None:
    context = replace(READY, measured_accuracy="90.49")
    [failed] = preflight_refusal(context, (THRESHOLD_SET,)).failed
    assert failed.reason == (
        "accuracy 90.49% is below the threshold 90.50%; improve the measurement and verify "
        "accuracy again in step 5 (testing) of the setup"
    )
    [event] = then((THRESHOLD_SET,), GO_LIVE, replace(READY, measured_accuracy="90.50"))
    assert isinstance(event, WentLive)
    assert (event.accuracy, event.accuracy_threshold) == ("90.50", "90.50")
    assert event.checks[2].reason == "accuracy 90.50% >= threshold 90.50%"


def test_preflight_checks_preview_what_going_live_decides() -> None:
    context = replace(READY, measured_accuracy="80.00")
    assert preflight_checks(READY, Decimal("85.00")) == PASSED
    assert preflight_checks(context, Decimal("85.00")) == preflight_refusal(context).checks


# Who may go live, pause and resume.


@pytest.mark.parametrize("role", [Role.FINANCE, Role.TECHNICAL])
@pytest.mark.parametrize(
    ("command", "given", "action"),
    [
        (GO_LIVE, (), "go live"),
        (PAUSE, (WENT_LIVE,), "pause billing"),
        (RESUME, (WENT_LIVE, PAUSED), "resume billing"),
    ],
)
def test_finance_and_technical_cannot_switch_billing(
    role: Role, command: Command, given: tuple[Event, ...], action: str
) -> None:
    command = replace(command, by="tina", by_role=role)
    assert refusal(given, command, NotAuthorizedError) == (
        f"role {role} cannot {action}; ask a CUSTOMER_ADMIN of the customer or an ADMIN"
    )


@pytest.mark.parametrize("actor", ["mallory", "bob"])
@pytest.mark.parametrize(
    ("command", "given", "action"),
    [
        (GO_LIVE, (), "go live"),
        (PAUSE, (WENT_LIVE,), "pause billing"),
        (RESUME, (WENT_LIVE, PAUSED), "resume billing"),
    ],
)
def test_a_customer_admin_claim_needs_the_role_on_this_customer_now(
    actor: str, command: Command, given: tuple[Event, ...], action: str
) -> None:
    # mallory is no user of this customer; bob holds FINANCE here (say, since a demotion).
    command = replace(command, by=actor, by_role=Role.CUSTOMER_ADMIN)
    assert refusal(given, command, NotAuthorizedError) == (
        f"user {actor!r} is not a CUSTOMER_ADMIN of customer 'cust-1', so cannot {action}; "
        "ask one of its CUSTOMER_ADMINs or an ADMIN"
    )


def test_authorization_is_checked_before_the_preflight() -> None:
    context = replace(READY, setup_complete=False, setup_missing_step="step 1 (API integration)")
    command = replace(GO_LIVE, by="bob", by_role=Role.FINANCE)
    assert refusal((), command, NotAuthorizedError, context).startswith("role FINANCE cannot")


@pytest.mark.parametrize("role", [Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL])
def test_only_vendor_staff_set_the_threshold(role: Role) -> None:
    command = replace(SET_THRESHOLD, by="alice", by_role=role)
    assert refusal((), command, NotAuthorizedError, TEAM) == (
        f"only vendor staff (ADMIN) can set the accuracy threshold, not {role}; ask vendor support"
    )


def test_going_live_needs_the_preflight_facts() -> None:
    with pytest.raises(TypeError, match="going live is decided against a GoLivePreflight"):
        decide(GO_LIVE, initial_state(), TEAM)


# The stamp and the customer.


def test_a_naive_time_is_refused() -> None:
    assert refusal((), replace(GO_LIVE, at=AT.replace(tzinfo=None)), InvalidGoLiveFieldError) == (
        "at must be a timezone-aware time; stamp commands with the time in UTC"
    )


def test_a_blank_actor_is_refused() -> None:
    assert refusal((), replace(GO_LIVE, by=" "), InvalidGoLiveFieldError) == (
        "by must not be blank; stamp commands with the user's id"
    )


def test_a_blank_customer_is_refused() -> None:
    assert refusal((), replace(SET_THRESHOLD, customer_id=""), InvalidGoLiveFieldError, TEAM) == (
        "customer_id must not be blank; name the customer"
    )


def test_facts_for_another_customer_are_refused() -> None:
    context = replace(READY, customer_id="cust-2")
    assert refusal((), GO_LIVE, CustomerMismatchError, context) == (
        "the command is for customer 'cust-1' but the facts it was decided against are for "
        "customer 'cust-2'; read them for the customer the command names"
    )


@pytest.mark.parametrize("command", [GO_LIVE, PAUSE, RESUME, SET_THRESHOLD])
def test_a_command_for_another_customer_than_the_stream_is_refused(command: Command) -> None:
    command = replace(command, customer_id="cust-2")
    context = replace(READY, customer_id="cust-2")
    assert refusal((WENT_LIVE, PAUSED), command, CustomerMismatchError, context) == (
        "the command is for customer 'cust-2' but was decided against the billing stream of "
        "customer 'cust-1'; load the stream of the customer the command names"
    )


# Pausing and resuming.


def test_pause_and_resume_billing() -> None:
    assert then((WENT_LIVE,), PAUSE, TEAM) == [PAUSED]
    paused = state_after([WENT_LIVE, PAUSED])
    assert paused.paused
    assert (paused.paused_since, paused.pause_reason_sealed) == (LATER, "pii:v1:sealed-pause")
    assert then((WENT_LIVE, PAUSED), RESUME, TEAM) == [RESUMED]
    resumed = state_after([WENT_LIVE, PAUSED, RESUMED])
    assert not resumed.paused
    assert (resumed.paused_since, resumed.pause_reason_sealed) == (None, "")
    assert resumed.pauses == (
        BillingPause(
            paused_at=LATER,
            reason_sealed="pii:v1:sealed-pause",
            paused_by="alice",
            resumed_at=LATEST,
            resume_reason_sealed="pii:v1:sealed-resume",
            resumed_by=STAFF,
        ),
    )


def test_a_preflight_carries_the_team_for_pausing_too() -> None:
    assert then((WENT_LIVE,), PAUSE, READY) == [PAUSED]


@pytest.mark.parametrize(("command", "action"), [(PAUSE, "pause"), (RESUME, "resume")])
def test_billing_is_paused_or_resumed_only_after_going_live(
    command: PauseBilling | ResumeBilling, action: str
) -> None:
    assert refusal((THRESHOLD_SET,), command, NotLiveError, TEAM) == (
        f"customer 'cust-1' has not gone live, so there is no billing to {action}; go live first"
    )


def test_pausing_paused_billing_is_refused() -> None:
    command = replace(PAUSE, at=LATEST)
    assert refusal((WENT_LIVE, PAUSED), command, BillingAlreadyPausedError, TEAM) == (
        "billing of customer 'cust-1' is already paused since 2025-04-12T00:00:00+00:00 by "
        "'alice'; resume it before pausing again"
    )


@pytest.mark.parametrize("given", [(WENT_LIVE,), (WENT_LIVE, PAUSED, RESUMED)])
def test_resuming_running_billing_is_refused(given: tuple[Event, ...]) -> None:
    assert refusal(given, RESUME, BillingNotPausedError, TEAM) == (
        "billing of customer 'cust-1' is not paused, so there is nothing to resume"
    )


@pytest.mark.parametrize(
    ("command", "given"), [(PAUSE, (WENT_LIVE,)), (RESUME, (WENT_LIVE, PAUSED))]
)
def test_pausing_and_resuming_need_a_reason(
    command: PauseBilling | ResumeBilling, given: tuple[Event, ...]
) -> None:
    assert refusal(given, replace(command, reason_sealed=" "), InvalidGoLiveFieldError, TEAM) == (
        "reason_sealed must not be blank; say why, for the audit trail"
    )


@pytest.mark.parametrize(
    ("command", "given", "last"),
    [
        (replace(PAUSE, at=AT - timedelta(minutes=1)), (WENT_LIVE,), "2025-04-01T09:00:00+00:00"),
        (replace(RESUME, at=LATER - timedelta(minutes=1)), (WENT_LIVE, PAUSED), "2025-04-12"),
        (replace(PAUSE, at=LATER), (WENT_LIVE, PAUSED, RESUMED), "2025-04-17"),
    ],
    ids=["pause-before-going-live", "resume-before-pause", "pause-before-resumption"],
)
def test_pauses_and_resumptions_are_not_dated_back(
    command: PauseBilling | ResumeBilling, given: tuple[Event, ...], last: str
) -> None:
    message = refusal(given, command, InvalidGoLiveFieldError, TEAM)
    assert message.startswith(f"at {command.at.isoformat()} is before the billing history's")
    assert f"last change at {last}" in message
    assert message.endswith("; stamp the command with the current time")


def test_a_pause_and_a_resumption_may_share_an_instant() -> None:
    [resumed] = then((WENT_LIVE, PAUSED), replace(RESUME, at=LATER), TEAM)
    [paused] = then((WENT_LIVE, PAUSED, resumed), replace(PAUSE, at=LATER), TEAM)
    assert isinstance(paused, BillingPaused)


# Is billing active at a given instant?


def test_billing_runs_from_its_start_except_while_paused() -> None:
    second_pause = replace(PAUSED, paused_at=LATEST + timedelta(days=1))
    state = state_after([WENT_LIVE, PAUSED, RESUMED, second_pause])
    second = timedelta(seconds=1)
    expected = {
        AT: False,  # went live, but billing has not started
        STARTS - second: False,
        STARTS: True,
        LATER - second: True,
        LATER: False,  # pauses are half-open: [paused_at, resumed_at)
        LATEST - second: False,
        LATEST: True,
        LATEST + timedelta(days=1) - second: True,
        LATEST + timedelta(days=1): False,  # the second pause is still running
        LATEST + timedelta(days=400): False,
    }
    assert {instant: state.billing_active_at(instant) for instant in expected} == expected
    assert state.paused_since == LATEST + timedelta(days=1)


def test_a_period_is_billable_only_if_billing_runs_throughout_it() -> None:
    state = state_after([WENT_LIVE, PAUSED, RESUMED])
    hour = timedelta(hours=1)
    assert state_after([]).billing_inactive_reason(STARTS, STARTS + hour) == (
        "the customer has not gone live"
    )
    assert state.billing_inactive_reason(STARTS - hour, STARTS + hour) == (
        "the period starts before billing started"
    )
    assert state.billing_inactive_reason(STARTS, LATER) == ""  # ends as the pause begins
    assert state.billing_inactive_reason(STARTS, LATER + hour) == (
        "billing was paused during the period"
    )
    assert state.billing_inactive_reason(LATER, LATEST) == "billing was paused during the period"
    assert state.billing_inactive_reason(LATEST, LATEST + hour) == ""  # resumed as it starts
    with pytest.raises(ValueError, match="must end after it starts"):
        state.billing_inactive_reason(LATEST, LATEST)


def test_billing_activity_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError, match="instant must be timezone-aware"):
        state_after([WENT_LIVE]).billing_active_at(LATER.replace(tzinfo=None))


# The accuracy threshold.


def test_vendor_staff_set_the_threshold() -> None:
    assert then((), SET_THRESHOLD, TEAM) == [THRESHOLD_SET]
    state = state_after([THRESHOLD_SET])
    assert (state.accuracy_threshold, state.threshold) == ("90.50", Decimal("90.50"))
    assert state.customer_id == CUSTOMER


@pytest.mark.parametrize(
    ("threshold", "stored"),
    [("85.01", "85.01"), ("100", "100.00"), ("90.100", "90.10"), ("9E+1", "90.00")],
)
def test_thresholds_are_stored_with_two_decimal_places(threshold: str, stored: str) -> None:
    [event] = then((), replace(SET_THRESHOLD, threshold=Decimal(threshold)), TEAM)
    assert isinstance(event, AccuracyThresholdSet)
    assert event.threshold == stored


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        (
            "84.99",
            "threshold 84.99 is outside 85 to 100; the accuracy needed to go live is never "
            "below 85%, so give a percentage from 85 to 100",
        ),
        (
            "100.01",
            "threshold 100.01 is outside 85 to 100; the accuracy needed to go live is never "
            "below 85%, so give a percentage from 85 to 100",
        ),
        (
            "-90",
            "threshold -90 is outside 85 to 100; the accuracy needed to go live is never "
            "below 85%, so give a percentage from 85 to 100",
        ),
        (
            "90.125",
            "threshold 90.125 has more than 2 decimal places; round it to 2 places, such as 90.25",
        ),
        (
            "1E+999999999",
            "threshold 1E+999999999 is outside 85 to 100; the accuracy needed to go live is "
            "never below 85%, so give a percentage from 85 to 100",
        ),
        (
            "NaN",
            "threshold must be a finite decimal percentage; give it as a decimal string such "
            "as 90.00",
        ),
        (
            "Infinity",
            "threshold must be a finite decimal percentage; give it as a decimal string such "
            "as 90.00",
        ),
    ],
)
def test_a_threshold_outside_85_to_100_or_too_precise_is_refused(
    threshold: str, message: str
) -> None:
    command = replace(SET_THRESHOLD, threshold=Decimal(threshold))
    assert refusal((), command, InvalidThresholdError, TEAM) == message


def test_setting_the_threshold_it_has_is_refused() -> None:
    command = replace(SET_THRESHOLD, threshold=Decimal("85"))
    assert refusal((), command, ThresholdUnchangedError, TEAM) == (
        "the accuracy threshold of customer 'cust-1' is already 85.00%; nothing to change"
    )
    assert refusal((THRESHOLD_SET,), SET_THRESHOLD, ThresholdUnchangedError, TEAM).endswith(
        "is already 90.50%; nothing to change"
    )


def test_the_threshold_decodes_from_a_decimal_string() -> None:
    encoded = msgspec.json.encode(SET_THRESHOLD)
    assert b'"threshold":"90.5"' in encoded
    assert COMMAND_DECODER.decode(encoded) == SET_THRESHOLD


# Events and commands as stored.

EXPECTED_TAGS = {
    WentLive: "WentLive",
    BillingPaused: "BillingPaused",
    BillingResumed: "BillingResumed",
    AccuracyThresholdSet: "AccuracyThresholdSet",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    assert {type(event) for event in ALL_EVENTS} == set(EXPECTED_TAGS)
    for event in ALL_EVENTS:
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


def test_the_receipt_is_plain_json_without_floats() -> None:
    receipt = msgspec.json.decode(msgspec.json.encode(WENT_LIVE))
    assert receipt["accuracy"] == "97.50"
    assert receipt["accuracy_threshold"] == "85.00"
    assert receipt["checks"][2] == {
        "check": "accuracy",
        "passed": True,
        "reason": "accuracy 97.50% >= threshold 85.00%",
    }
    assert receipt["definitions_in_force"] == [
        {"definition_id": "value", "version": 2, "content_hash": HASH}
    ]


@pytest.mark.parametrize("event_type", list(EXPECTED_TAGS), ids=lambda cls: cls.__name__)
def test_events_follow_the_ledger_conventions(event_type: type[msgspec.Struct]) -> None:
    config = event_type.__struct_config__
    assert (config.frozen, config.tag_field, config.tag) == (
        True,
        "type",
        EXPECTED_TAGS[event_type],
    )
    fields = msgspec.structs.fields(event_type)
    assert (fields[-1].name, fields[-1].default) == ("schema", 1)
    assert any(field.name.endswith("_at") and field.type is datetime for field in fields)


def test_commands_refuse_unknown_fields() -> None:
    for command in (GO_LIVE, PAUSE, RESUME, SET_THRESHOLD):
        encoded = msgspec.json.encode(command)
        assert COMMAND_DECODER.decode(encoded) == command
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            COMMAND_DECODER.decode(encoded[:-1] + b', "force": true}')


# Invariants over random command sequences.

ACTORS = st.sampled_from(
    [
        ("alice", Role.CUSTOMER_ADMIN),
        (STAFF, Role.ADMIN),
        (STAFF, Role.ADMIN),
        ("bob", Role.FINANCE),
        ("mallory", Role.CUSTOMER_ADMIN),
        ("", Role.ADMIN),
    ]
)
PREFLIGHTS = st.builds(
    GoLivePreflight,
    customer_id=st.sampled_from([CUSTOMER, CUSTOMER, CUSTOMER, "cust-2"]),
    user_roles=st.just(USER_ROLES),
    setup_complete=st.booleans(),
    setup_missing_step=st.sampled_from(["", "step 5 (testing)"]),
    definitions_in_force=st.sampled_from([(), (DEFINITION,)]),
    measured_accuracy=st.sampled_from([None, "97.50", "85.00", "84.99", "90.50", "100", "x"]),
    open_critical_alerts=st.sampled_from(
        [(), (), (OpenCriticalAlert(alert_id="a-1", kind="manual"),)]
    ),
)
STEPS = st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(days=3), -timedelta(hours=1)])
THRESHOLDS = st.sampled_from(["85", "85.00", "90.5", "99.99", "100", "84.99", "90.123", "NaN"])


class GoLiveMachine(RuleBasedStateMachine):
    """Any sequence of commands: refusals are DomainErrors, and the ledger stays coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.ledger: list[Event] = []
        self.clock = AT

    def tick(self, step: timedelta) -> datetime:
        self.clock += step
        return self.clock

    @rule(preflight=PREFLIGHTS, actor=ACTORS, step=STEPS, delay=STEPS)
    def go_live(
        self,
        preflight: GoLivePreflight,
        actor: tuple[str, Role],
        step: timedelta,
        delay: timedelta,
    ) -> None:
        at = self.tick(step)
        command = GoLive(
            customer_id=CUSTOMER,
            billing_starts_at=at + delay,
            at=at,
            by=actor[0],
            by_role=actor[1],
        )
        self.record(command, preflight)

    @rule(step=STEPS)
    def go_live_when_ready(self, step: timedelta) -> None:
        """Random facts seldom all pass, so also try with facts that do."""
        at = self.tick(step)
        command = GoLive(
            customer_id=CUSTOMER, billing_starts_at=at, at=at, by=STAFF, by_role=Role.ADMIN
        )
        self.record(command, READY)

    @rule(
        actor=ACTORS | st.just(("alice", Role.CUSTOMER_ADMIN)),
        step=STEPS,
        reason=st.sampled_from(["pii:v1:x", "pii:v1:y", ""]),
        pause=st.booleans(),
    )
    def pause_or_resume(
        self, actor: tuple[str, Role], step: timedelta, reason: str, pause: bool
    ) -> None:
        kind = PauseBilling if pause else ResumeBilling
        command = kind(
            customer_id=CUSTOMER,
            reason_sealed=reason,
            at=self.tick(step),
            by=actor[0],
            by_role=actor[1],
        )
        self.record(command, TEAM)

    @rule(actor=ACTORS, threshold=THRESHOLDS, step=STEPS)
    def set_threshold(self, actor: tuple[str, Role], threshold: str, step: timedelta) -> None:
        command = SetAccuracyThreshold(
            customer_id=CUSTOMER,
            threshold=Decimal(threshold),
            at=self.tick(step),
            by=actor[0],
            by_role=actor[1],
        )
        self.record(command, TEAM)

    def record(self, command: Command, context: CustomerTeam | GoLivePreflight) -> None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, context)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            hypothesis_event(f"refused: {type(refused).__name__}")
            assert isinstance(refused, GoLiveError)
            assert refused.message
            if isinstance(refused, PreflightFailedError):
                assert [check.check for check in refused.checks] == list(PREFLIGHT_CHECKS)
                assert refused.failed
            return
        hypothesis_event(f"decided: {type(command).__name__}")
        assert decide(command, self.state, context) == events
        assert len(events) == 1
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger

    @invariant()
    def a_receipt_records_only_passed_checks(self) -> None:
        receipts = [event for event in self.ledger if isinstance(event, WentLive)]
        assert len(receipts) <= 1
        assert self.state.live == bool(receipts)
        for receipt in receipts:
            assert [check.check for check in receipt.checks] == list(PREFLIGHT_CHECKS)
            assert all(check.passed for check in receipt.checks)
            assert Decimal(receipt.accuracy) >= Decimal(receipt.accuracy_threshold)
            assert receipt.billing_starts_at >= receipt.went_live_at

    @invariant()
    def the_threshold_stays_between_85_and_100(self) -> None:
        threshold = self.state.threshold
        assert Decimal(85) <= threshold <= Decimal(100)
        assert self.state.accuracy_threshold == format(threshold.quantize(Decimal("0.01")), "f")

    @invariant()
    def pauses_are_in_order_and_only_the_last_runs(self) -> None:
        pauses = self.state.pauses
        assert not pauses or self.state.live
        assert self.state.paused == bool(pauses and pauses[-1].resumed_at is None)
        for earlier, later in itertools.pairwise(pauses):
            assert earlier.resumed_at is not None
            assert earlier.paused_at <= earlier.resumed_at <= later.paused_at

    @invariant()
    def billing_activity_agrees_with_the_ledger(self) -> None:
        receipt = self.state.receipt
        instants = {AT, self.clock + timedelta(days=1)}
        for event in self.ledger:
            if isinstance(event, WentLive):
                instants |= {event.billing_starts_at, event.billing_starts_at - timedelta(1)}
            elif isinstance(event, BillingPaused):
                instants |= {event.paused_at, event.paused_at - timedelta(seconds=1)}
            elif isinstance(event, BillingResumed):
                instants |= {event.resumed_at, event.resumed_at - timedelta(seconds=1)}
        for instant in instants:
            running = receipt is not None and instant >= receipt.billing_starts_at
            for event in self.ledger:
                if isinstance(event, BillingPaused) and event.paused_at <= instant:
                    running = False
                elif isinstance(event, BillingResumed) and event.resumed_at <= instant:
                    running = receipt is not None and instant >= receipt.billing_starts_at
            assert self.state.billing_active_at(instant) == running, instant


GoLiveMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
TestGoLive = GoLiveMachine.TestCase
