"""Why a customer account refused a command; every message says what to do instead."""

from __future__ import annotations

from domain import DomainError


class CustomerError(DomainError):
    """Any refusal by the customer account; the subclasses let callers tell them apart."""


class CustomerNotRegisteredError(CustomerError):
    """A command other than registration reached a customer that does not exist yet."""


class CustomerAlreadyRegisteredError(CustomerError):
    """Registration reached a customer that already exists."""


class CustomerMismatchError(CustomerError):
    """The command names a different customer from the account it was decided against."""


class InvalidCustomerFieldError(CustomerError):
    """A field of the command is blank or malformed."""


class UnsupportedCurrencyError(CustomerError):
    """The billing currency is not one we invoice in."""


class NotAuthorizedError(CustomerError):
    """The actor's role does not allow the command on this customer."""


class CustomerSuspendedError(CustomerError):
    """The customer is suspended, so only an ADMIN's reactivation is accepted."""


class CustomerNotSuspendedError(CustomerError):
    """Reactivation reached a customer that is active."""


class DuplicateUserError(CustomerError):
    """The user id already belongs to a user of this customer."""


class UnknownUserError(CustomerError):
    """No user of this customer has the user id."""


class RoleUnchangedError(CustomerError):
    """A role change to the role the user already holds."""


class LastCustomerAdminError(CustomerError):
    """Revoking or demoting the customer's only CUSTOMER_ADMIN would leave it unmanaged."""


class DuplicateApiKeyError(CustomerError):
    """The key id already belongs to a key of this customer, revoked or not."""


class UnknownApiKeyError(CustomerError):
    """No key of this customer has the key id."""


class ApiKeyAlreadyRevokedError(CustomerError):
    """The key was revoked before; revocation is refused, not repeated, so that a retry shows
    the earlier revocation instead of recording a second one."""
