"""Why a customer's alerts refused a command; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError
from domain.alerts.state import Alert


class AlertError(DomainError):
    """Any refusal about alerts; the subclasses let callers tell them apart."""


class InvalidAlertFieldError(AlertError):
    """A field of the command is blank, malformed, too long or dated before the alert's
    last change."""


class CustomerMismatchError(AlertError):
    """The command, the stream and the team it was decided against are not all for the same
    customer."""


class NotAuthorizedError(AlertError):
    """The actor's role does not allow the command on this customer."""


class DuplicateAlertError(AlertError):
    """The alert was raised already with exactly this content: most likely a retry of the same
    command after a crash, which the command layer can treat as done. `alert` is the alert as
    it stands now."""

    def __init__(self, message: str, alert: Alert) -> None:
        super().__init__(message)
        self.alert = alert


class AlertIdTakenError(AlertError):
    """The alert id belongs to an alert with other content; ids are never reused."""


class UnknownAlertError(AlertError):
    """No alert of this customer has the alert id."""


class AlertAlreadyAcknowledgedError(AlertError):
    """Acknowledging an alert that was acknowledged already."""


class AlertAlreadyResolvedError(AlertError):
    """Acknowledging or resolving an alert that is resolved; resolved is final."""
