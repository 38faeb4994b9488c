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
APPROVERS: Final = frozenset({Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL})
CUSTOMER_USERS: Final = APPROVERS
"""The customer's own users: the judges of the vendor's calculations (not vendor staff)."""
"""The roles a stage's assigned approver holds; vendor staff never approve."""

POLICY: Final[dict[str, frozenset[Role]]] = {
    # the account
    "register_customer": ADMIN,
    "get_customer": EVERYONE,
    "invite_user": CUSTOMER_ADMINS,
    "change_user_role": CUSTOMER_ADMINS,
    "revoke_user_access": CUSTOMER_ADMINS,
    "change_billing_contact": CUSTOMER_ADMINS,
    "issue_api_key": CUSTOMER_ADMINS,
    "revoke_api_key": CUSTOMER_ADMINS,
    "suspend_customer": ADMIN,
    "reactivate_customer": ADMIN,
    # the setup wizard, one route per step
    "complete_api_integration": TECHNICAL,
    "connect_data_source": TECHNICAL,
    "map_metrics": TECHNICAL,
    "establish_baseline": TECHNICAL,
    "verify_accuracy": TECHNICAL,
    "get_setup": EVERYONE,
    # value definitions; only FINANCE changes pricing terms (the domain's rule, on revising)
    "draft_definition": EVERYONE,
    "revise_definition": EVERYONE,
    "submit_for_approval": EVERYONE,
    "approve_stage": APPROVERS,
    "request_changes": APPROVERS,
    "get_definition": EVERYONE,
    # go-live and billing
    "go_live": CUSTOMER_ADMINS,
    "pause_billing": CUSTOMER_ADMINS,
    "resume_billing": CUSTOMER_ADMINS,
    "set_accuracy_threshold": ADMIN,
    "get_billing": EVERYONE,
    # alerts: the same people as setup (FINANCE may not)
    "raise_alert": TECHNICAL,
    "acknowledge_alert": TECHNICAL,
    "resolve_alert": TECHNICAL,
    "get_alert": EVERYONE,
    # calculations are the vendor's claim; every customer role may judge them
    "calculate_value": ADMIN,
    "recalculate_value": ADMIN,
    "confirm_calculation": CUSTOMER_USERS,
    "dispute_calculation": CUSTOMER_USERS,
    "get_period_calculations": EVERYONE,
    "get_feedback": EVERYONE,
    # support tickets: vendor-only steps are ADMIN's
    "open_ticket": EVERYONE,
    "post_ticket_message": EVERYONE,
    "assign_ticket": ADMIN,
    "start_work_on_ticket": ADMIN,
    "await_customer_reply": ADMIN,
    "resolve_ticket": ADMIN,
    "close_ticket": EVERYONE,
    "reopen_ticket": EVERYONE,
    "get_ticket": EVERYONE,
    # read models
    "customer_dashboard": EVERYONE,
    "vendor_overview": ADMIN,
    "approvals_queue": EVERYONE,
    "alerts_list": EVERYONE,
    "customer_tickets": EVERYONE,
    "assigned_tickets": ADMIN,
    "receipts_index": EVERYONE,
    "calculation_results": EVERYONE,
    # the ledger itself, for auditors
    "get_receipt": EVERYONE,
    "export_ledger": EVERYONE,
    # sessions and local passwords
    "logout": EVERYONE,
    "set_user_password": CUSTOMER_ADMINS,
    "change_own_password": EVERYONE,
}
"""Operation id (the handler's name) -> the roles that may call it."""
