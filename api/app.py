"""The Litestar application: routes translate HTTP to commands and queries and back, nothing more.

Every body is a msgspec Struct (unknown fields refused); every error becomes problem details
in `api.problems`; every route's roles are in `api.policy`. The caller comes from the bearer
token or the session cookie, never from the body; so does the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide
from litestar.enums import ParamType
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import OpenAPIType, Operation, Schema
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.params import FromPath, JSONBody

from api import command_routes, ledger_routes, platform, query_routes, session_routes
from api.auth import COOKIE_NAME, Principal, TokenService
from api.common import (
    ETAG,
    IF_MATCH,
    READ_AHEAD,
    Api,
    IfMatch,
    ReadAhead,
    accepted,
    api_of,
    expected_version,
    json_answer,
    now,
    principal_dependency,
    query_value,
    read_ahead_of,
    trace_of,
)
from api.openapi import complete_document, problems
from api.problems import problem_response
from commands.customer import handle_customer
from commands.streams import tenant_of
from domain import customer
from domain.roles import Role
from projections import queries
from projections.cache import DASHBOARD_TTL
from projections.dashboard import CustomerDashboard
from valueledger.services import Services

MAX_BODY_BYTES: Final = 256 * 1024


class ContactBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    email: str
    phone: str | None = None


class RegisterCustomerBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    customer_id: str
    name: str
    currency: str
    billing_contact: ContactBody


class InviteUserBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: str
    role: Role
    name: str
    email: str


class CustomerSummary(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    name: str
    currency: str
    status: str
    users: dict[str, Role]
    version: int


MIN_POSITION: Final = OpenAPIParameter(
    name="min_position",
    param_in=ParamType.QUERY,
    schema=Schema(type=OpenAPIType.STRING),
    required=False,
    description="A command's `cursor`: answer only once the dashboard includes that write "
    "(503 with Retry-After if it has not within a few seconds; 400 if it is not a cursor).",
)


@dataclass
class DashboardOperation(Operation):
    """The dashboard's operation, documented with the `min_position` its handler reads from
    the query string itself (so Litestar, not knowing it, would leave it out)."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), MIN_POSITION]


# --- routes ---------------------------------------------------------------------------------------


