"""Optimistic concurrency over HTTP: every aggregate a command changes has a GET giving its
version as an ETag, a command sent with that ETag as If-Match is decided and one with a stale
ETag is refused (412, with the current version as its ETag); and where the service requires
If-Match (`Settings.require_if_match`), a command on an aggregate that exists without it is
refused (428, naming that GET).

Which commands are refused for want of If-Match follows from the route table alone: every
route declaring `IF_MATCH`, as its `IfMatch` says (`creates`, or the GET at `read_at`). The
journey below calls every such route; it fails if a route is added that it does not call.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.app import create_app
from api.auth import TokenService
from api.common import ETAG, IF_MATCH, IfMatch
from api.staff import add_vendor_staff
from tests.api.test_access_matrix import handlers_of
from tests.api.test_command_routes import (
    Team,
    approved_definition,
    complete_setup,
    content,
    created,
    period,
    refused,
    register_team,
    steps,
)
from tests.conftest import client_address
from valueledger.services import Services

Client = httpx.AsyncClient

PARAMETER: Final = re.compile(r"\{(\w+)(?::\w+)?\}")


def app_requiring_if_match(services: Services, tokens: TokenService, required: bool) -> Litestar:
    settings = msgspec.structs.replace(services.settings, require_if_match=required)
    return create_app(dataclasses.replace(services, settings=settings), tokens)


async def client_of(app: Litestar) -> AsyncIterator[Client]:
    transport = httpx.ASGITransport(app=app, client=(client_address(), 123))  # type: ignore[arg-type]
    async with Client(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture(params=[True, False], ids=["required", "optional"])
async def requiring(
    request: pytest.FixtureRequest, services: Services, tokens: TokenService
) -> AsyncIterator[tuple[Litestar, Client]]:
    app = app_requiring_if_match(services, tokens, request.param)
    async for client in client_of(app):
        yield app, client


def filled(template: str, values: Mapping[str, Any]) -> str:
    """`template` with each ``{name}`` (or ``{name:type}``) in `values` replaced; the others
    left as they are."""
    return PARAMETER.sub(
        lambda found: quote(str(values[found[1]]), safe="") if found[1] in values else found[0],
        template,
    )


# --- the GETs of alerts, calculations and feedback --------------------------------------------


def etag_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    etag = response.headers["etag"]
    assert etag == f'"{response.json()["version"]}"'
    return etag


def stale(response: httpx.Response, current: int) -> None:
    refused(response, 412, "stale-version")
    assert response.headers["etag"] == f'"{current}"'


async def test_an_alert_is_read_with_its_etag_and_changed_with_it(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    alert = {
        "alert_id": "a-1",
        "kind": "data_source_error",
        "severity": "critical",
        "summary": "salesforce sync failing",
        "evidence": {"status": "401"},
    }
    created(await client.post(team.url("/alerts"), json=alert, headers=team.tom))
    read = await client.get(team.url("/alerts/a-1"), headers=team.fay)
    etag = etag_of(read)
    assert etag == '"1"'
    assert read.json()["status"] == "open"
    assert read.json()["evidence"] == {"status": "401"}

    acknowledge = team.url("/alerts/a-1/acknowledge")
    created(await client.post(acknowledge, headers={**team.cara, "If-Match": etag}))
    note = {"note": "Tom rotated the token"}
    resolve = team.url("/alerts/a-1/resolve")
    stale(await client.post(resolve, json=note, headers={**team.tom, "If-Match": etag}), 2)
    etag = etag_of(await client.get(team.url("/alerts/a-1"), headers=team.tom))
    assert etag == '"2"'
    created(await client.post(resolve, json=note, headers={**team.tom, "If-Match": etag}))

    read = await client.get(team.url("/alerts/a-1"), headers=team.tom)
    view = read.json()
    assert (view["status"], view["acknowledged_by"], view["resolved_by"]) == (
        "resolved",
        "cara",
        "tom",
    )
    assert view["resolution_note"] == "Tom rotated the token"
    assert "pii:v1" not in read.text
    refused(await client.get(team.url("/alerts/a-2"), headers=team.tom), 404)


async def test_a_periods_calculations_and_the_feedback_are_read_with_their_etags(
    client: Client, tokens: TokenService, tenant: str
) -> None:
    team = await register_team(client, tokens, tenant)
    await complete_setup(client, team)
    await approved_definition(client, team)
    calculations = team.url("/definitions/value/calculations")
    start = period(1)["period_start"]
    first = created(await client.post(calculations, json=period(1), headers=team.staff))

    def read_period(at: str = start) -> Any:
        url = team.url(f"/definitions/value/periods/{quote(at, safe='')}")
        return client.get(url, headers=team.fay)

    feedback = team.url("/feedback")
    etag = etag_of(await client.get(feedback, headers=team.tom))
    assert etag == '"0"'  # no verdict yet: the version a first one is decided on
    where = {"definition_id": "value", "period_start": start}
    confirm = team.url(f"/calculations/{first['calculation_id']}/confirm")
    created(await client.post(confirm, json=where, headers={**team.fay, "If-Match": etag}))
    stale_feedback = etag

    etag = etag_of(await read_period())
    assert etag == '"1"'
    again = {**period(1), "reason": "late timesheets arrived"}
    recalculate = f"{calculations}/recalculate"
    second = created(
        await client.post(recalculate, json=again, headers={**team.staff, "If-Match": etag})
    )
    stale(await client.post(recalculate, json=again, headers={**team.staff, "If-Match": etag}), 2)
    read = await read_period()
    assert etag_of(read) == '"2"'
    view = read.json()
    assert view["current"]["calculation_id"] == second["calculation_id"]
    assert view["current"]["supersedes"] == first["calculation_id"]
    assert view["current"]["reason"] == "late timesheets arrived"
    assert [c["calculation_id"] for c in view["superseded"]] == [first["calculation_id"]]
    assert "pii:v1" not in read.text

    earlier = (datetime.fromisoformat(start) - timedelta(days=1)).isoformat()
    refused(await read_period(earlier), 404)
    refused(await read_period("2030-01-01T00:00:00"), 400)  # no time zone: which instant?
    before_year_one = "0001-01-01T00:00:00+01:00"
    refused(await read_period(before_year_one), 400, "invalid-request")

    dispute = team.url(f"/calculations/{second['calculation_id']}/dispute")
    disputed = {**where, "expected_result": "2500", "reason": "we saved fewer hours"}
    stale(
        await client.post(dispute, json=disputed, headers={**team.tom, "If-Match": stale_feedback}),
        1,
    )
    etag = etag_of(await client.get(feedback, headers=team.tom))
    created(await client.post(dispute, json=disputed, headers={**team.tom, "If-Match": etag}))

    read = await client.get(feedback, headers=team.cara)
    assert etag_of(read) == '"2"'
    verdicts = read.json()["verdicts"]
    assert [(v["calculation_id"], v["verdict"], v["given_by"]) for v in verdicts] == [
        (first["calculation_id"], "confirmed", "fay"),
        (second["calculation_id"], "disputed", "tom"),
    ]
    assert verdicts[1]["reason"] == "we saved fewer hours"
    assert "pii:v1" not in read.text
    refused(await client.get("/v1/customers/nobody-here/feedback", headers=team.staff), 404)


# --- If-Match required: the journey through every command ---------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the journey: its route (the handler's name), who sends it, its body."""

    route: str
    caller: str
    body: dict[str, Any] | None = None


