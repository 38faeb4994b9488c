"""`valueledger demo`: a whole onboarding through the HTTP API of a running server.

It plays every person in turn, each logged in with their own password: vendor staff register
the customer and invite its team; the TECHNICAL user completes the five setup steps; FINANCE
drafts the value definition and takes it to approval; Finance, Technical and the executive
approve their stages; the CUSTOMER_ADMIN goes live; vendor staff calculate the first billed
period. It ends by exporting the customer's ledger from the API and verifying it offline
against the public key the API publishes, as an auditor would.

Only the demo's own vendor staff member is made directly in the database (with the same
configuration as `serve`), since the first one's password is shown once to the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from api.auth import VENDOR
from api.staff import add_vendor_staff, set_password
from eventstore.db import create_pool
from eventstore.verify import pinned_keyring, verify_bundle
from valueledger.settings import Settings

FORMULA: Final = "(metric.revenue - baseline.revenue) * 0.5 + metric.hours_saved * 40"
TEAM: Final = {"cara": "CUSTOMER_ADMIN", "fay": "FINANCE", "tom": "TECHNICAL"}


class DemoError(ValueError):
    """A step of the demo was refused: the message names the step and the API's problem."""


class Person:
    """One logged-in person of the demo, calling the API with their own token."""

    def __init__(self, client: httpx.AsyncClient, name: str, token: str) -> None:
        self.client = client
        self.name = name
        self.headers = {"Authorization": f"Bearer {token}"}

    async def post(self, step: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(path, json=body, headers=self.headers)
        return _answer(step, response)

    async def get(self, step: str, path: str) -> httpx.Response:
        response = await self.client.get(path, headers=self.headers)
        _answer(step, response)
        return response


def _answer(step: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        detail = response.text
        with contextlib.suppress(ValueError):
            detail = response.json().get("detail", detail)
        raise DemoError(f"{step}: HTTP {response.status_code}: {detail}")
    if not response.content or not response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        return {}
    answer: dict[str, Any] = response.json()
    return answer


async def log_in(
    client: httpx.AsyncClient, user: str, password: str, customer_id: str | None = None
) -> Person:
    body: dict[str, Any] = {"user_id": user, "password": password}
    if customer_id is not None:
        body["customer_id"] = customer_id
    session = _answer(f"log in as {user}", await client.post("/v1/auth/login", json=body))
    return Person(client, user, session["token"])


async def run_demo(  # noqa: PLR0915 (one onboarding, told in order)
    settings: Settings,
    database_url: str,
    url: str,
    *,
    bundle: Path | None,
    say: Callable[[str], None],
) -> int:
    """Run the onboarding against the API at `url`; returns how many receipts were verified."""
    customer_id = f"demo-{secrets.token_hex(3)}"
    staff_password = secrets.token_urlsafe(18)
    pool = await create_pool(database_url, settings.db_role or None, max_size=2)
    try:
        await add_vendor_staff(pool, "demo-staff")
        await set_password(pool, VENDOR, "demo-staff", staff_password)
    finally:
        await pool.close()
    base = f"/v1/customers/{customer_id}"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        staff = await log_in(client, "demo-staff", staff_password)
        say(f"vendor staff registers customer {customer_id}")
        await staff.post(
            "register the customer",
            "/v1/customers",
            {
                "customer_id": customer_id,
                "name": "Acme Demo Ltd",
                "currency": "EUR",
                "billing_contact": {"name": "Bea Billing", "email": "bea@acme.example"},
            },
        )
        people: dict[str, Person] = {}
        for user, role in TEAM.items():
            await staff.post(
                f"invite {user}",
                f"{base}/users",
                {
                    "user_id": user,
                    "role": role,
                    "name": user.title(),
                    "email": f"{user}@acme.example",
                },
            )
            password = (
                await staff.post(f"set {user}'s password", f"{base}/users/{user}/password", {})
            )["password"]
            people[user] = await log_in(client, user, password, customer_id)
        say(
            "the team is invited and logged in: "
            "cara (CUSTOMER_ADMIN), fay (FINANCE), tom (TECHNICAL)"
        )

        tom, fay, cara = people["tom"], people["fay"], people["cara"]
        now = datetime.now(UTC)
        secret = secrets.token_urlsafe(24)
        await tom.post(
            "setup step 1",
            f"{base}/setup/api-integration",
            {
                "secret": secret,
                "credential_reference": "vault://kv/acme/api-key",
                "validation_passed": True,
                "validation_detail": "200 from /v1/me",
            },
        )
        await tom.post(
            "setup step 2",
            f"{base}/setup/data-source",
            {"source_kind": "salesforce", "connection_test_passed": True},
        )
        await tom.post(
            "setup step 3",
            f"{base}/setup/metrics",
            {
                "mappings": [
                    {"source_field": "Opportunity.Amount", "metric": "revenue"},
                    {"source_field": "Case.HoursSaved", "metric": "hours_saved"},
                ]
            },
        )
        await tom.post(
            "setup step 4",
            f"{base}/setup/baseline",
            {
                "baselines": [
                    {"metric": "revenue", "value": "1000"},
                    {"metric": "hours_saved", "value": "0"},
                ],
                "period_start": (now - timedelta(days=60)).isoformat(),
                "period_end": (now - timedelta(days=30)).isoformat(),
            },
        )
        await tom.post(
            "setup step 5",
            f"{base}/setup/accuracy",
            {
                "measurements": [
                    {"metric": "revenue", "measured": "100", "expected": "98"},
                    {"metric": "hours_saved", "measured": "10", "expected": "10"},
                ]
            },
        )
        say("tom completed the five setup steps")

        await fay.post(
            "draft the value definition",
            f"{base}/definitions",
            {
                "definition_id": "value",
                "name": "Value delivered",
                "metrics": [
                    {"name": "revenue", "unit": "EUR"},
                    {"name": "hours_saved", "unit": "hours"},
                ],
                "formula": FORMULA,
                "pricing": {"share_percent": "20", "floor_minor_units": 1000, "currency": "EUR"},
            },
        )
        definition = f"{base}/definitions/value/versions/1"
        await fay.post(
            "submit for approval",
            f"{definition}/submit",
            {"finance_approver": "fay", "technical_approver": "tom", "executive": "cara"},
        )
        for person, stage in (
            (fay, "FINANCE_REVIEW"),
            (tom, "TECHNICAL_REVIEW"),
            (cara, "FINAL_SIGN_OFF"),
        ):
            await person.post(
                f"{stage} by {person.name}", f"{definition}/approve", {"stage": stage}
            )
        say("fay drafted the definition; fay, tom and cara approved it in stage order")

        starts = datetime.now(UTC) + timedelta(seconds=1)
        await cara.post(
            "go live", f"{base}/billing/go-live", {"billing_starts_at": starts.isoformat()}
        )
        say(f"cara went live: billing from {starts.isoformat()}")
        period_end = starts + timedelta(seconds=2)
        await asyncio.sleep(max(0.0, (period_end - datetime.now(UTC)).total_seconds()) + 0.2)
        calculated = await staff.post(
            "calculate the first period",
            f"{base}/definitions/value/calculations",
            {
                "period_start": starts.isoformat(),
                "period_end": period_end.isoformat(),
                "inputs": [
                    {
                        "metric": "revenue",
                        "value": "1500",
                        "source": "salesforce:Opportunity.Amount",
                        "fingerprint": hashlib.sha256(b"opportunities").hexdigest(),
                    },
                    {
                        "metric": "hours_saved",
                        "value": "2",
                        "source": "salesforce:Case.HoursSaved",
                        "fingerprint": hashlib.sha256(b"cases").hexdigest(),
                    },
                ],
            },
        )
        say(f"vendor staff calculated the first billed period ({', '.join(calculated['events'])})")

        keys = (await client.get("/v1/keys")).json()
        exported = await staff.get("export the ledger", f"{base}/export")
    target = bundle or Path(tempfile.mkdtemp(prefix="valueledger-demo-")) / f"{customer_id}.jsonl"
    target.write_bytes(exported.content)
    pems = [key["public_key"].encode() for key in _key_list(keys)]
    with target.open("rb") as lines:
        report = verify_bundle(lines, pinned_keyring(pems))
    if not report.ok:
        raise DemoError(f"the exported ledger does not verify: {report.failure}")
    say(f"exported {report.records} receipts to {target} and verified them offline: OK")
    return report.records


def _key_list(keys: Any) -> list[dict[str, Any]]:
    if isinstance(keys, dict):
        return list(keys.get("keys", []))
    return list(keys)
