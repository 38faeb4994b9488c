"""Optimistic concurrency over HTTP: every aggregate a command changes has a GET giving its
version as an ETag, a command sent with that ETag as If-Match is decided and one with a stale
ETag is refused (412, with the current version as its ETag).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.app import create_app
from api.auth import TokenService
from tests.api.test_command_routes import (
    approved_definition,
    complete_setup,
    created,
    period,
    refused,
    register_team,
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
