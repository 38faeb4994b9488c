"""The roles a person can hold, as the architecture guide's RBAC model names them.

Shared by every aggregate that checks who may act. The values are the stored text, so they
never change even if a member is renamed.
"""

from __future__ import annotations

from enum import StrEnum


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
