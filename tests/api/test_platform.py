"""Cross-cutting behaviour over HTTP, against the real services: idempotency keys, rate
limits, body limits, request logs, traces, metrics and readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import quote

import asyncpg
import httpx
import msgspec
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from litestar import Request
from prometheus_client import REGISTRY

from api.app import create_app
from api.auth import COOKIE_NAME, VENDOR, TokenService
from api.idempotency import KEEP_TTL, KeptEntry, caller_name, entry_key, parse_key
from api.observability import configure_logging, redact_secrets
from api.problems import problem_for
from api.ratelimit import (
    RateLimitMiddleware,
    RateLimitSettings,
    json_depth_exceeds,
    parse_networks,
    unlimited,
)
from domain.roles import Role
from eventstore.errors import AppendOutcomeUnknownError, LedgerBusyError
from eventstore.store import EventStore
from projections.cache import SOCKET_TIMEOUT, connect_cache
from projections.request_redis import request_redis
from tests.api.conftest import bearer
from tests.api.test_customers import registration
from tests.conftest import client_address
from valueledger.services import Services

Client = httpx.AsyncClient


@asynccontextmanager
async def serve(
    services: Services, tokens: TokenService, peer: str = "127.0.0.1"
) -> AsyncIterator[Client]:
    """A client of a freshly built app (which reads its settings from the environment now),
    seen from `peer`."""
    transport = httpx.ASGITransport(
        app=create_app(services, tokens),  # type: ignore[arg-type]
        client=(peer, 41234),
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# --- idempotency --------------------------------------------------------------------------------


async def test_a_retried_post_is_replayed_not_run_again(
    client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    headers = {**staff, "Idempotency-Key": f"reg-{tenant}"}
    first = await client.post("/v1/customers", json=registration(tenant), headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    again = await client.post("/v1/customers", json=registration(tenant), headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["content-type"] == first.headers["content-type"]
    assert len(await services.store.read_stream(f"{tenant}:customer")) == 1

    other = {**registration(tenant), "name": "Another Ltd"}
    reused = await client.post("/v1/customers", json=other, headers=headers)
    assert reused.status_code == 422
    assert reused.headers["content-type"].startswith("application/problem+json")
    assert reused.json()["type"].endswith("/idempotency-key-reused")

    # Without a key the same body runs again (and the domain refuses the duplicate).
    plain = await client.post("/v1/customers", json=registration(tenant), headers=staff)
    assert plain.status_code == 422
    assert "idempotent-replayed" not in plain.headers


async def test_keys_belong_to_the_caller_not_the_token_and_are_kept_a_day(
    client: Client, tokens: TokenService, tenant: str, services: Services
) -> None:
    key = f"reg-{tenant}"
    first = bearer(tokens, "staff-a", "*", Role.ADMIN)
    second = bearer(tokens, "staff-b", "*", Role.ADMIN)
    answer = await client.post(
        "/v1/customers", json=registration(tenant), headers={**first, "Idempotency-Key": key}
    )
    assert answer.status_code == 201
    # Another caller's same key is another key: it runs (and meets the duplicate).
    other = await client.post(
        "/v1/customers", json=registration(tenant), headers={**second, "Idempotency-Key": key}
    )
    assert other.status_code == 422
    assert other.json()["type"].endswith("/customer-already-registered"), other.text
    # The same caller retrying after logging in again (a new token), or spelling the header
    # another way, gets the first answer.
    token = first["Authorization"].removeprefix("Bearer ")
    for retry in (
        bearer(tokens, "staff-a", "*", Role.ADMIN),
        {"Authorization": f"bearer  {token}"},
    ):
        assert retry["Authorization"] != first["Authorization"]
        again = await client.post(
            "/v1/customers", json=registration(tenant), headers={**retry, "Idempotency-Key": key}
        )
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == answer.content
    # A credential that does not authenticate reaches nobody's answers: the route says 401.
    forged = {"Authorization": f"Bearer {token[:-2]}xx", "Idempotency-Key": key}
    refused = await client.post("/v1/customers", json=registration(tenant), headers=forged)
    assert refused.status_code == 401
    assert "idempotent-replayed" not in refused.headers

    name = entry_key(services.settings.cache_prefix, caller_name("*", "staff-a"), key)
    assert KEEP_TTL - 60 < await services.redis.ttl(name) <= KEEP_TTL
    kept = await services.redis.get(name)
    assert kept is not None
    for headers in (first, second):  # the token is neither in the key nor in the answer
        token = headers["Authorization"].removeprefix("Bearer ")
        assert token not in name
        assert token.encode() not in kept
    assert "staff-a" not in name


async def test_the_same_key_while_the_first_runs_is_409(
    client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    headers = {**staff, "Idempotency-Key": f"race-{tenant}"}
    body = registration(tenant)
    answers = await asyncio.gather(
        client.post("/v1/customers", json=body, headers=headers),
        client.post("/v1/customers", json=body, headers=headers),
    )
    assert sorted(answer.status_code for answer in answers) == [201, 409]
    conflict = next(answer for answer in answers if answer.status_code == 409)
    assert conflict.json()["type"].endswith("/idempotency-request-in-progress")
    assert conflict.headers["retry-after"] == "1"
    assert len(await services.store.read_stream(f"{tenant}:customer")) == 1

    # Once the first has answered, the key replays it.
    replay = await client.post("/v1/customers", json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_running_marker_of_another_process_holds_the_key(
    client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    """Held deterministically: Redis says the first request is still running elsewhere."""
    body = registration(tenant)
    headers = {**staff, "Idempotency-Key": "held"}
    assert (await client.post("/v1/customers", json=body, headers=headers)).status_code == 201
    name = entry_key(services.settings.cache_prefix, caller_name(VENDOR, "staff-1"), "held")
    raw = await services.redis.get(name)
    assert isinstance(raw, bytes)
    kept = msgspec.msgpack.decode(raw, type=KeptEntry)
    running = KeptEntry(state="running", fingerprint=kept.fingerprint, owner="elsewhere")
    await services.redis.set(name, msgspec.msgpack.encode(running), ex=60)
    held = await client.post("/v1/customers", json=body, headers=headers)
    assert held.status_code == 409
    other = await client.post("/v1/customers", json={**body, "name": "B"}, headers=headers)
    assert other.status_code == 422  # another body is the client's mistake, running or not


async def test_failures_release_the_key_and_bad_keys_are_refused(
    client: Client, staff: dict[str, str], tokens: TokenService, tenant: str
) -> None:
    customer_admin = bearer(tokens, "cara", tenant, Role.CUSTOMER_ADMIN)
    headers = {**customer_admin, "Idempotency-Key": "k-1"}
    forbidden = await client.post("/v1/customers", json=registration(tenant), headers=headers)
    assert forbidden.status_code == 403  # kept: the same request is refused the same way
    again = await client.post("/v1/customers", json=registration(tenant), headers=headers)
    assert again.headers.get("idempotent-replayed") == "true"

    unauthenticated = await client.post(
        "/v1/customers", json=registration(tenant), headers={"Idempotency-Key": "k-2"}
    )
    assert unauthenticated.status_code == 401  # not kept: a retry with a token runs
    accepted = await client.post(
        "/v1/customers", json=registration(tenant), headers={**staff, "Idempotency-Key": "k-2"}
    )
    assert accepted.status_code == 201

    for bad in (b"", b"x" * 256, "caf\u00e9".encode("latin-1")):
        refused = await client.post(
            "/v1/customers",
            json=registration(tenant),
            headers=[
                *((name.encode(), value.encode()) for name, value in staff.items()),
                (b"Idempotency-Key", bad),
            ],
        )
        assert refused.status_code == 400, bad
        assert refused.json()["type"].endswith("/invalid-idempotency-key")
    assert parse_key('"quoted-key"') == "quoted-key"

    # Session routes ignore the header: a second logout with the same key really runs.
    session = {**bearer(tokens, "cara", tenant, Role.CUSTOMER_ADMIN), "Idempotency-Key": "out"}
    assert (await client.post("/v1/auth/logout", headers=session)).status_code == 204
    again_out = await client.post("/v1/auth/logout", headers=session)
    assert again_out.status_code == 401
    assert "idempotent-replayed" not in again_out.headers


async def test_without_redis_a_keyed_post_is_refused_and_a_plain_one_runs(
    services: Services, tokens: TokenService, staff: dict[str, str], tenant: str
) -> None:
    nowhere = "redis://127.0.0.1:1/0"
    client_of_nowhere = connect_cache(nowhere)
    broken = dataclasses.replace(
        services,
        redis=client_of_nowhere,
        request_redis=request_redis(nowhere, client_of_nowhere, timeout=SOCKET_TIMEOUT),
    )
    unavailable = REGISTRY.get_sample_value("valueledger_rate_limit_unavailable_total") or 0
    async with serve(broken, tokens) as client:
        keyed = await client.post(
            "/v1/customers", json=registration(tenant), headers={**staff, "Idempotency-Key": "a"}
        )
        assert keyed.status_code == 503
        assert keyed.json()["type"].endswith("/idempotency-unavailable")
        assert keyed.headers["retry-after"] == "1"
        plain = await client.post("/v1/customers", json=registration(tenant), headers=staff)
        assert plain.status_code == 201  # rate limits fail open
    assert REGISTRY.get_sample_value("valueledger_rate_limit_unavailable_total") == unavailable + 2
    await broken.request_redis.aclose()
    await broken.redis.aclose()


async def test_without_postgres_requests_get_503_with_retry_after_and_a_trace_id(
    services: Services, tokens: TokenService, staff: dict[str, str], tenant: str
) -> None:
    """The database out of reach is the server's trouble, not the client's: 503, a hint to
    retry, and no internals."""
    dead = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0)
    unreachable = dataclasses.replace(services, store=EventStore(dead, services.store.signing_key))
    try:
        async with serve(unreachable, tokens) as client:
            reader = bearer(tokens, "ann", tenant, Role.FINANCE)
            answers = [
                await client.get(f"/v1/customers/{tenant}", headers=reader),
                await client.post("/v1/customers", json=registration(tenant), headers=staff),
            ]
    finally:
        await unreachable.store.close()
        await dead.close()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        problem = answer.json()
        assert problem["type"].endswith("/database-unavailable")
        assert len(problem["trace_id"]) == 32
        assert "127.0.0.1" not in answer.text
        assert "Errno" not in answer.text


@pytest.mark.parametrize(
    ("error", "kind", "advice"),
    [
        # The store could not learn whether an append went in: the client must not be told
        # it failed (it may have been recorded), nor that it succeeded.
        (AppendOutcomeUnknownError("connection lost"), "outcome-unknown", "read the resource"),
        # Another session held the customer's chain head too long: nothing was written.
        (LedgerBusyError("head held"), "ledger-busy", "nothing was written"),
    ],
)
def test_a_store_that_cannot_answer_now_is_503_with_advice(
    error: Exception, kind: str, advice: str
) -> None:
    request: Request[Any, Any, Any] = Request(
        scope={  # type: ignore[arg-type]  # only what problem_for reads
            "type": "http",
            "method": "POST",
            "path": "/v1/customers",
            "headers": [],
            "query_string": b"",
            "state": {"trace_id": "ab" * 16},
        }
    )
    problem, headers = problem_for(error, request)
    assert (problem.status, headers) == (503, {"Retry-After": "1"})
    assert problem.type.endswith(f"/{kind}")
    assert problem.detail is not None
    assert advice in problem.detail
    assert str(error) not in problem.detail  # the store's wording stays inside
    assert problem.trace_id == "ab" * 16


# --- rate limits and body limits ----------------------------------------------------------------


async def test_an_address_over_its_limit_gets_429_with_retry_after(
    services: Services, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_ADDRESS", "3")
    async with serve(services, tokens, peer=client_address()) as client:
        for _ in range(3):
            assert (await client.get("/v1/keys")).status_code == 200
        limited = await client.get("/v1/keys")
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["type"].endswith("/rate-limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert (await client.get("/healthz")).status_code == 200  # liveness is never limited


@asynccontextmanager
async def request_log() -> AsyncIterator[list[dict[str, Any]]]:
    """The request log lines written inside the block, decoded (filled in when it ends)."""
    saved = structlog.get_config()
    output = io.StringIO()
    configure_logging("INFO", file=output, cache=False)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        structlog.configure(**saved)
        decoded = (json.loads(line) for line in output.getvalue().splitlines())
        lines.extend(line for line in decoded if line["event"] == "request")


async def test_a_refused_request_is_logged_under_its_route_and_liveness_never_limited(
    services: Services, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limiter answers before routing: a refusal still names the route it was for (an
    unknown path stays unmatched), and /healthz is exempt however it is spelled."""
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_ADDRESS", "1")
    async with serve(services, tokens, peer=client_address()) as client, request_log() as lines:
        statuses = [(await client.get(path)).status_code for path in ("/v1/keys", "/v1/keys")]
        unknown = await client.get("/nope")
        for path in ("/healthz/", "/healthz"):
            assert (await client.get(path)).status_code == 200, path
    assert statuses == [200, 429]
    assert unknown.status_code == 429
    assert unlimited("/healthz//", RateLimitMiddleware.UNLIMITED)  # as routing reads it
    assert not unlimited("/healthz/x", RateLimitMiddleware.UNLIMITED)
    assert [(line["route"], line["status"]) for line in lines[:3]] == [
        ("/v1/keys", 200),
        ("/v1/keys", 429),
        ("<unmatched>", 429),
    ]


