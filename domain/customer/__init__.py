"""The customer account: who the customer is, who may act for it, and its API keys.

Vendor staff (ADMIN) register a customer with its name, billing contact and currency, and may
suspend and reactivate it. The customer's CUSTOMER_ADMINs (and ADMINs) change the billing
contact, invite users with a role, change and revoke roles, and issue and revoke API keys
(each acting as FINANCE or TECHNICAL, as user ``api-key:<key id>``).
Personal data arrives already sealed (encrypted) by the command layer, in fields ending in
``_sealed``; API keys arrive as the SHA-256 digest of a secret the domain never sees. The rules
are listed in `decider`; `UPCASTERS` reads the events' older shapes (see `upcasters`).
"""

from __future__ import annotations

from domain.customer.commands import (
    ChangeBillingContact,
    ChangeUserRole,
    Command,
    InviteUser,
    IssueApiKey,
    ReactivateCustomer,
    RegisterCustomer,
    RevokeApiKey,
    RevokeUserAccess,
    SuspendCustomer,
)
from domain.customer.decider import (
    API_KEY_ROLES,
    SUPPORTED_CURRENCIES,
    authorize,
    decide,
    ensure_open,
    ensure_registered,
    evolve,
)
from domain.customer.errors import (
    ApiKeyAlreadyRevokedError,
    CustomerAlreadyRegisteredError,
    CustomerError,
    CustomerMismatchError,
    CustomerNotRegisteredError,
    CustomerNotSuspendedError,
    CustomerSuspendedError,
    DuplicateApiKeyError,
    DuplicateUserError,
    InvalidCustomerFieldError,
    LastCustomerAdminError,
    NotAuthorizedError,
    RoleUnchangedError,
    UnknownApiKeyError,
    UnknownUserError,
    UnsupportedCurrencyError,
)
from domain.customer.events import (
    EVENT_DECODER,
    ApiKeyIssued,
    ApiKeyRevoked,
    BillingContact,
    BillingContactChanged,
    CustomerReactivated,
    CustomerRegistered,
    CustomerSuspended,
    Event,
    UserAccessRevoked,
    UserInvited,
    UserRoleChanged,
)
from domain.customer.state import (
    ApiKey,
    CustomerAccount,
    CustomerStatus,
    CustomerUser,
    initial_state,
)
from domain.customer.upcasters import UPCASTERS, key_issued_v1_to_v2, registered_v1_to_v2
from domain.roles import Role

__all__ = [
    "API_KEY_ROLES",
    "EVENT_DECODER",
    "SUPPORTED_CURRENCIES",
    "UPCASTERS",
    "ApiKey",
    "ApiKeyAlreadyRevokedError",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "BillingContact",
    "BillingContactChanged",
    "ChangeBillingContact",
    "ChangeUserRole",
    "Command",
    "CustomerAccount",
    "CustomerAlreadyRegisteredError",
    "CustomerError",
    "CustomerMismatchError",
    "CustomerNotRegisteredError",
    "CustomerNotSuspendedError",
    "CustomerReactivated",
    "CustomerRegistered",
    "CustomerStatus",
    "CustomerSuspended",
    "CustomerSuspendedError",
    "CustomerUser",
    "DuplicateApiKeyError",
    "DuplicateUserError",
    "Event",
    "InvalidCustomerFieldError",
    "InviteUser",
    "IssueApiKey",
    "LastCustomerAdminError",
    "NotAuthorizedError",
    "ReactivateCustomer",
    "RegisterCustomer",
    "RevokeApiKey",
    "RevokeUserAccess",
    "Role",
    "RoleUnchangedError",
    "SuspendCustomer",
    "UnknownApiKeyError",
    "UnknownUserError",
    "UnsupportedCurrencyError",
    "UserAccessRevoked",
    "UserInvited",
    "UserRoleChanged",
    "authorize",
    "decide",
    "ensure_open",
    "ensure_registered",
    "evolve",
    "initial_state",
    "key_issued_v1_to_v2",
    "registered_v1_to_v2",
]
