"""Value calculations and the money rules: each rule as given events, a command, then events or
the refusal with its exact message.

The money rules (docs/formula.md, "Money") are pinned case by case on `domain.money`: one
half-even rounding to minor units, negative values billing nothing, floor and cap in minor
units, JPY's exponent 0. Hypothesis drives random command sequences through a state machine:
nothing but a `CalculationError` escapes, deciding is deterministic, replaying and JSON
round-trips give the same state, and the stream always holds exactly one current calculation
with every earlier one superseded, in order.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain import DomainError
from domain.calculation import (
    COMMAND_DECODER,
    DEFAULT_NOT_BILLABLE_REASON,
    EVENT_DECODER,
    AmountTooLargeError,
    BaselineUsed,
    Billing,
    CalculateValue,
    CalculationContext,
    CalculationError,
    CalculationMismatchError,
    CalculationState,
    Command,
    DefinitionInForce,
    DefinitionMismatchError,
    DuplicateCalculationIdError,
    Event,
    FormulaFailedError,
    InvalidCalculationFieldError,
    InvalidDefinitionTermsError,
    InvalidInputError,
    MetricInput,
    MetricInputsError,
    MetricReading,
    MissingBaselineError,
    NoDefinitionInForceError,
    NotAuthorizedError,
    PeriodAlreadyCalculatedError,
    PeriodNotCalculatedError,
    RecalculateValue,
    ValueCalculated,
    ValueRecalculated,
    decide,
    evolve,
    initial_state,
)
from domain.customer import SUPPORTED_CURRENCIES
from domain.money import (
    MAX_MINOR_UNITS,
    MINOR_UNIT_EXPONENTS,
    BillableAmount,
    billable_amount,
    major_units,
    major_units_text,
    minor_unit_exponent,
)
from domain.roles import Role

replace = msgspec.structs.replace

CUSTOMER = "cust-1"
DEFINITION = "def-1"
STAFF = "staff-1"
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)
AT = datetime(2025, 2, 1, 6, 0, tzinfo=UTC)
LATER = AT + timedelta(days=3)
REVENUE_DATA = hashlib.sha256(b"salesforce rows, January").hexdigest()
VISITS_DATA = hashlib.sha256(b"segment pages, January").hexdigest()
CORRECTED_DATA = hashlib.sha256(b"salesforce rows, January, corrected").hexdigest()
V2_HASH = hashlib.sha256(b"definition def-1 version 2").hexdigest()
V3_HASH = hashlib.sha256(b"definition def-1 version 3").hexdigest()

VERSION_2 = DefinitionInForce(
    definition_id=DEFINITION,
    version=2,
    content_hash=V2_HASH,
    formula="metric.revenue - baseline.revenue",
    metrics=("revenue", "visits"),
    share_percent="35",
    currency="EUR",
)
CONTEXT = CalculationContext(
    definition=VERSION_2,
    baselines={"revenue": "100000", "visits": "1000"},
    billing_active=True,
)

INPUTS = (
    MetricInput(
        metric="revenue",
        value="125000.50",
        source="salesforce:opportunity.amount",
        fingerprint=REVENUE_DATA,
    ),
    MetricInput(metric="visits", value="1200", source="segment:page", fingerprint=VISITS_DATA),
)
CORRECTED_INPUTS = (replace(INPUTS[0], value="125010.50", fingerprint=CORRECTED_DATA), INPUTS[1])
CALCULATE = CalculateValue(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    period_start=START,
    period_end=END,
    calculation_id="calc-1",
    inputs=INPUTS,
    at=AT,
    by=STAFF,
    by_role=Role.ADMIN,
)
RECALCULATE = RecalculateValue(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    period_start=START,
    period_end=END,
    calculation_id="calc-2",
    inputs=CORRECTED_INPUTS,
    reason_sealed="sealed:why",
    at=LATER,
    by=STAFF,
    by_role=Role.ADMIN,
)

READINGS = (
    MetricReading(
        metric="revenue",
        value="125000.50",
        source="salesforce:opportunity.amount",
        fingerprint=REVENUE_DATA,
    ),
    MetricReading(metric="visits", value="1200", source="segment:page", fingerprint=VISITS_DATA),
)
CALCULATED = ValueCalculated(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    period_start=START,
    period_end=END,
    calculation_id="calc-1",
    definition_version=2,
    definition_content_hash=V2_HASH,
    formula="metric.revenue - baseline.revenue",
    inputs=READINGS,
    baselines=(BaselineUsed(metric="revenue", value="100000"),),
    result="25000.500000000000",
    # 25000.50 * 35 / 100 = 8750.175, a tie: half-even gives 8750.18.
    billing=Billing(
        billable=True,
        currency="EUR",
        share_percent="35",
        amount_minor_units=875018,
        amount="8750.18",
    ),
    calculated_at=AT,
    calculated_by=STAFF,
    calculated_by_role=Role.ADMIN,
)
RECALCULATED = ValueRecalculated(
    customer_id=CUSTOMER,
    definition_id=DEFINITION,
    period_start=START,
    period_end=END,
    calculation_id="calc-2",
    supersedes="calc-1",
    reason_sealed="sealed:why",
    definition_version=2,
    definition_content_hash=V2_HASH,
    formula="metric.revenue - baseline.revenue",
    inputs=(replace(READINGS[0], value="125010.50", fingerprint=CORRECTED_DATA), READINGS[1]),
    baselines=(BaselineUsed(metric="revenue", value="100000"),),
    result="25010.500000000000",
    # 25010.50 * 35 / 100 = 8753.675, a tie: half-even gives 8753.68.
    billing=Billing(
        billable=True,
        currency="EUR",
        share_percent="35",
        amount_minor_units=875368,
        amount="8753.68",
    ),
    calculated_at=LATER,
    calculated_by=STAFF,
    calculated_by_role=Role.ADMIN,
)


def state_after(events: tuple[Event, ...] | list[Event]) -> CalculationState:
    state = initial_state()
    for event in events:
        state = evolve(state, event)
    return state


def then(
    given: tuple[Event, ...], when: Command, context: CalculationContext = CONTEXT
) -> list[Event]:
    return decide(when, state_after(given), context)


def refusal(
    given: tuple[Event, ...],
    when: Command,
    error: type[CalculationError],
    context: CalculationContext = CONTEXT,
) -> str:
    """The message of the refusal, after checking its type."""
    with pytest.raises(error) as raised:
        decide(when, state_after(given), context)
    assert type(raised.value) is error
    assert raised.value.message == str(raised.value)
    return raised.value.message


def with_terms(**changes: object) -> CalculationContext:
    """The context with the definition version's fields changed."""
    assert CONTEXT.definition is not None
    return replace(CONTEXT, definition=replace(CONTEXT.definition, **changes))


