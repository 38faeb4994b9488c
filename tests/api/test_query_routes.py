"""Query routes over the read models, black-box over HTTP: the projectors are caught up by the
test (no projector runs in the background), then the routes answer from what they wrote."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from litestar.serialization import encode_json
from prometheus_client import REGISTRY

from api.auth import VENDOR, TokenService
from api.query_routes import READ_YOUR_WRITES_WAIT
from api.staff import add_vendor_staff
from domain.roles import Role
from projections import queries
from projections.registry import BY_NAME
from projections.runner import ProjectionRunner
from tests.api.conftest import bearer
from tests.api.test_command_routes import (
    APPROVERS,
    Team,
    approved_definition,
    complete_setup,
    content,
    created,
    period,
    refused,
    register_team,
)
from valueledger.services import Services

Client = httpx.AsyncClient


async def catch_up(services: Services, *names: str) -> None:
    for name in names:
        runner = ProjectionRunner(
            services.pool, BY_NAME[name], invalidate=services.cache.invalidate
        )
        await runner.catch_up()


def page(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def raise_alerts(client: Client, team: Team) -> list[str]:
    ids = []
    for n, severity in enumerate(("info", "critical", "warning")):
        answer = await client.post(
            team.url("/alerts"),
            json={
                "kind": "manual",
                "severity": severity,
                "summary": f"alert {n}",
                "evidence": {"n": str(n)},
            },
            headers=team.tom,
        )
        ids.append(created(answer)["alert_id"])
    return ids


async def test_a_query_waits_for_the_write_it_is_given_then_answers(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await catch_up(services, "receipts")
    written = created(await client.post(team.url("/api-keys"), json={}, headers=team.cara))

    started = time.monotonic()
    behind = await client.get(
        team.url("/receipts"), params={"min_position": written["cursor"]}, headers=team.cara
    )
    refused(behind, 503, "read-model-behind")
    assert behind.headers["retry-after"] == "1"
    assert time.monotonic() - started >= READ_YOUR_WRITES_WAIT * 0.9

    await catch_up(services, "receipts")
    body = page(
        await client.get(
            team.url("/receipts"), params={"min_position": written["cursor"]}, headers=team.cara
        )
    )
    assert [item["type"] for item in body["items"]][-1] == "ApiKeyIssued"
    assert written["seqs"][-1] == body["items"][-1]["seq"]

    refused(
        await client.get(team.url("/receipts"), params={"min_position": "x"}, headers=team.cara),
        400,
        "invalid-request",
    )


async def test_the_receipts_index_pages_by_seq(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await catch_up(services, "receipts")
    first = page(await client.get(team.url("/receipts"), params={"limit": 3}, headers=team.tom))
    assert [item["seq"] for item in first["items"]] == [1, 2, 3]
    assert first["next_after"] == "3"
    rest = page(
        await client.get(
            team.url("/receipts"), params={"after": first["next_after"]}, headers=team.tom
        )
    )
    assert [item["seq"] for item in rest["items"]] == [4]
    assert rest["next_after"] is None
    assert rest["items"][0]["type"] == "UserInvited"
    refused(await client.get(team.url("/receipts"), params={"after": "-1"}, headers=team.tom), 400)
    refused(await client.get(team.url("/receipts"), params={"limit": 0}, headers=team.tom), 400)
    past_bigint = await client.get(
        team.url("/receipts"), params={"after": str(2**63)}, headers=team.tom
    )
    refused(past_bigint, 400, "invalid-request")
    assert past_bigint.json()["errors"][0]["parameter"] == "after"


async def test_alerts_are_listed_filtered_and_paged(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    info, critical, warning = await raise_alerts(client, team)
    resolved = created(
        await client.post(
            team.url(f"/alerts/{info}/resolve"), json={"note": "fine"}, headers=team.tom
        )
    )
    await catch_up(services, "alerts")

    everything = page(
        await client.get(
            team.url("/alerts"), params={"min_position": resolved["cursor"]}, headers=team.fay
        )
    )
    assert [item["alert_id"] for item in everything["items"]] == [warning, critical, info]
    assert everything["items"][0]["evidence"] == {"n": "2"}

    unresolved = page(
        await client.get(team.url("/alerts"), params={"status": "unresolved"}, headers=team.fay)
    )
    assert [item["alert_id"] for item in unresolved["items"]] == [warning, critical]
    criticals = page(
        await client.get(team.url("/alerts"), params={"severity": "critical"}, headers=team.fay)
    )
    assert [item["alert_id"] for item in criticals["items"]] == [critical]

    first = page(await client.get(team.url("/alerts"), params={"limit": 2}, headers=team.fay))
    assert len(first["items"]) == 2
    second = page(
        await client.get(
            team.url("/alerts"), params={"limit": 2, "after": first["next_after"]}, headers=team.fay
        )
    )
    assert [item["alert_id"] for item in second["items"]] == [info]
    assert second["next_after"] is None

    refused(
        await client.get(team.url("/alerts"), params={"severity": "dire"}, headers=team.fay), 400
    )
    refused(await client.get(team.url("/alerts"), params={"after": "zzz"}, headers=team.fay), 400)
    other = bearer(tokens, "fay", "globex", Role.FINANCE)
    refused(await client.get(team.url("/alerts"), headers=other), 404)


async def test_tickets_per_customer_and_per_assignee(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    for member in ("staff-1", "olga"):  # tickets go to current vendor staff only
        await add_vendor_staff(services.pool, member)
    team = await register_team(client, tokens, tenant)
    ids = []
    for subject in ("first", "second"):
        answer = await client.post(
            team.url("/tickets"), json={"subject": subject, "body": "help"}, headers=team.cara
        )
        ids.append(created(answer)["ticket_id"])
    assigned = created(
        await client.post(
            team.url(f"/tickets/{ids[0]}/assign"), json={"assignee": "olga"}, headers=team.staff
        )
    )

    behind = await client.get(
        team.url("/tickets"), params={"min_position": assigned["cursor"]}, headers=team.cara
    )
    refused(behind, 503)
    await catch_up(services, "tickets")

    listed = page(
        await client.get(
            team.url("/tickets"), params={"min_position": assigned["cursor"]}, headers=team.cara
        )
    )
    assert [item["ticket_id"] for item in listed["items"]] == [ids[1], ids[0]]
    assert "subject" not in listed["items"][0]
    in_progress = page(
        await client.get(team.url("/tickets"), params={"status": "in_progress"}, headers=team.tom)
    )
    assert [item["ticket_id"] for item in in_progress["items"]] == [ids[0]]
    refused(
        await client.get(team.url("/tickets"), params={"status": "lost"}, headers=team.tom), 400
    )

    refused(await client.get("/v1/tickets", headers=team.cara), 403)
    olga = bearer(tokens, "olga", VENDOR, Role.ADMIN)
    mine = page(await client.get("/v1/tickets", headers=olga))
    assert [(item["tenant"], item["ticket_id"]) for item in mine["items"]] == [(tenant, ids[0])]
    theirs = page(
        await client.get(
            "/v1/tickets", params={"assignee": "olga", "tenant": tenant}, headers=team.staff
        )
    )
    assert [item["ticket_id"] for item in theirs["items"]] == [ids[0]]


async def test_the_approvals_queue_is_the_approvers_own(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    created(
        await client.post(
            team.url("/definitions"),
            json={"definition_id": "value", **content()},
            headers=team.fay,
        )
    )
    submitted = created(
        await client.post(
            team.url("/definitions/value/versions/1/submit"), json=APPROVERS, headers=team.fay
        )
    )
    await catch_up(services, "approvals")

    waiting = page(
        await client.get(
            "/v1/approvals", params={"min_position": submitted["cursor"]}, headers=team.fay
        )
    )
    assert [
        (item["tenant"], item["definition_id"], item["stage"]) for item in waiting["items"]
    ] == [(tenant, "value", "FINANCE_REVIEW")]
    assert page(await client.get("/v1/approvals", headers=team.tom))["items"] == []
    refused(await client.get("/v1/approvals", params={"approver": "fay"}, headers=team.tom), 403)
    refused(await client.get("/v1/approvals", params={"tenant": "globex"}, headers=team.fay), 404)

    refused(await client.get("/v1/approvals", headers=team.staff), 400)
    seen = page(
        await client.get(
            "/v1/approvals", params={"approver": "fay", "tenant": tenant}, headers=team.staff
        )
    )
    assert [item["version"] for item in seen["items"]] == [1]


async def test_the_vendor_overview_is_for_vendor_staff(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await approved_definition(client, team)
    refused(await client.get("/v1/overview", headers=team.cara), 403)

    await catch_up(services, "dashboard")
    overview = page(await client.get("/v1/overview", params={"tenant": tenant}, headers=team.staff))
    assert overview["customers"] == 1
    assert overview["versions_approved"] == 1
    assert page(await client.get("/v1/overview", headers=team.staff))["customers"] >= 1

    went_live = created(
        await client.post(
            team.url("/billing/go-live"),
            json={"billing_starts_at": "2099-01-01T00:00:00Z"},
            headers=team.cara,
        )
    )
    await catch_up(services, "dashboard")
    fresh = page(
        await client.get(
            "/v1/overview",
            params={"tenant": tenant, "min_position": went_live["cursor"]},
            headers=team.staff,
        )
    )
    assert fresh["went_live"] == 1
    cached = page(await client.get("/v1/overview", params={"tenant": tenant}, headers=team.staff))
    assert cached["went_live"] == 1


async def test_calculation_results_are_listed_cached_and_refreshed_by_the_projector(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await approved_definition(client, team)
    calculations = team.url("/definitions/value/calculations")
    for days_ago in (2, 1):
        created(await client.post(calculations, json=period(days_ago), headers=team.staff))
    await catch_up(services, "dashboard")
    listed = page(await client.get(team.url("/calculations"), headers=team.fay))
    assert len(listed["items"]) == 2
    assert listed["items"][0]["period_start"] > listed["items"][1]["period_start"]
    newest = listed["items"][0]["calculation_id"]

    again = {**period(1), "reason": "late data from the source"}
    created(await client.post(f"{calculations}/recalculate", json=again, headers=team.staff))
    cached = page(await client.get(team.url("/calculations"), headers=team.fay))
    assert cached["items"][0]["calculation_id"] == newest  # the projector has not run yet
    await catch_up(services, "dashboard")  # its commit invalidates the customer's entries
    fresh = page(await client.get(team.url("/calculations"), headers=team.fay))
    assert fresh["items"][0]["calculation_id"] != newest
    assert fresh["items"][0]["calculations"] == 2
    one = page(await client.get(team.url("/calculations"), params={"limit": 1}, headers=team.fay))
    assert one["next_after"] is not None


async def test_the_dashboard_waits_for_the_write_it_is_given_then_answers(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    """Read-your-writes on the dashboard, which is cached: given a command's cursor it never
    answers the view cached before that write."""
    team = await register_team(client, tokens, tenant)
    await catch_up(services, "dashboard")
    url = team.url("/dashboard")
    assert page(await client.get(url, headers=team.tom))["open_alerts"]["critical"] == 0
    alert = {"kind": "manual", "severity": "critical", "summary": "s", "evidence": {"n": "1"}}
    raised = created(await client.post(team.url("/alerts"), json=alert, headers=team.tom))
    after_it = {"min_position": raised["cursor"]}

    behind = await client.get(url, params=after_it, headers=team.tom)  # no projector runs
    refused(behind, 503, "read-model-behind")
    assert behind.headers["retry-after"] == "1"

    seen, _ = await asyncio.gather(
        client.get(url, params=after_it, headers=team.tom), catch_up(services, "dashboard")
    )
    assert page(seen)["open_alerts"]["critical"] == 1

    malformed = await client.get(url, params={"min_position": "x"}, headers=team.tom)
    refused(malformed, 400, "invalid-request")
    assert malformed.json()["errors"][0]["parameter"] == "min_position"
    document = (await client.get("/schema/openapi.json")).json()
    parameters = document["paths"]["/v1/customers/{customer_id}/dashboard"]["get"]["parameters"]
    assert "min_position" in {parameter["name"] for parameter in parameters}


def dashboard_reads(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "valueledger_cache_requests_total", {"view": "dashboard", "outcome": outcome}
        )
        or 0.0
    )


async def test_the_cached_dashboard_is_the_same_bytes_as_the_uncached_answer(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    """A warm dashboard is answered with the bytes Redis holds, never decoded and encoded
    again: they must be exactly what a cold read answers, and what Litestar made of the view
    when the route returned it as a Struct."""
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await catch_up(services, "dashboard")  # its batch moved the customer's generation on
    misses, hits = dashboard_reads("miss"), dashboard_reads("hit")
    cold = await client.get(team.url("/dashboard"), headers=team.cara)
    warm = await client.get(team.url("/dashboard"), headers=team.fay)
    assert (dashboard_reads("miss"), dashboard_reads("hit")) == (misses + 1, hits + 1)
    assert cold.status_code == warm.status_code == 200, cold.text
    assert cold.content == warm.content
    assert cold.headers["content-type"] == warm.headers["content-type"] == "application/json"
    view = await queries.customer_dashboard(services.pool, tenant)
    assert view is not None
    assert warm.content == encode_json(view)
    assert warm.json()["setup"]["steps_done"] == warm.json()["setup"]["steps_total"]


async def test_a_revoked_token_is_refused_at_once_on_a_warm_dashboard(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    """The dashboard's entry is read in the round trip that reads the token's revocations, and
    a token's checked claims are remembered: neither may let a revoked token through."""
    team = await register_team(client, tokens, tenant)
    await catch_up(services, "dashboard")
    url = team.url("/dashboard")
    token, principal = tokens.issue("fay", tenant, Role.FINANCE, datetime.now(UTC))
    fay = {"Authorization": f"Bearer {token}"}
    for _ in range(2):  # cold, then warm with the token remembered
        assert (await client.get(url, headers=fay)).status_code == 200
    await tokens.revoke(principal, datetime.now(UTC))
    refused(await client.get(url, headers=fay), 401, "unauthenticated")

    for revoke in (tokens.revoke_user, tokens.revoke_tenant):
        token, _ = tokens.issue("cara", tenant, Role.CUSTOMER_ADMIN, datetime.now(UTC))
        cara = {"Authorization": f"Bearer {token}"}
        assert (await client.get(url, headers=cara)).status_code == 200
        if revoke is tokens.revoke_user:
            await tokens.revoke_user(tenant, "cara", datetime.now(UTC))
        else:
            await tokens.revoke_tenant(tenant, datetime.now(UTC))
        refused(await client.get(url, headers=cara), 401, "unauthenticated")


async def test_a_warm_dashboard_is_hidden_from_other_customers_users(
    client: Client, tokens: TokenService, services: Services, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await catch_up(services, "dashboard")
    assert (await client.get(team.url("/dashboard"), headers=team.cara)).status_code == 200
    outsider = bearer(tokens, "olga", f"{tenant}-other", Role.CUSTOMER_ADMIN)
    refused(await client.get(team.url("/dashboard"), headers=outsider), 404, "not-found")
    refused(await client.get("/v1/customers/Not!A!Customer/dashboard", headers=team.staff), 400)
