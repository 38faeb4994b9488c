"""Bad bodies, black-box over HTTP: each problem names where in the document the client sent
the body is wrong (`$` being the whole of it), says what is wrong, and has a type of its own
when the body is not JSON at all or not labelled as JSON."""

from __future__ import annotations

import json
from typing import Any, Final

import httpx
import pytest

Client = httpx.AsyncClient

CONTACT: Final = {"name": "Bea Billing", "email": "bea@acme.example"}
MAPPINGS: Final = [
    {"source_field": "opportunity.amount", "metric": "revenue"},
    {"source_field": "timesheet.saved", "metric": "hours_saved"},
    {"source_field": "tickets.closed", "metric": "tickets"},
]


def registration(**changes: Any) -> dict[str, Any]:
    body = {"customer_id": "t-acme", "name": "Acme", "currency": "EUR", "billing_contact": CONTACT}
    return {key: value for key, value in {**body, **changes}.items() if value is not None}


def with_mapping(index: int, **changes: Any) -> dict[str, Any]:
    mappings = [dict(mapping) for mapping in MAPPINGS]
    mappings[index].update(changes)
    return {"mappings": mappings}


REGISTER: Final = "/v1/customers"
METRICS: Final = "/v1/customers/t-acme/setup/metrics"
JSON: Final = "application/json"

# (route, body as sent, Content-Type, status, problem type, path of the first error)
CASES: Final[dict[str, tuple[str, bytes, str | None, int, str, str | None]]] = {
    "unknown field": (
        REGISTER,
        json.dumps(registration(fax="+49 30 1234")).encode(),
        JSON,
        400,
        "invalid-request",
        "$.fax",
    ),
    "unknown field, not a name": (
        REGISTER,
        json.dumps({**registration(), "fax number": "1"}).encode(),
        JSON,
        400,
        "invalid-request",
        '$["fax number"]',
    ),
    "unknown nested field": (
        REGISTER,
        json.dumps(registration(billing_contact={**CONTACT, "fax": "1"})).encode(),
        JSON,
        400,
        "invalid-request",
        "$.billing_contact.fax",
    ),
    "unknown field in a list": (
        METRICS,
        json.dumps(with_mapping(2, unit="EUR")).encode(),
        JSON,
        400,
        "invalid-request",
        "$.mappings[2].unit",
    ),
    "wrong type": (
        REGISTER,
        json.dumps(registration(customer_id=7)).encode(),
        JSON,
        400,
        "invalid-request",
        "$.customer_id",
    ),
    "wrong type in a list": (
        METRICS,
        json.dumps(with_mapping(1, metric=5)).encode(),
        JSON,
        400,
        "invalid-request",
        "$.mappings[1].metric",
    ),
    "missing field": (
        REGISTER,
        json.dumps(registration(customer_id=None)).encode(),
        JSON,
        400,
        "invalid-request",
        "$.customer_id",
    ),
    "missing nested field": (
        REGISTER,
        json.dumps(registration(billing_contact={"email": "bea@acme.example"})).encode(),
        JSON,
        400,
        "invalid-request",
        "$.billing_contact.name",
    ),
    "not an object": (REGISTER, b"[]", JSON, 400, "invalid-request", "$"),
    "empty body": (REGISTER, b"", JSON, 400, "invalid-request", "$"),
    "blank body": (REGISTER, b" \n", JSON, 400, "invalid-request", "$"),
    "malformed JSON": (REGISTER, b'{"name": "Acme",}', JSON, 400, "malformed-json", "$"),
    "truncated JSON": (REGISTER, b'{"name": ', JSON, 400, "malformed-json", "$"),
    "labelled text": (
        REGISTER,
        json.dumps(registration()).encode(),
        "text/plain",
        415,
        "unsupported-media-type",
        None,
    ),
    "not labelled": (
        REGISTER,
        json.dumps(registration()).encode(),
        None,
        415,
        "unsupported-media-type",
        None,
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_a_bad_body_is_a_problem_naming_where_and_what(
    client: Client, staff: dict[str, str], case: str
) -> None:
    route, body, content_type, status, kind, path = CASES[case]
    headers = {**staff, **({} if content_type is None else {"Content-Type": content_type})}
    answer = await client.post(route, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert problem["type"] == f"https://valueledger.dev/problems/{kind}", problem
    assert problem["detail"], problem
    if path is None:
        assert "errors" not in problem, problem
        return
    first = problem["errors"][0]
    assert first["path"] == path, problem
    assert first["message"], problem
    assert problem["detail"].startswith(path if kind == "invalid-request" else "JSON is malformed")


async def test_malformed_json_says_at_which_byte(client: Client, staff: dict[str, str]) -> None:
    answer = await client.post(
        REGISTER, content=b'{"name": "Acme",}', headers={**staff, "Content-Type": JSON}
    )
    assert "at byte 16" in answer.json()["detail"], answer.text


async def test_a_valid_body_labelled_as_json_with_a_charset_is_read(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    answer = await client.post(
        REGISTER,
        content=json.dumps(registration(customer_id=tenant)).encode(),
        headers={**staff, "Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 201, answer.text