def billing_of(events: list[Event]) -> Billing:
    [event] = events
    return event.billing


# --- money: docs/formula.md, section "Money" ----------------------------------------------------


def test_the_minor_unit_table_covers_exactly_the_currencies_we_bill_in() -> None:
    assert set(MINOR_UNIT_EXPONENTS) == SUPPORTED_CURRENCIES
    assert {currency for currency, exponent in MINOR_UNIT_EXPONENTS.items() if exponent != 2} == {
        "JPY"
    }
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("EUR") == 2


@pytest.mark.parametrize(
    ("value", "share", "floor", "cap", "currency", "minor", "bound"),
    [
        # Rounded once, half-even, to minor units.
        ("25000.5", "35", None, None, "EUR", 875018, None),  # 8750.175: tie, to even 8
        ("25000.47", "35", None, None, "EUR", 875016, None),  # 8750.1645
        ("0.05", "50", None, None, "EUR", 2, None),  # 0.025: tie, to even 2
        ("0.07", "50", None, None, "EUR", 4, None),  # 0.035: tie, to even 4
        ("3.333", "50", None, None, "EUR", 167, None),  # 1.6665; rounding the value first: 166
        ("100", "35.5", None, None, "USD", 3550, None),
        ("100", "0", None, None, "EUR", 0, None),
        ("0", "35", None, None, "EUR", 0, None),
        # Negative bills nothing, before floor and cap.
        ("-100", "35", None, None, "EUR", 0, None),
        ("-0.001", "100", None, None, "EUR", 0, None),
        ("-100", "35", 500, None, "EUR", 500, "floor"),
        # Floor and cap in minor units, after rounding.
        ("10", "35", 500, None, "EUR", 500, "floor"),  # 3.50 is below the floor of 5.00
        ("10", "35", 350, None, "EUR", 350, None),  # at the floor: it does not bind
        ("10000", "35", 500, 100000, "EUR", 100000, "cap"),  # 3500.00 is above the cap
        ("1000", "35", None, 35000, "EUR", 35000, None),  # at the cap: it does not bind
        ("1000", "35", 500, 500, "EUR", 500, "cap"),
        ("0.02", "50", 0, 0, "EUR", 0, "cap"),  # 0.01 is above a cap of 0
        # JPY has no minor unit: whole yen, still half-even.
        ("1234.5", "100", None, None, "JPY", 1234, None),
        ("1235.5", "100", None, None, "JPY", 1236, None),
        ("25000.5", "35", None, None, "JPY", 8750, None),  # 8750.175
        ("25000.5", "35", 9000, None, "JPY", 9000, "floor"),
    ],
)
def test_billable_amount(
    value: str,
    share: str,
    floor: int | None,
    cap: int | None,
    currency: str,
    minor: int,
    bound: str | None,
) -> None:
    amount = billable_amount(Decimal(value), Decimal(share), floor, cap, currency)
    assert amount == BillableAmount(minor=minor, currency=currency, bound=bound)  # type: ignore[arg-type]


