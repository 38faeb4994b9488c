"""The access matrix: every role of a customer, and vendor staff, against every route that needs
a caller, on their own customer, on another customer and on one that does not exist.

The routes come from the application's own route table (`app.routes`), so a new route is in
the matrix the moment it is added, and the table must list exactly the operations of
`api.policy.POLICY`. For each case the expected answer follows from the policy alone:

- no credential: 401;
- a role the policy does not list for the operation: 403, the guard's refusal;
- a customer's user on another customer (in the path, or as ``?tenant=``): 404, the same
  answer whether that customer exists or not;
- otherwise allowed: neither 401 nor 403, nor the guard's 404, and never a server error.

Order of the checks (`api.common.principal_dependency`, as Litestar runs it): the JSON body
is *decoded* before dependencies are resolved (malformed JSON is a 400 even without a
credential), but it is *validated* against the route's Struct only after them. So an empty
object ``{}`` is a precise probe: a refused caller gets 401/403/404, and an allowed one gets
past the guard and then the 400 of body validation wherever the Struct has a required field.

Never another tenant's data: every answer to a customer's user is searched for markers that
only the other customer's data holds (its id, name, ticket, alert, calculation and key ids,
its first receipt's hash, texts written in it), except those the request itself sent.
"""

from __future__ import annotations

import inspect
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from api.app import create_app
from api.auth import VENDOR, TokenService
from api.policy import POLICY
from api.staff import add_vendor_staff
from domain.roles import Role
from tests.api.test_command_routes import (
    APPROVERS,
    Team,
    approved_definition,
    complete_setup,
    content,
    created,
    period,
)
from tests.api.test_query_routes import catch_up
from tests.conftest import client_address
from valueledger.services import Services

Client = httpx.AsyncClient
Headers = dict[str, str]

STAFF: Final = "staff-1"
"""The vendor staff member (ADMIN) who calls, and to whom the tickets are assigned."""
TARGET_USER: Final = "tess"
"""The user the `{user_id}` routes act on: never one of the callers, whose tokens must live."""
REVOKED_USER: Final = "rex"
"""The user whose access the matrix revokes: `tess` must stay for setting her password."""
CUSTOMER_ROLES: Final = (Role.CUSTOMER_ADMIN, Role.FINANCE, Role.TECHNICAL)
USERS: Final = {Role.CUSTOMER_ADMIN: "cara", Role.FINANCE: "fay", Role.TECHNICAL: "tom"}

PUBLIC: Final = frozenset(
    {"healthz", "login", "list_signing_keys", "signing_keys_jwks", "metrics", "readyz"}
)
"""The handlers that take no caller on purpose, besides the OpenAPI document's under /schema."""


# --- the route table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One guarded route: its method, path template and operation id (the `POLICY` key)."""

    method: str
    path: str
    operation_id: str
    body: type[Any] | None
    """The Struct of its JSON body, if it takes one."""
    tenant_query: bool
    """It takes the customer as ``?tenant=`` instead of in the path."""

    @property
    def in_customer(self) -> bool:
        return "{customer_id:" in self.path

    @property
    def empty_body_is_invalid(self) -> bool:
        """Whether ``{}`` fails the body's validation (so an allowed caller gets 400)."""
        if self.body is None:
            return False
        try:
            msgspec.convert({}, self.body)
        except msgspec.ValidationError:
            return True
        return False


def handlers_of(app: Litestar) -> list[tuple[HTTPRoute, HTTPRouteHandler]]:
    """Every route handler of the application, but the OPTIONS ones Litestar adds itself."""
    return [
        (route, handler)
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for handler in route.route_handlers
        if handler.http_methods != {"OPTIONS"}
    ]


def guarded_operations(app: Litestar) -> list[Operation]:
    """Every (method, path, operation id) whose handler takes the `principal` dependency."""
    return [
        Operation(
            method=method,
            path=route.path,
            operation_id=handler.handler_name,
            body=body_of(handler),
            tenant_query="tenant" in inspect.signature(handler.fn).parameters,
        )
        for route, handler in handlers_of(app)
        if "principal" in inspect.signature(handler.fn).parameters
        for method in sorted(handler.http_methods)
    ]


def body_of(handler: HTTPRouteHandler) -> type[Any] | None:
    data = handler.parsed_fn_signature.parameters.get("data")
    return None if data is None else data.annotation


# --- the world: two customers with data, and vendor staff ----------------------------------------