def journey() -> list[Step]:
    """Every command route, in an order in which each one is accepted."""
    now = datetime.now(UTC)
    alert = {"alert_id": "a-1", "kind": "sync", "severity": "warning", "summary": "slow sync"}
    where = {"definition_id": "value", "period_start": period(1)["period_start"]}
    stages = [("FINANCE_REVIEW", "fay"), ("TECHNICAL_REVIEW", "tom"), ("FINAL_SIGN_OFF", "cara")]
    approvers = {"finance_approver": "fay", "technical_approver": "tom", "executive": "cara"}
    return [
        Step(
            "invite_user",
            "staff",
            {"user_id": "tess", "role": "TECHNICAL", "name": "Tess", "email": "t@acme.example"},
        ),
        Step("change_user_role", "cara", {"role": "FINANCE"}),
        Step("change_billing_contact", "cara", {"name": "Bo", "email": "bo@acme.example"}),
        Step("issue_api_key", "cara", {"label": "ci"}),
        Step("revoke_api_key", "cara"),
        Step("revoke_user_access", "cara"),
        *(
            Step(name, "tom", body)
            for name, (_, body) in zip(
                (
                    "complete_api_integration",
                    "connect_data_source",
                    "map_metrics",
                    "establish_baseline",
                    "verify_accuracy",
                ),
                steps(),
                strict=True,
            )
        ),
        Step("draft_definition", "fay", {"definition_id": "value", **content()}),
        Step("revise_definition", "fay", {"revises_version": 1, **content("25")}),
        Step("submit_for_approval", "fay", approvers),
        Step("request_changes", "fay", {"stage": "FINANCE_REVIEW", "reason": "too high"}),
        Step("submit_for_approval", "fay", approvers),
        *(Step("approve_stage", who, {"stage": stage}) for stage, who in stages),
        Step("set_accuracy_threshold", "staff", {"threshold": "90"}),
        Step("go_live", "cara", {"billing_starts_at": (now + timedelta(hours=1)).isoformat()}),
        Step("pause_billing", "cara", {"reason": "renegotiating"}),
        Step("resume_billing", "cara", {"reason": "agreed"}),
        Step("raise_alert", "tom", {**alert, "evidence": {"lag": "5m"}}),
        Step("acknowledge_alert", "cara"),
        Step("resolve_alert", "tom", {"note": "caught up"}),
        Step("calculate_value", "staff", period(1)),
        Step("confirm_calculation", "fay", where),
        Step("recalculate_value", "staff", {**period(1), "reason": "late timesheets"}),
        Step("dispute_calculation", "tom", {**where, "expected_result": "2500", "reason": "no"}),
        Step("open_ticket", "cara", {"subject": "Login", "body": "Cannot log in"}),
        Step("assign_ticket", "staff", {"assignee": "staff-1"}),
        Step("await_customer_reply", "staff"),
        Step("post_ticket_message", "tom", {"body": "Still broken"}),
        Step("resolve_ticket", "staff", {"resolution": "Password reset"}),
        Step("close_ticket", "cara"),
        Step("reopen_ticket", "fay", {"reason": "broken again"}),
        Step("start_work_on_ticket", "staff"),
        # last: suspending ends the sessions of the customer's users
        Step("suspend_customer", "staff", {"reason": "unpaid invoice"}),
        Step("reactivate_customer", "staff", {"reason": "paid"}),
    ]


