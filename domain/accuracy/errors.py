"""Why a verdict on a calculation was refused; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError


class AccuracyError(DomainError):
    """Any refusal of customer feedback; the subclasses let callers tell them apart."""


class InvalidFeedbackFieldError(AccuracyError):
    """A field of the command is blank or malformed."""


class NotAuthorizedError(AccuracyError):
    """The actor may not give feedback for this customer."""


class CustomerMismatchError(AccuracyError):
    """The command names another customer than the stream it was decided against."""


class UnknownCalculationError(AccuracyError):
    """The customer has no calculation with the command's id (or the context is of another)."""


class CalculationSupersededError(AccuracyError):
    """The calculation was superseded by a recalculation: judge the current one."""


class VerdictAlreadyGivenError(AccuracyError):
    """The calculation was already confirmed or disputed; it gets one verdict."""


class SetupNotVerifiedError(AccuracyError):
    """The setup wizard's accuracy test is not complete, so there is nothing to measure against."""


class InvalidAccuracyContextError(AccuracyError):
    """A fact from another stream cannot be used: a threshold or accuracy out of range, a
    malformed value on the calculation, a setup test dated after the verdict."""


class InvalidExpectationError(AccuracyError):
    """The dispute's expected values are missing, malformed or not one per metric."""


class NothingDisputedError(AccuracyError):
    """The dispute's expected values equal the calculation's: confirm it instead."""
