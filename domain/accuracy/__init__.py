"""Accuracy feedback: a customer confirms or disputes a calculation, once, and each verdict is
an observation of how accurately we measure.

One stream per customer. A current user of the customer (CUSTOMER_ADMIN, FINANCE or TECHNICAL,
in the role they hold now) or vendor staff (ADMIN) judge a period's current calculation: a
confirmation scores 100.00; a dispute gives the expected value of every metric, or the
expected result, and a sealed reason, and scores like the setup wizard's accuracy test
(`domain.setup.measurement_accuracy`). The customer's measured accuracy is the mean of the
setup test's accuracy and every score since that test (`measured_accuracy`, also used by the
go-live check). A dispute whose score, or the measured accuracy after it, falls below the
customer's threshold says it raises an alert (warning or critical). The rules are listed in
`domain.accuracy.decider`.
"""

from __future__ import annotations

from domain.accuracy.commands import (
    COMMAND_DECODER,
    AccuracyContext,
    Command,
    ConfirmCalculation,
    DisputeCalculation,
    ExpectedValue,
    JudgedCalculation,
)
from domain.accuracy.decider import (
    CONFIRMED_SCORE,
    MAX_TEXT_LENGTH,
    MIN_ACCURACY_THRESHOLD,
    decide,
    evolve,
)
from domain.accuracy.errors import (
    AccuracyError,
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
    EVENT_DECODER,
    AlertSeverity,
    CalculationConfirmed,
    CalculationDisputed,
    Event,
    MetricComparison,
    Verdict,
)
from domain.accuracy.state import AccuracyState, given_at, initial_state, measured_accuracy

__all__ = [
    "COMMAND_DECODER",
    "CONFIRMED_SCORE",
    "EVENT_DECODER",
    "MAX_TEXT_LENGTH",
    "MIN_ACCURACY_THRESHOLD",
    "AccuracyContext",
    "AccuracyError",
    "AccuracyState",
    "AlertSeverity",
    "CalculationConfirmed",
    "CalculationDisputed",
    "CalculationSupersededError",
    "Command",
    "ConfirmCalculation",
    "CustomerMismatchError",
    "DisputeCalculation",
    "Event",
    "ExpectedValue",
    "InvalidAccuracyContextError",
    "InvalidExpectationError",
    "InvalidFeedbackFieldError",
    "JudgedCalculation",
    "MetricComparison",
    "NotAuthorizedError",
    "NothingDisputedError",
    "SetupNotVerifiedError",
    "UnknownCalculationError",
    "Verdict",
    "VerdictAlreadyGivenError",
    "decide",
    "evolve",
    "given_at",
    "initial_state",
    "measured_accuracy",
]