def headers_of(team: Team, caller: str) -> dict[str, str]:
    headers: dict[str, str] = getattr(team, caller)
    return headers


async def test_every_command_on_what_exists_needs_if_match_where_the_service_requires_it(
    requiring: tuple[Litestar, Client],
    client: Client,
    services: Services,
    tokens: TokenService,
    tenant: str,
) -> None:
    """Required: a command that creates its aggregate is accepted without If-Match; any other
    is refused without it (428, naming the GET whose ETag to send, recording nothing), and
    accepted with that ETag, also under the Idempotency-Key of its refusal. Not required (the
    default): every command is accepted without If-Match, as before."""
    team = await register_team(client, tokens, tenant)  # as the service requiring nothing
    app, client = requiring
    required = app.state.api.require_if_match
    await add_vendor_staff(services.pool, "staff-1")
    routes = {handler.handler_name: (route, handler) for route, handler in handlers_of(app)}
    takes_if_match = {name for name, (_, handler) in routes.items() if IF_MATCH in handler.opt}
    gets_with_etag = {
        PARAMETER.sub(r"{\1}", route.path)
        for route, handler in routes.values()
        if "GET" in handler.http_methods and ETAG in handler.opt
    }
    ids: dict[str, Any] = {
        "customer_id": tenant,
        "user_id": "tess",
        "definition_id": "value",
        "version": 2,
        "alert_id": "a-1",
    }
    called = set()
    for step in journey():
        route, handler = routes[step.route]
        declared: IfMatch = handler.opt[IF_MATCH]
        url = filled(route.path, ids)
        headers = headers_of(team, step.caller)
        if required and not declared.creates:
            assert declared.read_at is not None
            assert declared.read_at in gets_with_etag, step
            read = await client.get(
                filled(declared.read_at, {**ids, **(step.body or {})}), headers=team.staff
            )
            version = etag_of(read)  # read before the refusal: if it recorded, a 412 below
            key = {"Idempotency-Key": secrets.token_hex(8)}
            without = await client.post(url, headers={**headers, **key}, json=step.body)
            refused(without, 428, "precondition-required")
            path_params = {name: ids[name] for name in PARAMETER.findall(route.path)}
            named = f"GET {filled(declared.read_at, path_params)} as If-Match"
            assert named in without.json()["detail"], (step, without.text)
            headers = {**headers, **key, "If-Match": version}
        answer = created(await client.post(url, headers=headers, json=step.body))
        ids.update({k: v for k, v in answer.items() if k.endswith("_id") and k != "alert_id"})
        called.add(step.route)
    assert called == takes_if_match
