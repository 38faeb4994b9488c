"""What happened to a customer account, as it is kept in the ledger.

Tags are explicit and stable (never class or module names), so a class can be renamed without
touching stored bytes. Every event ends with `schema`; a field added later gets a default, and
a breaking change gets a new event type or an upcaster instead. `*_by` is the acting user's id
and `*_by_role` the role they acted in.

Fields ending in ``_sealed`` hold personal data already encrypted by the command layer: opaque
text here, so erasing a person means destroying their key, not rewriting the ledger. API keys
appear only as the SHA-256 hex digest of their secret.

`CustomerRegistered` is at schema 2: schema 1 stored the billing contact as three flat
``billing_contact_*_sealed`` fields, and `domain.customer.upcasters` reads those as the nested
`BillingContact` of schema 2 (the stored bytes stay as they were written).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, TypeAlias

import msgspec

from domain.roles import Role


class BillingContact(msgspec.Struct, frozen=True, kw_only=True):
    """The person the customer's invoices go to; every field is sealed personal data.

    Commands, events and the state share this one shape, so a contact is always taken and
    recorded whole: leaving out `phone_sealed` means the contact has no phone.
    """

    name_sealed: str
    email_sealed: str
    phone_sealed: str | None = None


class CustomerRegistered(
    msgspec.Struct, frozen=True, kw_only=True, tag="CustomerRegistered", tag_field="type"
):
    """A customer account was opened.

    Schema 2 nests the billing contact in `billing_contact`; schema 1 had it in flat fields.
    """

    customer_id: str
    name: str
    currency: str
    billing_contact: BillingContact
    registered_at: datetime
    registered_by: str
    registered_by_role: Role
    schema: int = 2


class BillingContactChanged(
    msgspec.Struct, frozen=True, kw_only=True, tag="BillingContactChanged", tag_field="type"
):
    """The customer's billing contact was replaced, whole, by `billing_contact`."""

    customer_id: str
    billing_contact: BillingContact
    changed_at: datetime
    changed_by: str
    changed_by_role: Role
    schema: int = 1


class UserInvited(msgspec.Struct, frozen=True, kw_only=True, tag="UserInvited", tag_field="type"):
    """A person was given a role on the customer."""

    customer_id: str
    user_id: str
    role: Role
    name_sealed: str
    email_sealed: str
    invited_at: datetime
    invited_by: str
    invited_by_role: Role
    schema: int = 1


class UserRoleChanged(
    msgspec.Struct, frozen=True, kw_only=True, tag="UserRoleChanged", tag_field="type"
):
    """A user's role was replaced; `previous_role` keeps the audit trail readable alone."""

    customer_id: str
    user_id: str
    previous_role: Role
    role: Role
    changed_at: datetime
    changed_by: str
    changed_by_role: Role
    schema: int = 1


class UserAccessRevoked(
    msgspec.Struct, frozen=True, kw_only=True, tag="UserAccessRevoked", tag_field="type"
):
    """A user lost their role, and all access to the customer."""

    customer_id: str
    user_id: str
    previous_role: Role
    revoked_at: datetime
    revoked_by: str
    revoked_by_role: Role
    schema: int = 1


class ApiKeyIssued(msgspec.Struct, frozen=True, kw_only=True, tag="ApiKeyIssued", tag_field="type"):
    """An API key was issued; only the SHA-256 hex digest of its secret is kept. The key acts
    as user ``api-key:<key_id>`` in `role` (schema 2); `role` is None only for a schema 1 key,
    which reads but never acts."""

    customer_id: str
    key_id: str
    secret_sha256: str
    role: Role | None
    label: str = ""
    issued_at: datetime
    issued_by: str
    issued_by_role: Role
    schema: int = 2


class ApiKeyRevoked(
    msgspec.Struct, frozen=True, kw_only=True, tag="ApiKeyRevoked", tag_field="type"
):
    """An API key stopped being accepted."""

    customer_id: str
    key_id: str
    revoked_at: datetime
    revoked_by: str
    revoked_by_role: Role
    schema: int = 1


class CustomerSuspended(
    msgspec.Struct, frozen=True, kw_only=True, tag="CustomerSuspended", tag_field="type"
):
    """Vendor staff froze the account."""

    customer_id: str
    reason: str
    suspended_at: datetime
    suspended_by: str
    suspended_by_role: Role
    schema: int = 1


class CustomerReactivated(
    msgspec.Struct, frozen=True, kw_only=True, tag="CustomerReactivated", tag_field="type"
):
    """Vendor staff lifted a suspension."""

    customer_id: str
    reason: str
    reactivated_at: datetime
    reactivated_by: str
    reactivated_by_role: Role
    schema: int = 1


Event: TypeAlias = (
    CustomerRegistered
    | BillingContactChanged
    | UserInvited
    | UserRoleChanged
    | UserAccessRevoked
    | ApiKeyIssued
    | ApiKeyRevoked
    | CustomerSuspended
    | CustomerReactivated
)

EVENT_DECODER: Final = msgspec.json.Decoder(Event)
"""Decodes any customer event from JSON by its ``type`` tag; built once, as msgspec advises."""