@dataclass(frozen=True)
class Customer:
    tenant: str
    name: str
    ids: dict[str, str]
    """A value for every path parameter, naming things that exist in this customer."""
    markers: frozenset[str]
    """Strings only this customer's data holds."""


@dataclass(frozen=True)
class World:
    app: Litestar
    tokens: TokenService
    a: Customer
    b: Customer
    ghost: str
    """A customer id nobody registered."""

    def headers(self, caller: Caller) -> Headers:
        """A fresh token for each request: logout revokes the token it is sent with."""
        if caller.role is None:
            return {}
        tenant = VENDOR if caller.role is Role.ADMIN else self.a.tenant
        token, _ = self.tokens.issue(caller.user, tenant, caller.role, datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}


def client_for(app: Litestar) -> Client:
    """A client with a peer address of its own, so the per-address rate limit is ours alone."""
    peer = (client_address(), 123)
    transport = httpx.ASGITransport(app=app, client=peer)  # type: ignore[arg-type]
    return Client(transport=transport, base_url="http://testserver")


async def build_customer(
    client: Client, tokens: TokenService, staff: Headers, label: str
) -> Customer:
    """A customer with a team, a finished setup, an approved definition `value`, a definition
    waiting for fay's approval, a calculation, an alert, an assigned ticket and an API key."""
    tenant = f"t-{label}-{secrets.token_hex(5)}"
    name = f"{label}-corp-{secrets.token_hex(5)}"
    created(
        await client.post(
            "/v1/customers",
            json={
                "customer_id": tenant,
                "name": name,
                "currency": "EUR",
                "billing_contact": {"name": "Bea Billing", "email": "bea@example.com"},
            },
            headers=staff,
        )
    )
    team_roles = [(USERS[role], str(role)) for role in CUSTOMER_ROLES]
    for user, role in [*team_roles, (TARGET_USER, "TECHNICAL"), (REVOKED_USER, "FINANCE")]:
        created(
            await client.post(
                f"/v1/customers/{tenant}/users",
                json={"user_id": user, "role": role, "name": user, "email": f"{user}@example.com"},
                headers=staff,
            )
        )

    def member(role: Role) -> Headers:
        token, _ = tokens.issue(USERS[role], tenant, role, datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}

    team = Team(
        tenant=tenant,
        staff=staff,
        cara=member(Role.CUSTOMER_ADMIN),
        fay=member(Role.FINANCE),
        tom=member(Role.TECHNICAL),
    )
    await complete_setup(client, team)
    await approved_definition(client, team, "value")
    created(
        await client.post(
            team.url("/definitions"),
            json={"definition_id": "pending", **content()},
            headers=team.fay,
        )
    )
    created(
        await client.post(
            team.url("/definitions/pending/versions/1/submit"), json=APPROVERS, headers=team.fay
        )
    )
    calculated = period(1)
    calculation = created(
        await client.post(
            team.url("/definitions/value/calculations"), json=calculated, headers=staff
        )
    )["calculation_id"]
    alert = created(
        await client.post(
            team.url("/alerts"),
            json={
                "kind": "manual",
                "severity": "warning",
                "summary": f"{name} alert",
                "evidence": {"of": name},
            },
            headers=team.tom,
        )
    )["alert_id"]
    ticket = created(
        await client.post(
            team.url("/tickets"),
            json={"subject": f"{name} subject", "body": f"{name} body"},
            headers=team.cara,
        )
    )["ticket_id"]
    created(
        await client.post(
            team.url(f"/tickets/{ticket}/assign"), json={"assignee": STAFF}, headers=staff
        )
    )
    key = created(
        await client.post(team.url("/api-keys"), json={"label": name}, headers=team.cara)
    )["key_id"]
    receipt = await client.get(team.url("/receipts/1"), headers=staff)
    assert receipt.status_code == 200, receipt.text
    first_hash = receipt.headers["etag"].strip('"')
    ids = {
        "customer_id": tenant,
        "user_id": TARGET_USER,
        "key_id": key,
        "definition_id": "value",
        "version": "1",
        "alert_id": alert,
        "calculation_id": calculation,
        "ticket_id": ticket,
        "seq": "1",
        "period_start": calculated["period_start"],
    }
    markers = frozenset({tenant, name, key, alert, calculation, ticket, first_hash})
    return Customer(tenant=tenant, name=name, ids=ids, markers=markers)