@get("/healthz", include_in_schema=True, sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@post(
    "/v1/customers",
    summary="Register a customer (ADMIN)",
    responses=problems(command_routes.COMMAND_ERRORS),
    opt={ETAG: command_routes.COMMAND_ETAG},
)
async def register_customer(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    data: JSONBody[RegisterCustomerBody],
) -> Response[Any]:
    """Open an account for a new customer; its billing contact is sealed before it is recorded."""
    api = api_of(request)
    vault = api.services.vault
    tenant = data.customer_id
    contact = customer.BillingContact(
        name_sealed=await vault.seal(tenant, "billing-contact", data.billing_contact.name),
        email_sealed=await vault.seal(tenant, "billing-contact", data.billing_contact.email),
        phone_sealed=(
            None
            if data.billing_contact.phone is None
            else await vault.seal(tenant, "billing-contact", data.billing_contact.phone)
        ),
    )
    command = customer.RegisterCustomer(
        customer_id=data.customer_id,
        name=data.name,
        currency=data.currency,
        billing_contact=contact,
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    outcome = await handle_customer(api.services.store, command, trace=trace_of(request))
    return accepted(outcome)


@get(
    "/v1/customers/{customer_id:str}",
    summary="A customer's account",
    responses=problems(command_routes.READ_ERRORS),
    opt={ETAG: command_routes.AGGREGATE_ETAG},
)
async def get_customer(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[CustomerSummary]:
    """The account as the ledger has it now, suspended or not; its ETag is the version for
    If-Match."""
    del principal
    loaded = await command_routes.registered_account(request, customer_id)
    account, version = loaded.state, loaded.version
    summary = CustomerSummary(
        customer_id=account.customer_id,
        name=account.name,
        currency=account.currency,
        status=str(account.status),
        users={user_id: user.role for user_id, user in account.users.items()},
        version=version,
    )
    return Response(summary, headers={"ETag": f'"{version}"'})


@post(
    "/v1/customers/{customer_id:str}/users",
    summary="Invite a user",
    responses=problems(command_routes.COMMAND_ERRORS),
    opt={IF_MATCH: IfMatch(read_at=command_routes.ACCOUNT_AT), ETAG: command_routes.COMMAND_ETAG},
)
async def invite_user(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    data: JSONBody[InviteUserBody],
) -> Response[Any]:
    """Give a person a role on the customer; their name and e-mail are sealed."""
    api = api_of(request)
    vault = api.services.vault
    command = customer.InviteUser(
        customer_id=customer_id,
        user_id=data.user_id,
        role=data.role,
        name_sealed=await vault.seal(customer_id, data.user_id, data.name),
        email_sealed=await vault.seal(customer_id, data.user_id, data.email),
        at=now(),
        by=principal.user,
        by_role=principal.role,
    )
    outcome = await handle_customer(
        api.services.store,
        command,
        trace=trace_of(request),
        expected_version=expected_version(request),
    )
    return accepted(outcome)


@get(
    "/v1/customers/{customer_id:str}/dashboard",
    summary="The customer's dashboard",
    responses={
        **problems(command_routes.READ_ERRORS),
        200: ResponseSpec(
            queries.Dashboard,
            description="Request fulfilled, document follows",
            generate_examples=False,
        ),
    },
    opt={READ_AHEAD: ReadAhead("dashboard", queries.Dashboard)},
    operation_class=DashboardOperation,
)
async def customer_dashboard(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[bytes]:
    """Setup, approvals, go-live, value per period, accuracy and alerts; cached 5 minutes and
    refreshed as soon as the projector changes it. Given a command's cursor as `min_position`,
    it waits for the projector to include that write, then reads PostgreSQL (like every query:
    see `api.query_routes`)."""
    del principal
    api = api_of(request)
    tenant_of(customer_id)  # an id that cannot be a customer's is a bad request, not a miss

    async def load() -> queries.Dashboard:
        dashboard = await queries.customer_dashboard(api.services.pool, customer_id)
        if dashboard is None:  # not cached: it may exist as soon as the projector gets there
            raise NotFoundException(detail=f"no dashboard for customer {customer_id!r} yet")
        return dashboard

    # Read from the scope, not declared to Litestar: the warm path, without a query string,
    # stays exactly as cheap as before (see `query_value`).
    min_position = query_value(request.scope, "min_position")
    if min_position is not None:
        await query_routes.await_read_models(request, [CustomerDashboard.name], min_position)
        return json_answer(msgspec.json.encode(await load()))
    body = await api.services.cache.get_or_load_json(
        customer_id,
        "dashboard",
        "",
        DASHBOARD_TTL,
        load,
        queries.Dashboard,
        read=read_ahead_of(request),
    )
    return json_answer(body)


@post(
    "/v1/auth/logout",
    status_code=204,
    summary="Log out: revoke this token",
    # A static cookie deletion rather than a Response object: declared `None`, the route is
    # documented as what it answers, a 204 with no body (a Response[None] reads as JSON null).
    # With the attributes it was set with, so every browser matches and deletes it.
    response_cookies=[
        Cookie(
            key=COOKIE_NAME,
            path="/",
            expires=0,
            max_age=0,
            secure=True,
            httponly=True,
            samesite="strict",
        )
    ],
)
async def logout(request: Request[Any, Any, Any], principal: NamedDependency[Principal]) -> None:
    """Revoke the token the request was sent with, and delete the session cookie."""
    await api_of(request).tokens.revoke(principal, now())


def create_app(services: Services, tokens: TokenService) -> Litestar:
    """The application over `services`; the caller owns their lifetime."""
    api = Api(services, tokens)
    app = Litestar(
        route_handlers=[
            healthz,
            register_customer,
            get_customer,
            invite_user,
            customer_dashboard,
            logout,
            *command_routes.ROUTES,
            *query_routes.ROUTES,
            *ledger_routes.ROUTES,
            *session_routes.ROUTES,
            *platform.ROUTES,
        ],
        middleware=platform.MIDDLEWARE,
        dependencies={"principal": Provide(principal_dependency)},
        exception_handlers={Exception: problem_response},
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(
            title="valueledger",
            version="1",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            use_handler_docstrings=True,
            operation_id_creator=lambda handler, _method, _path: handler.handler_name,
        ),
        state=State({"api": api}),
    )
    complete_document(app, platform.documenting(api.require_if_match))
    return platform.around_every_request(app)
