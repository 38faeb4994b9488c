"""Value calculations: what a value definition is worth to the customer in one period, as a
receipt.

One stream per (customer, value definition, period). Vendor staff (ADMIN, or the scheduled
job acting as ADMIN) calculate a period that has ended from its inputs: every metric of the
definition's version in force, each with its source and the SHA-256 of the raw data. The
receipt (`ValueCalculated`) holds the inputs, the baselines the formula read, the definition
version (id, version, content hash, formula text), the formula's result and, if billing was
active for the whole period, the billable amount (share of value, rounded once half-even to
minor units, negative billing 0, then floor and cap: `domain.money`); otherwise it bills
nothing and says why.

Recalculating is a new receipt (`ValueRecalculated`) that names the calculation it supersedes
and why; nothing is overwritten, and the latest receipt of the stream is the one current
calculation. The rules are listed in `domain.calculation.decider`.
"""

from __future__ import annotations

from domain.calculation.commands import (
    COMMAND_DECODER,
    CalculateValue,
    CalculationContext,
    Command,
    DefinitionInForce,
    MetricInput,
    RecalculateValue,
)
from domain.calculation.decider import (
    DEFAULT_NOT_BILLABLE_REASON,
    MAX_TEXT_LENGTH,
    decide,
    evolve,
)
from domain.calculation.errors import (
    AmountTooLargeError,
    CalculationError,
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
    EVENT_DECODER,
    BaselineUsed,
    Billing,
    Event,
    MetricReading,
    Receipt,
    ValueCalculated,
    ValueRecalculated,
)
from domain.calculation.state import CalculationState, initial_state

__all__ = [
    "COMMAND_DECODER",
    "DEFAULT_NOT_BILLABLE_REASON",
    "EVENT_DECODER",
    "MAX_TEXT_LENGTH",
    "AmountTooLargeError",
    "BaselineUsed",
    "Billing",
    "CalculateValue",
    "CalculationContext",
    "CalculationError",
    "CalculationMismatchError",
    "CalculationState",
    "Command",
    "DefinitionInForce",
    "DefinitionMismatchError",
    "DuplicateCalculationIdError",
    "Event",
    "FormulaFailedError",
    "InvalidCalculationFieldError",
    "InvalidDefinitionTermsError",
    "InvalidInputError",
    "MetricInput",
    "MetricInputsError",
    "MetricReading",
    "MissingBaselineError",
    "NoDefinitionInForceError",
    "NotAuthorizedError",
    "PeriodAlreadyCalculatedError",
    "PeriodNotCalculatedError",
    "RecalculateValue",
    "Receipt",
    "ValueCalculated",
    "ValueRecalculated",
    "decide",
    "evolve",
    "initial_state",
]