def test_amounts_beyond_the_ledger_are_returned_for_the_caller_to_refuse() -> None:
    assert billable_amount(Decimal("0.000000000001"), Decimal(100), None, None, "EUR").minor == 0
    largest = Decimal("9" * 21 + ".999999999999")  # the largest formula value, below 10^22
    huge = billable_amount(largest, Decimal(100), None, None, "EUR")
    assert huge.minor == 10**23
    assert huge.minor > MAX_MINOR_UNITS == 2**53 - 1


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(875018, "EUR", "8750.18"), (0, "EUR", "0.00"), (5, "USD", "0.05"), (1234, "JPY", "1234")],
)
def test_major_units(minor: int, currency: str, text: str) -> None:
    assert major_units_text(minor, currency) == text
    assert major_units(minor, currency) == Decimal(text)
    assert BillableAmount(minor=minor, currency=currency).major == Decimal(text)


@pytest.mark.parametrize(
    ("value", "share", "floor", "cap", "currency", "message"),
    [
        ("1", "35", None, None, "XYZ", "currency 'XYZ' has no minor-unit exponent"),
        ("1", "100.01", None, None, "EUR", "not a percentage from 0 to 100"),
        ("1", "-1", None, None, "EUR", "not a percentage from 0 to 100"),
        ("NaN", "35", None, None, "EUR", "not a finite decimal"),
        ("1" + "0" * 22, "35", None, None, "EUR", "not a finite decimal"),
        ("1", "35", -1, None, "EUR", "floor -1 is not a number of minor units"),
        ("1", "35", None, 2**53, "EUR", "cap 9007199254740992 is not a number of minor units"),
        ("1", "35", 2, 1, "EUR", "floor 2 is above cap 1"),
    ],
)
def test_billable_amount_refuses_arguments_outside_the_rules(
    value: str, share: str, floor: int | None, cap: int | None, currency: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        billable_amount(Decimal(value), Decimal(share), floor, cap, currency)


# --- calculating a period -----------------------------------------------------------------------


def test_calculate_records_the_receipt() -> None:
    assert then((), CALCULATE) == [CALCULATED]


def test_the_first_receipt_is_the_current_calculation() -> None:
    state = state_after([CALCULATED])
    assert state.current == CALCULATED
    assert state.superseded == ()
    assert state.history == (CALCULATED,)
    assert state.calculation_ids == ("calc-1",)
    assert state.period == (START, END)
    assert state.receipt("calc-1") == CALCULATED
    assert state.receipt("calc-9") is None
    assert state.superseded_by("calc-1") is None
    empty = initial_state()
    assert (empty.current, empty.history, empty.period) == (None, (), None)


def test_inputs_follow_the_definition_and_values_are_stored_in_plain_form() -> None:
    inputs = (
        replace(INPUTS[1], value="-0"),
        replace(INPUTS[0], value="0125000.500"),
    )
    [event] = then((), replace(CALCULATE, inputs=inputs))
    assert [(reading.metric, reading.value) for reading in event.inputs] == [
        ("revenue", "125000.500"),
        ("visits", "0"),
    ]


def test_the_receipt_records_only_the_baselines_the_formula_reads_sorted() -> None:
    context = replace(
        with_terms(formula="metric.visits - baseline.visits + metric.revenue - baseline.revenue"),
        baselines={"visits": "1000.0", "revenue": "100000", "churn": "3"},
    )
    [event] = then((), CALCULATE, context)
    assert event.baselines == (
        BaselineUsed(metric="revenue", value="100000"),
        BaselineUsed(metric="visits", value="1000.0"),
    )
    assert event.result == "25200.500000000000"


def test_a_period_is_calculated_only_once() -> None:
    assert refusal(
        (CALCULATED,), replace(CALCULATE, calculation_id="calc-9"), PeriodAlreadyCalculatedError
    ) == (
        "the period already has calculation 'calc-1' (calculated at 2025-02-01T06:00:00+00:00); "
        "to replace it, recalculate the period with a reason"
    )


# --- recalculating ------------------------------------------------------------------------------


def test_recalculate_supersedes_the_current_calculation_and_says_why() -> None:
    assert then((CALCULATED,), RECALCULATE) == [RECALCULATED]
    state = state_after([CALCULATED, RECALCULATED])
    assert state.current == RECALCULATED
    assert state.superseded == (CALCULATED,)
    assert state.calculation_ids == ("calc-1", "calc-2")
    assert state.superseded_by("calc-1") == RECALCULATED
    assert state.superseded_by("calc-2") is None
    assert state.receipt("calc-1") == CALCULATED


def test_every_recalculation_supersedes_the_one_current_before_it() -> None:
    third = replace(RECALCULATE, calculation_id="calc-3", at=LATER + timedelta(days=1))
    [event] = then((CALCULATED, RECALCULATED), third)
    assert isinstance(event, ValueRecalculated)
    assert event.supersedes == "calc-2"
    state = state_after([CALCULATED, RECALCULATED, event])
    assert state.calculation_ids == ("calc-1", "calc-2", "calc-3")
    assert state.superseded == (CALCULATED, RECALCULATED)
    assert state.superseded_by("calc-2") == event


def test_a_recalculation_uses_the_definition_version_in_force_now() -> None:
    context = with_terms(version=3, content_hash=V3_HASH, share_percent="30")
    [event] = then((CALCULATED,), RECALCULATE, context)
    assert (event.definition_version, event.definition_content_hash) == (3, V3_HASH)
    assert event.billing.share_percent == "30"
    assert event.billing.amount == "7503.15"  # 25010.50 * 30 / 100


def test_recalculating_a_period_without_a_calculation_is_refused() -> None:
    assert refusal((), RECALCULATE, PeriodNotCalculatedError) == (
        "the period has no calculation yet, so there is nothing to recalculate; calculate it first"
    )


@pytest.mark.parametrize("calculation_id", ["calc-1", "calc-2"])
def test_calculation_ids_are_never_reused_in_a_period(calculation_id: str) -> None:
    command = replace(RECALCULATE, calculation_id=calculation_id)
    assert refusal((CALCULATED, RECALCULATED), command, DuplicateCalculationIdError) == (
        f"calculation id {calculation_id!r} was already used for this period; give the new "
        "calculation a new id"
    )


def test_a_recalculation_needs_a_sealed_reason() -> None:
    command = replace(RECALCULATE, reason_sealed=" ")
    assert refusal((CALCULATED,), command, InvalidCalculationFieldError) == (
        "reason_sealed must not be blank; say why the period is recalculated"
    )


def test_the_reason_is_kept_sealed_as_given() -> None:
    [event] = then((CALCULATED,), replace(RECALCULATE, reason_sealed="pii:v1:k:" + "x" * 900))
    assert isinstance(event, ValueRecalculated)
    assert event.reason_sealed == "pii:v1:k:" + "x" * 900


# --- who, when and which stream -----------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL])
@pytest.mark.parametrize(
    ("command", "given", "action"),
    [(CALCULATE, (), "calculate"), (RECALCULATE, (CALCULATED,), "recalculate")],
    ids=["calculate", "recalculate"],
)
def test_only_vendor_staff_calculate(
    role: Role, command: Command, given: tuple[Event, ...], action: str
) -> None:
    assert refusal(given, replace(command, by="alice", by_role=role), NotAuthorizedError) == (
        f"only vendor staff (ADMIN) can {action} a period's value, not {role}; ask vendor "
        "support, or dispute the calculation if it is wrong"
    )


def test_a_naive_time_is_refused() -> None:
    command = replace(CALCULATE, at=AT.replace(tzinfo=None))
    assert refusal((), command, InvalidCalculationFieldError) == (
        "at must be a timezone-aware time; stamp commands with the time in UTC"
    )


@pytest.mark.parametrize("field", ["by", "customer_id", "definition_id", "calculation_id"])
@pytest.mark.parametrize("command", [CALCULATE, RECALCULATE], ids=["calculate", "recalculate"])
def test_blank_fields_are_refused(field: str, command: Command) -> None:
    given = () if isinstance(command, CalculateValue) else (CALCULATED,)
    assert refusal(given, replace(command, **{field: ""}), InvalidCalculationFieldError) == (
        f"{field} must not be blank; fill it in"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"period_start": START.replace(tzinfo=None)},
            "period_start and period_end must be timezone-aware times; give the period in UTC",
        ),
        (
            {"period_end": START},
            "the period [2025-01-01T00:00:00+00:00, 2025-01-01T00:00:00+00:00) does not end "
            "after it starts; give a period whose end is after its start",
        ),
        (
            {"period_end": AT + timedelta(seconds=1)},
            "the period [2025-01-01T00:00:00+00:00, 2025-02-01T06:00:01+00:00) has not ended "
            "at 2025-02-01T06:00:00+00:00; calculate a period once it has ended",
        ),
        (
            {"calculation_id": "c\t1"},
            "calculation_id contains control characters; remove line breaks, tabs and the like",
        ),
    ],
)
def test_the_period_and_ids_are_checked(changes: dict[str, object], message: str) -> None:
    assert refusal((), replace(CALCULATE, **changes), InvalidCalculationFieldError) == message


