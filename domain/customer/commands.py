"""What can be asked of a customer account, as the command layer hands it over.

Every command carries the customer it is for, when it happens (`at`, timezone-aware), who asks
(`by`, a user id) and with which role (`by_role`, from the caller's verified token): the
application layer stamps them, so deciding never reads a clock or a session.

Fields ending in ``_sealed`` hold personal data (names, e-mail addresses, phone numbers) that
the command layer has already encrypted; the domain treats them as opaque text and never reads
or logs what is inside. An API key's secret never reaches the domain: the command layer makes
it, shows it to the caller once and passes on only its SHA-256 digest.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import msgspec

from domain.customer.events import BillingContact
from domain.roles import Role


class RegisterCustomer(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RegisterCustomer",
    tag_field="command",
):
    """Open an account for a new customer, billed in `currency` (ISO 4217, e.g. ``EUR``).

    `name` is the customer organisation's name, not personal data, so it is not sealed; the
    billing contact is a person, so all of its fields are.
    """

    customer_id: str
    name: str
    currency: str
    billing_contact: BillingContact
    at: datetime
    by: str
    by_role: Role


class ChangeBillingContact(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ChangeBillingContact",
    tag_field="command",
):
    """Replace the billing contact, whole: a contact given without a phone has none after."""

    customer_id: str
    billing_contact: BillingContact
    at: datetime
    by: str
    by_role: Role


class InviteUser(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="InviteUser",
    tag_field="command",
):
    """Give a person (`user_id`) a role on the customer; their name and e-mail are sealed."""

    customer_id: str
    user_id: str
    role: Role
    name_sealed: str
    email_sealed: str
    at: datetime
    by: str
    by_role: Role


class ChangeUserRole(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ChangeUserRole",
    tag_field="command",
):
    """Replace a user's role with `role`."""

    customer_id: str
    user_id: str
    role: Role
    at: datetime
    by: str
    by_role: Role


class RevokeUserAccess(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RevokeUserAccess",
    tag_field="command",
):
    """Take away a user's role, and with it all access to the customer."""

    customer_id: str
    user_id: str
    at: datetime
    by: str
    by_role: Role


class IssueApiKey(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="IssueApiKey",
    tag_field="command",
):
    """Record a new API key: its id and the SHA-256 hex digest of its secret, never the secret,
    and the role the machine client acts in (FINANCE or TECHNICAL)."""

    customer_id: str
    key_id: str
    secret_sha256: str
    role: Role
    label: str = ""
    at: datetime
    by: str
    by_role: Role


class RevokeApiKey(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="RevokeApiKey",
    tag_field="command",
):
    """Stop accepting the key with `key_id`."""

    customer_id: str
    key_id: str
    at: datetime
    by: str
    by_role: Role


class SuspendCustomer(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="SuspendCustomer",
    tag_field="command",
):
    """Freeze the account (vendor staff only), saying why for the audit trail."""

    customer_id: str
    reason: str
    at: datetime
    by: str
    by_role: Role


class ReactivateCustomer(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag="ReactivateCustomer",
    tag_field="command",
):
    """Lift a suspension (vendor staff only), saying why for the audit trail."""

    customer_id: str
    reason: str
    at: datetime
    by: str
    by_role: Role


Command: TypeAlias = (
    RegisterCustomer
    | ChangeBillingContact
    | InviteUser
    | ChangeUserRole
    | RevokeUserAccess
    | IssueApiKey
    | RevokeApiKey
    | SuspendCustomer
    | ReactivateCustomer
)
