"""The Litestar application: routes translate HTTP to commands and queries and back, nothing more.

Every body is a msgspec Struct (unknown fields refused); every error becomes problem details
in `api.problems`; every route's roles are in `api.policy`. The caller comes from the bearer
token or the session cookie, never from the body; so does the tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.params import FromPath, JSONBody

from api import command_routes, ledger_routes, platform, query_routes, session_routes
from api.auth import COOKIE_NAME, AuthenticationError, Principal, TokenService
from api.policy import POLICY
from api.problems import problem_response
from commands.customer import handle_customer, open_account
from commands.handling import Outcome, Trace
from domain import customer
from domain.roles import Role
from projections import queries
from projections.cache import DASHBOARD_TTL
from valueledger.services import Services

MAX_BODY_BYTES: Final = 256 * 1024


class Api:
    """What route handlers depend on: the shared services and the token service."""

    def __init__(self, services: Services, tokens: TokenService) -> None:
        self.services = services
        self.tokens = tokens


# --- who is calling -----------------------------------------------------------------------------


async def authenticate(request: Request[Any, Any, Any]) -> Principal:
    """The caller's principal, from `Authorization: Bearer` or the session cookie."""
    api: Api = request.app.state.api
    header = request.headers.get("authorization", "")
    try:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationError("use 'Authorization: Bearer <token>'")
            return await api.tokens.verify(token.strip(), "bearer")
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie:
            return await api.tokens.verify(cookie, "cookie")
    except AuthenticationError as error:
        raise NotAuthorizedException(detail=str(error)) from None
    raise NotAuthorizedException(detail="log in first: send a bearer token or the session cookie")


def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Refuse a caller whose role the policy does not list for the route (403), and hide a
    customer from anyone but its own users and vendor staff (404)."""
    principal: Principal | None = connection.scope.get("state", {}).get("principal")
    if principal is None:
        return  # the route is public (no principal dependency): nothing to check
    allowed = POLICY[handler.handler_name]
    if principal.role not in allowed:
        raise PermissionDeniedException(
            detail=f"role {principal.role} cannot {handler.handler_name.replace('_', ' ')}"
        )
    customer_id = connection.path_params.get("customer_id")
    if customer_id is not None and not principal.is_vendor and customer_id != principal.tenant:
        raise NotFoundException(detail=f"no customer {customer_id!r}")


async def principal_dependency(request: Request[Any, Any, Any]) -> Principal:
    principal = await authenticate(request)
    request.scope.setdefault("state", {})["principal"] = principal
    role_guard(request, request.route_handler)
    return principal


def api_of(request: Request[Any, Any, Any]) -> Api:
    api: Api = request.app.state.api
    return api


def now() -> datetime:
    return datetime.now(UTC)


def trace_of(request: Request[Any, Any, Any]) -> Trace:
    return Trace(
        correlation_id=request.headers.get("x-request-id"),
        trace_id=request.scope.get("state", {}).get("trace_id"),
    )


# --- bodies and answers ---------------------------------------------------------------------------


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """A command's answer: the receipts it wrote, where they sit, the aggregate's new version."""

    events: tuple[str, ...]
    seqs: tuple[int, ...]
    version: int
    cursor: str | None


def accepted(outcome: Outcome[Any, Any], status: int = 201, **extra: Any) -> Response[Any]:
    body = Accepted(
        events=tuple(record.type for record in outcome.recorded),
        seqs=tuple(record.seq for record in outcome.recorded),
        version=outcome.version,
        cursor=None if outcome.cursor is None else str(outcome.cursor),
    )
    content: Any = {**msgspec.to_builtins(body), **extra} if extra else body
    return Response(content, status_code=status, headers={"ETag": f'"{outcome.version}"'})


def expected_version(request: Request[Any, Any, Any]) -> int | None:
    """The version `If-Match` names, if any (the aggregate's ETag, a plain number)."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise NotFoundException(detail="If-Match must be the ETag of a GET: a quoted number")
    return int(text)


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


class LoginBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: str
    password: str
    customer_id: str | None = None
    """The customer the user belongs to; absent for vendor staff."""


class Session(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    token_type: str
    expires_at: datetime
    tenant: str
    role: Role


class CustomerSummary(msgspec.Struct, frozen=True, kw_only=True):
    customer_id: str
    name: str
    currency: str
    status: str
    users: dict[str, Role]
    version: int


# --- routes ---------------------------------------------------------------------------------------


@get("/healthz", include_in_schema=True, sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@post("/v1/customers", summary="Register a customer (ADMIN)")
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


@get("/v1/customers/{customer_id:str}", summary="A customer's account")
async def get_customer(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> Response[CustomerSummary]:
    """The account as the ledger has it now; its ETag is the version for If-Match."""
    del principal
    api = api_of(request)
    account = await open_account(api.services.store, customer_id)
    stream = await api.services.store.read_stream(f"{customer_id}:customer")
    version = stream[-1].version if stream else 0
    summary = CustomerSummary(
        customer_id=account.customer_id,
        name=account.name,
        currency=account.currency,
        status=str(account.status),
        users={user_id: user.role for user_id, user in account.users.items()},
        version=version,
    )
    return Response(summary, headers={"ETag": f'"{version}"'})


@post("/v1/customers/{customer_id:str}/users", summary="Invite a user")
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


@get("/v1/customers/{customer_id:str}/dashboard", summary="The customer's dashboard")
async def customer_dashboard(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
) -> queries.Dashboard:
    """Setup, approvals, go-live, value per period, accuracy and alerts; cached 5 minutes and
    refreshed as soon as the projector changes it."""
    del principal
    api = api_of(request)

    async def load() -> queries.Dashboard:
        dashboard = await queries.customer_dashboard(api.services.pool, customer_id)
        if dashboard is None:  # not cached: it may exist as soon as the projector gets there
            raise NotFoundException(detail=f"no dashboard for customer {customer_id!r} yet")
        return dashboard

    return await api.services.cache.get_or_load(
        customer_id, "dashboard", "", DASHBOARD_TTL, load, queries.Dashboard
    )


@post("/v1/auth/logout", status_code=204, summary="Log out: revoke this token")
async def logout(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> Response[None]:
    await api_of(request).tokens.revoke(principal, now())
    response: Response[None] = Response(None, status_code=204)
    response.delete_cookie(COOKIE_NAME)
    return response


def create_app(services: Services, tokens: TokenService) -> Litestar:
    """The application over `services`; the caller owns their lifetime."""
    return Litestar(
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
        ),
        state=State({"api": Api(services, tokens)}),
    )
