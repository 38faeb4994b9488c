"""Customer feedback on calculations: `decide` what a verdict records, `evolve` the state.

Both are pure: the time, the actor and the facts from other streams (the `AccuracyContext`)
come with the command.

Rules, in the order they are checked:
- The command is stamped (`at` timezone-aware, `by` not blank) and names a customer and a
  calculation; once the stream has a verdict, commands must name the same customer.
- Who: a current user of the customer (CUSTOMER_ADMIN, FINANCE or TECHNICAL) acting in the
  role they hold now, so a token issued before a role change or a revocation no longer works.
  Not vendor staff: the verdicts measure the vendor's calculations, and their mean is the
  accuracy go-live requires, so the vendor judging its own work could clear that check alone.
- The calculation must exist and be its period's current calculation: feedback on a
  superseded one is refused, naming the one that superseded it.
- A calculation gets one verdict: a second confirmation or dispute is refused, naming the
  first. If a confirmed calculation turns out wrong, it is recalculated and the new
  calculation is judged.
- The setup wizard's accuracy test must be complete (it is what feedback is measured against),
  verified no later than the verdict; the threshold is a percentage from 85 to 100.
- A dispute gives either the expected value of every metric of the calculation, or the
  expected result, as plain decimals, with a sealed reason; expected values all equal to the
  calculation's are refused (confirm instead).
- Scores: a confirmation scores 100.00; a dispute scores `domain.setup.measurement_accuracy`
  of the (calculation's, expected) pairs. The measured accuracy after the verdict is
  `measured_accuracy` (see `domain.accuracy.state`).
- Alerts: a dispute raises a ``critical`` alert when the measured accuracy after it is below
  the threshold, else a ``warning`` when its own score is below the threshold, else none.
  Alerts are another aggregate: the event only says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, assert_never

import msgspec

from domain.accuracy.commands import (
    AccuracyContext,
    Command,
    ConfirmCalculation,
    DisputeCalculation,
    ExpectedValue,
    JudgedCalculation,
)
from domain.accuracy.errors import (
    CalculationSupersededError,
    CustomerMismatchError,
    InvalidAccuracyContextError,
    InvalidExpectationError,
    InvalidFeedbackFieldError,
    NotAuthorizedError,
    NothingDisputedError,
    SetupNotVerifiedError,
    UnknownCalculationError,
    VerdictAlreadyGivenError,
)
from domain.accuracy.events import (
    AlertSeverity,
    CalculationConfirmed,
    CalculationDisputed,
    Event,
    MetricComparison,
)
from domain.accuracy.state import AccuracyState, given_at, measured_accuracy
from domain.formula import MAGNITUDE_LIMIT, MAX_FRACTION_DIGITS
from domain.roles import Role
from domain.setup import measurement_accuracy

MIN_ACCURACY_THRESHOLD: Final = Decimal(85)
"""The lowest accuracy threshold a customer can have (the go-live minimum)."""
CONFIRMED_SCORE: Final = Decimal("100.00")
"""The score of a confirmation: the customer saw no error."""
MAX_TEXT_LENGTH: Final = 500
"""Characters in ids; sealed reasons may be longer, being ciphertext."""

_HUNDRED: Final = Decimal(100)
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
"""A plain decimal: optional minus, digits, optional point with digits; no exponent, no '+'."""


class _Baseline(msgspec.Struct, frozen=True, kw_only=True):
    """The setup test and threshold a verdict is measured against, checked."""

    accuracy: Decimal
    verified_at: datetime
    threshold: Decimal


def decide(command: Command, state: AccuracyState, context: AccuracyContext) -> list[Event]:
    """The verdict the command records, or an `AccuracyError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    _check_text("customer_id", command.customer_id)
    _check_text("calculation_id", command.calculation_id)
    if state.customer_id and command.customer_id != state.customer_id:
        raise CustomerMismatchError(
            f"the command is for customer {command.customer_id!r} but was decided against the "
            f"feedback of customer {state.customer_id!r}; load the stream the command names"
        )
    match command:
        case ConfirmCalculation():
            action = "confirm calculations"
        case DisputeCalculation():
            action = "dispute calculations"
        case _:
            assert_never(command)
    _check_actor(command, context.users, action)
    calculation = _judged(command, context)
    _check_first_verdict(command.calculation_id, state)
    baseline = _baseline(command.at, context)
    earlier = state.scores_since(baseline.verified_at)
    match command:
        case ConfirmCalculation():
            after = measured_accuracy(baseline.accuracy, [*earlier, CONFIRMED_SCORE])
            return [
                CalculationConfirmed(
                    customer_id=command.customer_id,
                    calculation_id=calculation.calculation_id,
                    definition_id=calculation.definition_id,
                    period_start=calculation.period_start,
                    period_end=calculation.period_end,
                    result=calculation.result,
                    score=_text(CONFIRMED_SCORE),
                    setup_accuracy=_text(baseline.accuracy),
                    setup_verified_at=baseline.verified_at,
                    measured_accuracy=_text(after),
                    confirmed_at=command.at,
                    confirmed_by=command.by,
                    confirmed_by_role=command.by_role,
                )
            ]
        case DisputeCalculation():
            if not command.reason_sealed.strip():
                raise InvalidFeedbackFieldError(
                    "reason_sealed must not be blank; say why the calculation is wrong"
                )
            comparisons, expected_result, pairs = _expectations(command, calculation)
            score = measurement_accuracy(pairs)
            after = measured_accuracy(baseline.accuracy, [*earlier, score])
            severity = _alert_severity(score, after, baseline.threshold)
            return [
                CalculationDisputed(
                    customer_id=command.customer_id,
                    calculation_id=calculation.calculation_id,
                    definition_id=calculation.definition_id,
                    period_start=calculation.period_start,
                    period_end=calculation.period_end,
                    result=calculation.result,
                    comparisons=comparisons,
                    expected_result=expected_result,
                    reason_sealed=command.reason_sealed,
                    score=_text(score),
                    setup_accuracy=_text(baseline.accuracy),
                    setup_verified_at=baseline.verified_at,
                    measured_accuracy=_text(after),
                    accuracy_threshold=_text(baseline.threshold),
                    raises_alert=severity is not None,
                    alert_severity=severity,
                    disputed_at=command.at,
                    disputed_by=command.by,
                    disputed_by_role=command.by_role,
                )
            ]
        case _:
            assert_never(command)


def evolve(state: AccuracyState, event: Event) -> AccuracyState:
    """The state after the event: the verdict joins the customer's verdicts. Events are facts
    already decided, so nothing is refused."""
    match event:
        case CalculationConfirmed() | CalculationDisputed():
            return AccuracyState(
                customer_id=event.customer_id,
                verdicts={**state.verdicts, event.calculation_id: event},
            )
        case _:
            assert_never(event)


def _alert_severity(score: Decimal, after: Decimal, threshold: Decimal) -> AlertSeverity | None:
    if after < threshold:
        return "critical"
    if score < threshold:
        return "warning"
    return None


def _check_actor(command: Command, users: Mapping[str, Role], action: str) -> None:
    """A current user of the customer, in the role held now; never vendor staff."""
    if command.by_role is Role.ADMIN:
        raise NotAuthorizedError(
            f"vendor staff cannot {action}: a verdict is the customer's own judgement of the "
            f"vendor's calculation; ask a user of customer {command.customer_id!r}"
        )
    current = users.get(command.by)
    if current is None:
        raise NotAuthorizedError(
            f"user {command.by!r} is not a user of customer {command.customer_id!r}, so cannot "
            f"{action}; ask one of its users"
        )
    if current is not command.by_role:
        raise NotAuthorizedError(
            f"user {command.by!r} holds role {current} on customer {command.customer_id!r}, not "
            f"{command.by_role}; sign in again to act in your current role"
        )


def _judged(command: Command, context: AccuracyContext) -> JudgedCalculation:
    calculation = context.calculation
    if calculation is None:
        raise UnknownCalculationError(
            f"customer {command.customer_id!r} has no calculation {command.calculation_id!r}; "
            "check the calculation id"
        )
    if calculation.calculation_id != command.calculation_id:
        raise UnknownCalculationError(
            f"the calculation given is {calculation.calculation_id!r}, not "
            f"{command.calculation_id!r}; load the calculation the command names"
        )
    if calculation.superseded_by is not None:
        raise CalculationSupersededError(
            f"calculation {calculation.calculation_id!r} was superseded by calculation "
            f"{calculation.superseded_by!r}; confirm or dispute the current calculation instead"
        )
    return calculation


def _check_first_verdict(calculation_id: str, state: AccuracyState) -> None:
    first = state.verdicts.get(calculation_id)
    if first is None:
        return
    if isinstance(first, CalculationConfirmed):
        done, by = "confirmed", first.confirmed_by
    else:
        done, by = "disputed", first.disputed_by
    raise VerdictAlreadyGivenError(
        f"calculation {calculation_id!r} was already {done} by {by!r} at "
        f"{given_at(first).isoformat()}; a calculation gets one verdict, so if it is wrong, "
        "ask for a recalculation and judge the new calculation"
    )


def _baseline(at: datetime, context: AccuracyContext) -> _Baseline:
    text, verified_at = context.setup_accuracy, context.setup_verified_at
    if text is None or verified_at is None:
        raise SetupNotVerifiedError(
            "the setup wizard's accuracy test (step 5) is not complete, so there is nothing to "
            "measure feedback against; complete the accuracy test first"
        )
    accuracy = _parse_decimal(text)
    if accuracy is None or not 0 <= accuracy <= _HUNDRED:
        raise InvalidAccuracyContextError(
            f"the setup test's accuracy {_quoted(text)} is not a percentage from 0 to 100; "
            "load the latest setup test"
        )
    if verified_at.utcoffset() is None or verified_at > at:
        raise InvalidAccuracyContextError(
            f"the setup test was verified at {verified_at.isoformat()}, which is not an aware "
            f"time before the verdict at {at.isoformat()}; load the latest setup test"
        )
    threshold = _parse_decimal(context.accuracy_threshold)
    if threshold is None or not MIN_ACCURACY_THRESHOLD <= threshold <= _HUNDRED:
        raise InvalidAccuracyContextError(
            f"the accuracy threshold {_quoted(context.accuracy_threshold)} is not a percentage "
            "from 85 to 100; correct the customer's threshold"
        )
    return _Baseline(accuracy=accuracy, verified_at=verified_at, threshold=threshold)


def _expectations(
    command: DisputeCalculation, calculation: JudgedCalculation
) -> tuple[tuple[MetricComparison, ...], str | None, list[tuple[Decimal, Decimal]]]:
    """What the dispute compares: per metric or the result; and the (measured, expected) pairs."""
    if command.expected_values and command.expected_result is not None:
        raise InvalidExpectationError(
            "the dispute gives expected values both per metric and for the result; give "
            "either expected_values or expected_result, not both"
        )
    if command.expected_result is not None:
        measured = _calculated("the result", calculation.result)
        expected = _expected("the expected result", command.expected_result)
        if expected == measured:
            raise NothingDisputedError(
                f"the expected result {_text(expected)} is the calculation's result; "
                "confirm the calculation instead"
            )
        return (), _text(expected), [(measured, expected)]
    if not command.expected_values:
        raise InvalidExpectationError(
            "the dispute gives no expected value; give the value you expected for every "
            "metric (expected_values) or for the result (expected_result)"
        )
    given = _per_metric(command.expected_values, calculation)
    comparisons: list[MetricComparison] = []
    pairs: list[tuple[Decimal, Decimal]] = []
    for metric, measured_text in calculation.inputs.items():
        measured = _calculated(f"the value of metric {metric!r}", measured_text)
        expected = _expected(f"the expected value of metric {metric!r}", given[metric])
        comparisons.append(
            MetricComparison(metric=metric, measured=_text(measured), expected=_text(expected))
        )
        pairs.append((measured, expected))
    if all(measured == expected for measured, expected in pairs):
        raise NothingDisputedError(
            "every expected value is the calculation's own value; confirm the calculation "
            "instead, or give the values you expected"
        )
    return tuple(comparisons), None, pairs


def _per_metric(
    values: tuple[ExpectedValue, ...], calculation: JudgedCalculation
) -> dict[str, str]:
    metrics = list(calculation.inputs)
    given: dict[str, str] = {}
    for value in values:
        if value.metric not in calculation.inputs:
            raise InvalidExpectationError(
                f"{_quoted(value.metric)} is not a metric of calculation "
                f"{calculation.calculation_id!r} ({', '.join(metrics)}); give expected values "
                "only for its metrics"
            )
        if value.metric in given:
            raise InvalidExpectationError(
                f"metric {value.metric!r} has more than one expected value; give one per metric"
            )
        given[value.metric] = value.expected
    missing = [metric for metric in metrics if metric not in given]
    if missing:
        raise InvalidExpectationError(
            f"no expected value for {', '.join(map(repr, missing))}; give one for every metric "
            "of the calculation, the right ones with the calculation's own value"
        )
    return given


def _expected(what: str, text: str) -> Decimal:
    value = _parse_decimal(text)
    if value is None:
        raise InvalidExpectationError(
            f"{what} is {_quoted(text)}, not a plain decimal; write it like 1250.50, without "
            "exponent, separators or spaces"
        )
    if value.copy_abs() >= MAGNITUDE_LIMIT:
        raise InvalidExpectationError(f"{what} is 10^22 or more in magnitude; check its units")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS:
        raise InvalidExpectationError(
            f"{what} has more than {MAX_FRACTION_DIGITS} decimal places; "
            f"round it to {MAX_FRACTION_DIGITS} places"
        )
    return value


def _calculated(what: str, text: str) -> Decimal:
    value = _parse_decimal(text)
    if value is None:
        raise InvalidAccuracyContextError(
            f"{what} on the calculation is {_quoted(text)}, not a plain decimal; load the "
            "calculation's receipt as recorded"
        )
    return value


def _check_stamp(at: datetime, by: str) -> None:
    if at.utcoffset() is None:
        raise InvalidFeedbackFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    _check_text("by", by)


def _check_text(field: str, text: str) -> None:
    if not text.strip():
        raise InvalidFeedbackFieldError(f"{field} must not be blank; fill it in")
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidFeedbackFieldError(
            f"{field} is {len(text)} characters long; keep it to {MAX_TEXT_LENGTH} characters"
        )
    if not text.isprintable():
        raise InvalidFeedbackFieldError(
            f"{field} contains control characters; remove line breaks, tabs and the like"
        )


def _parse_decimal(text: str) -> Decimal | None:
    """A plain decimal string as a `Decimal`; None if it is anything else."""
    if len(text) > MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(text):
        return None
    return Decimal(text)


def _text(value: Decimal) -> str:
    """`value` as a plain decimal string; zero without a sign."""
    return format(value.copy_abs() if value.is_zero() else value, "f")


def _quoted(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
