"""The served OpenAPI document as a contract, tested by schemathesis against the real app.

Every operation of ``/schema/openapi.json`` gets requests that schemathesis generates from the
document itself (positive data: what the document says is valid), sent to the app in this
test's event loop through `httpx.ASGITransport`, with the real PostgreSQL and Redis behind it.
(Schemathesis's own ASGI client runs the app in an event loop of its own, where the services'
asyncpg pools and Redis client, which belong to the pytest loop, cannot be used; so the case
is serialized by schemathesis's transport and sent here, byte for byte as it would send it.)

Two properties per operation, each its own test, so that a known failure of one never hides
the other:

- ``no-5xx``: no answer is a server error (`not_a_server_error`);
- ``conforms``: the status is one the operation documents (`status_code_conformance`), and the
  answer's content type, body and headers are as documented for that status
  (`content_type_conformance`, `response_schema_conformance`, `response_headers_conformance`).

Every operation runs as vendor staff (ADMIN), whom the policy lets through everywhere but to
a customer's own approval stages; the GET operations run again as a user of the customer, in
a role hypothesis picks. The customer they run against has a finished setup, an approved
definition `value`, live billing, a calculation, an alert, a ticket and an API key: one of its
own for each test of an operation that changes things, one shared by the GETs (which change
nothing), with its read models caught up. Each path parameter is, at hypothesis's choice,
the id of that customer's thing or a generated value, so requests reach both the found and
the not-found paths. Each request carries a fresh token: logging out revokes the token it is
sent with, and a role change revokes the user's earlier tokens.

PostgreSQL text cannot hold a NUL character, and a NUL turns up in generated text only once in
a while; so the generated text has none, and every free-text query parameter gets a test of
its own with a NUL in it (`test_a_nul_in_a_text_query_parameter_is_no_server_error`).

What these tests found was fixed in the routes or in their description; none is left, so no
case is expected to fail.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Final, cast

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.auth import VENDOR, TokenService
from api.staff import add_vendor_staff
from domain.roles import Role
from projections.registry import BY_NAME
from tests.api.test_command_routes import (
    Team,
    approved_definition,
    complete_setup,
    created,
    period,
    register_team,
)
from tests.api.test_query_routes import catch_up
from tests.conftest import client_address
from valueledger.services import Services
from valueledger.settings import Settings

Client = httpx.AsyncClient
Headers = dict[str, str]
AnyCase = Case[Any]
Operation = APIOperation[Any, Any, Any, Any]

BASE_URL: Final = "http://testserver"
STAFF: Final = "staff-1"
CUSTOMER_USERS: Final = {Role.CUSTOMER_ADMIN: "cara", Role.FINANCE: "fay", Role.TECHNICAL: "tom"}
NUL: Final = "\x00"

CHECKS: Final[dict[str, tuple[CheckFunction, ...]]] = {
    "no-5xx": (not_a_server_error,),
    "conforms": (
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ),
}

CONTRACT: Final = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,  # the same requests on every run: a finding is found, or fixed, for good
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: the failing request is reported
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one customer per test, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


# --- the operations, from the document ----------------------------------------------------------


def described_document() -> dict[str, Any]:
    """The document the app describes, for collecting the tests.

    Describing the routes touches neither the services nor the token service (only requests
    use them), but for the settings that change what the routes answer, so the app is built
    here with the default settings alone. The tests load the document the running
    app serves, and `test_the_served_document_lists_the_collected_operations` checks that it
    lists exactly the operations collected from this one.
    """
    app = create_app(
        cast("Services", SimpleNamespace(settings=Settings())), cast("TokenService", None)
    )
    document: dict[str, Any] = app.openapi_schema.to_schema()
    return document


DOCUMENT: Final = described_document()
OPERATIONS: Final = [
    (method.upper(), path)
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if method in {"get", "post", "put", "patch", "delete"}
]
GETS: Final = [(method, path) for method, path in OPERATIONS if method == "GET"]


def _takes_text(schema: dict[str, Any]) -> bool:
    options = schema.get("oneOf", [schema])
    return any(
        option.get("type") == "string" or option.get("items", {}).get("type") == "string"
        for option in options
    )


TEXT_QUERY_PARAMETERS: Final = [
    (method, path, parameter["name"])
    for method, path in GETS
    for parameter in DOCUMENT["paths"][path]["get"].get("parameters", [])
    if parameter["in"] == "query" and _takes_text(parameter["schema"])
]


# --- the cases ---------------------------------------------------------------------------------


def cases_of(operations: list[tuple[str, str]]) -> list[Any]:
    """One test per operation and property."""
    return [
        pytest.param(method, path, check, id=f"{method} {path} {check}")
        for method, path in operations
        for check in CHECKS
    ]


# --- the customer each test runs against ----------------------------------------------------------


@dataclass
class World:
    """A customer with something of every kind, and fresh tokens for its people and staff."""

    team: Team
    tokens: TokenService
    ids: dict[str, Any]
    """A value for every path parameter, naming a thing that exists in this customer."""
    strategies: dict[tuple[str, str, frozenset[str]], st.SearchStrategy[AnyCase]] = field(
        default_factory=dict
    )

    def headers(self, role: Role) -> Headers:
        if role is Role.ADMIN:
            user, tenant = STAFF, VENDOR
        else:
            user, tenant = CUSTOMER_USERS[role], self.team.tenant
        token, _ = self.tokens.issue(user, tenant, role, datetime.now(UTC))
        return {"Authorization": f"Bearer {token}"}

    def cases(self, operation: Operation, real: frozenset[str]) -> st.SearchStrategy[AnyCase]:
        """Schemathesis's cases for `operation`: the path parameters in `real` name this
        customer's things, the others are generated."""
        key = (operation.method, operation.path, real)
        if key not in self.strategies:
            self.strategies[key] = operation.as_strategy(
                path_parameters={name: self.ids[name] for name in real}
            )
        return self.strategies[key]


