"""Customer routes, black-box over HTTP against the real services."""

from __future__ import annotations

from typing import Any

import httpx

from api.auth import TokenService
from domain.roles import Role
from tests.api.conftest import bearer

Client = httpx.AsyncClient


def registration(tenant: str) -> dict[str, Any]:
    return {
        "customer_id": tenant,
        "name": "Acme Ltd",
        "currency": "EUR",
        "billing_contact": {"name": "Bea Billing", "email": "bea@acme.example"},
    }


async def test_vendor_staff_register_a_customer_and_read_it_back(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    created = await client.post("/v1/customers", json=registration(tenant), headers=staff)
    assert created.status_code == 201, created.text
    assert created.json()["events"] == ["CustomerRegistered"]
    assert created.headers["etag"] == '"1"'
    read = await client.get(f"/v1/customers/{tenant}", headers=staff)
    assert read.status_code == 200
    assert read.json()["name"] == "Acme Ltd"
    assert read.headers["etag"] == '"1"'


async def test_problems_are_precise(
    client: Client, staff: dict[str, str], tokens: TokenService, tenant: str
) -> None:
    unauthenticated = await client.post("/v1/customers", json=registration(tenant))
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"].startswith("application/problem+json")
    assert unauthenticated.json()["type"].endswith("/unauthenticated")

    customer_admin = bearer(tokens, "cara", tenant, Role.CUSTOMER_ADMIN)
    forbidden = await client.post(
        "/v1/customers", json=registration(tenant), headers=customer_admin
    )
    assert forbidden.status_code == 403

    unknown_field = await client.post(
        "/v1/customers", json={**registration(tenant), "plan": "gold"}, headers=staff
    )
    assert unknown_field.status_code == 400, unknown_field.text
    assert unknown_field.json()["errors"]

    bad_currency = await client.post(
        "/v1/customers", json={**registration(tenant), "currency": "eur"}, headers=staff
    )
    assert bad_currency.status_code == 422
    body = bad_currency.json()
    assert body["type"].endswith("/unsupported-currency")
    assert "write it in capitals, as EUR" in body["detail"]

    await client.post("/v1/customers", json=registration(tenant), headers=staff)
    other_tenant = bearer(tokens, "eve", "globex", Role.CUSTOMER_ADMIN)
    hidden = await client.get(f"/v1/customers/{tenant}", headers=other_tenant)
    assert hidden.status_code == 404

    stale = await client.post(
        f"/v1/customers/{tenant}/users",
        json={"user_id": "ada", "role": "FINANCE", "name": "Ada", "email": "ada@acme.example"},
        headers={**staff, "If-Match": '"7"'},
    )
    assert stale.status_code == 412
    assert stale.headers["etag"] == '"1"'
