"""What can be asked of a period's value calculation, and the facts the command layer brings.

A command names the stream it is for: the customer, the value definition and the period,
half-open [period_start, period_end). The application layer stamps when (`at`,
timezone-aware), who (`by`, a user id) and in which role (`by_role`, from the caller's token),
and gives the calculation its id, so deciding never reads a clock or draws an id.

The metric values arrive as the command layer read them from the customer's data sources:
each with where it came from (`source`) and the SHA-256 of the raw source data it was read
from (`fingerprint`), so a receipt can be checked against the data. Values are plain decimal
strings (``"125000.50"``), never floats.

`CalculationContext` holds what deciding needs from other streams, loaded fresh by the
command layer: the definition version in force, the setup wizard's baselines and whether
billing was active for the whole period.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class MetricInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One metric's value for the period, where it was read, and the fingerprint of that data.

    `value` is a plain decimal string; `source` names the source and field (for example
    ``salesforce:opportunity.amount``); `fingerprint` is the SHA-256 of the raw source data,
    as 64 lowercase hex digits.
    """

    metric: str
    value: str
    source: str
    fingerprint: str


class CalculateValue(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="CalculateValue",
    tag_field="command",
):
    """Calculate the definition's value for a period that has none yet, from `inputs`."""

    customer_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    inputs: tuple[MetricInput, ...]
    at: datetime
    by: str
    by_role: Role


class RecalculateValue(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RecalculateValue",
    tag_field="command",
):
    """Calculate a period again from new `inputs`, superseding its current calculation.

    `reason_sealed` says why (corrected source data, a dispute upheld, ...) and is kept on the
    receipt. It is free text written by a person, so it arrives sealed (encrypted) by the
    command layer, which also bounds its length; the domain only checks it is not blank.
    """

    customer_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    calculation_id: str
    inputs: tuple[MetricInput, ...]
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = CalculateValue | RecalculateValue

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads either command from its JSON, dispatching on the ``command`` tag."""


class DefinitionInForce(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The version of the value definition in force for the period, with its pricing terms.

    `formula` is the formula's text as approved; `metrics` the metric names it is defined over
    (each needs an input); `share_percent` a decimal string percentage (``"35.5"``);
    `floor_minor_units` and `cap_minor_units` whole minor units of `currency` per period, or
    None.
    """

    definition_id: str
    version: int
    content_hash: str
    formula: str
    metrics: tuple[str, ...]
    share_percent: str
    floor_minor_units: int | None = None
    cap_minor_units: int | None = None
    currency: str


class CalculationContext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Facts from other streams that deciding a calculation needs, loaded fresh.

    - `definition`: the definition version in force, or None when no version is.
    - `baselines`: the setup wizard's baseline per metric, as plain decimal strings.
    - `billing_active`: whether value-based billing was active for the WHOLE period (the
      command layer asks the go-live aggregate); when not, `billing_inactive_reason` says why
      (``"before go-live"``, ``"billing paused"``) and the receipt bills nothing.
    """

    definition: DefinitionInForce | None
    baselines: Mapping[str, str] = msgspec.field(default_factory=dict)
    billing_active: bool
    billing_inactive_reason: str = ""
