"""What the ledger says about a period's value: calculation receipts, the first and the later.

One stream per (customer, value definition, period). Its first event is `ValueCalculated`; each
recalculation appends one `ValueRecalculated` naming the calculation it supersedes and why. So
the latest event of the stream IS the current calculation, and every earlier one is superseded:
nothing is overwritten, and there is never more than one current calculation per period.

Both events are complete receipts with the same fields: the inputs (value, source and data
fingerprint per metric), the baselines the formula read, the definition version (id, version,
content hash, formula text), the formula's result and what it bills. Tags are explicit and
stable; new fields always get defaults; `schema` is last. Decimals are plain decimal strings;
money is whole minor units (JSON integers) beside a decimal string in major units.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.money import Bound
from domain.roles import Role


class MetricReading(msgspec.Struct, frozen=True, kw_only=True):
    """One metric's value for the period (a plain decimal string), its source, and the SHA-256
    of the raw source data it was read from."""

    metric: str
    value: str
    source: str
    fingerprint: str


class BaselineUsed(msgspec.Struct, frozen=True, kw_only=True):
    """One baseline the formula read, from the setup wizard, as a plain decimal string."""

    metric: str
    value: str


class Billing(msgspec.Struct, frozen=True, kw_only=True):
    """What the period bills under the definition's pricing terms.

    The terms (`currency`, `share_percent`, `floor_minor_units`, `cap_minor_units`) are always
    recorded. When `billable` is true, `amount_minor_units` is the amount in whole minor units,
    `amount` the same in major units (``"3062.56"``), and `bound` says whether the floor or the
    cap set it (None when neither did). When `billable` is false, `not_billable_reason` says why
    (``"before go-live"``) and the three amount fields are None.
    """

    billable: bool
    not_billable_reason: str | None = None
    currency: str
    share_percent: str
    floor_minor_units: int | None = None
    cap_minor_units: int | None = None
    amount_minor_units: int | None = None
    amount: str | None = None
    bound: Bound | None = None


class ValueCalculated(
    msgspec.Struct, frozen=True, kw_only=True, tag="ValueCalculated", tag_field="type"
):
    """The period's first calculation receipt; it is the current calculation until superseded.

    `inputs` follows the order of the definition's metrics, `baselines` is sorted by metric;
    `result` is the formula's value with 12 decimal places, as `domain.formula.evaluate` gives.
    """

    customer_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    definition_version: int
    definition_content_hash: str
    formula: str
    inputs: tuple[MetricReading, ...]
    baselines: tuple[BaselineUsed, ...]
    result: str
    billing: Billing
    calculated_at: datetime
    calculated_by: str
    calculated_by_role: Role
    schema: int = 1


class ValueRecalculated(
    msgspec.Struct, frozen=True, kw_only=True, tag="ValueRecalculated", tag_field="type"
):
    """A new calculation receipt for the period, superseding the current one.

    The same fields as `ValueCalculated`, plus `supersedes` (the calculation id that stops
    being current) and `reason_sealed` (why the period was calculated again: a person's free
    text, sealed by the command layer).
    """

    customer_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    supersedes: str
    reason_sealed: str
    definition_version: int
    definition_content_hash: str
    formula: str
    inputs: tuple[MetricReading, ...]
    baselines: tuple[BaselineUsed, ...]
    result: str
    billing: Billing
    calculated_at: datetime
    calculated_by: str
    calculated_by_role: Role
    schema: int = 1


Event: TypeAlias = ValueCalculated | ValueRecalculated

Receipt: TypeAlias = ValueCalculated | ValueRecalculated
"""A calculation receipt; every event of the stream is one."""

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes either calculation event from JSON by its ``type`` tag."""