def test_a_period_that_ends_when_it_is_calculated_has_ended() -> None:
    [event] = then((), replace(CALCULATE, period_end=AT))
    assert event.period_end == AT


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"customer_id": "cust-2"}, "customer 'cust-2', definition 'def-1'"),
        ({"definition_id": "def-2"}, "customer 'cust-1', definition 'def-2'"),
    ],
)
def test_a_command_for_another_stream_is_refused(changes: dict[str, str], named: str) -> None:
    context = with_terms(**{"definition_id": changes.get("definition_id", DEFINITION)})
    assert refusal(
        (CALCULATED,), replace(RECALCULATE, **changes), CalculationMismatchError, context
    ) == (
        f"the command is for {named}, period [2025-01-01T00:00:00+00:00, "
        "2025-02-01T00:00:00+00:00) but was decided against the calculations of customer "
        "'cust-1', definition 'def-1', period [2025-01-01T00:00:00+00:00, "
        "2025-02-01T00:00:00+00:00); load the stream of the period the command names"
    )


def test_a_command_for_another_period_is_refused() -> None:
    command = replace(RECALCULATE, period_start=START + timedelta(days=1))
    assert refusal((CALCULATED,), command, CalculationMismatchError).startswith(
        "the command is for customer 'cust-1', definition 'def-1', period "
        "[2025-01-02T00:00:00+00:00, 2025-02-01T00:00:00+00:00) but was decided against"
    )


