"""Whole numbers in paths and queries: every one has a documented range, and any number outside
it is a 400 naming the parameter, never a 500 (a number past PostgreSQL's bigint once was).

The parameters are collected from the routes and the OpenAPI document the app serves, so a
route added later with an unbounded number fails here without a test of its own.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any, Final, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.auth import VENDOR, TokenService
from api.policy import POLICY
from domain.roles import Role
from tests.api.conftest import bearer
from tests.api.test_access_matrix import handlers_of
from valueledger.services import Services
from valueledger.settings import Settings

Client = httpx.AsyncClient

BIGINT: Final = range(-(2**63), 2**63)
"""What a PostgreSQL bigint holds: every documented range must fit in it."""


@dataclass(frozen=True)
class WholeNumberParameter:
    """One integer parameter of one operation, with the range the document gives it."""

    method: str
    path: str
    """The route's path template, as the document writes it (``/v1/.../{seq}``)."""
    operation: str
    """The handler's name, the key of `POLICY`."""
    name: str
    location: str
    minimum: int | None
    maximum: int | None

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.name}"


def whole_number_parameters() -> list[WholeNumberParameter]:
    # Only the route table and its document are read: the app is never called, so it needs
    # no servers, only the settings its routes are declared with.
    bare = cast("Services", types.SimpleNamespace(settings=Settings()))
    app = create_app(bare, cast("TokenService", None))
    document: dict[str, Any] = app.openapi_schema.to_schema()
    found = []
    for route, handler in handlers_of(app):
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in sorted(handler.http_methods):
            operation = document["paths"].get(path, {}).get(method.lower(), {})
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                if schema.get("type") != "integer":
                    continue
                bounds = (schema.get("minimum"), schema.get("maximum"))
                minimum, maximum = (None if bound is None else int(bound) for bound in bounds)
                found.append(
                    WholeNumberParameter(
                        method=method,
                        path=path,
                        operation=handler.handler_name,
                        name=parameter["name"],
                        location=parameter["in"],
                        minimum=minimum,
                        maximum=maximum,
                    )
                )
    return found


PARAMETERS: Final = whole_number_parameters()


def test_every_whole_number_parameter_documents_a_range_postgresql_can_hold() -> None:
    names = {parameter.name for parameter in PARAMETERS}
    assert {"limit", "after", "seq", "from_seq", "version"} <= names  # the collector sees them
    for parameter in PARAMETERS:
        assert parameter.minimum is not None, parameter
        assert parameter.maximum is not None, parameter
        assert parameter.minimum in BIGINT, parameter
        assert parameter.maximum in BIGINT, parameter


def edges(parameter: WholeNumberParameter) -> list[int]:
    """Just outside the range, and just outside a bigint (the audit's 2^63)."""
    assert parameter.minimum is not None
    assert parameter.maximum is not None
    return [parameter.minimum - 1, parameter.maximum + 1, 2**63, -(2**63) - 1]


def outside(parameter: WholeNumberParameter) -> st.SearchStrategy[int]:
    assert parameter.minimum is not None
    assert parameter.maximum is not None
    return st.one_of(
        st.integers(max_value=parameter.minimum - 1),
        st.integers(min_value=parameter.maximum + 1),
    )


def request_of(
    parameter: WholeNumberParameter, value: int, tenant: str
) -> tuple[str, dict[str, Any]]:
    """The URL and query sending `value` as the parameter, every other path parameter valid."""

    def filled(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == parameter.name:
            return str(value)
        return tenant if name == "customer_id" else "1"

    url = re.sub(r"\{(\w+)\}", filled, parameter.path)
    query = {parameter.name: str(value)} if parameter.location == "query" else {}
    return url, query


def caller(tokens: TokenService, operation: str, tenant: str) -> dict[str, str]:
    """A credential the route's policy lets through: vendor staff when it may, else one of
    the customer's own roles."""
    allowed = POLICY[operation]
    if Role.ADMIN in allowed:
        return bearer(tokens, "staff-1", VENDOR, Role.ADMIN)
    role = min(allowed, key=str)
    return bearer(tokens, "cara", tenant, role)


async def assert_refused(
    client: Client, tokens: TokenService, tenant: str, parameter: WholeNumberParameter, value: int
) -> None:
    url, query = request_of(parameter, value, tenant)
    headers = caller(tokens, parameter.operation, tenant)
    answer = await client.request(
        parameter.method,
        url,
        params=query,
        json=None if parameter.method == "GET" else {},
        headers=headers,
    )
    assert answer.status_code == 400, (value, answer.text)
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"].endswith("/invalid-request"), problem
    assert any(error.get("parameter") == parameter.name for error in problem["errors"]), problem


@pytest.mark.parametrize("parameter", PARAMETERS, ids=str)
async def test_a_whole_number_just_outside_its_range_is_a_400_naming_the_parameter(
    client: Client,
    tokens: TokenService,
    staff: dict[str, str],
    tenant: str,
    parameter: WholeNumberParameter,
) -> None:
    del staff  # makes staff-1 current vendor staff
    for value in edges(parameter):
        await assert_refused(client, tokens, tenant, parameter, value)


@pytest.mark.parametrize("parameter", PARAMETERS, ids=str)
@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_any_whole_number_out_of_range_is_a_400_naming_the_parameter(
    client: Client,
    tokens: TokenService,
    staff: dict[str, str],
    tenant: str,
    parameter: WholeNumberParameter,
    data: st.DataObject,
) -> None:
    del staff  # makes staff-1 current vendor staff
    value = data.draw(outside(parameter), label="value")
    await assert_refused(client, tokens, tenant, parameter, value)
