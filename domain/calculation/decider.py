"""A period's value calculation: `decide` what a command makes happen, `evolve` the state.

Both are pure: the time, the actor, the calculation id and the facts from other streams (the
`CalculationContext`) come with the command, so deciding again gives the same receipt.

Rules, in the order they are checked:
- The command is stamped: `at` timezone-aware, `by` not blank.
- Only vendor staff (ADMIN; the scheduled calculation job acts as ADMIN too) calculate and
  recalculate: a bill is the vendor's claim, so a customer's users cannot write one. They
  confirm or dispute calculations instead (`domain.accuracy`).
- The command names its stream: customer, definition and period, all given; the period is
  half-open, timezone-aware, ends after it starts, and has ended by `at`. Once the stream has
  a calculation, commands must name the same customer, definition and period.
- `CalculateValue` needs a period with no calculation (otherwise recalculate it);
  `RecalculateValue` needs one, and a (sealed) reason. A calculation id is never reused in a
  period.
- A version of the definition must be in force for the period, and be the command's
  definition; its formula, metrics and pricing terms must be usable.
- The inputs give exactly one value per metric of the definition, each a plain decimal with
  its source and the SHA-256 of the raw data; every baseline the formula reads must have been
  recorded by the setup wizard.
- The formula is evaluated (`domain.formula.evaluate`: 34 digits, result at 12 places). If
  billing was active for the whole period, the amount is `domain.money.billable_amount` of the
  result under the version's share, floor, cap and currency, and must fit the ledger
  (2^53-1 minor units); otherwise the receipt bills nothing and says why.
- A recalculation is one `ValueRecalculated` naming the calculation it supersedes: the latest
  receipt of the stream is always the one current calculation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, NamedTuple, NoReturn, assert_never

import msgspec

from domain.calculation.commands import (
    CalculateValue,
    CalculationContext,
    Command,
    DefinitionInForce,
    MetricInput,
    RecalculateValue,
)
from domain.calculation.errors import (
    AmountTooLargeError,
    CalculationMismatchError,
    DefinitionMismatchError,
    DuplicateCalculationIdError,
    FormulaFailedError,
    InvalidCalculationFieldError,
    InvalidDefinitionTermsError,
    InvalidInputError,
    MetricInputsError,
    MissingBaselineError,
    NoDefinitionInForceError,
    NotAuthorizedError,
    PeriodAlreadyCalculatedError,
    PeriodNotCalculatedError,
)
from domain.calculation.events import (
    BaselineUsed,
    Billing,
    Event,
    MetricReading,
    ValueCalculated,
    ValueRecalculated,
)
from domain.calculation.state import CalculationState
from domain.formula import (
    MAGNITUDE_LIMIT,
    MAX_FRACTION_DIGITS,
    NAME_PATTERN,
    Formula,
    FormulaError,
    evaluate,
    parse_formula,
)
from domain.money import (
    MAX_MINOR_UNITS,
    MAX_SHARE_PERCENT,
    MINOR_UNIT_EXPONENTS,
    billable_amount,
    major_units_text,
)
from domain.roles import Role

MAX_TEXT_LENGTH: Final = 500
"""Characters in ids and sources."""
DEFAULT_NOT_BILLABLE_REASON: Final = "billing was not active for the whole period"
"""The receipt's reason when billing was inactive and the context gave none."""

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_DECIMAL_TEXT: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")
"""A plain decimal: optional minus, digits, optional point with digits; no exponent, no '+'."""


