"""Accuracy feedback: each rule as given events, a command, then events or the refusal with its
exact message; and the measured accuracy, worked through as docs state it.

Hypothesis drives random verdicts through a state machine: nothing but an `AccuracyError`
escapes, deciding is deterministic, replaying and JSON round-trips give the same state, each
calculation has at most one verdict, and every recorded measured accuracy and alert can be
recomputed from the stream alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.accuracy import (
    COMMAND_DECODER,
    CONFIRMED_SCORE,
    EVENT_DECODER,
    MIN_ACCURACY_THRESHOLD,
    AccuracyContext,
    AccuracyError,
    AccuracyState,
    CalculationConfirmed,
    CalculationDisputed,
    CalculationSupersededError,
    Command,
    ConfirmCalculation,
    CustomerMismatchError,
    DisputeCalculation,
    Event,
    ExpectedValue,
    InvalidAccuracyContextError,
    InvalidExpectationError,
    InvalidFeedbackFieldError,
    JudgedCalculation,
    MetricComparison,
    NotAuthorizedError,
    NothingDisputedError,
    SetupNotVerifiedError,
    UnknownCalculationError,
    VerdictAlreadyGivenError,
    decide,
    evolve,
    given_at,
    initial_state,
    measured_accuracy,
)
from domain.roles import Role
from domain.setup import measurement_accuracy

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
STAFF = "staff-1"
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)
TESTED = datetime(2025, 1, 20, 12, 0, tzinfo=UTC)
AT = datetime(2025, 2, 3, 9, 0, tzinfo=UTC)
RETESTED = AT + timedelta(days=10)
USERS = {"alice": Role.CUSTOMER_ADMIN, "fiona": Role.FINANCE, "tom": Role.TECHNICAL}


def judged(calculation_id: str, superseded_by: str | None = None) -> JudgedCalculation:
    return JudgedCalculation(
        calculation_id=calculation_id,
        definition_id="def-1",
        period_start=START,
        period_end=END,
        result="25000.500000000000",
        inputs={"revenue": "125000.50", "visits": "1200"},
        superseded_by=superseded_by,
    )


CONTEXT = AccuracyContext(
    calculation=judged("calc-1"),
    users=USERS,
    setup_accuracy="92.50",
    setup_verified_at=TESTED,
    accuracy_threshold="90",
)


def about(calculation_id: str, **changes: object) -> AccuracyContext:
    """The context for judging `calculation_id`, with other facts changed."""
    return replace(CONTEXT, calculation=judged(calculation_id), **changes)


CONFIRM = ConfirmCalculation(
    customer_id=CUSTOMER, calculation_id="calc-1", at=AT, by="fiona", by_role=Role.FINANCE
)
CONFIRMED = CalculationConfirmed(
    customer_id=CUSTOMER,
    calculation_id="calc-1",
    definition_id="def-1",
    period_start=START,
    period_end=END,
    result="25000.500000000000",
    score="100.00",
    setup_accuracy="92.50",
    setup_verified_at=TESTED,
    measured_accuracy="96.25",  # (92.50 + 100.00) / 2
    confirmed_at=AT,
    confirmed_by="fiona",
    confirmed_by_role=Role.FINANCE,
)
# 25000.50 against an expected 28572: 1 - 3571.50 / 28572 = 0.875.
DISPUTE = DisputeCalculation(
    customer_id=CUSTOMER,
    calculation_id="calc-2",
    expected_result="28572",
    reason_sealed="sealed:reason",
    at=AT + timedelta(hours=1),
    by="tom",
    by_role=Role.TECHNICAL,
)
DISPUTED = CalculationDisputed(
    customer_id=CUSTOMER,
    calculation_id="calc-2",
    definition_id="def-1",
    period_start=START,
    period_end=END,
    result="25000.500000000000",
    expected_result="28572",
    reason_sealed="sealed:reason",
    score="87.50",
    setup_accuracy="92.50",
    setup_verified_at=TESTED,
    measured_accuracy="93.33",  # (92.50 + 100.00 + 87.50) / 3 = 93.333...
    accuracy_threshold="90",
    raises_alert=True,
    alert_severity="warning",  # 87.50 is below 90, the measured accuracy is not
    disputed_at=AT + timedelta(hours=1),
    disputed_by="tom",
    disputed_by_role=Role.TECHNICAL,
)
# 25000.50 against an expected 41667.5: 1 - 16667 / 41667.5 = 0.6.
CRITICAL_DISPUTE = replace(
    DISPUTE, calculation_id="calc-3", expected_result="41667.5", at=AT + timedelta(hours=2)
)


def state_after(events: tuple[Event, ...] | list[Event]) -> AccuracyState:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(given: tuple[Event, ...], when: Command, context: AccuracyContext) -> list[Event]:
    return decide(when, state_after(given), context)


def refusal(
    given: tuple[Event, ...],
    when: Command,
    error: type[AccuracyError],
    context: AccuracyContext = CONTEXT,
) -> str:
    """The message of the refusal, after checking its type."""
    with pytest.raises(error) as raised:
        decide(when, state_after(given), context)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


def per_metric(revenue: str, visits: str) -> DisputeCalculation:
    return replace(
        DISPUTE,
        expected_result=None,
        expected_values=(
            ExpectedValue(metric="revenue", expected=revenue),
            ExpectedValue(metric="visits", expected=visits),
        ),
    )


# --- verdicts -----------------------------------------------------------------------------------


def test_a_confirmation_scores_100() -> None:
    assert then((), CONFIRM, CONTEXT) == [CONFIRMED]
    state = state_after([CONFIRMED])
    assert state.customer_id == CUSTOMER
    assert state.verdicts == {"calc-1": CONFIRMED}
    assert Decimal("100.00") == CONFIRMED_SCORE


def test_a_dispute_of_the_result_scores_like_the_setup_test_and_may_warn() -> None:
    assert then((CONFIRMED,), DISPUTE, about("calc-2")) == [DISPUTED]
    assert measurement_accuracy([(Decimal("25000.5"), Decimal(28572))]) == Decimal("87.50")


def test_a_dispute_per_metric_compares_every_metric_in_the_receipts_order() -> None:
    ordered = per_metric("125000.50", "1500")
    command = replace(ordered, expected_values=ordered.expected_values[::-1])
    [event] = then((), command, about("calc-2"))
    assert isinstance(event, CalculationDisputed)
    assert event.comparisons == (
        MetricComparison(metric="revenue", measured="125000.50", expected="125000.50"),
        MetricComparison(metric="visits", measured="1200", expected="1500"),
    )
    assert event.expected_result is None
    # (1 + (1 - 300 / 1500)) / 2 = 0.9: at the threshold is not below it.
    assert (event.score, event.measured_accuracy) == ("90.00", "91.25")
    assert (event.raises_alert, event.alert_severity) == (False, None)


def test_a_dispute_that_takes_the_measured_accuracy_below_the_threshold_is_critical() -> None:
    [event] = then((CONFIRMED, DISPUTED), CRITICAL_DISPUTE, about("calc-3"))
    assert isinstance(event, CalculationDisputed)
    assert event.score == "60.00"
    assert event.measured_accuracy == "85.00"  # (92.50 + 100 + 87.50 + 60) / 4
    assert (event.raises_alert, event.alert_severity) == (True, "critical")


def test_critical_when_the_measured_accuracy_falls_below_even_if_the_score_does_not() -> None:
    # A dispute scoring 90 against a threshold of 85: no warning; whether it is critical
    # depends on the setup test it is averaged with.
    context = about("calc-2", setup_accuracy="80.00", accuracy_threshold="85")
    [event] = then((), per_metric("125000.50", "1500"), context)
    assert isinstance(event, CalculationDisputed)
    assert (event.score, event.measured_accuracy) == ("90.00", "85.00")
    assert (event.raises_alert, event.alert_severity) == (False, None)
    context = about("calc-2", setup_accuracy="79.98", accuracy_threshold="85")
    [event] = then((), per_metric("125000.50", "1500"), context)
    assert isinstance(event, CalculationDisputed)
    assert (event.measured_accuracy, event.alert_severity) == ("84.99", "critical")


def test_the_worked_example_of_the_docs() -> None:
    """docs: accuracy rules, "Measured accuracy"."""
    history: list[Event] = []
    verdicts: list[tuple[Command, AccuracyContext]] = [
        (CONFIRM, CONTEXT),
        (DISPUTE, about("calc-2")),
        (CRITICAL_DISPUTE, about("calc-3")),
    ]
    for command, context in verdicts:
        history += then(tuple(history), command, context)
    assert [(event.score, event.measured_accuracy) for event in history] == [
        ("100.00", "96.25"),
        ("87.50", "93.33"),
        ("60.00", "85.00"),
    ]
    assert [getattr(event, "alert_severity", None) for event in history] == [
        None,
        "warning",
        "critical",
    ]
    state = state_after(history)
    assert state.scores_since(TESTED) == (Decimal(100), Decimal("87.5"), Decimal(60))
    assert state.measured_accuracy(Decimal("92.50"), TESTED) == Decimal("85.00")
    # A re-test at 95.00: the verdicts before it stop counting.
    assert state.scores_since(RETESTED) == ()
    assert state.measured_accuracy(Decimal("95.00"), RETESTED) == Decimal("95.00")
    confirm = replace(CONFIRM, calculation_id="calc-4", at=RETESTED + timedelta(hours=1))
    context = about("calc-4", setup_accuracy="95.00", setup_verified_at=RETESTED)
    [event] = then(tuple(history), confirm, context)
    assert isinstance(event, CalculationConfirmed)
    assert (event.measured_accuracy, event.setup_verified_at) == ("97.50", RETESTED)


def test_a_verdict_given_at_the_moment_of_the_setup_test_counts() -> None:
    context = about("calc-1", setup_verified_at=AT)
    [event] = then((), CONFIRM, context)
    assert state_after([event]).scores_since(AT) == (Decimal(100),)


@pytest.mark.parametrize(
    ("setup", "scores", "measured"),
    [
        ("92.50", [], "92.50"),
        ("92.50", ["97.55"], "95.02"),  # 95.025: a tie, to even
        ("92.50", ["97.57"], "95.04"),  # 95.035: a tie, to even
        ("92.50", ["100.00", "87.50"], "93.33"),
        ("85", ["100", "100", "0"], "71.25"),
    ],
)
def test_measured_accuracy(setup: str, scores: list[str], measured: str) -> None:
    result = measured_accuracy(Decimal(setup), [Decimal(score) for score in scores])
    assert format(result, "f") == measured


# --- one verdict per current calculation --------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "command", "first"),
    [
        (
            (CONFIRMED,),
            replace(DISPUTE, calculation_id="calc-1"),
            "confirmed by 'fiona' at 2025-02-03T09:00:00+00:00",
        ),
        (
            (DISPUTED,),
            replace(CONFIRM, calculation_id="calc-2"),
            "disputed by 'tom' at 2025-02-03T10:00:00+00:00",
        ),
        ((CONFIRMED,), CONFIRM, "confirmed by 'fiona' at 2025-02-03T09:00:00+00:00"),
    ],
)
def test_a_calculation_gets_one_verdict(
    given: tuple[Event, ...], command: Command, first: str
) -> None:
    context = about(command.calculation_id)
    assert refusal(given, command, VerdictAlreadyGivenError, context) == (
        f"calculation {command.calculation_id!r} was already {first}; a calculation gets one "
        "verdict, so if it is wrong, ask for a recalculation and judge the new calculation"
    )


def test_feedback_on_a_superseded_calculation_is_refused() -> None:
    context = replace(CONTEXT, calculation=judged("calc-1", superseded_by="calc-2"))
    assert refusal((), CONFIRM, CalculationSupersededError, context) == (
        "calculation 'calc-1' was superseded by calculation 'calc-2'; confirm or dispute the "
        "current calculation instead"
    )


def test_an_unknown_calculation_is_refused() -> None:
    assert refusal((), CONFIRM, UnknownCalculationError, replace(CONTEXT, calculation=None)) == (
        "customer 'cust-1' has no calculation 'calc-1'; check the calculation id"
    )
    assert refusal((), CONFIRM, UnknownCalculationError, about("calc-9")) == (
        "the calculation given is 'calc-9', not 'calc-1'; load the calculation the command names"
    )


# --- who and when -------------------------------------------------------------------------------


@pytest.mark.parametrize(("user", "role"), list(USERS.items()))
def test_every_role_of_the_customer_may_judge(user: str, role: Role) -> None:
    [event] = then((), replace(CONFIRM, by=user, by_role=role), CONTEXT)
    assert isinstance(event, CalculationConfirmed)
    assert (event.confirmed_by, event.confirmed_by_role) == (user, role)


@pytest.mark.parametrize(
    ("command", "action"),
    [(CONFIRM, "confirm calculations"), (DISPUTE, "dispute calculations")],
    ids=["confirm", "dispute"],
)
def test_vendor_staff_may_not_judge_the_vendors_calculations(command: Command, action: str) -> None:
    """Else the vendor could confirm its own calculations up to the accuracy go-live needs."""
    staff = replace(command, by=STAFF, by_role=Role.ADMIN)
    assert refusal((), staff, NotAuthorizedError, about(command.calculation_id)) == (
        f"vendor staff cannot {action}: a verdict is the customer's own judgement of the "
        "vendor's calculation; ask a user of customer 'cust-1'"
    )


@pytest.mark.parametrize(
    ("command", "action"),
    [(CONFIRM, "confirm calculations"), (DISPUTE, "dispute calculations")],
    ids=["confirm", "dispute"],
)
def test_someone_who_is_not_a_user_of_the_customer_is_refused(
    command: Command, action: str
) -> None:
    context = about(command.calculation_id)
    assert refusal((), replace(command, by="mallory"), NotAuthorizedError, context) == (
        f"user 'mallory' is not a user of customer 'cust-1', so cannot {action}; ask one of "
        "its users"
    )


def test_a_user_acts_in_the_role_they_hold_now() -> None:
    command = replace(CONFIRM, by="tom", by_role=Role.FINANCE)
    assert refusal((), command, NotAuthorizedError) == (
        "user 'tom' holds role TECHNICAL on customer 'cust-1', not FINANCE; sign in again to "
        "act in your current role"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"at": AT.replace(tzinfo=None)},
            "at must be a timezone-aware time; stamp commands with the time in UTC",
        ),
        ({"by": " "}, "by must not be blank; fill it in"),
        ({"customer_id": ""}, "customer_id must not be blank; fill it in"),
        ({"calculation_id": ""}, "calculation_id must not be blank; fill it in"),
        (
            {"calculation_id": "c" * 501},
            "calculation_id is 501 characters long; keep it to 500 characters",
        ),
        (
            {"calculation_id": "calc\n1"},
            "calculation_id contains control characters; remove line breaks, tabs and the like",
        ),
    ],
)
def test_the_stamp_and_ids_are_checked(changes: dict[str, object], message: str) -> None:
    assert refusal((), replace(CONFIRM, **changes), InvalidFeedbackFieldError) == message


def test_a_command_for_another_customer_is_refused() -> None:
    command = replace(DISPUTE, customer_id="cust-2")
    assert refusal((CONFIRMED,), command, CustomerMismatchError, about("calc-2")) == (
        "the command is for customer 'cust-2' but was decided against the feedback of customer "
        "'cust-1'; load the stream the command names"
    )


# --- what feedback is measured against ----------------------------------------------------------


@pytest.mark.parametrize(
    "changes", [{"setup_accuracy": None}, {"setup_verified_at": None}], ids=["accuracy", "time"]
)
def test_feedback_needs_a_completed_setup_test(changes: dict[str, object]) -> None:
    assert refusal((), CONFIRM, SetupNotVerifiedError, replace(CONTEXT, **changes)) == (
        "the setup wizard's accuracy test (step 5) is not complete, so there is nothing to "
        "measure feedback against; complete the accuracy test first"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"setup_accuracy": "100.01"},
            "the setup test's accuracy '100.01' is not a percentage from 0 to 100; load the "
            "latest setup test",
        ),
        (
            {"setup_accuracy": "92.5%"},
            "the setup test's accuracy '92.5%' is not a percentage from 0 to 100; load the "
            "latest setup test",
        ),
        (
            {"setup_verified_at": AT + timedelta(seconds=1)},
            "the setup test was verified at 2025-02-03T09:00:01+00:00, which is not an aware "
            "time before the verdict at 2025-02-03T09:00:00+00:00; load the latest setup test",
        ),
        (
            {"setup_verified_at": TESTED.replace(tzinfo=None)},
            "the setup test was verified at 2025-01-20T12:00:00, which is not an aware time "
            "before the verdict at 2025-02-03T09:00:00+00:00; load the latest setup test",
        ),
        (
            {"accuracy_threshold": "84.99"},
            "the accuracy threshold '84.99' is not a percentage from 85 to 100; correct the "
            "customer's threshold",
        ),
        (
            {"accuracy_threshold": "100.5"},
            "the accuracy threshold '100.5' is not a percentage from 85 to 100; correct the "
            "customer's threshold",
        ),
    ],
)
def test_the_facts_from_other_streams_must_be_usable(
    changes: dict[str, object], message: str
) -> None:
    context = replace(CONTEXT, **changes)
    assert refusal((), CONFIRM, InvalidAccuracyContextError, context) == message


@pytest.mark.parametrize(
    ("calculation", "command", "message"),
    [
        (
            replace(judged("calc-2"), result="n/a"),
            DISPUTE,
            "the result on the calculation is 'n/a', not a plain decimal; load the "
            "calculation's receipt as recorded",
        ),
        (
            replace(judged("calc-2"), inputs={"revenue": "1,000", "visits": "1"}),
            per_metric("1", "2"),
            "the value of metric 'revenue' on the calculation is '1,000', not a plain decimal; "
            "load the calculation's receipt as recorded",
        ),
    ],
)
def test_the_calculations_values_must_be_decimals(
    calculation: JudgedCalculation, command: DisputeCalculation, message: str
) -> None:
    context = replace(CONTEXT, calculation=calculation)
    assert refusal((), command, InvalidAccuracyContextError, context) == message


def test_the_threshold_can_be_the_minimum() -> None:
    assert Decimal(85) == MIN_ACCURACY_THRESHOLD
    [event] = then((), DISPUTE, about("calc-2", accuracy_threshold="85"))
    assert isinstance(event, CalculationDisputed)
    assert (event.accuracy_threshold, event.raises_alert) == ("85", False)


# --- what a dispute must say --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            replace(per_metric("1", "2"), expected_result="28572"),
            "the dispute gives expected values both per metric and for the result; give either "
            "expected_values or expected_result, not both",
        ),
        (
            replace(DISPUTE, expected_result=None),
            "the dispute gives no expected value; give the value you expected for every metric "
            "(expected_values) or for the result (expected_result)",
        ),
        (
            replace(
                DISPUTE,
                expected_result=None,
                expected_values=(ExpectedValue(metric="revenue", expected="1"),),
            ),
            "no expected value for 'visits'; give one for every metric of the calculation, the "
            "right ones with the calculation's own value",
        ),
        (
            replace(
                per_metric("1", "2"),
                expected_values=(
                    *per_metric("1", "2").expected_values,
                    ExpectedValue(metric="churn", expected="1"),
                ),
            ),
            "'churn' is not a metric of calculation 'calc-2' (revenue, visits); give expected "
            "values only for its metrics",
        ),
        (
            replace(
                per_metric("1", "2"),
                expected_values=(
                    *per_metric("1", "2").expected_values,
                    ExpectedValue(metric="visits", expected="3"),
                ),
            ),
            "metric 'visits' has more than one expected value; give one per metric",
        ),
        (
            per_metric("1e5", "2"),
            "the expected value of metric 'revenue' is '1e5', not a plain decimal; write it like "
            "1250.50, without exponent, separators or spaces",
        ),
        (
            replace(DISPUTE, expected_result="1.0000000000001"),
            "the expected result has more than 12 decimal places; round it to 12 places",
        ),
        (
            replace(DISPUTE, expected_result="1" + "0" * 22),
            "the expected result is 10^22 or more in magnitude; check its units",
        ),
    ],
)
def test_a_dispute_says_what_was_expected(command: DisputeCalculation, message: str) -> None:
    assert refusal((), command, InvalidExpectationError, about("calc-2")) == message


def test_a_dispute_needs_a_sealed_reason() -> None:
    command = replace(DISPUTE, reason_sealed=" ")
    assert refusal((), command, InvalidFeedbackFieldError, about("calc-2")) == (
        "reason_sealed must not be blank; say why the calculation is wrong"
    )


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            replace(DISPUTE, expected_result="25000.5"),
            "the expected result 25000.5 is the calculation's result; confirm the calculation "
            "instead",
        ),
        (
            per_metric("125000.5", "1200.00"),
            "every expected value is the calculation's own value; confirm the calculation "
            "instead, or give the values you expected",
        ),
    ],
)
def test_a_dispute_that_expects_what_was_calculated_is_refused(
    command: DisputeCalculation, message: str
) -> None:
    assert refusal((), command, NothingDisputedError, about("calc-2")) == message


def test_a_tiny_difference_is_a_dispute_even_if_it_scores_100() -> None:
    [event] = then((), replace(DISPUTE, expected_result="25000.5000001"), about("calc-2"))
    assert isinstance(event, CalculationDisputed)
    assert (event.score, event.raises_alert) == ("100.00", False)


def test_the_reason_is_kept_sealed_as_given() -> None:
    [event] = then((), replace(DISPUTE, reason_sealed="v1:Zm9vYmFy"), about("calc-2"))
    assert isinstance(event, CalculationDisputed)
    assert event.reason_sealed == "v1:Zm9vYmFy"


# --- events and commands as stored --------------------------------------------------------------

EXPECTED_TAGS = {
    CalculationConfirmed: "CalculationConfirmed",
    CalculationDisputed: "CalculationDisputed",
}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    per_metric_dispute = then((), per_metric("125000.50", "1500"), about("calc-2"))[0]
    for event in (CONFIRMED, DISPUTED, per_metric_dispute):
        encoded = msgspec.json.encode(event)
        assert msgspec.json.decode(encoded)["type"] == EXPECTED_TAGS[type(event)]
        assert EVENT_DECODER.decode(encoded) == event


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


def test_given_at_is_when_the_verdict_was_given() -> None:
    assert (given_at(CONFIRMED), given_at(DISPUTED)) == (AT, AT + timedelta(hours=1))


def test_commands_decode_by_tag_and_refuse_unknown_fields() -> None:
    for command in (CONFIRM, DISPUTE, per_metric("1", "2")):
        encoded = msgspec.json.encode(command)
        assert COMMAND_DECODER.decode(encoded) == command
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            COMMAND_DECODER.decode(encoded[:-1] + b', "reason": "plain text"}')
    context = msgspec.json.encode(CONTEXT)
    assert msgspec.json.decode(context, type=AccuracyContext) == CONTEXT


# --- random verdicts ----------------------------------------------------------------------------

CALCULATION_IDS = st.sampled_from(["calc-1", "calc-2", "calc-3", "calc-4", ""])
ACTORS = st.sampled_from(
    [
        ("fiona", Role.FINANCE),
        ("tom", Role.TECHNICAL),
        ("alice", Role.CUSTOMER_ADMIN),
        (STAFF, Role.ADMIN),
        ("tom", Role.FINANCE),
        ("mallory", Role.CUSTOMER_ADMIN),
    ]
)
EXPECTED = st.sampled_from(["125000.50", "1200", "1500", "0", "-5", "1e3", "28572", "25000.5"])
SETUP_TESTS = st.sampled_from(
    [("92.50", TESTED), ("92.50", TESTED), ("95.00", AT), ("80", TESTED), (None, None)]
)
THRESHOLDS = st.sampled_from(["90", "90", "85", "99.5", "84"])
OFFSETS = st.integers(min_value=0, max_value=4).map(lambda days: AT + timedelta(days=days))


class AccuracyMachine(RuleBasedStateMachine):
    """Any sequence of verdicts: refusals are AccuracyErrors, one verdict per calculation, and
    every recorded figure follows from the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.ledger: list[Event] = []

    @rule(
        calculation_id=CALCULATION_IDS,
        actor=ACTORS,
        at=OFFSETS,
        setup=SETUP_TESTS,
        threshold=THRESHOLDS,
        superseded=st.sampled_from([None, None, None, "calc-9"]),
    )
    def confirm(
        self,
        calculation_id: str,
        actor: tuple[str, Role],
        at: datetime,
        setup: tuple[str | None, datetime | None],
        threshold: str,
        superseded: str | None,
    ) -> None:
        command = replace(
            CONFIRM, calculation_id=calculation_id, by=actor[0], by_role=actor[1], at=at
        )
        self.record(command, self.context(calculation_id, setup, threshold, superseded))

    @rule(
        calculation_id=CALCULATION_IDS,
        actor=ACTORS,
        at=OFFSETS,
        setup=SETUP_TESTS,
        threshold=THRESHOLDS,
        expected=st.one_of(
            EXPECTED.map(lambda result: {"expected_result": result}),
            st.tuples(EXPECTED, EXPECTED).map(
                lambda pair: {
                    "expected_result": None,
                    "expected_values": per_metric(*pair).expected_values,
                }
            ),
        ),
        reason=st.sampled_from(["sealed:why", ""]),
    )
    def dispute(
        self,
        calculation_id: str,
        actor: tuple[str, Role],
        at: datetime,
        setup: tuple[str | None, datetime | None],
        threshold: str,
        expected: dict[str, object],
        reason: str,
    ) -> None:
        command = replace(
            DISPUTE,
            calculation_id=calculation_id,
            by=actor[0],
            by_role=actor[1],
            at=at,
            reason_sealed=reason,
            **expected,
        )
        self.record(command, self.context(calculation_id, setup, threshold, None))

    @staticmethod
    def context(
        calculation_id: str,
        setup: tuple[str | None, datetime | None],
        threshold: str,
        superseded: str | None,
    ) -> AccuracyContext:
        return replace(
            CONTEXT,
            calculation=judged(calculation_id, superseded),
            setup_accuracy=setup[0],
            setup_verified_at=setup[1],
            accuracy_threshold=threshold,
        )

    def record(self, command: Command, context: AccuracyContext) -> None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, context)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            hypothesis_event(f"refused: {type(refused).__name__}")
            assert isinstance(refused, AccuracyError)
            assert refused.message
            return
        hypothesis_event(f"decided: {type(command).__name__}")
        assert decide(command, self.state, context) == events
        assert len(events) == 1
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)

    @invariant()
    def one_verdict_per_calculation(self) -> None:
        ids = [event.calculation_id for event in self.ledger]
        assert len(ids) == len(set(ids))
        assert list(self.state.verdicts) == ids

    @invariant()
    def every_figure_follows_from_the_stream(self) -> None:
        for index, event in enumerate(self.ledger):
            earlier = state_after(self.ledger[:index]).scores_since(event.setup_verified_at)
            setup = Decimal(event.setup_accuracy)
            after = measured_accuracy(setup, [*earlier, Decimal(event.score)])
            assert event.measured_accuracy == format(after, "f")
            if isinstance(event, CalculationConfirmed):
                assert event.score == "100.00"
                continue
            pairs = [(Decimal(c.measured), Decimal(c.expected)) for c in event.comparisons]
            if event.expected_result is not None:
                assert not pairs
                pairs = [(Decimal(event.result), Decimal(event.expected_result))]
            assert event.score == format(measurement_accuracy(pairs), "f")
            threshold = Decimal(event.accuracy_threshold)
            if after < threshold:
                assert event.alert_severity == "critical"
            elif Decimal(event.score) < threshold:
                assert event.alert_severity == "warning"
            else:
                assert event.alert_severity is None
            assert event.raises_alert == (event.alert_severity is not None)

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger


AccuracyMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=15, deadline=None
)
TestAccuracyMachine = AccuracyMachine.TestCase
