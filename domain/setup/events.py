"""What the ledger says about a customer's setup: one event per completed step, and one when a
redone step invalidates the steps built on it.

Every event is a receipt: it holds the step's evidence, when the step was done and by whom.
Tags are explicit and stable (never module paths), so a class can be renamed without
changing stored bytes; new fields always get defaults, and `schema` (last, defaulted) numbers
the shape for upcasters. Decimals are stored as plain decimal strings, never floats. The
credential's secret never appears: only its SHA-256 fingerprint and a reference to where it is
kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, TypeAlias

import msgspec

Step: TypeAlias = Literal["api_integration", "data_source", "metrics_config", "baseline", "testing"]

STEPS: Final[tuple[Step, ...]] = (
    "api_integration",
    "data_source",
    "metrics_config",
    "baseline",
    "testing",
)
"""The wizard's steps, in the only order they can be completed."""

STEP_TITLES: Final[dict[Step, str]] = {
    "api_integration": "step 1 (API integration)",
    "data_source": "step 2 (data source)",
    "metrics_config": "step 3 (metrics config)",
    "baseline": "step 4 (baseline)",
    "testing": "step 5 (testing)",
}
"""How messages name each step to a person."""


class ApiIntegrationCompleted(
    msgspec.Struct, frozen=True, kw_only=True, tag="ApiIntegrationCompleted", tag_field="type"
):
    """Step 1: the customer's API credentials were recorded and validated.

    `credential_fingerprint` is the SHA-256 of the secret (64 lowercase hex digits), so a later
    rotation can be told apart; `credential_reference` says where the secret is kept.
    """

    credential_fingerprint: str
    credential_reference: str
    validation_detail: str
    completed_at: datetime
    by: str
    schema: int = 1


class DataSourceConnected(
    msgspec.Struct, frozen=True, kw_only=True, tag="DataSourceConnected", tag_field="type"
):
    """Step 2: a supported data source was chosen and its connection test passed."""

    source_kind: str
    connection_test_detail: str
    connected_at: datetime
    by: str
    schema: int = 1


class MetricMapping(msgspec.Struct, frozen=True, kw_only=True):
    """One metric and the source field it is read from."""

    metric: str
    source_field: str


class MetricsMapped(
    msgspec.Struct, frozen=True, kw_only=True, tag="MetricsMapped", tag_field="type"
):
    """Step 3: the source's fields were mapped to metric names (unique, in submitted order)."""

    mappings: tuple[MetricMapping, ...]
    mapped_at: datetime
    by: str
    schema: int = 1


class MetricBaseline(msgspec.Struct, frozen=True, kw_only=True):
    """One metric's starting value over the baseline period, as a plain decimal string."""

    metric: str
    value: str


class BaselineEstablished(
    msgspec.Struct, frozen=True, kw_only=True, tag="BaselineEstablished", tag_field="type"
):
    """Step 4: every mapped metric's starting value over one stated period.

    `baselines` follows the order of the mapped metrics; the period is half-open,
    [period_start, period_end).
    """

    baselines: tuple[MetricBaseline, ...]
    period_start: datetime
    period_end: datetime
    established_at: datetime
    by: str
    schema: int = 1


class MetricMeasurement(msgspec.Struct, frozen=True, kw_only=True):
    """One metric as we measured it and as the customer expected it, as decimal strings."""

    metric: str
    measured: str
    expected: str


class AccuracyVerified(
    msgspec.Struct, frozen=True, kw_only=True, tag="AccuracyVerified", tag_field="type"
):
    """Step 5: our measurements against the customer's expected values, and the accuracy.

    `accuracy` is a percentage with 2 decimal places (for example ``"97.50"``), computed by
    `domain.setup.decider.measurement_accuracy`; `results` follows the order of
    the mapped metrics.
    """

    results: tuple[MetricMeasurement, ...]
    accuracy: str
    verified_at: datetime
    by: str
    schema: int = 1


class LaterStepsInvalidated(
    msgspec.Struct, frozen=True, kw_only=True, tag="LaterStepsInvalidated", tag_field="type"
):
    """A step was redone, so the completed steps after it no longer stand and must be redone.

    Recorded just before the redone step's own event, so that after every event the completed
    steps are a prefix of `STEPS`. `steps` lists only steps that were complete, in order.
    """

    redone_step: Step
    steps: tuple[Step, ...]
    reason: str
    invalidated_at: datetime
    by: str
    schema: int = 1


Event: TypeAlias = (
    ApiIntegrationCompleted
    | DataSourceConnected
    | MetricsMapped
    | BaselineEstablished
    | AccuracyVerified
    | LaterStepsInvalidated
)

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Reads any setup event from its JSON, dispatching on the ``type`` tag."""