def decide(command: Command, state: CalculationState, context: CalculationContext) -> list[Event]:
    """The receipt the command records, or a `CalculationError` saying why it cannot."""
    _check_stamp(command.at, command.by)
    match command:
        case CalculateValue():
            _check_vendor(command.by_role, "calculate a period's value")
            _check_stream(command, state)
            if state.current is not None:
                raise PeriodAlreadyCalculatedError(
                    f"the period already has calculation {state.current.calculation_id!r} "
                    f"(calculated at {state.current.calculated_at.isoformat()}); to replace "
                    "it, recalculate the period with a reason"
                )
            _check_new_id(command.calculation_id, state)
            receipt = _compute(command, context)
            return [
                ValueCalculated(
                    customer_id=command.customer_id,
                    definition_id=command.definition_id,
                    period_start=command.period_start,
                    period_end=command.period_end,
                    calculation_id=command.calculation_id,
                    definition_version=receipt.definition.version,
                    definition_content_hash=receipt.definition.content_hash,
                    formula=receipt.definition.formula,
                    inputs=receipt.inputs,
                    baselines=receipt.baselines,
                    result=receipt.result,
                    billing=receipt.billing,
                    calculated_at=command.at,
                    calculated_by=command.by,
                    calculated_by_role=command.by_role,
                )
            ]
        case RecalculateValue():
            _check_vendor(command.by_role, "recalculate a period's value")
            _check_stream(command, state)
            if state.current is None:
                raise PeriodNotCalculatedError(
                    "the period has no calculation yet, so there is nothing to recalculate; "
                    "calculate it first"
                )
            if not command.reason_sealed.strip():
                raise InvalidCalculationFieldError(
                    "reason_sealed must not be blank; say why the period is recalculated"
                )
            _check_new_id(command.calculation_id, state)
            receipt = _compute(command, context)
            return [
                ValueRecalculated(
                    customer_id=command.customer_id,
                    definition_id=command.definition_id,
                    period_start=command.period_start,
                    period_end=command.period_end,
                    calculation_id=command.calculation_id,
                    supersedes=state.current.calculation_id,
                    reason_sealed=command.reason_sealed,
                    definition_version=receipt.definition.version,
                    definition_content_hash=receipt.definition.content_hash,
                    formula=receipt.definition.formula,
                    inputs=receipt.inputs,
                    baselines=receipt.baselines,
                    result=receipt.result,
                    billing=receipt.billing,
                    calculated_at=command.at,
                    calculated_by=command.by,
                    calculated_by_role=command.by_role,
                )
            ]
        case _:
            assert_never(command)


def evolve(state: CalculationState, event: Event) -> CalculationState:
    """The state after the event: it becomes the current calculation, and the one it replaces
    (if any) joins the superseded ones. Events are facts already decided; nothing is refused."""
    match event:
        case ValueCalculated() | ValueRecalculated():
            return CalculationState(current=event, superseded=state.history)
        case _:
            assert_never(event)


class _Computed(NamedTuple):
    definition: DefinitionInForce
    inputs: tuple[MetricReading, ...]
    baselines: tuple[BaselineUsed, ...]
    result: str
    billing: Billing


def _compute(command: Command, context: CalculationContext) -> _Computed:
    """Everything of the receipt that depends on the definition, the inputs and the billing."""
    definition = _definition_in_force(command, context)
    formula = _usable_formula(definition)
    share = _check_terms(definition)
    readings, metric_values = _readings(command.inputs, definition)
    baselines, baseline_values = _baselines_used(formula, context.baselines)
    try:
        result = evaluate(formula, metric_values, baseline_values)
    except FormulaError as error:
        raise FormulaFailedError(
            f"definition {definition.definition_id!r} version {definition.version}: {error.message}"
        ) from None
    return _Computed(
        definition=definition,
        inputs=readings,
        baselines=baselines,
        result=format(result, "f"),
        billing=_billing(result, share, definition, context),
    )


def _billing(
    result: Decimal, share: Decimal, definition: DefinitionInForce, context: CalculationContext
) -> Billing:
    terms = Billing(
        billable=False,
        currency=definition.currency,
        share_percent=_plain(share),
        floor_minor_units=definition.floor_minor_units,
        cap_minor_units=definition.cap_minor_units,
    )
    if not context.billing_active:
        reason = context.billing_inactive_reason.strip() or DEFAULT_NOT_BILLABLE_REASON
        return msgspec.structs.replace(terms, not_billable_reason=reason)
    amount = billable_amount(
        result, share, definition.floor_minor_units, definition.cap_minor_units, definition.currency
    )
    if amount.minor > MAX_MINOR_UNITS:
        raise AmountTooLargeError(
            f"the billable amount is {amount.minor} minor units of {amount.currency}, more than "
            "the ledger can store (2^53-1); check the inputs' units, or give the definition a cap"
        )
    return msgspec.structs.replace(
        terms,
        billable=True,
        amount_minor_units=amount.minor,
        amount=major_units_text(amount.minor, amount.currency),
        bound=amount.bound,
    )


def _definition_in_force(command: Command, context: CalculationContext) -> DefinitionInForce:
    definition = context.definition
    if definition is None:
        raise NoDefinitionInForceError(
            f"no version of definition {command.definition_id!r} is in force for the period "
            f"{_period(command.period_start, command.period_end)}; approve a version of the "
            "definition before calculating"
        )
    if definition.definition_id != command.definition_id:
        raise DefinitionMismatchError(
            f"the definition version given is of definition {definition.definition_id!r}, not "
            f"{command.definition_id!r}; load the version in force of the definition the "
            "command names"
        )
    return definition


