"""What a person asks of the setup wizard: complete (or redo) one step, with its evidence.

The application layer stamps every command with `at` (when, timezone-aware) and `by` (the
user's id); the domain never reads a clock. Checks that involve I/O (validating credentials
against the provider, testing the connection, measuring) are done by the application layer
beforehand, and their results arrive here as evidence. The secret itself never reaches the
domain: only its fingerprint and a reference to where it is kept.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final, TypeAlias

import msgspec


class CompleteApiIntegration(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="CompleteApiIntegration",
    tag_field="command",
):
    """Step 1: record the customer's API credentials and the result of validating them.

    `credential_fingerprint` is the SHA-256 of the secret as 64 lowercase hex digits;
    `credential_reference` says where the secret is kept, as ``scheme://location`` (for
    example ``vault://kv/acme/api-key``).
    """

    credential_fingerprint: str
    credential_reference: str
    validation_passed: bool
    validation_detail: str = ""
    at: datetime
    by: str


class ConnectDataSource(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ConnectDataSource",
    tag_field="command",
):
    """Step 2: choose the data source and record its connection test."""

    source_kind: str
    connection_test_passed: bool
    connection_test_detail: str = ""
    at: datetime
    by: str


class FieldMapping(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Read `metric` from the source's `source_field`."""

    source_field: str
    metric: str


class MapMetrics(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="MapMetrics",
    tag_field="command",
):
    """Step 3: map the source's fields to metric names."""

    mappings: tuple[FieldMapping, ...]
    at: datetime
    by: str


class BaselineValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One mapped metric's starting value over the baseline period."""

    metric: str
    value: Decimal


class EstablishBaseline(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="EstablishBaseline",
    tag_field="command",
):
    """Step 4: the starting value of every mapped metric over [period_start, period_end)."""

    baselines: tuple[BaselineValue, ...]
    period_start: datetime
    period_end: datetime
    at: datetime
    by: str


class MeasuredValue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One mapped metric as we measured it, and as the customer expected it to be."""

    metric: str
    measured: Decimal
    expected: Decimal


class VerifyAccuracy(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="VerifyAccuracy",
    tag_field="command",
):
    """Step 5: compare our measurement of every mapped metric with the customer's figure."""

    measurements: tuple[MeasuredValue, ...]
    at: datetime
    by: str


Command: TypeAlias = (
    CompleteApiIntegration | ConnectDataSource | MapMetrics | EstablishBaseline | VerifyAccuracy
)

COMMAND_DECODER: Final = msgspec.json.Decoder(Command)
"""Reads any setup command from its JSON, dispatching on the ``command`` tag."""
