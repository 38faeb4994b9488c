"""Why the billing switch refused a command; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError
from domain.golive.events import PreflightCheck


class GoLiveError(DomainError):
    """Any refusal by the billing switch; the subclasses let callers tell them apart."""


class InvalidGoLiveFieldError(GoLiveError):
    """A field of the command is blank, malformed or dated before the billing history."""


class CustomerMismatchError(GoLiveError):
    """The command, the stream and the facts it was decided against are not all for the same
    customer."""


class NotAuthorizedError(GoLiveError):
    """The actor's role does not allow the command on this customer."""


class AlreadyLiveError(GoLiveError):
    """Going live reached a customer that is live already."""


class NotLiveError(GoLiveError):
    """Pausing or resuming reached a customer that has not gone live."""


class BillingAlreadyPausedError(GoLiveError):
    """Pausing reached billing that is paused already."""


class BillingNotPausedError(GoLiveError):
    """Resuming reached billing that is running."""


class InvalidThresholdError(GoLiveError):
    """The accuracy threshold is not a percentage from 85 to 100 with at most 2 decimals."""


class ThresholdUnchangedError(GoLiveError):
    """The accuracy threshold was set to the value it already has."""


class PreflightFailedError(GoLiveError):
    """At least one pre-flight check failed, so the customer did not go live and nothing was
    recorded. `checks` holds every check's result (passed ones too), in evaluation order."""

    def __init__(self, message: str, checks: tuple[PreflightCheck, ...]) -> None:
        super().__init__(message)
        self.checks = checks

    @property
    def failed(self) -> tuple[PreflightCheck, ...]:
        """The checks that failed, in evaluation order."""
        return tuple(check for check in self.checks if not check.passed)
