"""The setup wizard's rules: five steps in order, each completed with its evidence.

`decide` either refuses a command with a `SetupError` or returns the events that record it;
`evolve` applies one event to the state. Both are pure: time and actor come on the command.

Choices worth knowing:

- A failed credential validation or connection test is refused (nothing is recorded), like
  any other missing evidence: the ledger holds receipts of completed steps only, and a step
  that was complete stays complete with its earlier evidence.
- Any step whose earlier steps are complete can be redone. If steps after it are complete,
  `decide` records `LaterStepsInvalidated` (naming them and why) *before* the redone step's
  event, so after every event the completed steps are a prefix of `STEPS`. A redo always
  invalidates, even with the same evidence as before.
- Measurement accuracy: see `measurement_accuracy`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, TypeVar, assert_never

import msgspec

from domain.formula import MAGNITUDE_LIMIT, MAX_FRACTION_DIGITS, NAME_PATTERN, decimal_context
from domain.setup.commands import (
    BaselineValue,
    Command,
    CompleteApiIntegration,
    ConnectDataSource,
    EstablishBaseline,
    MapMetrics,
    MeasuredValue,
    VerifyAccuracy,
)
from domain.setup.errors import (
    ConnectionTestFailedError,
    CredentialsNotValidatedError,
    InvalidEvidenceError,
    StepOutOfOrderError,
)
from domain.setup.events import (
    STEP_TITLES,
    STEPS,
    AccuracyVerified,
    ApiIntegrationCompleted,
    BaselineEstablished,
    DataSourceConnected,
    Event,
    LaterStepsInvalidated,
    MetricBaseline,
    MetricMapping,
    MetricMeasurement,
    MetricsMapped,
    Step,
)
from domain.setup.state import SetupState

SOURCE_KINDS: Final = ("salesforce", "hubspot", "stripe", "segment", "custom_webhook", "http_pull")
"""The data sources step 2 accepts."""
MAX_METRICS: Final = 100
"""Metrics one setup can map; each needs a baseline and an accuracy check."""
MAX_TEXT_LENGTH: Final = 500
"""Characters in any free-text field: references, details, source fields, actor ids."""
ACCURACY_PLACES: Final = Decimal("0.01")
"""Accuracy is a percentage with 2 decimal places, rounded half-even."""

FINGERPRINT_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
REFERENCE_PATTERN: Final = re.compile(r"[a-z][a-z0-9+.-]{0,31}://\S+")
"""``scheme://location``: where the secret is kept, such as ``vault://kv/acme/api-key``. A raw
API key seldom has this shape, so one pasted here by mistake is refused."""

_ONE: Final = Decimal(1)
_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)


def decide(command: Command, state: SetupState) -> list[Event]:
    """The events that record `command`, or a `SetupError` saying why it is refused."""
    match command:
        case CompleteApiIntegration():
            _check_order("api_integration", state)
            completed: Event = _api_integration(command)
        case ConnectDataSource():
            _check_order("data_source", state)
            completed = _data_source(command)
        case MapMetrics():
            _check_order("metrics_config", state)
            completed = _metrics(command)
        case EstablishBaseline():
            _check_order("baseline", state)
            completed = _baseline(command, state.metrics)
        case VerifyAccuracy():
            _check_order("testing", state)
            completed = _accuracy(command, state.metrics)
        case _:
            assert_never(command)
    return [*_invalidations(_STEP_OF[type(completed)], command, state), completed]


def evolve(state: SetupState, event: Event) -> SetupState:
    """The state after `event`. Each step's field holds its latest completion event."""
    match event:
        case ApiIntegrationCompleted():
            return msgspec.structs.replace(state, api_integration=event)
        case DataSourceConnected():
            return msgspec.structs.replace(state, data_source=event)
        case MetricsMapped():
            return msgspec.structs.replace(state, metrics_config=event)
        case BaselineEstablished():
            return msgspec.structs.replace(state, baseline=event)
        case AccuracyVerified():
            return msgspec.structs.replace(state, testing=event)
        case LaterStepsInvalidated(steps=steps):
            # The state's fields are named after the steps.
            return msgspec.structs.replace(state, **dict.fromkeys(steps))
        case _:
            assert_never(event)


def measurement_accuracy(pairs: Sequence[tuple[Decimal, Decimal]]) -> Decimal:
    """The accuracy of (measured, expected) pairs, as a percentage with 2 decimal places.

    Each metric scores 1 - |measured - expected| / |expected|, clamped to [0, 1] (so one
    wildly wrong metric cannot cancel out the others); when expected is 0 it scores 1 for an
    exact match and 0 otherwise. The result is the mean score times 100, rounded half-even to
    2 places, computed in the formula language's decimal context (34 significant digits).
    """
    if not pairs:
        raise ValueError("measurement accuracy needs at least one measurement")
    context = decimal_context()
    total = _ZERO
    for measured, expected in pairs:
        if expected.is_zero():
            score = _ONE if measured.is_zero() else _ZERO
        else:
            error = context.divide(
                context.abs(context.subtract(measured, expected)), context.abs(expected)
            )
            score = max(_ZERO, context.subtract(_ONE, error))
        total = context.add(total, score)
    mean = context.divide(total, Decimal(len(pairs)))
    return context.multiply(mean, _HUNDRED).quantize(
        ACCURACY_PLACES, rounding=ROUND_HALF_EVEN, context=context
    )