async def build_world(client: Client, tokens: TokenService, tenant: str) -> World:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await approved_definition(client, team)
    starts = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created(
        await client.post(
            team.url("/billing/go-live"), json={"billing_starts_at": starts}, headers=team.cara
        )
    )
    calculated = period(1)
    calculation = created(
        await client.post(
            team.url("/definitions/value/calculations"), json=calculated, headers=team.staff
        )
    )
    alert = created(
        await client.post(
            team.url("/alerts"),
            json={"kind": "manual", "severity": "warning", "summary": "s", "evidence": {"n": "1"}},
            headers=team.tom,
        )
    )
    ticket = created(
        await client.post(
            team.url("/tickets"),
            json={"subject": "help", "body": "please", "priority": "low"},
            headers=team.cara,
        )
    )
    key = created(await client.post(team.url("/api-keys"), json={}, headers=team.cara))
    ids = {
        "customer_id": tenant,
        "user_id": "tom",
        "definition_id": "value",
        "version": 1,
        "calculation_id": calculation["calculation_id"],
        "alert_id": alert["alert_id"],
        "ticket_id": ticket["ticket_id"],
        "key_id": key["key_id"],
        "seq": 1,
        "period_start": calculated["period_start"],
    }
    return World(team=team, tokens=tokens, ids=ids)


@pytest.fixture(scope="module", autouse=True)
def readiness_ignores_projection_lag() -> Iterator[None]:
    """The contract is about answers' shapes, not readiness: the POST cases append events no
    projector runs for here, and once those are a minute old /readyz rightly answers 503
    (readiness under lag has tests of its own, in test_platform)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VALUELEDGER_READY_MAX_LAG_SECONDS", "86400")
        patch.setenv("VALUELEDGER_READY_MAX_LAG_EVENTS", "1000000000")
        yield


@pytest.fixture(scope="module")
async def contract(services: Services, tokens: TokenService) -> BaseSchema:
    """The document as the running app serves it, loaded by schemathesis."""
    transport = httpx.ASGITransport(app=create_app(services, tokens))  # type: ignore[arg-type]
    async with Client(transport=transport, base_url=BASE_URL) as client:
        answer = await client.get("/schema/openapi.json")
    assert answer.status_code == 200, answer.text
    # Explicit settings: never a schemathesis.toml found on the way up from the working folder.
    schema = schemathesis.openapi.from_dict(answer.json(), config=SchemathesisConfig())
    # A NUL has a test of its own, so that one generated once in a while cannot make the other
    # tests' outcome depend on the seed.
    schema.config.generation.update(allow_x00=False)
    return schema


@pytest.fixture(scope="module")
async def read_world(services: Services, tokens: TokenService) -> World:
    """The customer every GET runs against: a GET changes nothing, so they share it."""
    await add_vendor_staff(services.pool, STAFF)
    peer = (client_address(), 123)
    transport = httpx.ASGITransport(app=create_app(services, tokens), client=peer)  # type: ignore[arg-type]
    async with Client(transport=transport, base_url=BASE_URL) as client:
        world = await build_world(client, tokens, f"t-{secrets.token_hex(6)}")
    await catch_up(services, *BY_NAME)  # so the read models answer with its data
    return world


@pytest.fixture
async def world(
    request: pytest.FixtureRequest,
    read_world: World,
    client: Client,
    tokens: TokenService,
    tenant: str,
    staff: Headers,
) -> World:
    """The shared customer for a GET; for any other operation, a customer of the test's own."""
    del staff  # makes staff-1 current vendor staff, so the fresh tokens issued to it work
    if request.node.callspec.params.get("method") == "GET":
        return read_world
    return await build_world(client, tokens, tenant)