def test_the_same_instants_in_another_timezone_name_the_same_period() -> None:
    plus_one = timezone(timedelta(hours=1))
    command = replace(
        RECALCULATE, period_start=START.astimezone(plus_one), period_end=END.astimezone(plus_one)
    )
    [event] = then((CALCULATED,), command)
    assert isinstance(event, ValueRecalculated)


# --- the definition version in force ------------------------------------------------------------


def test_without_a_definition_in_force_nothing_is_calculated() -> None:
    context = replace(CONTEXT, definition=None)
    assert refusal((), CALCULATE, NoDefinitionInForceError, context) == (
        "no version of definition 'def-1' is in force for the period "
        "[2025-01-01T00:00:00+00:00, 2025-02-01T00:00:00+00:00); approve a version of the "
        "definition before calculating"
    )


def test_the_definition_in_force_must_be_the_commands() -> None:
    context = with_terms(definition_id="def-2")
    assert refusal((), CALCULATE, DefinitionMismatchError, context) == (
        "the definition version given is of definition 'def-2', not 'def-1'; load the version "
        "in force of the definition the command names"
    )


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"content_hash": ""}, "its content hash is blank"),
        ({"metrics": ()}, "it names no metrics"),
        ({"metrics": ("revenue", "Visits")}, "'Visits' is not a valid metric name"),
        ({"metrics": ("revenue", "revenue")}, "it names a metric more than once"),
        (
            {"formula": "metric.revenue *"},
            "its formula cannot be read (expected a number, metric.<name>, baseline.<name>, a "
            "function or '(', found the end of the formula at column 17; complete the formula)",
        ),
        (
            {"formula": "metric.churn + metric.seats + metric.revenue"},
            "its formula reads metrics 'churn', 'seats', not among its metrics (revenue, visits)",
        ),
        (
            {"currency": "XYZ"},
            "currency 'XYZ' is not one we bill in "
            "(AUD, CAD, CHF, DKK, EUR, GBP, JPY, NOK, NZD, SEK, USD)",
        ),
        ({"share_percent": "35%"}, "share '35%' is not a percentage from 0 to 100"),
        ({"share_percent": "100.5"}, "share '100.5' is not a percentage from 0 to 100"),
        ({"share_percent": "-1"}, "share '-1' is not a percentage from 0 to 100"),
        (
            {"floor_minor_units": -1},
            "its floor -1 is not a number of minor units from 0 to 2^53-1",
        ),
        (
            {"cap_minor_units": 2**53},
            "its cap 9007199254740992 is not a number of minor units from 0 to 2^53-1",
        ),
        (
            {"floor_minor_units": 500, "cap_minor_units": 499},
            "its floor 500 is above its cap 499",
        ),
    ],
)
def test_the_definitions_formula_and_terms_must_be_usable(
    changes: dict[str, object], problem: str
) -> None:
    assert refusal((), CALCULATE, InvalidDefinitionTermsError, with_terms(**changes)) == (
        f"definition 'def-1' version 2: {problem}; correct the definition and approve a new version"
    )


def test_the_version_number_starts_at_1() -> None:
    assert refusal((), CALCULATE, InvalidDefinitionTermsError, with_terms(version=0)) == (
        "definition 'def-1' version 0: 0 is not a version number (they start at 1); correct "
        "the definition and approve a new version"
    )


# --- the inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            INPUTS[:1],
            "no input for metric 'visits'; give a value for every metric of definition "
            "'def-1': revenue, visits",
        ),
        (
            (),
            "no input for metrics 'revenue', 'visits'; give a value for every metric of "
            "definition 'def-1': revenue, visits",
        ),
        (
            (*INPUTS, replace(INPUTS[0], metric="churn")),
            "'churn' is not a metric of definition 'def-1' (revenue, visits); give inputs only "
            "for its metrics",
        ),
        (
            (*INPUTS, INPUTS[0]),
            "metric 'revenue' has more than one input; give one input per metric",
        ),
    ],
)
def test_every_metric_of_the_definition_needs_exactly_one_input(
    inputs: tuple[MetricInput, ...], message: str
) -> None:
    assert refusal((), replace(CALCULATE, inputs=inputs), MetricInputsError) == message


