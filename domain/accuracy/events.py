"""What the ledger says about a customer's feedback on calculations: one verdict each.

One stream per customer. Each verdict is an observation of our measurement's accuracy: it
records its score (a percentage with 2 places), the setup test it is measured against, and the
customer's measured accuracy right after it, so an auditor can recompute every figure from
the stream alone (the rules are in `domain.accuracy.state.measured_accuracy`). A dispute also
records whether it raises an alert and how severe, for the command layer to raise it.

Tags are explicit and stable; new fields always get defaults; `schema` is last. Decimals are
plain decimal strings. The dispute's reason is sealed (encrypted) free text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, TypeAlias

import msgspec

from domain.roles import Role

AlertSeverity: TypeAlias = Literal["warning", "critical"]
"""``warning``: the dispute's score is below the threshold; ``critical``: the measured accuracy
after it is below the threshold (critical wins when both hold)."""


class CalculationConfirmed(
    msgspec.Struct, frozen=True, kw_only=True, tag="CalculationConfirmed", tag_field="type"
):
    """The customer confirmed a calculation: an observation scoring ``"100.00"``."""

    customer_id: str
    calculation_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    result: str
    score: str
    setup_accuracy: str
    setup_verified_at: datetime
    measured_accuracy: str
    confirmed_at: datetime
    confirmed_by: str
    confirmed_by_role: Role
    schema: int = 1


class MetricComparison(msgspec.Struct, frozen=True, kw_only=True):
    """One metric as the calculation measured it and as the customer expected it."""

    metric: str
    measured: str
    expected: str


class CalculationDisputed(
    msgspec.Struct, frozen=True, kw_only=True, tag="CalculationDisputed", tag_field="type"
):
    """The customer disputed a calculation, saying what they expected instead.

    Either `comparisons` (every metric, in the receipt's order) or `expected_result` is given,
    never both. `score` is `domain.setup.measurement_accuracy` of those (measured, expected)
    pairs; `raises_alert` and `alert_severity` tell the command layer to raise an alert.
    """

    customer_id: str
    calculation_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    result: str
    comparisons: tuple[MetricComparison, ...] = ()
    expected_result: str | None = None
    reason_sealed: str
    score: str
    setup_accuracy: str
    setup_verified_at: datetime
    measured_accuracy: str
    accuracy_threshold: str
    raises_alert: bool
    alert_severity: AlertSeverity | None = None
    disputed_at: datetime
    disputed_by: str
    disputed_by_role: Role
    schema: int = 1


Event: TypeAlias = CalculationConfirmed | CalculationDisputed

Verdict: TypeAlias = CalculationConfirmed | CalculationDisputed
"""A customer's verdict on one calculation; every event of the stream is one."""

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes either accuracy event from JSON by its ``type`` tag."""