# --- one request --------------------------------------------------------------------------------


async def send(client: Client, case: AnyCase, headers: Headers) -> httpx.Response:
    """The case on the wire as schemathesis's own transport would send it."""
    prepared = requests.Request(**case.as_transport_kwargs(BASE_URL, headers)).prepare()
    assert prepared.method is not None
    assert prepared.url is not None
    body = prepared.body
    assert body is None or isinstance(body, bytes | str), body  # JSON bodies only
    return await client.request(
        prepared.method,
        prepared.url,
        headers={
            name: value.decode("latin-1") if isinstance(value, bytes) else value
            for name, value in prepared.headers.items()
        },
        content=body,
    )


async def check_one(
    client: Client,
    contract: BaseSchema,
    world: World,
    data: st.DataObject,
    operation: tuple[str, str],
    check: str,
    role: Role,
) -> None:
    method, path = operation
    described = contract[path][method]
    names = [name for name in world.ids if "{" + name + "}" in path]
    real = frozenset(name for name in names if data.draw(st.booleans(), label=f"real {name}"))
    case = data.draw(world.cases(described, real), label="case")
    headers = world.headers(role)
    response = await send(client, case, headers)
    case.validate_response(response, checks=list(CHECKS[check]), headers=headers)


# --- the tests ----------------------------------------------------------------------------------


async def test_the_served_document_lists_the_collected_operations(contract: BaseSchema) -> None:
    served = []
    for result in contract.get_all_operations():
        assert isinstance(result, Ok), result.err()
        served.append(result.ok())
    assert sorted((operation.method.upper(), operation.path) for operation in served) == sorted(
        OPERATIONS
    )


@pytest.mark.parametrize(("method", "path", "check"), cases_of(OPERATIONS))
@CONTRACT
@given(data=st.data())
async def test_every_operation_as_vendor_staff(
    client: Client,
    contract: BaseSchema,
    world: World,
    method: str,
    path: str,
    check: str,
    data: st.DataObject,
) -> None:
    await check_one(client, contract, world, data, (method, path), check, Role.ADMIN)


@pytest.mark.parametrize(("method", "path", "check"), cases_of(GETS))
@CONTRACT
@given(data=st.data())
async def test_every_get_as_a_customer_user(
    client: Client,
    contract: BaseSchema,
    world: World,
    method: str,
    path: str,
    check: str,
    data: st.DataObject,
) -> None:
    role = data.draw(st.sampled_from(sorted(CUSTOMER_USERS)), label="role")
    await check_one(client, contract, world, data, (method, path), check, role)


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        pytest.param(method, path, name, id=f"{method} {path} ?{name}")
        for method, path, name in TEXT_QUERY_PARAMETERS
    ],
)
@settings(CONTRACT, max_examples=4)
@given(data=st.data())
async def test_a_nul_in_a_text_query_parameter_is_no_server_error(
    client: Client,
    contract: BaseSchema,
    world: World,
    method: str,
    path: str,
    name: str,
    data: st.DataObject,
) -> None:
    described = contract[path][method]
    schema = next(
        parameter["schema"]
        for parameter in DOCUMENT["paths"][path]["get"]["parameters"]
        if parameter["name"] == name
    )
    takes_list = any(option.get("type") == "array" for option in schema.get("oneOf", [schema]))
    path_parameters = {key: value for key, value in world.ids.items() if "{" + key + "}" in path}
    nul: Any = [NUL] if takes_list else NUL
    case = data.draw(
        described.as_strategy(path_parameters=path_parameters, query={name: nul}), label="case"
    )
    if method == "GET" and path == "/v1/approvals" and name != "approver":
        case.query = {**(case.query or {}), "approver": "fay"}  # vendor staff must name one
    headers = world.headers(Role.ADMIN)
    response = await send(client, case, headers)
    case.validate_response(response, checks=[not_a_server_error], headers=headers)