@pytest.mark.parametrize("value", ["1e3", "1,000", " 1", "+1", "NaN", "", ".5", "5.", "\uff11"])
def test_input_values_are_plain_decimals(value: str) -> None:
    inputs = (replace(INPUTS[0], value=value), INPUTS[1])
    assert refusal((), replace(CALCULATE, inputs=inputs), InvalidInputError) == (
        f"the value of metric 'revenue' is {value!r}, not a plain decimal; write it like "
        "1250.50, without exponent, separators or spaces"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"value": "1.0000000000001"},
            "the value of metric 'revenue' has more than 12 decimal places; round it to 12 places",
        ),
        (
            {"value": "1" + "0" * 22},
            "the value of metric 'revenue' is 10^22 or more in magnitude; check the "
            "measurement's units",
        ),
        ({"source": ""}, "the source of metric 'revenue' must not be blank; fill it in"),
        (
            {"fingerprint": REVENUE_DATA.upper()},
            "the fingerprint of metric 'revenue' is not 64 lowercase hex digits; give the "
            "SHA-256 of the raw source data the value was read from",
        ),
        (
            {"fingerprint": REVENUE_DATA[:-1]},
            "the fingerprint of metric 'revenue' is not 64 lowercase hex digits; give the "
            "SHA-256 of the raw source data the value was read from",
        ),
    ],
)
def test_each_input_is_checked(changes: dict[str, str], message: str) -> None:
    inputs = (replace(INPUTS[0], **changes), INPUTS[1])
    error = InvalidCalculationFieldError if "source" in changes else InvalidInputError
    assert refusal((), replace(CALCULATE, inputs=inputs), error) == message


@pytest.mark.parametrize(
    ("baselines", "message"),
    [
        (
            {"visits": "1000"},
            "the formula reads baseline 'revenue', which the setup wizard has not recorded; "
            "establish the baseline (setup step 4) before calculating",
        ),
        (
            {"revenue": "1e5"},
            "the baseline of 'revenue' is not a plain decimal; establish the baseline again "
            "(setup step 4)",
        ),
        (
            {"revenue": "0.0000000000001"},
            "the baseline of 'revenue' has more than 12 decimal places; establish the baseline "
            "again (setup step 4)",
        ),
    ],
)
def test_the_baselines_the_formula_reads_must_be_recorded(
    baselines: dict[str, str], message: str
) -> None:
    context = replace(CONTEXT, baselines=baselines)
    assert refusal((), CALCULATE, MissingBaselineError, context) == message


def test_a_formula_that_fails_for_these_inputs_is_refused_at_its_column() -> None:
    context = with_terms(formula="metric.revenue / (metric.visits - 1200)")
    assert refusal((), CALCULATE, FormulaFailedError, context) == (
        "definition 'def-1' version 2: division by zero at column 16; the divisor is 0 for "
        "these inputs; guard it, as in x / max(divisor, 1)"
    )


# --- billing ------------------------------------------------------------------------------------


def test_a_period_not_wholly_under_billing_bills_nothing_and_says_why() -> None:
    context = replace(CONTEXT, billing_active=False, billing_inactive_reason="before go-live")
    assert billing_of(then((), CALCULATE, context)) == Billing(
        billable=False, not_billable_reason="before go-live", currency="EUR", share_percent="35"
    )


def test_an_inactive_billing_without_a_reason_gets_the_default_one() -> None:
    context = replace(CONTEXT, billing_active=False, billing_inactive_reason=" ")
    billing = billing_of(then((), CALCULATE, context))
    assert billing.not_billable_reason == DEFAULT_NOT_BILLABLE_REASON
    assert DEFAULT_NOT_BILLABLE_REASON == "billing was not active for the whole period"


def test_the_receipt_keeps_the_terms_and_which_bound_set_the_amount() -> None:
    floor = then((), CALCULATE, with_terms(floor_minor_units=1_000_000))
    assert billing_of(floor) == Billing(
        billable=True,
        currency="EUR",
        share_percent="35",
        floor_minor_units=1_000_000,
        amount_minor_units=1_000_000,
        amount="10000.00",
        bound="floor",
    )
    cap = billing_of(then((), CALCULATE, with_terms(cap_minor_units=500_000)))
    assert (cap.amount_minor_units, cap.amount, cap.bound) == (500_000, "5000.00", "cap")


def test_a_negative_value_bills_nothing() -> None:
    inputs = (replace(INPUTS[0], value="90000"), INPUTS[1])
    [event] = then((), replace(CALCULATE, inputs=inputs))
    assert event.result == "-10000.000000000000"
    assert (event.billing.amount_minor_units, event.billing.amount) == (0, "0.00")


def test_jpy_bills_whole_yen() -> None:
    billing = billing_of(then((), CALCULATE, with_terms(currency="JPY", share_percent="35.5")))
    # 25000.50 * 35.5 / 100 = 8875.1775 yen.
    assert (billing.amount_minor_units, billing.amount, billing.currency) == (8875, "8875", "JPY")


