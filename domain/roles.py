"""The roles a person can hold, as the architecture guide's RBAC model names them.

Shared by every aggregate that checks who may act. The values are the stored text, so they
never change even if a member is renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

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


API_KEY_ACTOR_PREFIX: Final = "api-key:"
"""A machine client acts as user ``api-key:<key id>``, in the role its key was issued with.
No person can be invited under such an id, and no key can be named an approver: sign-offs
are given by people."""


def api_key_actor(key_id: str) -> str:
    """The user id an API key acts as in commands and receipts."""
    return f"{API_KEY_ACTOR_PREFIX}{key_id}"


def is_api_key_actor(user_id: str) -> bool:
    """Whether `user_id` names an API key rather than a person."""
    return user_id.startswith(API_KEY_ACTOR_PREFIX)


class CustomerTeam(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's current users and their roles, read by the command layer from the customer's
    stream for each command.

    Deciders use it to check that an actor still holds the role their token claims on this
    customer, so a token issued before a demotion or a revocation no longer works.
    """

    customer_id: str
    user_roles: Mapping[str, Role]
    """Current user id -> current role; revoked users are absent. Unrevoked API keys are
    here too, as ``api-key:<key id>`` with the role they were issued with."""
