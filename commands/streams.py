"""Which stream holds which aggregate instance.

Stream ids are global and each is owned by one tenant (the customer), so every id starts with
the tenant: ``acme:customer``, ``acme:definition:value``. The tenant's hash chain runs through
all its streams. These names are part of the ledger's public contract (docs/events.md).
"""

from __future__ import annotations

import re
from typing import Final

from eventstore.store import TENANT_FORMAT

_PART: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


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
            f"{kind} {value!r} must be 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def customer_stream(tenant: str) -> str:
    """The customer account: users, roles, API keys, suspension."""
    return f"{tenant}:customer"


def setup_stream(tenant: str) -> str:
    """The five-step setup wizard."""
    return f"{tenant}:setup"