def test_an_amount_the_ledger_cannot_hold_is_refused() -> None:
    inputs = (replace(INPUTS[0], value="9" * 21), INPUTS[1])
    command = replace(CALCULATE, inputs=inputs)
    assert refusal((), command, AmountTooLargeError, with_terms(share_percent="100")) == (
        "the billable amount is 99999999999999989999900 minor units of EUR, more than the "
        "ledger can store (2^53-1); check the inputs' units, or give the definition a cap"
    )
    [event] = then((), command, with_terms(share_percent="100", cap_minor_units=MAX_MINOR_UNITS))
    assert event.billing.amount_minor_units == MAX_MINOR_UNITS


def test_not_billable_periods_are_not_refused_for_their_size() -> None:
    inputs = (replace(INPUTS[0], value="9" * 21), INPUTS[1])
    context = replace(with_terms(share_percent="100"), billing_active=False)
    [event] = then((), replace(CALCULATE, inputs=inputs), context)
    assert not event.billing.billable


# --- events and commands as stored --------------------------------------------------------------

EXPECTED_TAGS = {ValueCalculated: "ValueCalculated", ValueRecalculated: "ValueRecalculated"}


def test_every_event_round_trips_through_json_by_its_stable_tag() -> None:
    for event in (CALCULATED, RECALCULATED):
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


def test_a_receipt_holds_no_float() -> None:
    def walk(value: object) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(msgspec.json.decode(msgspec.json.encode(RECALCULATED)))


def test_an_event_from_a_newer_writer_with_an_extra_field_still_decodes() -> None:
    encoded = msgspec.json.encode(CALCULATED)
    assert EVENT_DECODER.decode(encoded[:-1] + b',"region":"eu"}') == CALCULATED


def test_commands_decode_by_tag_and_refuse_unknown_fields() -> None:
    for command in (CALCULATE, RECALCULATE):
        encoded = msgspec.json.encode(command)
        assert COMMAND_DECODER.decode(encoded) == command
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            COMMAND_DECODER.decode(encoded[:-1] + b', "amount": "1"}')
    context = msgspec.json.encode(CONTEXT)
    assert msgspec.json.decode(context, type=CalculationContext) == CONTEXT


# --- random command sequences -------------------------------------------------------------------

VALUES = st.sampled_from(
    ["125000.50", "90000", "0", "-3.5", "1e3", "", "9" * 21, "1.0000000000001"]
)
FINGERPRINTS = st.sampled_from([REVENUE_DATA, VISITS_DATA, "abc"])
INPUT_LISTS = st.one_of(
    st.tuples(
        st.builds(replace, st.just(INPUTS[0]), value=VALUES, fingerprint=FINGERPRINTS),
        st.builds(replace, st.just(INPUTS[1]), value=VALUES),
    ),
    st.lists(
        st.builds(
            MetricInput,
            metric=st.sampled_from(["revenue", "visits", "churn"]),
            value=VALUES,
            source=st.sampled_from(["segment:page", ""]),
            fingerprint=FINGERPRINTS,
        ),
        max_size=3,
    ).map(tuple),
)
IDS = st.sampled_from(["calc-1", "calc-2", "calc-3", "calc-4", ""])
TIMES = st.sampled_from([AT, LATER, START, AT.replace(tzinfo=None)])
ACTORS = st.sampled_from([(STAFF, Role.ADMIN), (STAFF, Role.ADMIN), ("alice", Role.FINANCE)])
STREAM = {
    "customer_id": st.sampled_from([CUSTOMER, CUSTOMER, "cust-2"]),
    "definition_id": st.sampled_from([DEFINITION, DEFINITION, "def-2"]),
    "period_start": st.sampled_from([START, START, START + timedelta(days=1)]),
    "period_end": st.sampled_from([END, END, START]),
}
DEFINITIONS = st.one_of(
    st.none(),
    st.builds(
        replace,
        st.just(VERSION_2),
        version=st.sampled_from([2, 3]),
        formula=st.sampled_from(
            [
                "metric.revenue - baseline.revenue",
                "metric.revenue / (metric.visits - 1200)",
                "metric.churn",
            ]
        ),
        share_percent=st.sampled_from(["35", "100", "0", "x"]),
        floor_minor_units=st.sampled_from([None, 0, 500_000]),
        cap_minor_units=st.sampled_from([None, 1_000_000, 100]),
        currency=st.sampled_from(["EUR", "JPY", "XYZ"]),
    ),
)
CONTEXTS = st.builds(
    CalculationContext,
    definition=DEFINITIONS,
    baselines=st.sampled_from([CONTEXT.baselines, {}]),
    billing_active=st.booleans(),
    billing_inactive_reason=st.sampled_from(["billing paused", ""]),
)


def stamped(command: Command, actor: tuple[str, Role], at: datetime) -> Command:
    return replace(command, by=actor[0], by_role=actor[1], at=at)


