"""Why a value definition refused a command; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError


class DefinitionError(DomainError):
    """Any refusal by a value definition; the subclasses let callers tell them apart."""


class InvalidDefinitionFieldError(DefinitionError):
    """A field of the command is blank, too long or malformed (ids, name, metrics, reason)."""


class DefinitionMismatchError(DefinitionError):
    """The command names another customer or definition than the one it was decided against."""


class DefinitionAlreadyExistsError(DefinitionError):
    """A first draft reached a definition that already has versions."""


class DefinitionNotFoundError(DefinitionError):
    """A command other than the first draft reached a definition that does not exist yet."""


class UnknownVersionError(DefinitionError):
    """The definition has no version with the number the command names."""


class NotAuthorizedError(DefinitionError):
    """The actor's role, or their standing on the customer, does not allow the command."""


class PricingChangeNotAllowedError(DefinitionError):
    """A revision changes the pricing terms, which only FINANCE may do."""


class UnknownMetricError(DefinitionError):
    """A metric of the definition is not one the customer has configured."""


class InvalidFormulaError(DefinitionError):
    """The formula does not parse or does not fit the definition's metrics and baselines.

    Wraps `domain.formula.FormulaError`, keeping its message and its 1-based `position`.
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


class InvalidPricingTermsError(DefinitionError):
    """The share, floor or cap is malformed or out of range."""


class CurrencyMismatchError(DefinitionError):
    """The pricing terms are in another currency than the customer is billed in."""


class StaleVersionError(DefinitionError):
    """The command acts on a version that is no longer the latest one."""


class VersionNotDraftError(DefinitionError):
    """Submission of a version that is under approval or already approved."""


class InvalidApproverError(DefinitionError):
    """A named approver is not a current user of the customer with the stage's role."""


class StageNotCurrentError(DefinitionError):
    """Approval or a request for changes on a stage that is not the running approval's current
    stage: out of order, already passed, on an old or voided version, or with none running."""


class NotAssignedApproverError(DefinitionError):
    """The actor is not the current stage's assigned approver, or no longer holds its role."""