def _usable_formula(definition: DefinitionInForce) -> Formula:
    if definition.version < 1:
        _bad_terms(definition, f"{definition.version} is not a version number (they start at 1)")
    if not definition.content_hash.strip():
        _bad_terms(definition, "its content hash is blank")
    if not definition.metrics:
        _bad_terms(definition, "it names no metrics")
    for metric in definition.metrics:
        if not NAME_PATTERN.fullmatch(metric):
            _bad_terms(definition, f"{_quoted(metric)} is not a valid metric name")
    if len(set(definition.metrics)) != len(definition.metrics):
        _bad_terms(definition, "it names a metric more than once")
    try:
        formula = parse_formula(definition.formula)
    except FormulaError as error:
        _bad_terms(definition, f"its formula cannot be read ({error.message})")
    unknown = sorted(formula.references().metrics - set(definition.metrics))
    if unknown:
        _bad_terms(
            definition,
            f"its formula reads {_names('metric', unknown)}, not among its metrics "
            f"({', '.join(definition.metrics)})",
        )
    return formula


def _check_terms(definition: DefinitionInForce) -> Decimal:
    """Check the pricing terms; the share of value as a `Decimal`."""
    if definition.currency not in MINOR_UNIT_EXPONENTS:
        _bad_terms(
            definition,
            f"currency {_quoted(definition.currency)} is not one we bill in "
            f"({', '.join(MINOR_UNIT_EXPONENTS)})",
        )
    share = _parse_decimal(definition.share_percent)
    if share is None or not 0 <= share <= MAX_SHARE_PERCENT:
        _bad_terms(
            definition,
            f"share {_quoted(definition.share_percent)} is not a percentage from 0 to 100",
        )
    for name, bound in (
        ("floor", definition.floor_minor_units),
        ("cap", definition.cap_minor_units),
    ):
        if bound is not None and not 0 <= bound <= MAX_MINOR_UNITS:
            _bad_terms(
                definition, f"its {name} {bound} is not a number of minor units from 0 to 2^53-1"
            )
    floor, cap = definition.floor_minor_units, definition.cap_minor_units
    if floor is not None and cap is not None and floor > cap:
        _bad_terms(definition, f"its floor {floor} is above its cap {cap}")
    return share


def _bad_terms(definition: DefinitionInForce, problem: str) -> NoReturn:
    raise InvalidDefinitionTermsError(
        f"definition {definition.definition_id!r} version {definition.version}: {problem}; "
        "correct the definition and approve a new version"
    )


def _readings(
    inputs: tuple[MetricInput, ...], definition: DefinitionInForce
) -> tuple[tuple[MetricReading, ...], dict[str, Decimal]]:
    """Exactly one input per metric of the definition, in the definition's order, checked."""
    metrics = definition.metrics
    given: dict[str, MetricInput] = {}
    for item in inputs:
        if item.metric not in metrics:
            raise MetricInputsError(
                f"{_quoted(item.metric)} is not a metric of definition "
                f"{definition.definition_id!r} ({', '.join(metrics)}); give inputs only for "
                "its metrics"
            )
        if item.metric in given:
            raise MetricInputsError(
                f"metric {item.metric!r} has more than one input; give one input per metric"
            )
        given[item.metric] = item
    missing = [metric for metric in metrics if metric not in given]
    if missing:
        raise MetricInputsError(
            f"no input for {_names('metric', missing)}; give a value for every metric of "
            f"definition {definition.definition_id!r}: {', '.join(metrics)}"
        )
    readings: list[MetricReading] = []
    values: dict[str, Decimal] = {}
    for metric in metrics:
        item = given[metric]
        value = _input_value(f"the value of metric {metric!r}", item.value)
        _check_text(f"the source of metric {metric!r}", item.source)
        if not _SHA256_HEX.fullmatch(item.fingerprint):
            raise InvalidInputError(
                f"the fingerprint of metric {metric!r} is not 64 lowercase hex digits; give "
                "the SHA-256 of the raw source data the value was read from"
            )
        values[metric] = value
        readings.append(
            MetricReading(
                metric=metric, value=_plain(value), source=item.source, fingerprint=item.fingerprint
            )
        )
    return tuple(readings), values


def _input_value(what: str, text: str) -> Decimal:
    value = _parse_decimal(text)
    if value is None:
        raise InvalidInputError(
            f"{what} is {_quoted(text)}, not a plain decimal; write it like 1250.50, "
            "without exponent, separators or spaces"
        )
    problem = _out_of_range(value)
    if problem:
        raise InvalidInputError(f"{what} {problem[0]}; {problem[1]}")
    return value