class CalculationMachine(RuleBasedStateMachine):
    """Any sequence of calculations: refusals are CalculationErrors, and the stream stays one
    current receipt after the ones it superseded."""

    def __init__(self) -> None:
        super().__init__()
        self.state = initial_state()
        self.ledger: list[Event] = []

    @rule(
        calculation_id=IDS,
        inputs=INPUT_LISTS,
        stream=st.fixed_dictionaries(STREAM),
        actor=ACTORS,
        at=TIMES,
        context=CONTEXTS,
    )
    def calculate(
        self,
        calculation_id: str,
        inputs: tuple[MetricInput, ...],
        stream: dict[str, object],
        actor: tuple[str, Role],
        at: datetime,
        context: CalculationContext,
    ) -> None:
        command = replace(CALCULATE, calculation_id=calculation_id, inputs=inputs, **stream)
        self.record(stamped(command, actor, at), context)

    @rule(
        calculation_id=IDS,
        inputs=INPUT_LISTS,
        reason=st.sampled_from(["sealed:why", ""]),
        actor=ACTORS,
        at=TIMES,
        context=CONTEXTS,
    )
    def recalculate(
        self,
        calculation_id: str,
        inputs: tuple[MetricInput, ...],
        reason: str,
        actor: tuple[str, Role],
        at: datetime,
        context: CalculationContext,
    ) -> None:
        command = replace(
            RECALCULATE, calculation_id=calculation_id, inputs=inputs, reason_sealed=reason
        )
        self.record(stamped(command, actor, at), context)

    @rule(
        calculation_id=IDS,
        recalculating=st.booleans(),
        inputs=st.sampled_from([INPUTS, CORRECTED_INPUTS]),
        context=st.sampled_from(
            [
                CONTEXT,
                with_terms(currency="JPY", floor_minor_units=9000),
                with_terms(cap_minor_units=100),
                replace(CONTEXT, billing_active=False, billing_inactive_reason="billing paused"),
            ]
        ),
    )
    def a_well_formed_command(
        self,
        calculation_id: str,
        recalculating: bool,
        inputs: tuple[MetricInput, ...],
        context: CalculationContext,
    ) -> None:
        """Random commands are mostly refused early, so often send a well-formed one."""
        command: Command = RECALCULATE if recalculating else CALCULATE
        self.record(replace(command, calculation_id=calculation_id, inputs=inputs), context)

    def record(self, command: Command, context: CalculationContext) -> None:
        refused: DomainError | None = None
        try:
            events = decide(command, self.state, context)
        except DomainError as error:
            refused, events = error, []
        if refused is not None:
            hypothesis_event(f"refused: {type(refused).__name__}")
            assert isinstance(refused, CalculationError)
            assert refused.message
            return
        hypothesis_event(f"decided: {type(command).__name__}")
        assert decide(command, self.state, context) == events
        assert len(events) == 1
        for event in events:
            self.state = evolve(self.state, event)
            self.ledger.append(event)

    @invariant()
    def one_current_calculation_after_the_ones_it_superseded(self) -> None:
        history = self.state.history
        assert history == tuple(self.ledger)
        assert self.state.current == (self.ledger[-1] if self.ledger else None)
        assert len(set(self.state.calculation_ids)) == len(history)
        for index, receipt in enumerate(history):
            if index == 0:
                assert isinstance(receipt, ValueCalculated)
            else:
                assert isinstance(receipt, ValueRecalculated)
                assert receipt.supersedes == history[index - 1].calculation_id
                assert receipt.reason_sealed.strip()
            first = history[0]
            assert (receipt.customer_id, receipt.definition_id) == (
                first.customer_id,
                first.definition_id,
            )
            assert (receipt.period_start, receipt.period_end) == (
                first.period_start,
                first.period_end,
            )

    @invariant()
    def amounts_keep_the_money_rules(self) -> None:
        for receipt in self.ledger:
            billing = receipt.billing
            if not billing.billable:
                assert billing.not_billable_reason
                assert billing.amount_minor_units is None
                continue
            amount = billing.amount_minor_units
            assert amount is not None
            assert 0 <= amount <= MAX_MINOR_UNITS
            assert billing.floor_minor_units is None or amount >= billing.floor_minor_units
            assert billing.cap_minor_units is None or amount <= billing.cap_minor_units
            assert billing.amount == major_units_text(amount, billing.currency)
            expected = billable_amount(
                Decimal(receipt.result),
                Decimal(billing.share_percent),
                billing.floor_minor_units,
                billing.cap_minor_units,
                billing.currency,
            )
            assert (expected.minor, expected.bound) == (amount, billing.bound)

    @invariant()
    def replaying_the_ledger_gives_the_same_state(self) -> None:
        assert state_after(self.ledger) == self.state

    @invariant()
    def the_ledger_round_trips_through_json(self) -> None:
        decoded = [EVENT_DECODER.decode(msgspec.json.encode(event)) for event in self.ledger]
        assert decoded == self.ledger


CalculationMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=15, deadline=None
)
TestCalculationMachine = CalculationMachine.TestCase