@pytest.fixture(scope="module")
async def world(services: Services, tokens: TokenService) -> World:
    await add_vendor_staff(services.pool, STAFF)
    app = create_app(services, tokens)
    staff_token, _ = tokens.issue(STAFF, VENDOR, Role.ADMIN, datetime.now(UTC))
    staff = {"Authorization": f"Bearer {staff_token}"}
    async with client_for(app) as client:
        a = await build_customer(client, tokens, staff, "a")
        b = await build_customer(client, tokens, staff, "b")
    await catch_up(services, "receipts", "alerts", "tickets", "approvals", "dashboard")
    return World(app=app, tokens=tokens, a=a, b=b, ghost=f"t-ghost-{secrets.token_hex(5)}")


# --- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    label: str
    user: str
    role: Role | None
    """None: no credential at all."""

    @property
    def vendor(self) -> bool:
        return self.role is Role.ADMIN


CALLERS: Final = (
    *(Caller(f"A.{role}", USERS[role], role) for role in CUSTOMER_ROLES),
    Caller("ADMIN", STAFF, Role.ADMIN),
    Caller("anonymous", "", None),
)


class Target(Enum):
    OWN = "own"  # customer A: the customer's users' own
    OTHER = "other"  # customer B
    GHOST = "ghost"  # never registered
    NONE = "none"  # a route not about one customer, called without ?tenant=


class Expected(Enum):
    UNAUTHENTICATED = "401"
    ROLE_REFUSED = "403"
    TENANT_REFUSED = "404"
    ALLOWED = "allowed"


@dataclass(frozen=True)
class Case:
    operation: Operation
    caller: Caller
    target: Target
    tenant: str | None
    url: str

    @property
    def expected(self) -> Expected:
        role = self.caller.role
        if role is None:
            return Expected.UNAUTHENTICATED
        if role not in POLICY[self.operation.operation_id]:
            return Expected.ROLE_REFUSED
        if self.target in {Target.OTHER, Target.GHOST} and not self.caller.vendor:
            return Expected.TENANT_REFUSED
        return Expected.ALLOWED

    def __str__(self) -> str:
        op = self.operation
        return (
            f"{op.method} {self.url} ({op.operation_id}) as {self.caller.label} "
            f"on {self.target.value}: expected {self.expected.value}"
        )


PARAMETER: Final = re.compile(r"\{(\w+):\w+\}")


def url_of(operation: Operation, ids: dict[str, str], tenant: str | None) -> str:
    if operation.operation_id == "revoke_user_access":
        ids = {**ids, "user_id": REVOKED_USER}
    path = PARAMETER.sub(lambda match: ids[match.group(1)], operation.path)
    if operation.tenant_query and tenant is not None:
        path += f"?tenant={tenant}"
    return path


def cases_for(world: World, operations: list[Operation]) -> list[Case]:
    # B's ids under a customer id nobody registered: only the customer differs from B's URL
    ghost_ids = {**world.b.ids, "customer_id": world.ghost}
    targets: dict[Target, tuple[str | None, dict[str, str]]] = {
        Target.OWN: (world.a.tenant, world.a.ids),
        Target.OTHER: (world.b.tenant, world.b.ids),
        Target.GHOST: (world.ghost, ghost_ids),
    }
    cases = []
    for operation in operations:
        if operation.in_customer or operation.tenant_query:
            chosen = list(targets)
            if operation.tenant_query:
                chosen.append(Target.NONE)
        else:
            chosen = [Target.NONE]
        for caller in CALLERS:
            for target in chosen:
                if caller.role is None and target is not Target.OWN and len(chosen) > 1:
                    continue  # no credential is refused the same everywhere: once is enough
                tenant, ids = targets.get(target, (None, world.a.ids))
                url = url_of(operation, ids, tenant)
                cases.append(Case(operation, caller, target, tenant, url))
    return cases


# --- checking an answer -----------------------------------------------------------------------


def problem_of(response: httpx.Response) -> dict[str, Any]:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return {}
    body: dict[str, Any] = response.json()
    return body


def leaked(world: World, case: Case, response: httpx.Response) -> list[str]:
    """Customer B's markers in the answer that the request did not itself send."""
    seen = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return sorted(marker for marker in world.b.markers if marker in seen and marker not in case.url)


