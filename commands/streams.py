"""Which stream holds which aggregate instance.

Stream ids are global and each is owned by one tenant (the customer), so every id starts with
the tenant: ``acme:customer``, ``acme:definition:value``. The tenant's hash chain runs through
all its streams. These names are part of the ledger's public contract (docs/events.md). Ids
inside a name are at most 32 characters, so the longest name (a calculation's) stays within
the store's 128.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from eventstore.store import TENANT_FORMAT

_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


class StreamNameError(ValueError):
    """An id that cannot name a stream: the message says which and what is allowed."""


def tenant_of(customer_id: str) -> str:
    """The ledger tenant of a customer: its id, which must be a valid tenant name."""
    if not TENANT_FORMAT.match(customer_id):
        raise StreamNameError(
            f"customer id {customer_id!r} must be 1 to 63 lowercase letters, digits, '_' or "
            "'-', starting with a letter or digit"
        )
    return customer_id


def _part(kind: str, value: str) -> str:
    if not _PART.match(value):
        raise StreamNameError(
            f"{kind} {value!r} must be 1 to 32 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def customer_stream(tenant: str) -> str:
    """The customer account: users, roles, API keys, suspension."""
    return f"{tenant}:customer"


def setup_stream(tenant: str) -> str:
    """The five-step setup wizard."""
    return f"{tenant}:setup"


def definition_stream(tenant: str, definition_id: str) -> str:
    """One value definition: all its versions and their approvals."""
    return f"{definitions_prefix(tenant)}{_part('definition id', definition_id)}"


def definitions_prefix(tenant: str) -> str:
    """What every one of the tenant's definition streams starts with."""
    return f"{tenant}:definition:"


def billing_stream(tenant: str) -> str:
    """The go-live switch, billing pauses and the accuracy threshold."""
    return f"{tenant}:billing"


def alerts_stream(tenant: str) -> str:
    """All the customer's alerts, so go-live reads the open critical ones from one stream."""
    return f"{tenant}:alerts"


def calculation_stream(tenant: str, definition_id: str, period_start: datetime) -> str:
    """The calculations of one definition for the period starting at `period_start` (UTC)."""
    try:
        start = period_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    except OverflowError:  # such as 0001-01-01T00:00:00+01:00, before year 1 in UTC
        raise StreamNameError(
            f"period start {period_start.isoformat()} is not a time in UTC's years 1 to 9999"
        ) from None
    return f"{tenant}:calculation:{_part('definition id', definition_id)}:{start}"


def accuracy_stream(tenant: str) -> str:
    """The customer's confirmations and disputes of calculations."""
    return f"{tenant}:accuracy"


def ticket_stream(tenant: str, ticket_id: str) -> str:
    """One support ticket and its messages."""
    return f"{tenant}:ticket:{_part('ticket id', ticket_id)}"
