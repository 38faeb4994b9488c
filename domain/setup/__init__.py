"""The setup wizard: five steps, in order, each completed with its evidence and recorded as a
receipt in the ledger.

1. API integration: the credentials' fingerprint and reference (never the secret), validated.
2. Data source: a supported kind of source, and a passed connection test.
3. Metrics config: source fields mapped to unique metric names.
4. Baseline: every mapped metric's starting value over a stated period.
5. Testing: our measurements against the customer's expected values, giving the accuracy.

A step can be redone once the steps before it are complete; the completed steps after it are
then invalidated, and the ledger says which and why. Skipping ahead is refused with a message
naming the first missing step. The rules and choices are in `domain.setup.decider`.
"""

from __future__ import annotations

from domain.setup.commands import (
    COMMAND_DECODER,
    BaselineValue,
    Command,
    CompleteApiIntegration,
    ConnectDataSource,
    EstablishBaseline,
    FieldMapping,
    MapMetrics,
    MeasuredValue,
    VerifyAccuracy,
)
from domain.setup.decider import (
    ACCURACY_PLACES,
    MAX_METRICS,
    MAX_TEXT_LENGTH,
    SOURCE_KINDS,
    decide,
    evolve,
    measurement_accuracy,
)
from domain.setup.errors import (
    ConnectionTestFailedError,
    CredentialsNotValidatedError,
    InvalidEvidenceError,
    SetupError,
    StepOutOfOrderError,
)
from domain.setup.events import (
    EVENT_DECODER,
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
from domain.setup.state import SetupState, initial_state

__all__ = [
    "ACCURACY_PLACES",
    "COMMAND_DECODER",
    "EVENT_DECODER",
    "MAX_METRICS",
    "MAX_TEXT_LENGTH",
    "SOURCE_KINDS",
    "STEPS",
    "STEP_TITLES",
    "AccuracyVerified",
    "ApiIntegrationCompleted",
    "BaselineEstablished",
    "BaselineValue",
    "Command",
    "CompleteApiIntegration",
    "ConnectDataSource",
    "ConnectionTestFailedError",
    "CredentialsNotValidatedError",
    "DataSourceConnected",
    "EstablishBaseline",
    "Event",
    "FieldMapping",
    "InvalidEvidenceError",
    "LaterStepsInvalidated",
    "MapMetrics",
    "MeasuredValue",
    "MetricBaseline",
    "MetricMapping",
    "MetricMeasurement",
    "MetricsMapped",
    "SetupError",
    "SetupState",
    "Step",
    "StepOutOfOrderError",
    "VerifyAccuracy",
    "decide",
    "evolve",
    "initial_state",
    "measurement_accuracy",
]
