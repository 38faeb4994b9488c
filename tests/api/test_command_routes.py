"""Command routes, black-box over HTTP against the real handlers, store, vault and Redis.

Each test registers its own customer through the API with one user of each customer role
(`cara` CUSTOMER_ADMIN, `fay` FINANCE, `tom` TECHNICAL) and goes as far as it needs.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from api.app import create_app
from api.auth import VENDOR, TokenService
from api.policy import POLICY
from api.staff import add_vendor_staff
from domain.roles import Role
from tests.api.conftest import bearer
from valueledger.services import Services

Client = httpx.AsyncClient
Headers = dict[str, str]

SECRET = "sk_live_do-not-store-me-0123456789"
FORMULA = "(metric.revenue - baseline.revenue) * 0.5 + metric.hours_saved * 40"
FINGERPRINT = "f" * 64


@dataclass(frozen=True)
class Team:
    """One customer and the headers of its people, and of vendor staff."""

    tenant: str
    staff: Headers
    cara: Headers
    fay: Headers
    tom: Headers

    def url(self, path: str = "") -> str:
        return f"/v1/customers/{self.tenant}{path}"


def created(response: httpx.Response, *events: str) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    if events:
        assert body["events"] == list(events), body
    assert body["cursor"]
    assert response.headers["etag"] == f'"{body["version"]}"'
    return body


def refused(response: httpx.Response, status: int, kind: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if kind is not None:
        assert response.json()["type"].endswith(f"/{kind}"), response.json()


async def register_team(client: Client, tokens: TokenService, tenant: str) -> Team:
    staff = bearer(tokens, "staff-1", VENDOR, Role.ADMIN)
    created(
        await client.post(
            "/v1/customers",
            json={
                "customer_id": tenant,
                "name": "Acme Ltd",
                "currency": "EUR",
                "billing_contact": {"name": "Bea Billing", "email": "bea@acme.example"},
            },
            headers=staff,
        )
    )
    for user, role in (("cara", "CUSTOMER_ADMIN"), ("fay", "FINANCE"), ("tom", "TECHNICAL")):
        created(
            await client.post(
                f"/v1/customers/{tenant}/users",
                json={"user_id": user, "role": role, "name": user, "email": f"{user}@acme.example"},
                headers=staff,
            )
        )
    return Team(
        tenant=tenant,
        staff=staff,
        cara=bearer(tokens, "cara", tenant, Role.CUSTOMER_ADMIN),
        fay=bearer(tokens, "fay", tenant, Role.FINANCE),
        tom=bearer(tokens, "tom", tenant, Role.TECHNICAL),
    )


def steps() -> list[tuple[str, dict[str, Any]]]:
    now = datetime.now(UTC)
    return [
        (
            "/setup/api-integration",
            {
                "secret": SECRET,
                "credential_reference": "vault://kv/acme/api-key",
                "validation_passed": True,
            },
        ),
        ("/setup/data-source", {"source_kind": "salesforce", "connection_test_passed": True}),
        (
            "/setup/metrics",
            {
                "mappings": [
                    {"source_field": "opportunity.amount", "metric": "revenue"},
                    {"source_field": "timesheet.saved", "metric": "hours_saved"},
                ]
            },
        ),
        (
            "/setup/baseline",
            {
                "baselines": [
                    {"metric": "revenue", "value": "1000"},
                    {"metric": "hours_saved", "value": "0"},
                ],
                "period_start": (now - timedelta(days=60)).isoformat(),
                "period_end": (now - timedelta(days=30)).isoformat(),
            },
        ),
        (
            "/setup/accuracy",
            {
                "measurements": [
                    {"metric": "revenue", "measured": "100", "expected": "98"},
                    {"metric": "hours_saved", "measured": "10", "expected": "10"},
                ]
            },
        ),
    ]


async def complete_setup(client: Client, team: Team) -> None:
    for path, body in steps():
        created(await client.post(team.url(path), json=body, headers=team.tom))


def content(share: str = "20") -> dict[str, Any]:
    return {
        "name": "Value delivered",
        "metrics": [{"name": "revenue", "unit": "EUR"}, {"name": "hours_saved", "unit": "hours"}],
        "formula": FORMULA,
        "pricing": {"share_percent": share, "floor_minor_units": 1000, "currency": "EUR"},
    }


APPROVERS = {"finance_approver": "fay", "technical_approver": "tom", "executive": "cara"}


async def approved_definition(client: Client, team: Team, definition_id: str = "value") -> None:
    created(
        await client.post(
            team.url("/definitions"),
            json={"definition_id": definition_id, **content()},
            headers=team.fay,
        )
    )
    version = team.url(f"/definitions/{definition_id}/versions/1")
    created(await client.post(f"{version}/submit", json=APPROVERS, headers=team.fay))
    for stage, who in (
        ("FINANCE_REVIEW", team.fay),
        ("TECHNICAL_REVIEW", team.tom),
        ("FINAL_SIGN_OFF", team.cara),
    ):
        created(await client.post(f"{version}/approve", json={"stage": stage}, headers=who))


async def ledger_bytes(services: Services, tenant: str) -> bytes:
    async with services.pool.acquire() as connection:
        rows = await connection.fetch("SELECT canonical FROM events WHERE tenant = $1", tenant)
    return b"".join(bytes(row["canonical"]) for row in rows)


# --- the customer account -----------------------------------------------------------------------


async def test_user_roles_and_access_change_and_old_tokens_stop_working(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    refused(
        await client.post(
            team.url("/users/fay/role"), json={"role": "TECHNICAL"}, headers=team.tom
        ),
        403,
        "forbidden",
    )
    created(
        await client.post(
            team.url("/users/fay/role"), json={"role": "TECHNICAL"}, headers=team.cara
        ),
        "UserRoleChanged",
    )
    refused(await client.get(team.url("/setup"), headers=team.fay), 401, "unauthenticated")

    refused(await client.post(team.url("/users/tom/revoke"), headers=team.fay), 401)
    created(
        await client.post(team.url("/users/tom/revoke"), headers=team.cara), "UserAccessRevoked"
    )
    refused(await client.get(team.url("/setup"), headers=team.tom), 401)
    refused(
        await client.post(team.url("/users/tom/revoke"), headers=team.cara), 404, "unknown-user"
    )


async def test_billing_contact_is_sealed_and_only_customer_admins_change_it(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    contact = {"name": "Nina Newcontact", "email": "nina@acme.example", "phone": "+44 1234"}
    refused(await client.post(team.url("/billing-contact"), json=contact, headers=team.fay), 403)
    refused(
        await client.post(
            team.url("/billing-contact"), json={**contact, "fax": "1"}, headers=team.cara
        ),
        400,
        "invalid-request",
    )
    created(
        await client.post(team.url("/billing-contact"), json=contact, headers=team.cara),
        "BillingContactChanged",
    )
    stored = await ledger_bytes(services, tenant)
    assert b"Nina" not in stored
    assert b"nina@acme" not in stored


async def test_an_api_key_is_shown_once_and_can_be_revoked(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    refused(await client.post(team.url("/api-keys"), json={"label": "ci"}, headers=team.tom), 403)
    stale = await client.post(
        team.url("/api-keys"), json={"label": "ci"}, headers={**team.cara, "If-Match": '"1"'}
    )
    refused(stale, 412, "stale-version")
    answer = await client.post(team.url("/api-keys"), json={"label": "ci"}, headers=team.cara)
    body = created(answer, "ApiKeyIssued")
    assert answer.headers["cache-control"] == "no-store"
    assert body["api_key"].startswith(f"vlk_{body['key_id']}_")
    assert body["api_key"].encode() not in await ledger_bytes(services, tenant)

    revoke = team.url(f"/api-keys/{body['key_id']}/revoke")
    created(await client.post(revoke, headers=team.cara), "ApiKeyRevoked")
    refused(await client.post(revoke, headers=team.cara), 422, "api-key-already-revoked")


async def issued_key(client: Client, team: Team, role: str) -> tuple[str, Headers]:
    answer = await client.post(
        team.url("/api-keys"), json={"label": role.lower(), "role": role}, headers=team.cara
    )
    body = created(answer, "ApiKeyIssued")
    return body["key_id"], {
        "Authorization": f"ApiKey {body['api_key']}",
        "X-Customer-Id": team.tenant,
    }


async def test_a_machine_client_acts_in_its_keys_role_and_is_recorded_as_the_key(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    for role in ("ADMIN", "CUSTOMER_ADMIN", "AUDITOR"):
        wrong = await client.post(team.url("/api-keys"), json={"role": role}, headers=team.cara)
        refused(wrong, 400, "invalid-request")
        assert "role" in wrong.text
    technical_id, technical = await issued_key(client, team, "TECHNICAL")
    finance_id, finance = await issued_key(client, team, "FINANCE")

    for path, body in steps():  # the whole wizard, by a machine client
        created(await client.post(team.url(path), json=body, headers=technical))
    alert = {
        "kind": "data_source_error",
        "severity": "warning",
        "summary": "slow sync",
        "evidence": {"lag_seconds": "90"},
    }
    created(await client.post(team.url("/alerts"), json=alert, headers=technical), "AlertRaised")
    refused(await client.post(team.url("/alerts"), json=alert, headers=finance), 403)
    created(
        await client.post(
            team.url("/definitions"), json={"definition_id": "value", **content()}, headers=finance
        ),
        "DefinitionDrafted",
    )
    # Sign-offs are people's: a key cannot be named an approver, whatever its role.
    version = team.url("/definitions/value/versions/1")
    by_key = {**APPROVERS, "finance_approver": f"api-key:{finance_id}"}
    naming_key = await client.post(f"{version}/submit", json=by_key, headers=team.fay)
    refused(naming_key, 422, "invalid-approver")
    assert "an API key: sign-offs are given by people" in naming_key.json()["detail"]

    async with services.pool.acquire() as connection:
        actors = {
            (row["type"], row["actor"])
            for row in await connection.fetch(
                "SELECT type, meta->'actor' AS actor FROM events WHERE tenant = $1", tenant
            )
        }
    key_actor = f'{{"role": "TECHNICAL", "user": "api-key:{technical_id}"}}'
    wizard = (
        "ApiIntegrationCompleted",
        "DataSourceConnected",
        "MetricsMapped",
        "BaselineEstablished",
        "AccuracyVerified",
        "AlertRaised",
    )
    assert {(kind, key_actor) for kind in wizard} <= actors
    assert ("DefinitionDrafted", f'{{"role": "FINANCE", "user": "api-key:{finance_id}"}}') in (
        actors
    )

    # The customer's users are its people; keys are listed under their own route.
    summary = (await client.get(team.url(), headers=team.cara)).json()
    assert sorted(summary["users"]) == ["cara", "fay", "tom"]

    created(await client.post(team.url(f"/api-keys/{technical_id}/revoke"), headers=team.cara))
    refused(await client.post(team.url("/alerts"), json=alert, headers=technical), 401)


async def test_only_vendor_staff_suspend_and_a_suspended_customer_changes_nothing(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    reason = {"reason": "invoices unpaid since March"}
    refused(await client.post(team.url("/suspend"), json=reason, headers=team.cara), 403)
    created(await client.post(team.url("/suspend"), json=reason, headers=team.staff))
    # The suspension ended cara's session; a token issued after it (an identity provider's,
    # say) authenticates, and the account itself refuses.
    refused(await client.post(team.url("/api-keys"), json={}, headers=team.cara), 401)
    cara = bearer(tokens, "cara", tenant, Role.CUSTOMER_ADMIN)
    refused(
        await client.post(team.url("/api-keys"), json={}, headers=cara), 422, "customer-suspended"
    )
    refused(await client.post(team.url("/reactivate"), json=reason, headers=cara), 403)
    created(
        await client.post(team.url("/reactivate"), json={"reason": "paid"}, headers=team.staff),
        "CustomerReactivated",
    )
    created(await client.post(team.url("/api-keys"), json={}, headers=cara))


async def test_vendor_staff_read_a_suspended_customer_and_reactivate_it_with_its_etag(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    suspension = created(
        await client.post(team.url("/suspend"), json={"reason": "unpaid"}, headers=team.staff)
    )
    account = await client.get(team.url(), headers=team.staff)
    assert account.status_code == 200, account.text
    assert account.json()["status"] == "SUSPENDED"
    assert account.json()["version"] == suspension["version"]
    assert account.headers["etag"] == f'"{suspension["version"]}"'
    for path in ("/setup", "/billing"):  # every read of the account's aggregates still answers
        read = await client.get(team.url(path), headers=team.staff)
        assert read.status_code == 200, (path, read.text)
    created(
        await client.post(
            team.url("/reactivate"),
            json={"reason": "paid"},
            headers={**team.staff, "If-Match": account.headers["etag"]},
        ),
        "CustomerReactivated",
    )


# --- the setup wizard ---------------------------------------------------------------------------


async def test_setup_steps_record_the_credential_by_fingerprint_only(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    empty = await client.get(team.url("/setup"), headers=team.fay)
    assert empty.status_code == 200, empty.text
    assert empty.headers["etag"] == '"0"'
    assert empty.json()["next_step"] == "api_integration"

    first_path, first = steps()[0]
    refused(await client.post(team.url(first_path), json=first, headers=team.fay), 403)
    refused(
        await client.post(team.url(first_path), json={**first, "token": "x"}, headers=team.tom),
        400,
    )
    refused(
        await client.post(
            team.url(first_path), json=first, headers={**team.tom, "If-Match": '"3"'}
        ),
        412,
    )
    for path, body in steps():
        created(
            await client.post(team.url(path), json=body, headers=team.staff)
            if path.endswith("metrics")
            else await client.post(team.url(path), json=body, headers=team.tom)
        )

    read = await client.get(team.url("/setup"), headers=team.fay)
    view = read.json()
    assert read.headers["etag"] == f'"{view["version"]}"' == '"5"'
    assert view["next_step"] is None
    assert view["accuracy"] == "98.98"
    integration = view["steps"]["api_integration"]
    assert integration["credential_fingerprint"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert SECRET not in read.text
    assert SECRET.encode() not in await ledger_bytes(services, tenant)

    redo_path, redo = steps()[4]
    refused(
        await client.post(team.url(redo_path), json=redo, headers={**team.tom, "If-Match": '"4"'}),
        412,
        "stale-version",
    )
    created(
        await client.post(team.url(redo_path), json=redo, headers={**team.tom, "If-Match": '"5"'}),
        "AccuracyVerified",
    )


# --- value definitions and their approval -------------------------------------------------------


async def test_finance_alone_changes_pricing_and_approvers_act_only_on_their_stage(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    refused(
        await client.post(
            team.url("/definitions"),
            json={"definition_id": "value", **content(), "owner": "fay"},
            headers=team.fay,
        ),
        400,
    )
    created(
        await client.post(
            team.url("/definitions"), json={"definition_id": "value", **content()}, headers=team.fay
        ),
        "DefinitionDrafted",
    )
    read = await client.get(team.url("/definitions/value"), headers=team.tom)
    assert read.status_code == 200, read.text
    assert read.headers["etag"] == '"1"'
    assert read.json()["versions"][0]["status"] == "DRAFT"

    versions = team.url("/definitions/value/versions")
    refused(
        await client.post(
            versions, json={"revises_version": 1, **content("25")}, headers=team.cara
        ),
        422,
        "pricing-change-not-allowed",
    )
    refused(
        await client.post(
            versions, json={"revises_version": 1, **content("25")}, headers=team.staff
        ),
        422,
        "pricing-change-not-allowed",
    )
    created(
        await client.post(
            versions,
            json={"revises_version": 1, **content("25")},
            headers={**team.fay, "If-Match": '"1"'},
        ),
        "DefinitionRevised",
    )
    created(
        await client.post(versions, json={"revises_version": 2, **content("25")}, headers=team.cara)
    )

    version = f"{versions}/3"
    created(await client.post(f"{version}/submit", json=APPROVERS, headers=team.cara))
    finance = {"stage": "FINANCE_REVIEW"}
    refused(await client.post(f"{version}/approve", json=finance, headers=team.staff), 403)
    refused(
        await client.post(f"{version}/approve", json=finance, headers=team.tom),
        422,
        "not-assigned-approver",
    )
    refused(
        await client.post(
            f"{version}/approve", json=finance, headers={**team.fay, "If-Match": '"2"'}
        ),
        412,
    )
    created(
        await client.post(f"{version}/approve", json=finance, headers=team.fay), "StageApproved"
    )
    created(
        await client.post(
            f"{version}/approve", json={"stage": "TECHNICAL_REVIEW"}, headers=team.tom
        )
    )
    refused(
        await client.post(
            f"{version}/request-changes",
            json={"stage": "FINAL_SIGN_OFF", "reason": "cap it"},
            headers=team.fay,
        ),
        422,
        "not-assigned-approver",
    )
    refused(
        await client.post(
            f"{version}/request-changes",
            json={"stage": "FINAL_SIGN_OFF", "reason": "   "},
            headers=team.cara,
        ),
        400,
    )
    created(
        await client.post(
            f"{version}/request-changes",
            json={"stage": "FINAL_SIGN_OFF", "reason": "Please add a cap, Cara"},
            headers=team.cara,
        ),
        "ChangesRequested",
    )
    view = (await client.get(team.url("/definitions/value"), headers=team.fay)).json()
    latest = view["versions"][-1]
    assert latest["status"] == "DRAFT"
    assert latest["changes_requested"]["reason"] == "Please add a cap, Cara"
    assert "pii:v1" not in str(view)

    created(await client.post(f"{version}/submit", json=APPROVERS, headers=team.fay))
    for stage, who in (
        ("FINANCE_REVIEW", team.fay),
        ("TECHNICAL_REVIEW", team.tom),
        ("FINAL_SIGN_OFF", team.cara),
    ):
        last = await client.post(f"{version}/approve", json={"stage": stage}, headers=who)
    created(last, "DefinitionApproved")
    refused(await client.get(team.url("/definitions/nothing"), headers=team.fay), 404)


# --- go-live and billing ------------------------------------------------------------------------


async def test_going_live_pausing_and_the_threshold(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    starts = {"billing_starts_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    refused(
        await client.post(team.url("/billing/go-live"), json=starts, headers=team.cara),
        422,
        "preflight-failed",
    )
    await complete_setup(client, team)
    await approved_definition(client, team)
    refused(await client.post(team.url("/billing/go-live"), json=starts, headers=team.fay), 403)
    refused(
        await client.post(
            team.url("/billing/go-live"),
            json={"billing_starts_at": "2030-01-01T00:00:00"},
            headers=team.cara,
        ),
        400,
    )
    created(
        await client.post(team.url("/billing/go-live"), json=starts, headers=team.cara), "WentLive"
    )
    pause = {"reason": "Cara is renegotiating"}
    refused(await client.post(team.url("/billing/pause"), json=pause, headers=team.tom), 403)
    created(
        await client.post(team.url("/billing/pause"), json=pause, headers=team.cara),
        "BillingPaused",
    )
    created(
        await client.post(
            team.url("/billing/resume"), json={"reason": "agreed"}, headers=team.cara
        ),
        "BillingResumed",
    )
    threshold = {"threshold": "90.50"}
    refused(
        await client.post(
            team.url("/billing/accuracy-threshold"), json=threshold, headers=team.cara
        ),
        403,
    )
    created(
        await client.post(
            team.url("/billing/accuracy-threshold"),
            json=threshold,
            headers={**team.staff, "If-Match": '"3"'},
        ),
        "AccuracyThresholdSet",
    )

    read = await client.get(team.url("/billing"), headers=team.tom)
    view = read.json()
    assert read.headers["etag"] == '"4"'
    assert view["live"] is True
    assert view["accuracy_threshold"] == "90.50"
    assert view["receipt"]["went_live_by"] == "cara"
    assert view["pauses"][0]["reason"] == "Cara is renegotiating"
    assert view["pauses"][0]["resume_reason"] == "agreed"
    assert "pii:v1" not in read.text


# --- alerts -------------------------------------------------------------------------------------


async def test_alerts_are_raised_acknowledged_and_resolved(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    alert = {
        "kind": "data_source_error",
        "severity": "critical",
        "summary": "salesforce sync failing",
        "evidence": {"status": "401"},
    }
    refused(await client.post(team.url("/alerts"), json=alert, headers=team.fay), 403)
    refused(
        await client.post(team.url("/alerts"), json={**alert, "colour": "red"}, headers=team.tom),
        400,
    )
    raised = created(
        await client.post(team.url("/alerts"), json=alert, headers=team.tom), "AlertRaised"
    )
    alert_id = raised["alert_id"]
    chosen = created(
        await client.post(team.url("/alerts"), json={**alert, "alert_id": "a-1"}, headers=team.tom)
    )
    assert chosen["alert_id"] == "a-1"
    refused(
        await client.post(team.url("/alerts"), json={**alert, "alert_id": "a-1"}, headers=team.tom),
        422,
        "duplicate-alert",
    )

    created(
        await client.post(team.url(f"/alerts/{alert_id}/acknowledge"), headers=team.cara),
        "AlertAcknowledged",
    )
    note = {"note": "Tom rotated the token"}
    refused(
        await client.post(team.url(f"/alerts/{alert_id}/resolve"), json=note, headers=team.fay), 403
    )
    created(
        await client.post(team.url(f"/alerts/{alert_id}/resolve"), json=note, headers=team.tom),
        "AlertResolved",
    )
    refused(
        await client.post(team.url(f"/alerts/{alert_id}/resolve"), json=note, headers=team.tom),
        422,
        "alert-already-resolved",
    )
    assert b"rotated" not in await ledger_bytes(services, tenant)


# --- calculations and feedback ------------------------------------------------------------------


def period(days_ago: int) -> dict[str, Any]:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days_ago
    )
    return {
        "period_start": (end - timedelta(days=1)).isoformat(),
        "period_end": end.isoformat(),
        "inputs": [
            {
                "metric": "revenue",
                "value": "5000",
                "source": "sf:amount",
                "fingerprint": FINGERPRINT,
            },
            {
                "metric": "hours_saved",
                "value": "10",
                "source": "ts:saved",
                "fingerprint": FINGERPRINT,
            },
        ],
    }


async def test_vendor_staff_calculate_and_the_customer_judges(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await approved_definition(client, team)
    calculations = team.url("/definitions/value/calculations")
    refused(await client.post(calculations, json=period(1), headers=team.cara), 403)
    refused(
        await client.post(calculations, json={**period(1), "result": "1"}, headers=team.staff), 400
    )
    before_year_one = {**period(1), "period_start": "0001-01-01T00:00:00+01:00"}
    refused(await client.post(calculations, json=before_year_one, headers=team.staff), 400)
    first = created(
        await client.post(calculations, json=period(1), headers=team.staff), "ValueCalculated"
    )
    where = {"definition_id": "value", "period_start": period(1)["period_start"]}
    confirm = team.url(f"/calculations/{first['calculation_id']}/confirm")
    created(await client.post(confirm, json=where, headers=team.fay), "CalculationConfirmed")
    refused(await client.post(confirm, json=where, headers=team.fay), 422, "verdict-already-given")

    again = {**period(1), "reason": "late timesheets arrived"}
    again["inputs"][1]["value"] = "12"
    refused(await client.post(f"{calculations}/recalculate", json=again, headers=team.cara), 403)
    second = created(
        await client.post(f"{calculations}/recalculate", json=again, headers=team.staff),
        "ValueRecalculated",
    )
    dispute = {**where, "expected_result": "2500", "reason": "we saved fewer hours"}
    disputed = created(
        await client.post(
            team.url(f"/calculations/{second['calculation_id']}/dispute"),
            json=dispute,
            headers=team.tom,
        )
    )
    assert disputed["events"] == ["CalculationDisputed"]
    refused(
        await client.post(
            team.url(f"/calculations/{second['calculation_id']}/dispute"),
            json={**dispute, "extra": 1},
            headers=team.tom,
        ),
        400,
    )


# --- support tickets ----------------------------------------------------------------------------


async def test_a_ticket_from_opening_to_reopening(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    for member in ("staff-1", "staff-2"):  # tickets go to current vendor staff only
        await add_vendor_staff(services.pool, member)
    team = await register_team(client, tokens, tenant)
    ticket = {
        "subject": "Cara cannot log in",
        "body": "Since Monday, says Cara",
        "priority": "high",
    }
    refused(
        await client.post(team.url("/tickets"), json={**ticket, "cc": "x"}, headers=team.cara), 400
    )
    opened = created(
        await client.post(team.url("/tickets"), json=ticket, headers=team.cara), "TicketOpened"
    )
    tickets = team.url(f"/tickets/{opened['ticket_id']}")

    refused(await client.post(f"{tickets}/assign", json={"assignee": "x"}, headers=team.cara), 403)
    created(
        await client.post(f"{tickets}/assign", json={"assignee": "staff-2"}, headers=team.staff),
        "TicketAssigned",
        "TicketStatusChanged",
    )
    created(await client.post(f"{tickets}/await-reply", headers=team.staff))
    message = created(
        await client.post(f"{tickets}/messages", json={"body": "Still broken"}, headers=team.tom),
        "TicketMessagePosted",
        "TicketStatusChanged",
    )
    refused(await client.post(f"{tickets}/await-reply", headers=team.cara), 403)
    refused(
        await client.post(f"{tickets}/resolve", json={"resolution": "x"}, headers=team.cara), 403
    )
    refused(
        await client.post(
            f"{tickets}/resolve",
            json={"resolution": "reset"},
            headers={**team.staff, "If-Match": '"1"'},
        ),
        412,
    )
    created(
        await client.post(
            f"{tickets}/resolve", json={"resolution": "Password reset"}, headers=team.staff
        ),
        "TicketResolved",
    )
    created(await client.post(f"{tickets}/close", headers=team.cara), "TicketStatusChanged")
    created(
        await client.post(f"{tickets}/reopen", json={"reason": "broken again"}, headers=team.fay),
        "TicketReopened",
    )
    created(await client.post(f"{tickets}/start-work", headers=team.staff))

    read = await client.get(tickets, headers=team.fay)
    assert read.status_code == 200, read.text
    view = read.json()
    assert read.headers["etag"] == f'"{view["version"]}"'
    assert view["subject"] == "Cara cannot log in"
    assert view["body"] == "Since Monday, says Cara"
    assert view["assignee"] == "staff-2"
    assert view["status"] == "in_progress"
    assert view["resolution"] is None
    assert [(m["message_id"], m["body"]) for m in view["messages"]] == [
        (message["message_id"], "Still broken")
    ]
    assert "pii:v1" not in read.text
    assert b"Cara cannot" not in await ledger_bytes(services, tenant)
    refused(await client.get(team.url("/tickets/t-nothing"), headers=team.fay), 404)


# --- tenants and documentation ------------------------------------------------------------------


async def test_a_customers_user_cannot_read_or_change_another_customer(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    created(
        await client.post(
            team.url("/definitions"), json={"definition_id": "value", **content()}, headers=team.fay
        )
    )
    intruder = bearer(tokens, "cara", "globex", Role.CUSTOMER_ADMIN)
    for path in ("/setup", "/definitions/value", "/billing", "/alerts", "/tickets", "/receipts"):
        refused(await client.get(team.url(path), headers=intruder), 404)
    refused(await client.post(team.url("/api-keys"), json={"label": "mine"}, headers=intruder), 404)
    refused(
        await client.post(
            team.url("/definitions/value/versions/1/submit"), json=APPROVERS, headers=intruder
        ),
        404,
    )
    refused(
        await client.post(
            team.url("/tickets"), json={"subject": "s", "body": "b"}, headers=intruder
        ),
        404,
    )
    refused(await client.get("/v1/customers/nobody-here/setup", headers=team.staff), 404)


def test_the_policy_lists_exactly_the_routes_that_need_a_caller(
    services: Services, tokens: TokenService
) -> None:
    app = create_app(services, tokens)
    handlers = [handler for route in app.routes for handler in route.route_handlers]  # type: ignore[union-attr]
    guarded = {
        handler.handler_name
        for handler in handlers
        if "principal" in inspect.signature(handler.fn).parameters
    }
    assert guarded == set(POLICY)
