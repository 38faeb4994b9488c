"""The served OpenAPI document against the application's own route table: every operation the
app routes, none hand-picked, says who may call it, every problem it can answer and the
headers it takes and gives.

What is expected follows from facts checked elsewhere, not from the code that writes the
document: the route table and `api.policy.POLICY` (as the access matrix enumerates them), the
middleware's behaviour (rate limits on everything but /healthz; body limits on every POST;
Idempotency-Key on every POST but the /v1/auth/ ones), and which routes are commands on an
aggregate (they take If-Match) or read one (their answer has its ETag).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

import httpx
import msgspec

from api import command_routes
from api.app import create_app
from api.auth import TokenService
from api.common import IF_MATCH
from api.idempotency import takes_keys
from api.policy import POLICY
from tests.api.test_access_matrix import guarded_operations, handlers_of
from valueledger.services import Services

PROBLEM: Final = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
TAKES_IF_MATCH: Final = {
    handler.handler_name for handler in command_routes.ROUTES if "POST" in handler.http_methods
} | {"invite_user"}
"""The commands on an existing aggregate: every command route, and inviting a user."""


def path_format(path: str) -> str:
    """A route's path as the document writes it: ``/v1/customers/{customer_id}``."""
    return re.sub(r":\w+}", "}", path)


def header_parameters(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}


def answer_header(operation: dict[str, Any], status: str, name: str) -> dict[str, Any] | None:
    header: dict[str, Any] | None = operation["responses"][status].get("headers", {}).get(name)
    return header


async def test_every_operation_documents_its_roles_problems_and_headers(
    client: httpx.AsyncClient, services: Services, tokens: TokenService
) -> None:
    served = (await client.get("/schema/openapi.json")).json()
    app = create_app(services, tokens)
    documented = {
        (method.upper(), path): operation
        for path, item in served["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }
    routed = {
        (str(method), path_format(route.path)): handler
        for route, handler in handlers_of(app)
        if handler.resolve_include_in_schema()
        for method in handler.http_methods
    }
    assert set(documented) == set(routed)
    guarded = {(op.method, path_format(op.path)) for op in guarded_operations(app)}
    assert {routed[key].handler_name for key in guarded} == set(POLICY)

    for (method, path), operation in documented.items():
        name = routed[method, path].handler_name
        where = f"{method} {path}"
        responses = operation["responses"]
        assert operation["operationId"] == name, where
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == PROBLEM, (where, status)
                assert response["description"], (where, status)

        if path != "/healthz":
            assert answer_header(operation, "429", "Retry-After") == {
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                "description": "Seconds to wait before sending the request again.",
                "required": True,
                "deprecated": False,
            }, where
        for status in {"503", "409"} & set(responses):
            if status == "503" or "Idempotency-Key" in header_parameters(operation):
                assert answer_header(operation, status, "Retry-After"), (where, status)

        description = operation.get("description", "")
        if (method, path) in guarded:
            roles = ", ".join(sorted(str(role) for role in POLICY[name]))
            assert description.endswith(f"\n\nRoles: {roles}."), where
            assert {"401", "403"} <= set(responses), where
            if "{customer_id}" in path:
                assert "404" in responses, where
        else:
            assert "Roles:" not in description, where

        if method == "POST":
            assert {"400", "413"} <= set(responses), where
            # Every POST but the /v1/auth/ ones and those answering a secret once.
            takes_key = takes_keys(method, path, routed[method, path].opt)
            assert ("Idempotency-Key" in header_parameters(operation)) is takes_key, where
            if takes_key:
                assert {"409", "422", "503"} <= set(responses), where

        assert "428" not in responses, where  # If-Match is optional by default
        if name in TAKES_IF_MATCH:
            assert "If-Match" in header_parameters(operation), where
            assert answer_header(operation, "412", "ETag"), where
            assert answer_header(operation, "201", "ETag"), where
        else:
            assert "If-Match" not in header_parameters(operation), where
            assert "412" not in responses, where
        if method == "GET" and name.startswith("get_"):
            assert (answer_header(operation, "200", "ETag") or {}).get("required"), where

    readyz = documented["GET", "/readyz"]["responses"]
    assert {"200", "503"} <= set(readyz)
    assert set(documented["GET", "/healthz"]["responses"]) == {"200"}


async def test_where_if_match_is_required_428_is_documented_on_every_command_on_what_exists(
    services: Services, tokens: TokenService
) -> None:
    """With `require_if_match`, exactly the routes that answer 428 without If-Match (as
    tests.api.test_preconditions finds them: every command but those creating their
    aggregate) document it, and its If-Match as required, naming the GET that gives it."""
    settings = msgspec.structs.replace(services.settings, require_if_match=True)
    app = create_app(dataclasses.replace(services, settings=settings), tokens)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://testserver",
    ) as client:
        served = (await client.get("/schema/openapi.json")).json()
    declared = {
        handler.handler_name: handler.opt[IF_MATCH]
        for _, handler in handlers_of(app)
        if IF_MATCH in handler.opt
    }
    assert set(declared) == TAKES_IF_MATCH
    refusing = {name for name, if_match in declared.items() if not if_match.creates}
    assert refusing < TAKES_IF_MATCH  # the creating commands never answer 428
    documented = set()
    for item in served["paths"].values():
        for operation in item.values():
            if "428" not in operation.get("responses", {}):
                continue
            name = operation["operationId"]
            documented.add(name)
            answer = operation["responses"]["428"]
            assert answer["content"] == PROBLEM, name
            assert f"`GET {declared[name].read_at}` gives it." in answer["description"], name
            (if_match,) = (p for p in operation["parameters"] if p["name"] == "If-Match")
            assert if_match["required"] is True, name
    assert documented == refusing