def verdict(world: World, case: Case, response: httpx.Response) -> list[str]:
    """What is wrong with the answer to `case` (nothing: an empty list)."""
    status = response.status_code
    problem = problem_of(response)
    detail = problem.get("detail")
    operation = case.operation
    role_refusal = f"role {case.caller.role} cannot {operation.operation_id.replace('_', ' ')}"
    tenant_refusal = f"no customer {case.tenant!r}"
    wrong = []
    if status >= 500:
        wrong.append(f"server error {status}: {response.text[:300]}")
    match case.expected:
        case Expected.UNAUTHENTICATED:
            if status != 401:
                wrong.append(f"got {status}, not 401: {response.text[:300]}")
        case Expected.ROLE_REFUSED:
            if (status, detail) != (403, role_refusal):
                wrong.append(f"got {status} {detail!r}, not 403 {role_refusal!r}")
        case Expected.TENANT_REFUSED:
            if (status, detail) != (404, tenant_refusal):
                wrong.append(f"got {status} {detail!r}, not 404 {tenant_refusal!r}")
        case Expected.ALLOWED:
            if status in {401, 403}:
                wrong.append(f"refused with {status}: {response.text[:300]}")
            if case.target is not Target.GHOST and (status, detail) == (404, tenant_refusal):
                wrong.append("refused by the tenant rule (404) on a customer the caller may see")
            if operation.empty_body_is_invalid and status != 400:
                wrong.append(f"got {status}, not the 400 of validating {{}}: {response.text[:300]}")
    if not case.caller.vendor and (markers := leaked(world, case, response)):
        wrong.append(f"answer holds customer B's data {markers}: {response.text[:300]}")
    return wrong


def shape(response: httpx.Response, tenant: str | None) -> tuple[object, ...]:
    """The answer with the customer id it names blanked out, to compare two customers'."""
    problem = problem_of(response)
    detail = str(problem.get("detail"))
    if tenant is not None:
        detail = detail.replace(tenant, "<customer>")
    return response.status_code, problem.get("type"), problem.get("title"), detail


# --- the tests --------------------------------------------------------------------------------


def test_the_matrix_covers_exactly_the_policy_and_nothing_is_public_by_accident(
    world: World,
) -> None:
    operations = guarded_operations(world.app)
    assert sorted(op.operation_id for op in operations) == sorted(POLICY)
    for route, handler in handlers_of(world.app):
        if handler.operation_id is not None:  # when it is set, it is the policy's key
            assert handler.operation_id == handler.handler_name, route.path
    public = {
        handler.handler_name
        for route, handler in handlers_of(world.app)
        if "principal" not in inspect.signature(handler.fn).parameters
        and not route.path.startswith("/schema")
    }
    assert public == PUBLIC
    # a customer's routes take their customer as `customer_id`, the name the guard reads
    for operation in operations:
        if "/v1/customers/{" in operation.path:
            assert operation.path.startswith("/v1/customers/{customer_id:str}"), operation


async def test_every_role_against_every_route_and_tenant(world: World) -> None:
    operations = guarded_operations(world.app)
    cases = cases_for(world, operations)
    failures: list[str] = []
    shapes: dict[tuple[str, str, str], dict[Target, tuple[object, ...]]] = {}
    async with client_for(world.app) as client:
        for case in cases:
            operation = case.operation
            request: dict[str, Any] = {"headers": world.headers(case.caller)}
            if operation.body is not None:
                request["json"] = {}
            response = await client.request(operation.method, case.url, **request)
            failures += [f"{case}: {problem}" for problem in verdict(world, case, response)]
            if case.target in {Target.OTHER, Target.GHOST} and not case.caller.vendor:
                key = (operation.method, operation.path, case.caller.label)
                shapes.setdefault(key, {})[case.target] = shape(response, case.tenant)
    # Whether customer B exists is not revealed: B and a customer nobody registered get the
    # same answer, whatever the route and the role.
    for (method, path, caller), answers in shapes.items():
        if answers[Target.OTHER] != answers[Target.GHOST]:
            failures.append(
                f"{method} {path} as {caller}: customer B answers {answers[Target.OTHER]}, "
                f"a missing customer {answers[Target.GHOST]}"
            )
    counts = dict.fromkeys(Expected, 0)
    for case in cases:
        counts[case.expected] += 1
    print(
        f"{len(cases)} cases over {len(operations)} operations: "
        + ", ".join(f"{expected.value}: {n}" for expected, n in counts.items())
    )
    for failure in failures:
        print(failure)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