_STEP_OF: Final[dict[type[Event], Step]] = {
    ApiIntegrationCompleted: "api_integration",
    DataSourceConnected: "data_source",
    MetricsMapped: "metrics_config",
    BaselineEstablished: "baseline",
    AccuracyVerified: "testing",
}


def _check_order(step: Step, state: SetupState) -> None:
    done = state.completed_at
    for earlier in STEPS[: STEPS.index(step)]:
        if earlier not in done:
            raise StepOutOfOrderError(step, earlier)


def _invalidations(step: Step, command: Command, state: SetupState) -> list[Event]:
    done = state.completed_at
    later = tuple(s for s in STEPS[STEPS.index(step) + 1 :] if s in done)
    if not later:
        return []
    return [
        LaterStepsInvalidated(
            redone_step=step,
            steps=later,
            reason=f"{STEP_TITLES[step]} was redone, and the steps after it depend on it",
            invalidated_at=command.at,
            by=command.by,
        )
    ]


def _check_stamp(step: Step, at: datetime, by: str) -> None:
    if at.utcoffset() is None:
        raise InvalidEvidenceError(
            step, "the command's time has no timezone", "stamp commands with an aware UTC time"
        )
    _check_text(step, "the actor (by)", by, "stamp commands with the user's id")


def _check_text(step: Step, what: str, text: str, remedy: str, *, required: bool = True) -> None:
    if required and not text.strip():
        raise InvalidEvidenceError(step, f"{what} is empty", remedy)
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidEvidenceError(
            step,
            f"{what} is {len(text)} characters long",
            f"keep it to {MAX_TEXT_LENGTH} characters",
        )
    if not text.isprintable():
        raise InvalidEvidenceError(
            step, f"{what} contains control characters", "remove line breaks, tabs and the like"
        )


def _api_integration(command: CompleteApiIntegration) -> ApiIntegrationCompleted:
    step: Step = "api_integration"
    _check_stamp(step, command.at, command.by)
    fingerprint = command.credential_fingerprint
    if len(fingerprint) != 64:
        raise InvalidEvidenceError(
            step,
            f"the credential fingerprint has {len(fingerprint)} characters, not 64",
            "give the SHA-256 of the secret as 64 lowercase hex digits, never the secret",
        )
    if not FINGERPRINT_PATTERN.fullmatch(fingerprint):
        raise InvalidEvidenceError(
            step,
            "the credential fingerprint has characters other than 0-9 and a-f",
            "give the SHA-256 of the secret as 64 lowercase hex digits",
        )
    reference = command.credential_reference
    if len(reference) > MAX_TEXT_LENGTH or not REFERENCE_PATTERN.fullmatch(reference):
        raise InvalidEvidenceError(
            step,
            f"the credential reference ({len(reference)} characters) is not scheme://location",
            "give where the secret is kept, such as vault://kv/acme/api-key, never the secret",
        )
    detail = command.validation_detail
    _check_text(step, "the validation detail", detail, "shorten it", required=False)
    if not command.validation_passed:
        raise CredentialsNotValidatedError(detail)
    return ApiIntegrationCompleted(
        credential_fingerprint=fingerprint,
        credential_reference=reference,
        validation_detail=detail,
        completed_at=command.at,
        by=command.by,
    )


def _data_source(command: ConnectDataSource) -> DataSourceConnected:
    step: Step = "data_source"
    _check_stamp(step, command.at, command.by)
    if command.source_kind not in SOURCE_KINDS:
        raise InvalidEvidenceError(
            step,
            f"{_quoted(command.source_kind)} is not a supported data source",
            f"choose one of {', '.join(SOURCE_KINDS)}",
        )
    detail = command.connection_test_detail
    _check_text(step, "the connection test detail", detail, "shorten it", required=False)
    if not command.connection_test_passed:
        raise ConnectionTestFailedError(command.source_kind, detail)
    return DataSourceConnected(
        source_kind=command.source_kind,
        connection_test_detail=detail,
        connected_at=command.at,
        by=command.by,
    )