async def test_odd_credentials_and_preconditions_are_refused_not_500(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    registered = await client.post("/v1/customers", json=registration(tenant), headers=staff)
    assert registered.status_code == 201, registered.text
    token = staff["Authorization"].removeprefix("Bearer ")
    # The session cookie's token, sent under a scheme named after it: no such scheme.
    named_cookie = await client.get(
        f"/v1/customers/{tenant}", headers={"Authorization": f"Cookie {token}"}
    )
    assert named_cookie.status_code == 401, named_cookie.text
    # A digit of another script, which str.isdigit accepts and int() reads: not an ETag.
    superscript = await client.post(
        f"/v1/customers/{tenant}/suspend",
        json={"reason": "checking"},
        headers=[
            *((name.encode(), value.encode()) for name, value in staff.items()),
            (b"if-match", '"\u00b2"'.encode("latin-1")),
        ],
    )
    assert superscript.status_code == 400, superscript.text
    assert superscript.json()["type"].endswith("/invalid-if-match")


async def test_a_replayed_answer_is_logged_with_its_caller(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    headers = {**staff, "Idempotency-Key": f"log-{tenant}"}
    async with request_log() as lines:
        for _ in range(2):
            answer = await client.post("/v1/customers", json=registration(tenant), headers=headers)
            assert answer.status_code == 201, answer.text
    assert answer.headers["idempotent-replayed"] == "true"
    assert [(line["user"], line["tenant"]) for line in lines] == [("staff-1", VENDOR)] * 2


async def test_issuing_an_api_key_keeps_no_answer(
    client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    """The answer holds the key itself: it is never kept in Redis to be replayed."""
    await client.post("/v1/customers", json=registration(tenant), headers=staff)
    headers = {**staff, "Idempotency-Key": f"key-{tenant}"}
    issued = [
        await client.post(
            f"/v1/customers/{tenant}/api-keys", json={"label": "feed"}, headers=headers
        )
        for _ in range(2)
    ]
    assert [answer.status_code for answer in issued] == [201, 201], issued[-1].text
    assert issued[0].json()["key_id"] != issued[1].json()["key_id"]
    assert all("idempotent-replayed" not in answer.headers for answer in issued)
    name = entry_key(
        services.settings.cache_prefix, caller_name(VENDOR, "staff-1"), headers["Idempotency-Key"]
    )
    assert await services.redis.get(name) is None


async def test_a_credential_is_limited_from_every_address(
    services: Services, tokens: TokenService, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_CREDENTIAL", "2")
    headers = bearer(tokens, "ann", tenant, Role.FINANCE)
    statuses = []
    for _ in range(3):
        async with serve(services, tokens, peer=client_address()) as client:
            statuses.append(await client.get(f"/v1/customers/{tenant}", headers=headers))
    assert [answer.status_code for answer in statuses[:2]] == [404, 404]  # no such customer
    assert statuses[2].status_code == 429
    assert "credential" in statuses[2].json()["detail"]
    # The same token spelled another way, or sent as the session cookie, is the same credential.
    token = headers["Authorization"].removeprefix("Bearer ")
    for respelled in (
        {"Authorization": f"bearer  {token}"},
        {"Authorization": f"BEARER {token} "},
        {"Cookie": f"{COOKIE_NAME}={token}"},
    ):
        async with serve(services, tokens, peer=client_address()) as client:
            limited = await client.get(f"/v1/customers/{tenant}", headers=respelled)
        assert limited.status_code == 429, (respelled, limited.text)


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    services: Services, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_ADDRESS", "2")
    monkeypatch.setenv("VALUELEDGER_TRUSTED_PROXIES", "10.0.0.0/8")
    async with serve(services, tokens, peer=client_address()) as client:
        statuses = [
            (
                await client.get("/v1/keys", headers={"X-Forwarded-For": client_address()})
            ).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_a_trusted_proxy_is_believed_and_only_right_of_the_client(
    services: Services, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_ADDRESS", "2")
    monkeypatch.setenv("VALUELEDGER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.10")
    proxy = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.7"
    alice, bob = client_address(), client_address()
    async with serve(services, tokens, peer=proxy) as client:

        async def status(forwarded: str) -> int:
            answer = await client.get("/v1/keys", headers={"X-Forwarded-For": forwarded})
            return answer.status_code

        # Alice behind two trusted hops; what she wrote left of her own address is ignored.
        assert await status(f"{client_address()}, {alice}, 192.0.2.10") == 200
        assert await status(f"{client_address()}, {alice}, 192.0.2.10") == 200
        assert await status(f"{alice}") == 429
        assert await status(f"{bob}") == 200  # another client behind the same proxy


def test_settings_and_scanners() -> None:
    settings = RateLimitSettings.from_env(
        {
            "VALUELEDGER_RATE_LIMIT_CREDENTIAL": "5",
            "VALUELEDGER_RATE_LIMIT_ADDRESS": "0",
            "VALUELEDGER_TRUSTED_PROXIES": "10.0.0.0/8,::1",
        }
    )
    assert (settings.per_credential, settings.per_address, settings.window_seconds) == (5, 0, 60)
    assert len(settings.trusted_proxies) == 2
    assert RateLimitSettings.from_env({}) == RateLimitSettings()
    with pytest.raises(ValueError, match="VALUELEDGER_TRUSTED_PROXIES"):
        parse_networks("10.0.0.0/8, proxy.example")
    with pytest.raises(ValueError, match="VALUELEDGER_RATE_LIMIT_ADDRESS"):
        RateLimitSettings.from_env({"VALUELEDGER_RATE_LIMIT_ADDRESS": "-1"})

    assert not json_depth_exceeds(b"[" * 32 + b"]" * 32)
    assert json_depth_exceeds(b"[" * 33 + b"]" * 33)
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 100 + b'"}')  # inside a string
    assert not json_depth_exceeds(b'["\\"' + b"[" * 40 + b'"]')  # an escaped quote
    assert json_depth_exceeds(b'["\\\\"' + b"[" * 40)  # an escaped backslash ends the string


async def test_deep_json_is_400_and_a_huge_body_413(client: Client, staff: dict[str, str]) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = {"n": deep}
    refused = await client.post(
        "/v1/customers",
        content=json.dumps(deep),
        headers={**staff, "Content-Type": "application/json"},
    )
    assert refused.status_code == 400
    assert refused.json()["type"].endswith("/json-too-deep")
    unlabelled = await client.post(
        "/v1/customers", content=json.dumps(deep), headers={**staff, "Content-Type": "text/plain"}
    )
    assert unlabelled.status_code == 400  # whatever the Content-Type claims

    huge = b'{"name": "' + b"x" * (300 * 1024) + b'"}'
    too_large = await client.post(
        "/v1/customers", content=huge, headers={**staff, "Content-Type": "application/json"}
    )
    assert too_large.status_code == 413
    assert too_large.headers["content-type"].startswith("application/problem+json")


# --- logs, traces, metrics, probes --------------------------------------------------------------


async def test_one_log_line_per_request_with_its_context_and_no_secrets(
    client: Client, tokens: TokenService, staff: dict[str, str], tenant: str
) -> None:
    await client.post("/v1/customers", json=registration(tenant), headers=staff)
    reader = bearer(tokens, "ann", tenant, Role.FINANCE)
    token = reader["Authorization"].removeprefix("Bearer ")
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    saved = structlog.get_config()
    output = io.StringIO()
    configure_logging("INFO", file=output, cache=False)
    try:
        answer = await client.get(
            f"/v1/customers/{tenant}",
            headers={
                **reader,
                "X-Request-Id": "req-42",
                "traceparent": traceparent,
                "Cookie": "vl_session=cookie-secret",
                "Idempotency-Key": "idem-secret",
            },
        )
        generated = await client.get("/v1/keys")
    finally:
        structlog.configure(**saved)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "req-42"
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 2, lines
    first, second = requests
    assert first["request_id"] == "req-42"
    assert first["trace_id"] == trace_id
    assert first["tenant"] == tenant
    assert first["user"] == "ann"
    assert first["route"] == "/v1/customers/{customer_id}"
    assert first["status"] == 200
    assert first["method"] == "GET"
    assert first["duration_ms"] >= 0
    assert first["level"] == "info"
    assert "timestamp" in first
    assert second["request_id"] == generated.headers["x-request-id"]
    assert len(second["trace_id"]) == 32
    assert second["tenant"] is None
    text = output.getvalue()
    for secret in (token, "cookie-secret", "idem-secret"):
        assert secret not in text


def test_the_redaction_processor_blanks_secrets() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "x",
            "authorization": "Bearer abc",
            "api_key": "k",
            "detail": "sent Bearer abc.def and eyJhbGciOi.eyJzdWIi.c2ln",
            "user": "ann",
        },
    )
    assert event["authorization"] == event["api_key"] == "[redacted]"
    assert event["detail"] == "sent [redacted] and [redacted]"
    assert event["user"] == "ann"


def test_a_logged_traceback_is_redacted_too() -> None:
    saved = structlog.get_config()
    output = io.StringIO()
    configure_logging("INFO", file=output, cache=False)
    try:
        try:
            raise ConnectionError("could not reach postgresql://app:hunter2@db.internal/ledger")
        except ConnectionError:
            structlog.get_logger().exception("database_unreachable")
    finally:
        structlog.configure(**saved)
    line = json.loads(output.getvalue())
    assert "ConnectionError" in line["exception"]
    assert "hunter2" not in output.getvalue()


def test_the_redaction_processor_keeps_what_is_not_secret_of_a_url() -> None:
    event = redact_secrets(
        None,
        "warning",
        {
            "event": "x",
            "error": "could not connect to postgresql://app:pw@db:5432/ledger: refused",
            "url": "Server error for url 'https://h.example/in?token=t0k&id=7'",
        },
    )
    assert event["error"] == "could not connect to postgresql://app:***@db:5432/ledger: refused"
    assert event["url"] == "Server error for url 'https://h.example/in?token=***&id=7'"


_URLS_WITH_A_SECRET: Final = [  # the secret stands at {}, percent-encoded as in a URL
    "postgresql://app:{}@db:5432/ledger",
    "postgresql://app:{}@h1:5432,h2:5433/ledger?sslmode=require",
    "postgresql:///ledger?host=/run/pg&password={}",
    "redis://:{}@cache:6379/0",
    "https://hooks.example/in?token={}",
    "https://hooks.example/in?a=1&access_token={}&b=2#top",
    "https://sso.example/login?next=https://u:{}@i.example/",
]


@given(
    url=st.sampled_from(_URLS_WITH_A_SECRET),
    secret=st.text(min_size=1),
    before=st.text(),
    opening=st.sampled_from(["", " ", " '", ' "', " (", " <"]),
    closing=st.sampled_from(["", " ", "'", '"', ")", ">", ".", ",", "\n"]),
    after=st.text(),
)
def test_the_redaction_processor_blanks_the_secrets_of_urls_in_any_text(
    url: str, secret: str, before: str, opening: str, closing: str, after: str
) -> None:
    """A URL's password and secret parameters, in any text around it (an error's message): the
    line logged is the same whatever the secret, so nothing of it shows."""

    def logged(secret: str) -> str:
        line = f"{before}{opening}{url.format(quote(secret, safe=''))}{closing}{after}"
        event = redact_secrets(None, "info", {"event": "x", "error": line})
        return str(event["error"])

    shown = logged(secret)
    assert shown == logged("QQQQ")
    assert "***" in shown or "[redacted]" in shown  # (a "Bearer" before it takes it all)


async def test_metrics_show_requests_cache_and_projection_lag(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    await client.post("/v1/customers", json=registration(tenant), headers=staff)
    await client.get(f"/v1/customers/{tenant}/dashboard", headers=staff)
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert (
        'valueledger_http_request_duration_seconds_bucket{le="0.005",method="POST",'
        'route="/v1/customers",status="201"}' in text
    )
    assert (
        'valueledger_http_requests_total{method="POST",route="/v1/customers",status="201"}' in text
    )
    assert 'valueledger_cache_requests_total{outcome="' in text
    assert 'valueledger_projection_lag_events{projector="' in text
    assert 'valueledger_projection_lag_seconds{projector="' in text


async def test_readyz_answers_for_postgres_redis_and_projection_lag(
    services: Services,
    tokens: TokenService,
    staff: dict[str, str],
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VALUELEDGER_READY_MAX_LAG_EVENTS", str(10**9))
    monkeypatch.setenv("VALUELEDGER_READY_MAX_LAG_SECONDS", str(10**9))
    async with serve(services, tokens) as client:
        await client.post("/v1/customers", json=registration(tenant), headers=staff)
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert {check["name"]: check["ok"] for check in ready.json()["checks"]} == {
            "postgres": True,
            "redis": True,
            "projections": True,
        }
        # Nothing projects in these tests, so with no lag allowed the projectors are behind.
        monkeypatch.setenv("VALUELEDGER_READY_MAX_LAG_EVENTS", "0")
        lagging = await client.get("/readyz")
        assert lagging.status_code == 503
        assert lagging.json()["detail"] == "not ready: projections"

    broken = dataclasses.replace(services, redis=connect_cache("redis://127.0.0.1:1/0"))
    monkeypatch.setenv("VALUELEDGER_READY_MAX_LAG_EVENTS", str(10**9))
    async with serve(broken, tokens) as client:
        unready = await client.get("/readyz")
    await broken.redis.aclose()
    assert unready.status_code == 503
    body = unready.json()
    assert unready.headers["content-type"].startswith("application/problem+json")
    assert body["type"].endswith("/not-ready")
    assert body["detail"] == "not ready: redis"
    checks = {check["name"]: check for check in body["checks"]}
    assert checks["redis"]["ok"] is False
    assert checks["postgres"]["ok"] is True

    # The request path's own connection alone failing: not ready either, since every
    # authenticated request reads revocations through it.
    nowhere = "redis://127.0.0.1:1/0"
    half = dataclasses.replace(
        services, request_redis=request_redis(nowhere, services.redis, timeout=SOCKET_TIMEOUT)
    )
    async with serve(half, tokens) as client:
        unready = await client.get("/readyz")
    await half.request_redis.aclose()
    assert unready.status_code == 503
    assert unready.json()["detail"] == "not ready: redis"
