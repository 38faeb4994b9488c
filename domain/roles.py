"""The roles a person can hold, as the architecture guide's RBAC model names them.

Shared by every aggregate that checks who may act. The values are the stored text, so they
never change even if a member is renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import msgspec


class Role(StrEnum):
    """What a user may do; an API key's caller and every command's actor carry one."""

    ADMIN = "ADMIN"
    """Vendor staff: may act on every customer, and is the only role that can suspend one."""
    CUSTOMER_ADMIN = "CUSTOMER_ADMIN"
    """Administers one customer's account: its users and API keys."""
    FINANCE = "FINANCE"
    """Reviews and approves the financial side of value definitions."""
    TECHNICAL = "TECHNICAL"
    """Sets up integrations and data sources."""


class CustomerTeam(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's current users and their roles, read by the command layer from the customer's
    stream for each command.

    Deciders use it to check that an actor still holds the role their token claims on this
    customer, so a token issued before a demotion or a revocation no longer works.
    """

    customer_id: str
    user_roles: Mapping[str, Role]
    """Current user id -> current role; revoked users are absent."""