def _metrics(command: MapMetrics) -> MetricsMapped:
    step: Step = "metrics_config"
    _check_stamp(step, command.at, command.by)
    if not command.mappings:
        raise InvalidEvidenceError(
            step, "no metrics are mapped", "map at least one source field to a metric name"
        )
    if len(command.mappings) > MAX_METRICS:
        raise InvalidEvidenceError(
            step,
            f"{len(command.mappings)} metrics are mapped",
            f"map at most {MAX_METRICS}",
        )
    seen: set[str] = set()
    for mapping in command.mappings:
        metric = mapping.metric
        if not NAME_PATTERN.fullmatch(metric):
            raise InvalidEvidenceError(
                step,
                f"{_quoted(metric)} is not a valid metric name",
                "use a lowercase letter, then up to 62 lowercase letters, digits or '_'",
            )
        if metric in seen:
            raise InvalidEvidenceError(
                step,
                f"metric {metric!r} is mapped more than once",
                "map each metric name from exactly one source field",
            )
        seen.add(metric)
        _check_text(
            step, f"the source field of {metric!r}", mapping.source_field, "name the source field"
        )
    return MetricsMapped(
        mappings=tuple(
            MetricMapping(metric=mapping.metric, source_field=mapping.source_field)
            for mapping in command.mappings
        ),
        mapped_at=command.at,
        by=command.by,
    )


def _baseline(command: EstablishBaseline, metrics: tuple[str, ...]) -> BaselineEstablished:
    step: Step = "baseline"
    _check_stamp(step, command.at, command.by)
    start, end = command.period_start, command.period_end
    if start.utcoffset() is None or end.utcoffset() is None:
        raise InvalidEvidenceError(
            step, "the baseline period has no timezone", "give its start and end in UTC"
        )
    if start >= end:
        raise InvalidEvidenceError(
            step,
            f"the baseline period starts at {start.isoformat()}, not before its end "
            f"{end.isoformat()}",
            "give a period whose start is before its end",
        )
    if end > command.at:
        raise InvalidEvidenceError(
            step,
            f"the baseline period ends at {end.isoformat()}, after it is recorded",
            "establish the baseline over a period that has ended",
        )
    values = _per_metric(
        step, "baseline", metrics, [(value.metric, value) for value in command.baselines]
    )
    return BaselineEstablished(
        baselines=tuple(
            MetricBaseline(metric=metric, value=_decimal_text(step, f"{metric!r}", value.value))
            for metric, value in values
        ),
        period_start=start,
        period_end=end,
        established_at=command.at,
        by=command.by,
    )


def _accuracy(command: VerifyAccuracy, metrics: tuple[str, ...]) -> AccuracyVerified:
    step: Step = "testing"
    _check_stamp(step, command.at, command.by)
    values = _per_metric(
        step, "measurement", metrics, [(value.metric, value) for value in command.measurements]
    )
    results = tuple(
        MetricMeasurement(
            metric=metric,
            measured=_decimal_text(step, f"the measured value of {metric!r}", value.measured),
            expected=_decimal_text(step, f"the expected value of {metric!r}", value.expected),
        )
        for metric, value in values
    )
    accuracy = measurement_accuracy(
        [(Decimal(result.measured), Decimal(result.expected)) for result in results]
    )
    return AccuracyVerified(
        results=results, accuracy=str(accuracy), verified_at=command.at, by=command.by
    )


_Entry = TypeVar("_Entry", BaselineValue, MeasuredValue)


def _per_metric(
    step: Step, what: str, metrics: tuple[str, ...], given: list[tuple[str, _Entry]]
) -> list[tuple[str, _Entry]]:
    """Exactly one entry per mapped metric, put in the mapped metrics' order."""
    by_metric: dict[str, _Entry] = {}
    for metric, value in given:
        if metric not in metrics:
            raise InvalidEvidenceError(
                step,
                f"{_quoted(metric)} is not a mapped metric",
                f"give a {what} only for the mapped metrics: {', '.join(metrics)}",
            )
        if metric in by_metric:
            raise InvalidEvidenceError(
                step, f"metric {metric!r} has more than one {what}", f"give one {what} per metric"
            )
        by_metric[metric] = value
    missing = [metric for metric in metrics if metric not in by_metric]
    if missing:
        raise InvalidEvidenceError(
            step,
            f"no {what} for {', '.join(map(repr, missing))}",
            f"give a {what} for every mapped metric",
        )
    return [(metric, by_metric[metric]) for metric in metrics]


def _decimal_text(step: Step, what: str, value: Decimal) -> str:
    """`value` as a plain decimal string (never exponent notation; zero without a sign)."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidEvidenceError(
            step, f"{what} is not a finite decimal", "give a number such as 1250.50"
        )
    if value.copy_abs() >= MAGNITUDE_LIMIT:
        raise InvalidEvidenceError(
            step, f"{what} is 10^22 or more in magnitude", "check the value's units"
        )
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_FRACTION_DIGITS:
        raise InvalidEvidenceError(
            step,
            f"{what} has more than {MAX_FRACTION_DIGITS} decimal places",
            f"round it to {MAX_FRACTION_DIGITS} places",
        )
    return format(value.copy_abs() if value.is_zero() else value, "f")


def _quoted(text: str) -> str:
    """Untrusted text for a message, cut short."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