async def test_a_customer_admin_never_reads_another_customers_data(world: World) -> None:
    b = world.b
    cara = Caller("A.CUSTOMER_ADMIN", "cara", Role.CUSTOMER_ADMIN)
    staff = Caller("ADMIN", STAFF, Role.ADMIN)
    paths = ("", "/receipts", "/receipts/1", "/export", "/dashboard", "/alerts", "/tickets")
    async with client_for(world.app) as client:
        for path in paths:
            url = f"/v1/customers/{b.tenant}{path}"
            hidden = await client.get(url, headers=world.headers(cara))
            assert hidden.status_code == 404, (url, hidden.text)
            assert problem_of(hidden)["detail"] == f"no customer {b.tenant!r}", url
            sent = {marker for marker in b.markers if marker in url}
            assert sent == {b.tenant}
            assert [m for m in b.markers - sent if m in hidden.text] == [], url
            assert b.name not in hidden.text
            # The control: vendor staff read the same URL, and its answer does hold B's data,
            # so the search above would have found it.
            shown = await client.get(url, headers=world.headers(staff))
            assert shown.status_code == 200, (url, shown.text)
            assert [m for m in b.markers - sent if m in shown.text], url


async def test_the_approvals_queue_shows_a_user_only_their_own_customers_rows(
    world: World,
) -> None:
    """fay is a user id of both customers, each with a version waiting for her: A's fay sees
    A's alone, with or without naming her customer, and B's is there for vendor staff."""
    fay = Caller("A.FINANCE", "fay", Role.FINANCE)
    staff = Caller("ADMIN", STAFF, Role.ADMIN)
    async with client_for(world.app) as client:
        for params in ({}, {"tenant": world.a.tenant}):
            answer = await client.get("/v1/approvals", params=params, headers=world.headers(fay))
            assert answer.status_code == 200, answer.text
            rows = {(item["tenant"], item["definition_id"]) for item in answer.json()["items"]}
            assert rows == {(world.a.tenant, "pending")}
        everyone = await client.get(
            "/v1/approvals", params={"approver": "fay"}, headers=world.headers(staff)
        )
        assert everyone.status_code == 200, everyone.text
        tenants = {item["tenant"] for item in everyone.json()["items"]}
        assert {world.a.tenant, world.b.tenant} <= tenants


async def test_the_guard_decides_after_json_decoding_and_before_body_validation(
    world: World,
) -> None:
    """Litestar decodes a JSON body before it resolves the `principal` dependency, and checks
    it against the route's Struct only after. So malformed JSON is a 400 for anyone, even with
    no credential, but it is the same 400 for every customer, existing or not; a body of the
    wrong shape never gets a caller past the guard, nor tells them more than the guard would."""
    cara = Caller("A.CUSTOMER_ADMIN", "cara", Role.CUSTOMER_ADMIN)
    fay = Caller("A.FINANCE", "fay", Role.FINANCE)
    anonymous = Caller("anonymous", "", None)
    wrong_shape = {"label": 5}
    own, other, ghost = (
        f"/v1/customers/{tenant}/api-keys"
        for tenant in (world.a.tenant, world.b.tenant, world.ghost)
    )
    async with client_for(world.app) as client:

        async def post(url: str, caller: Caller, **body: Any) -> httpx.Response:
            return await client.post(url, headers=world.headers(caller), **body)

        assert (await post(other, anonymous, json=wrong_shape)).status_code == 401
        refused = await post(own, fay, json=wrong_shape)
        assert (refused.status_code, problem_of(refused)["detail"]) == (
            403,
            "role FINANCE cannot issue api key",
        )
        hidden = await post(other, cara, json=wrong_shape)
        assert (hidden.status_code, problem_of(hidden)["detail"]) == (
            404,
            f"no customer {world.b.tenant!r}",
        )
        invalid = await post(own, cara, json=wrong_shape)
        assert invalid.status_code == 400, invalid.text
        assert problem_of(invalid)["type"].endswith("/invalid-request")

        malformed = b'{"label": '
        for caller in (anonymous, cara):
            answers = []
            for url, tenant in ((other, world.b.tenant), (ghost, world.ghost)):
                headers = {**world.headers(caller), "Content-Type": "application/json"}
                answer = await client.post(url, content=malformed, headers=headers)
                assert answer.status_code == 400, answer.text
                answers.append(shape(answer, tenant))
            assert answers[0] == answers[1]
