"""Value definitions: what the product is worth to a customer, how it is billed, and who agreed.

A definition (one stream per definition of one customer) has numbered versions; editing makes
a new version, never changes one. A version's content is a name, 1 to 50 of the customer's
configured metrics with their units, a value formula over those metrics and their baselines
(`domain.formula`), and pricing terms: a share of the value as a decimal percentage, an
optional floor and cap per period in whole minor units, in the customer's billing currency.
Each version's content is hashed (SHA-256 of its RFC 8785 canonical JSON, `content_hash`).

A version is approved in three stages, each by the approver assigned when it was submitted:
Finance review (a FINANCE user), Technical review (a TECHNICAL user), then the Final executive
sign-off (a CUSTOMER_ADMIN). An approver may instead request changes, with a sealed reason, which
sends the version back to draft; it can then be resubmitted as it is or revised. A new version
voids a running approval. The sign-off records the approval receipt, naming the content hash,
and puts the version in force until a later version is approved. Only FINANCE may change the
pricing terms of an existing definition. The rules are listed in `domain.definition.decider`.
"""

from __future__ import annotations

from domain.definition.commands import (
    COMMAND_DECODER,
    ApproveStage,
    Command,
    DraftDefinition,
    MetricInput,
    PricingInput,
    RequestChanges,
    ReviseDefinition,
    SubmitForApproval,
)
from domain.definition.decider import (
    DRAFTER_ROLES,
    MAX_METRICS,
    MAX_MINOR_UNITS,
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    MAX_REASON_SEALED_LENGTH,
    MAX_UNIT_LENGTH,
    SHARE_PLACES,
    DefinitionContext,
    content_hash,
    decide,
    evolve,
)
from domain.definition.errors import (
    CurrencyMismatchError,
    DefinitionAlreadyExistsError,
    DefinitionError,
    DefinitionMismatchError,
    DefinitionNotFoundError,
    InvalidApproverError,
    InvalidDefinitionFieldError,
    InvalidFormulaError,
    InvalidPricingTermsError,
    NotAssignedApproverError,
    NotAuthorizedError,
    PricingChangeNotAllowedError,
    StageNotCurrentError,
    StaleVersionError,
    UnknownMetricError,
    UnknownVersionError,
    VersionNotDraftError,
)
from domain.definition.events import (
    EVENT_DECODER,
    STAGE_ROLES,
    STAGE_TITLES,
    STAGES,
    ApprovalStage,
    ApprovalVoided,
    ChangesRequested,
    DefinitionApproved,
    DefinitionContent,
    DefinitionDrafted,
    DefinitionRevised,
    DefinitionSubmitted,
    Event,
    MetricDefinition,
    PricingTerms,
    StageApproved,
)
from domain.definition.state import (
    Approvers,
    ChangeRequest,
    DefinitionState,
    DefinitionVersion,
    StageSignOff,
    VersionStatus,
    initial_state,
)
from domain.roles import Role

__all__ = [
    "COMMAND_DECODER",
    "DRAFTER_ROLES",
    "EVENT_DECODER",
    "MAX_METRICS",
    "MAX_MINOR_UNITS",
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "MAX_REASON_SEALED_LENGTH",
    "MAX_UNIT_LENGTH",
    "SHARE_PLACES",
    "STAGES",
    "STAGE_ROLES",
    "STAGE_TITLES",
    "ApprovalStage",
    "ApprovalVoided",
    "ApproveStage",
    "Approvers",
    "ChangeRequest",
    "ChangesRequested",
    "Command",
    "CurrencyMismatchError",
    "DefinitionAlreadyExistsError",
    "DefinitionApproved",
    "DefinitionContent",
    "DefinitionContext",
    "DefinitionDrafted",
    "DefinitionError",
    "DefinitionMismatchError",
    "DefinitionNotFoundError",
    "DefinitionRevised",
    "DefinitionState",
    "DefinitionSubmitted",
    "DefinitionVersion",
    "DraftDefinition",
    "Event",
    "InvalidApproverError",
    "InvalidDefinitionFieldError",
    "InvalidFormulaError",
    "InvalidPricingTermsError",
    "MetricDefinition",
    "MetricInput",
    "NotAssignedApproverError",
    "NotAuthorizedError",
    "PricingChangeNotAllowedError",
    "PricingInput",
    "PricingTerms",
    "RequestChanges",
    "ReviseDefinition",
    "Role",
    "StageApproved",
    "StageNotCurrentError",
    "StageSignOff",
    "StaleVersionError",
    "SubmitForApproval",
    "UnknownMetricError",
    "UnknownVersionError",
    "VersionNotDraftError",
    "VersionStatus",
    "content_hash",
    "decide",
    "evolve",
    "initial_state",
]
