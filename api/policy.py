"""Who may call which route: every operation's roles, in this one table.

The guard refuses a caller whose role is not listed (403). The tenant rule is separate and
the same everywhere: a route under ``/v1/customers/{customer_id}`` serves only that customer's
own users (anyone else gets 404, so a customer's existence is not revealed), and vendor staff
(ADMIN) alone cross tenants. Finer rules (is this user the approver assigned to this stage?)
are the domain's, decided on the ledger as it is now.
"""

from __future__ import annotations

from typing import Final

from domain.roles import Role

ADMIN: Final = frozenset({Role.ADMIN})
CUSTOMER_ADMINS: Final = frozenset({Role.ADMIN, Role.CUSTOMER_ADMIN})
TECHNICAL: Final = frozenset({Role.ADMIN, Role.CUSTOMER_ADMIN, Role.TECHNICAL})
FINANCE: Final = frozenset({Role.ADMIN, Role.FINANCE})
EVERYONE: Final = frozenset(Role)

POLICY: Final[dict[str, frozenset[Role]]] = {
    # the account
    "register_customer": ADMIN,
    "get_customer": EVERYONE,
    "invite_user": CUSTOMER_ADMINS,
    # the setup wizard
    "complete_setup_step": TECHNICAL,
    "get_setup": EVERYONE,
    # read models
    "customer_dashboard": EVERYONE,
    # sessions
    "logout": EVERYONE,
}
"""Operation id (the handler's name) -> the roles that may call it."""
