"""The go-live switch: a customer goes live on value-based billing once, then billing can be
paused and resumed, each time with a reason.

One stream per customer, its billing stream. Going live runs four pre-flight checks against
facts the command layer reads freshly from the event streams (a `GoLivePreflight`): the setup
is complete, an approved value definition is in force, the measured accuracy reaches the
customer's threshold (85.00% unless vendor staff set it higher, 100% at most), and no critical
alert is open. Every check is reported pass or fail with its reason. If all pass, `WentLive` is
the go-live receipt and billing runs from its `billing_starts_at`; if any fails, one
`PreflightFailedError` lists every failed check and nothing is recorded.

Going live, pausing and resuming are for ADMIN or a current CUSTOMER_ADMIN of the customer;
setting the threshold is for ADMIN alone. `GoLiveState.billing_active_at` answers whether
billing runs at any instant, past ones included. The rules are listed in `decider`.
"""

from __future__ import annotations

from domain.golive.commands import (
    COMMAND_DECODER,
    Command,
    GoLive,
    GoLivePreflight,
    OpenCriticalAlert,
    PauseBilling,
    ResumeBilling,
    SetAccuracyThreshold,
)
from domain.golive.decider import (
    MAX_LISTED_ALERTS,
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    THRESHOLD_PLACES,
    decide,
    evolve,
    preflight_checks,
)
from domain.golive.errors import (
    AlreadyLiveError,
    BillingAlreadyPausedError,
    BillingNotPausedError,
    CustomerMismatchError,
    GoLiveError,
    InvalidGoLiveFieldError,
    InvalidThresholdError,
    NotAuthorizedError,
    NotLiveError,
    PreflightFailedError,
    ThresholdUnchangedError,
)
from domain.golive.events import (
    EVENT_DECODER,
    PREFLIGHT_CHECKS,
    AccuracyThresholdSet,
    BillingPaused,
    BillingResumed,
    DefinitionInForce,
    Event,
    PreflightCheck,
    PreflightCheckId,
    WentLive,
)
from domain.golive.state import DEFAULT_THRESHOLD, BillingPause, GoLiveState, initial_state
from domain.roles import CustomerTeam, Role

__all__ = [
    "COMMAND_DECODER",
    "DEFAULT_THRESHOLD",
    "EVENT_DECODER",
    "MAX_LISTED_ALERTS",
    "MAX_THRESHOLD",
    "MIN_THRESHOLD",
    "PREFLIGHT_CHECKS",
    "THRESHOLD_PLACES",
    "AccuracyThresholdSet",
    "AlreadyLiveError",
    "BillingAlreadyPausedError",
    "BillingNotPausedError",
    "BillingPause",
    "BillingPaused",
    "BillingResumed",
    "Command",
    "CustomerMismatchError",
    "CustomerTeam",
    "DefinitionInForce",
    "Event",
    "GoLive",
    "GoLiveError",
    "GoLivePreflight",
    "GoLiveState",
    "InvalidGoLiveFieldError",
    "InvalidThresholdError",
    "NotAuthorizedError",
    "NotLiveError",
    "OpenCriticalAlert",
    "PauseBilling",
    "PreflightCheck",
    "PreflightCheckId",
    "PreflightFailedError",
    "ResumeBilling",
    "Role",
    "SetAccuracyThreshold",
    "ThresholdUnchangedError",
    "WentLive",
    "decide",
    "evolve",
    "initial_state",
    "preflight_checks",
]
