"""What a customer can say about a calculation, and the facts the command layer brings.

A customer's user confirms a calculation or disputes it, with the value they expected for
every metric or for the result, and a reason. The reason is free text written by a person, so
it arrives already encrypted by the command layer (`reason_sealed`) and is never read here.
Every command is stamped by the application layer with when (`at`, timezone-aware), who
(`by`) and in which role (`by_role`, from the caller's token). Values are plain decimal
strings, never floats.

`AccuracyContext` holds what deciding needs from other streams, loaded fresh by the command
layer: the calculation being judged, the customer's current users, the setup wizard's latest
accuracy test and the customer's accuracy threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class ConfirmCalculation(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ConfirmCalculation",
    tag_field="command",
):
    """Say that calculation `calculation_id` is right."""

    customer_id: str
    calculation_id: str
    at: datetime
    by: str
    by_role: Role


class ExpectedValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The value the customer expected for one metric, as a plain decimal string."""

    metric: str
    expected: str


class DisputeCalculation(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="DisputeCalculation",
    tag_field="command",
):
    """Say that calculation `calculation_id` is wrong, and what was expected instead.

    Give either `expected_values`, one for EVERY metric of the calculation (the ones that were
    right with the calculation's own value), or `expected_result`, the formula's result the
    customer expected; not both.
    """

    customer_id: str
    calculation_id: str
    expected_values: tuple[ExpectedValue, ...] = ()
    expected_result: str | None = None
    reason_sealed: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = ConfirmCalculation | DisputeCalculation

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads either command from its JSON, dispatching on the ``command`` tag."""


class JudgedCalculation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The calculation being judged, from its receipt in the calculation stream.

    `result` is the formula's result and `inputs` the value of each metric (in the receipt's
    order), as plain decimal strings. `superseded_by` is the id of the calculation that
    superseded it, or None while it is the period's current calculation.
    """

    calculation_id: str
    definition_id: str
    period_start: datetime
    period_end: datetime
    result: str
    inputs: Mapping[str, str]
    superseded_by: str | None = None


class AccuracyContext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Facts from other streams that deciding a verdict needs, loaded fresh.

    - `calculation`: the calculation the command names, or None if the customer has none such.
    - `users`: the customer's current users and their roles (from the customer account).
    - `setup_accuracy`, `setup_verified_at`: the accuracy (percentage, 2 places) of the setup
      wizard's latest accuracy test and when it was verified; None while step 5 is not
      complete.
    - `accuracy_threshold`: the customer's accuracy threshold, a percentage from 85 to 100.
    """

    calculation: JudgedCalculation | None
    users: Mapping[str, Role] = msgspec.field(default_factory=dict)
    setup_accuracy: str | None
    setup_verified_at: datetime | None
    accuracy_threshold: str