def _baselines_used(
    formula: Formula, recorded: Mapping[str, str]
) -> tuple[tuple[BaselineUsed, ...], dict[str, Decimal]]:
    """The baselines the formula reads, sorted by metric, from those the setup recorded."""
    used: list[BaselineUsed] = []
    values: dict[str, Decimal] = {}
    for metric in sorted(formula.references().baselines):
        if metric not in recorded:
            raise MissingBaselineError(
                f"the formula reads baseline {metric!r}, which the setup wizard has not "
                "recorded; establish the baseline (setup step 4) before calculating"
            )
        value = _parse_decimal(recorded[metric])
        out_of_range = None if value is None else _out_of_range(value)
        if value is None or out_of_range is not None:
            problem = "is not a plain decimal" if out_of_range is None else out_of_range[0]
            raise MissingBaselineError(
                f"the baseline of {metric!r} {problem}; establish the baseline again (setup step 4)"
            )
        values[metric] = value
        used.append(BaselineUsed(metric=metric, value=_plain(value)))
    return tuple(used), values


def _check_stamp(at: datetime, by: str) -> None:
    if at.utcoffset() is None:
        raise InvalidCalculationFieldError(
            "at must be a timezone-aware time; stamp commands with the time in UTC"
        )
    _check_text("by", by)


def _check_vendor(by_role: Role, action: str) -> None:
    if by_role is not Role.ADMIN:
        raise NotAuthorizedError(
            f"only vendor staff (ADMIN) can {action}, not {by_role}; ask vendor support, or "
            "dispute the calculation if it is wrong"
        )


def _check_stream(command: Command, state: CalculationState) -> None:
    """The command names a valid stream, and the one it was decided against."""
    _check_text("customer_id", command.customer_id)
    _check_text("definition_id", command.definition_id)
    _check_text("calculation_id", command.calculation_id)
    start, end = command.period_start, command.period_end
    if start.utcoffset() is None or end.utcoffset() is None:
        raise InvalidCalculationFieldError(
            "period_start and period_end must be timezone-aware times; give the period in UTC"
        )
    if end <= start:
        raise InvalidCalculationFieldError(
            f"the period {_period(start, end)} does not end after it starts; give a period "
            "whose end is after its start"
        )
    if end > command.at:
        raise InvalidCalculationFieldError(
            f"the period {_period(start, end)} has not ended at {command.at.isoformat()}; "
            "calculate a period once it has ended"
        )
    current = state.current
    if current is None:
        return
    named = (command.customer_id, command.definition_id, start, end)
    stream = (current.customer_id, current.definition_id, current.period_start, current.period_end)
    if named != stream:
        raise CalculationMismatchError(
            f"the command is for {_stream(*named)} but was decided against the calculations of "
            f"{_stream(*stream)}; load the stream of the period the command names"
        )


def _check_new_id(calculation_id: str, state: CalculationState) -> None:
    if calculation_id in state.calculation_ids:
        raise DuplicateCalculationIdError(
            f"calculation id {calculation_id!r} was already used for this period; give the "
            "new calculation a new id"
        )


def _check_text(field: str, text: str) -> None:
    if not text.strip():
        raise InvalidCalculationFieldError(f"{field} must not be blank; fill it in")
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidCalculationFieldError(
            f"{field} is {len(text)} characters long; keep it to {MAX_TEXT_LENGTH} characters"
        )
    if not text.isprintable():
        raise InvalidCalculationFieldError(
            f"{field} contains control characters; remove line breaks, tabs and the like"
        )


def _parse_decimal(text: str) -> Decimal | None:
    """A plain decimal string as a `Decimal`; None if it is anything else."""
    if len(text) > MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(text):
        return None
    return Decimal(text)


def _out_of_range(value: Decimal) -> tuple[str, str] | None:
    """What is wrong with a value for the formula language and the remedy; None if nothing."""
    if value.copy_abs() >= MAGNITUDE_LIMIT:
        return ("is 10^22 or more in magnitude", "check the measurement's units")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS:
        return (
            f"has more than {MAX_FRACTION_DIGITS} decimal places",
            f"round it to {MAX_FRACTION_DIGITS} places",
        )
    return None


def _plain(value: Decimal) -> str:
    """`value` as a plain decimal string; zero without a sign."""
    return format(value.copy_abs() if value.is_zero() else value, "f")


def _period(start: datetime, end: datetime) -> str:
    return f"[{start.isoformat()}, {end.isoformat()})"


def _stream(customer_id: str, definition_id: str, start: datetime, end: datetime) -> str:
    return f"customer {customer_id!r}, definition {definition_id!r}, period {_period(start, end)}"


def _names(kind: str, names: list[str]) -> str:
    return f"{kind}{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"


def _quoted(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
