"""Why a value calculation was refused; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError


class CalculationError(DomainError):
    """Any refusal by a period's calculation; the subclasses let callers tell them apart."""


class InvalidCalculationFieldError(CalculationError):
    """A field of the command is blank or malformed: an id, the stamp, the period, the
    reason."""


class NotAuthorizedError(CalculationError):
    """The actor's role may not calculate values."""


class CalculationMismatchError(CalculationError):
    """The command names another customer, definition or period than the stream it reached."""


class PeriodAlreadyCalculatedError(CalculationError):
    """A first calculation reached a period that has one: recalculate it instead."""


class PeriodNotCalculatedError(CalculationError):
    """A recalculation reached a period with no calculation to supersede."""


class DuplicateCalculationIdError(CalculationError):
    """The calculation id was already used in this period."""


class NoDefinitionInForceError(CalculationError):
    """No version of the value definition is in force for the period."""


class DefinitionMismatchError(CalculationError):
    """The definition version given as context is of another definition than the command's."""


class InvalidDefinitionTermsError(CalculationError):
    """The definition version in force has a formula or pricing terms that cannot be applied."""


class MetricInputsError(CalculationError):
    """The inputs do not give exactly one value per metric of the definition."""


class InvalidInputError(CalculationError):
    """An input's value, source or fingerprint is malformed."""


class MissingBaselineError(CalculationError):
    """The formula reads a baseline the setup wizard has not recorded (or one is malformed)."""


class FormulaFailedError(CalculationError):
    """The formula cannot be evaluated for these inputs (division by zero, too large, ...)."""


class AmountTooLargeError(CalculationError):
    """The billable amount is more minor units than the ledger can store."""
