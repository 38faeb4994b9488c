"""Authentication, black-box over HTTP against the real services: logins and their cookie,
passwords, revocation (logout, role changes, resets, suspension), API keys, and the JWT
attacks the issue lists, against tokens of our own and of an identity provider whose JWKS a
real local HTTP server serves."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException

from api.app import create_app
from api.auth import (
    COOKIE_NAME,
    LEEWAY_SECONDS,
    REQUIRED_CLAIMS,
    VENDOR,
    AuthenticationError,
    TokenService,
    authenticate_api_key,
)
from api.common import Api
from api.problems import problem_response
from api.staff import (
    FIRST_ADMIN,
    add_vendor_staff,
    check_login,
    create_first_admin,
    current_vendor_staff,
    revoke_vendor_staff,
    set_password,
)
from commands.customer import IssuedApiKey, handle_customer, issue_api_key
from domain import customer
from domain.roles import Role
from eventstore.db import create_pool
from projections.cache import connect_cache
from tests.api.conftest import bearer
from tests.conftest import FreshDatabases
from valueledger.services import Services

Client = httpx.AsyncClient
AUDIENCE = "valueledger-api"
ISSUER = "https://idp.example"


# --- helpers ------------------------------------------------------------------------------------


async def open_customer(
    client: Client, staff: dict[str, str], tenant: str, users: dict[str, Role]
) -> None:
    """Register the customer and invite its users, as vendor staff, through the API."""
    registration = {
        "customer_id": tenant,
        "name": "Acme Ltd",
        "currency": "EUR",
        "billing_contact": {"name": "Bea Billing", "email": "bea@acme.example"},
    }
    created = await client.post("/v1/customers", json=registration, headers=staff)
    assert created.status_code == 201, created.text
    for user_id, role in users.items():
        invited = await client.post(
            f"/v1/customers/{tenant}/users",
            json={"user_id": user_id, "role": role, "name": user_id, "email": "x@acme.example"},
            headers=staff,
        )
        assert invited.status_code == 201, invited.text


async def reset_password(client: Client, headers: dict[str, str], tenant: str, user: str) -> str:
    answer = await client.post(f"/v1/customers/{tenant}/users/{user}/password", headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["user_id"] == user
    password: str = body["password"]
    return password


async def login(
    client: Client, user: str, password: str, customer_id: str | None = None
) -> httpx.Response:
    body: dict[str, str] = {"user_id": user, "password": password}
    if customer_id is not None:
        body["customer_id"] = customer_id
    return await client.post("/v1/auth/login", json=body)


async def logged_in(client: Client, user: str, password: str, tenant: str) -> dict[str, str]:
    answer = await login(client, user, password, tenant)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def assert_unauthenticated(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/unauthenticated")


def cookie_attributes(header: str) -> dict[str, str]:
    """``name=value; HttpOnly; Max-Age=900`` -> {"name": value, "httponly": "", "max-age": ...}"""
    first, *rest = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    attributes = {name: value}
    for part in rest:
        key, _, text = part.partition("=")
        attributes[key.lower()] = text
    return attributes


def at_now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def acme(client: Client, staff: dict[str, str], tenant: str) -> dict[str, str]:
    """A customer with a CUSTOMER_ADMIN (cara) and a FINANCE user (fin), each with a password
    set by vendor staff: user id -> password."""
    await open_customer(client, staff, tenant, {"cara": Role.CUSTOMER_ADMIN, "fin": Role.FINANCE})
    return {user: await reset_password(client, staff, tenant, user) for user in ("cara", "fin")}


# --- logging in ---------------------------------------------------------------------------------


async def test_a_customer_user_logs_in_with_the_role_the_ledger_gives(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    answer = await login(client, "fin", acme["fin"], tenant)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    session = answer.json()
    assert session["token_type"] == "Bearer"
    assert session["tenant"] == tenant
    assert session["role"] == "FINANCE"
    expires = datetime.fromisoformat(session["expires_at"])
    assert timedelta(minutes=14) < expires - at_now() <= timedelta(minutes=15)
    read = await client.get(
        f"/v1/customers/{tenant}", headers={"Authorization": f"Bearer {session['token']}"}
    )
    assert read.status_code == 200, read.text

    # The role is the ledger's: the body cannot name one.
    claimed = await client.post(
        "/v1/auth/login",
        json={"user_id": "fin", "password": acme["fin"], "customer_id": tenant, "role": "ADMIN"},
    )
    assert claimed.status_code == 400


async def test_the_session_cookie_is_secure_httponly_strict_and_authenticates(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    answer = await login(client, "cara", acme["cara"], tenant)
    assert answer.status_code == 200, answer.text
    cookie = cookie_attributes(answer.headers["set-cookie"])
    assert cookie[COOKIE_NAME] == answer.json()["token"]
    assert "secure" in cookie
    assert "httponly" in cookie
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == "900"

    with_cookie = await client.get(
        f"/v1/customers/{tenant}", headers={"Cookie": f"{COOKIE_NAME}={cookie[COOKIE_NAME]}"}
    )
    assert with_cookie.status_code == 200, with_cookie.text
    forged = await client.get(
        f"/v1/customers/{tenant}", headers={"Cookie": f"{COOKIE_NAME}=not-a-token"}
    )
    assert_unauthenticated(forged)


async def test_another_sites_request_may_not_use_the_session_cookie_to_change_anything(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    """SameSite=strict keeps the cookie off cross-site requests in today's browsers; a sibling
    site, or an older browser, is refused by the Fetch Metadata or Origin the browser sends."""
    token = (await login(client, "cara", acme["cara"], tenant)).json()["token"]
    cookie = {"Cookie": f"{COOKIE_NAME}={token}"}
    revoke = f"/v1/customers/{tenant}/users/fin/revoke"
    for foreign in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain: same site, another origin
        {"Origin": "https://evil.example"},
    ):
        refused = await client.post(revoke, headers={**cookie, **foreign})
        assert refused.status_code == 403, (foreign, refused.text)
        assert "another site" in refused.json()["detail"]
    # Reads, our own pages, and clients that are not browsers go on as before.
    read = await client.get(
        f"/v1/customers/{tenant}", headers={**cookie, "Sec-Fetch-Site": "cross-site"}
    )
    assert read.status_code == 200, read.text
    own = await client.post(revoke, headers={**cookie, "Origin": "http://testserver"})
    assert own.status_code == 201, own.text


async def test_logging_out_deletes_the_cookie_with_the_attributes_it_was_set_with(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    token = (await login(client, "cara", acme["cara"], tenant)).json()["token"]
    answer = await client.post(
        "/v1/auth/logout",
        headers={"Cookie": f"{COOKIE_NAME}={token}", "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 204, answer.text
    deleted = cookie_attributes(answer.headers["set-cookie"])
    assert deleted["max-age"] == "0"
    assert {"secure", "httponly"} <= set(deleted)
    assert deleted["samesite"].lower() == "strict"


async def test_every_wrong_login_gets_one_identical_401(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    attempts = [
        ("fin", "wrong-password", tenant),  # a wrong password
        ("nobody", acme["fin"], tenant),  # an unknown user
        ("fin", acme["fin"], "t-unknown-customer"),  # an unknown customer
        ("fin", acme["fin"], "Not A Customer Id"),  # not even a customer id
        ("fin", acme["fin"], None),  # not vendor staff
        ("cara", acme["fin"], tenant),  # another user's password
    ]
    answers = [await login(client, *attempt) for attempt in attempts]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "set-cookie" not in answer.headers
    bodies = [answer.json() for answer in answers]
    assert bodies[0]["type"].endswith("/invalid-credentials")
    assert all(body == bodies[0] for body in bodies), bodies


async def test_vendor_staff_log_in_for_every_tenant_until_revoked(
    client: Client, services: Services
) -> None:
    user = f"staff-{secrets.token_hex(4)}"
    await add_vendor_staff(services.pool, user)
    await set_password(services.pool, VENDOR, user, "a long staff password")
    answer = await login(client, user, "a long staff password")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["tenant"], answer.json()["role"]) == (VENDOR, "ADMIN")
    assert user in await current_vendor_staff(services.pool)

    # A staff member's password does not open a customer's door, nor the reverse.
    as_customer = await login(client, user, "a long staff password", "acme")
    assert as_customer.status_code == 401

    assert await revoke_vendor_staff(services.pool, user)
    assert user not in await current_vendor_staff(services.pool)
    refused = await login(client, user, "a long staff password")
    assert refused.status_code == 401


async def test_the_first_admin_is_made_once_with_a_one_time_password(
    main_server: FreshDatabases,
) -> None:
    url = await main_server.create(f"first_admin_{secrets.token_hex(3)}")
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        created = await create_first_admin(pool)
        assert created is not None
        user, password = created
        assert user == FIRST_ADMIN
        assert len(password) >= 20
        assert await create_first_admin(pool) is None
        assert await current_vendor_staff(pool) == frozenset({FIRST_ADMIN})
        assert await check_login(pool, VENDOR, FIRST_ADMIN, password)
        assert not await check_login(pool, VENDOR, FIRST_ADMIN, password + "x")
        assert not await check_login(pool, VENDOR, "someone-else", password)
        stored = await pool.fetchval("SELECT password_hash FROM login_credentials")
        assert stored.startswith("scrypt$")
        assert password not in stored
    finally:
        await pool.close()


# --- passwords ----------------------------------------------------------------------------------


async def test_a_customer_admin_sets_passwords_for_their_own_users_only(
    client: Client, acme: dict[str, str], tenant: str, tokens: TokenService, staff: dict[str, str]
) -> None:
    cara = await logged_in(client, "cara", acme["cara"], tenant)
    fresh = await reset_password(client, cara, tenant, "fin")
    assert fresh != acme["fin"]
    assert (await login(client, "fin", fresh, tenant)).status_code == 200

    fin = await logged_in(client, "fin", fresh, tenant)
    not_admin = await client.post(f"/v1/customers/{tenant}/users/cara/password", headers=fin)
    assert not_admin.status_code == 403

    unknown = await client.post(f"/v1/customers/{tenant}/users/nobody/password", headers=cara)
    assert unknown.status_code == 404

    await open_customer(client, staff, f"{tenant}-b", {"bob": Role.CUSTOMER_ADMIN})
    other = await client.post(f"/v1/customers/{tenant}-b/users/bob/password", headers=cara)
    assert other.status_code == 404

    # A token saying CUSTOMER_ADMIN is not enough: the ledger must say so now.
    stale = bearer(tokens, "fin", tenant, Role.CUSTOMER_ADMIN)
    refused = await client.post(f"/v1/customers/{tenant}/users/cara/password", headers=stale)
    assert refused.status_code == 403


async def test_a_password_reset_ends_the_users_sessions(
    client: Client, acme: dict[str, str], tenant: str, staff: dict[str, str]
) -> None:
    fin = await logged_in(client, "fin", acme["fin"], tenant)
    fresh = await reset_password(client, staff, tenant, "fin")
    assert_unauthenticated(await client.get(f"/v1/customers/{tenant}", headers=fin))
    assert (await login(client, "fin", acme["fin"], tenant)).status_code == 401
    assert (await login(client, "fin", fresh, tenant)).status_code == 200


async def test_users_change_their_own_password(
    client: Client, acme: dict[str, str], tenant: str
) -> None:
    fin = await logged_in(client, "fin", acme["fin"], tenant)
    url = "/v1/auth/password"
    wrong = await client.post(
        url,
        json={"current_password": "not it", "new_password": "a brand new password"},
        headers=fin,
    )
    assert wrong.status_code == 403
    assert wrong.json()["type"].endswith("/wrong-password")
    short = await client.post(
        url, json={"current_password": acme["fin"], "new_password": "short"}, headers=fin
    )
    assert short.status_code == 400
    changed = await client.post(
        url,
        json={"current_password": acme["fin"], "new_password": "a brand new password"},
        headers=fin,
    )
    assert changed.status_code == 204, changed.text
    cleared = cookie_attributes(changed.headers["set-cookie"])
    assert cleared[COOKIE_NAME] in {"", '""'}
    assert cleared["max-age"] == "0"

    # Every earlier token is refused; the new password works at once (the revocation is kept
    # to the millisecond, so the fresh token is not mistaken for an old one).
    assert_unauthenticated(await client.get(f"/v1/customers/{tenant}", headers=fin))
    assert (await login(client, "fin", acme["fin"], tenant)).status_code == 401
    again = await logged_in(client, "fin", "a brand new password", tenant)
    assert (await client.get(f"/v1/customers/{tenant}", headers=again)).status_code == 200


# --- revocation ---------------------------------------------------------------------------------


async def test_logout_revokes_the_token(client: Client, acme: dict[str, str], tenant: str) -> None:
    fin = await logged_in(client, "fin", acme["fin"], tenant)
    out = await client.post("/v1/auth/logout", headers=fin)
    assert out.status_code == 204
    assert (out.content, out.headers.get("content-type")) == (b"", None)
    cookie = cookie_attributes(out.headers["set-cookie"])
    assert (cookie[COOKIE_NAME].strip('"'), cookie["max-age"], cookie["path"]) == ("", "0", "/")
    assert_unauthenticated(await client.get(f"/v1/customers/{tenant}", headers=fin))


async def test_a_remembered_token_is_refused_once_it_expires(tokens: TokenService) -> None:
    """A token's checked claims are remembered for its next requests, never past its expiry:
    then it is refused as the check itself would refuse it (same leeway, same message)."""
    issued_at = at_now() - tokens.ttl - timedelta(seconds=LEEWAY_SECONDS - 2)
    token, principal = tokens.issue("fin", "acme", Role.FINANCE, issued_at)
    assert await tokens.verify(token, "bearer") == principal
    assert await tokens.verify(token, "bearer") == principal  # from memory this time
    expired_at = principal.expires_at.timestamp() + LEEWAY_SECONDS
    await asyncio.sleep(max(0.0, expired_at - time.time()) + 0.05)
    with pytest.raises(AuthenticationError, match="expired"):
        await tokens.verify(token, "bearer")
    with pytest.raises(AuthenticationError, match="expired"):
        await tokens.verify(token, "bearer")  # forgotten: checked again, and refused again


async def test_a_role_change_revokes_tokens_issued_before_it(
    client: Client, acme: dict[str, str], tenant: str, staff: dict[str, str]
) -> None:
    fin = await logged_in(client, "fin", acme["fin"], tenant)
    changed = await client.post(
        f"/v1/customers/{tenant}/users/fin/role", json={"role": "TECHNICAL"}, headers=staff
    )
    assert changed.status_code == 201, changed.text
    assert_unauthenticated(await client.get(f"/v1/customers/{tenant}", headers=fin))

    again = await login(client, "fin", acme["fin"], tenant)
    assert again.status_code == 200, again.text
    assert again.json()["role"] == "TECHNICAL"


async def test_revoked_access_ends_sessions_and_a_reinvited_id_has_no_password(
    client: Client, acme: dict[str, str], tenant: str, staff: dict[str, str]
) -> None:
    fin = await logged_in(client, "fin", acme["fin"], tenant)
    revoked = await client.post(f"/v1/customers/{tenant}/users/fin/revoke", headers=staff)
    assert revoked.status_code == 201, revoked.text
    assert_unauthenticated(await client.get(f"/v1/customers/{tenant}", headers=fin))
    assert (await login(client, "fin", acme["fin"], tenant)).status_code == 401

    invited = await client.post(
        f"/v1/customers/{tenant}/users",
        json={"user_id": "fin", "role": "FINANCE", "name": "Finn", "email": "finn@acme.example"},
        headers=staff,
    )
    assert invited.status_code == 201, invited.text
    assert (await login(client, "fin", acme["fin"], tenant)).status_code == 401


async def test_a_suspended_customers_users_are_logged_out_and_kept_out(
    client: Client, acme: dict[str, str], tenant: str, staff: dict[str, str]
) -> None:
    cara = await logged_in(client, "cara", acme["cara"], tenant)
    suspended_now = await client.post(
        f"/v1/customers/{tenant}/suspend", json={"reason": "unpaid"}, headers=staff
    )
    assert suspended_now.status_code == 201, suspended_now.text
    # Every read the token allowed before: none may still answer.
    for path in ("", "/receipts/1", "/export", "/setup"):
        assert_unauthenticated(await client.get(f"/v1/customers/{tenant}{path}", headers=cara))

    suspended = await login(client, "cara", acme["cara"], tenant)
    assert suspended.status_code == 403
    assert suspended.json()["type"].endswith("/customer-suspended")
    # Without the password, nothing is revealed.
    assert (await login(client, "cara", "wrong-password", tenant)).status_code == 401


async def test_a_suspension_whose_sessions_cannot_be_ended_says_so_and_is_recorded(
    client: Client, acme: dict[str, str], tenant: str, services: Services, cache_prefix: str
) -> None:
    """Revocations are read (the caller authenticates) but cannot be written: the suspension
    is in the ledger, and the answer says its sessions were not ended rather than 201."""
    secret = secrets.token_bytes(32)
    nowhere = connect_cache("redis://127.0.0.1:1/0")
    writing_nowhere = TokenService(secret, nowhere, cache_prefix, reads=services.request_redis)
    working = TokenService(secret, services.redis, cache_prefix, reads=services.request_redis)
    staff = bearer(working, "staff-1", VENDOR, Role.ADMIN)
    transport = httpx.ASGITransport(app=create_app(services, writing_nowhere))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as broken:
            answer = await broken.post(
                f"/v1/customers/{tenant}/suspend", json={"reason": "unpaid"}, headers=staff
            )
    finally:
        await nowhere.aclose()
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"].endswith("/sessions-not-ended")
    assert "Do not send the command again" in answer.json()["detail"]
    events = await services.store.read_stream(f"{tenant}:customer")
    assert events[-1].type == "CustomerSuspended"


# --- API keys -----------------------------------------------------------------------------------


@get("/whoami")
async def whoami(request: Request[Any, Any, Any]) -> dict[str, str]:
    """What `api.common.authenticate` does for the ApiKey scheme, alone."""
    try:
        principal = await authenticate_api_key(request)
    except AuthenticationError as error:
        raise NotAuthorizedException(detail=str(error)) from None
    return {key: str(value) for key, value in msgspec.structs.asdict(principal).items()}


@pytest.fixture
async def key_client(services: Services, tokens: TokenService) -> AsyncIterator[httpx.AsyncClient]:
    app = Litestar(
        route_handlers=[whoami],
        exception_handlers={Exception: problem_response},
        state=State({"api": Api(services, tokens)}),
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield test_client


async def feed_key(services: Services, tenant: str, role: Role = Role.TECHNICAL) -> IssuedApiKey:
    """A key issued by the customer's CUSTOMER_ADMIN `cara`."""
    return await issue_api_key(
        services.store,
        tenant,
        label="feed",
        role=role,
        at=at_now(),
        by="cara",
        by_role=Role.CUSTOMER_ADMIN,
    )


async def test_api_keys_authenticate_machine_clients_of_their_customer(
    client: Client,
    key_client: Client,
    staff: dict[str, str],
    tenant: str,
    services: Services,
) -> None:
    await open_customer(client, staff, tenant, {"cara": Role.CUSTOMER_ADMIN})
    await open_customer(client, staff, f"{tenant}-b", {"bob": Role.CUSTOMER_ADMIN})
    issued = await feed_key(services, tenant, Role.FINANCE)
    headers = {"Authorization": f"ApiKey {issued.presented}", "X-Customer-Id": tenant}

    answer = await key_client.get("/whoami", headers=headers)
    assert answer.status_code == 200, answer.text
    principal = answer.json()
    assert principal["user"] == f"api-key:{issued.key_id}"
    assert (principal["tenant"], principal["role"], principal["via"]) == (
        tenant,
        "FINANCE",
        "api_key",
    )

    tampered = issued.presented[:-1] + ("A" if issued.presented[-1] != "A" else "B")
    refusals = [
        {**headers, "Authorization": f"ApiKey {tampered}"},
        {**headers, "X-Customer-Id": f"{tenant}-b"},  # another customer's id
        {**headers, "X-Customer-Id": "t-unknown-customer"},
        {**headers, "X-Customer-Id": "Not A Customer"},
    ]
    details = set()
    for refused_headers in refusals:
        refused = await key_client.get("/whoami", headers=refused_headers)
        assert_unauthenticated(refused)
        details.add(refused.json()["detail"])
    assert details == {"the API key is not valid for that customer"}
    assert_unauthenticated(
        await key_client.get("/whoami", headers={"Authorization": headers["Authorization"]})
    )

    at = at_now()
    await handle_customer(
        services.store,
        customer.RevokeApiKey(
            customer_id=tenant, key_id=issued.key_id, at=at, by="cara", by_role=Role.CUSTOMER_ADMIN
        ),
    )
    assert_unauthenticated(await key_client.get("/whoami", headers=headers))


async def test_a_suspended_customers_api_keys_are_refused(
    client: Client, key_client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    await open_customer(client, staff, tenant, {"cara": Role.CUSTOMER_ADMIN})
    issued = await feed_key(services, tenant)
    await handle_customer(
        services.store,
        customer.SuspendCustomer(
            customer_id=tenant, reason="unpaid", at=at_now(), by="staff-1", by_role=Role.ADMIN
        ),
    )
    refused = await key_client.get(
        "/whoami", headers={"Authorization": f"ApiKey {issued.presented}", "X-Customer-Id": tenant}
    )
    assert_unauthenticated(refused)
    assert "suspended" in refused.json()["detail"]


async def test_api_keys_are_accepted_by_the_app(
    client: Client, staff: dict[str, str], tenant: str, services: Services
) -> None:
    await open_customer(client, staff, tenant, {"cara": Role.CUSTOMER_ADMIN})
    issued = await feed_key(services, tenant)
    headers = {"Authorization": f"ApiKey {issued.presented}", "X-Customer-Id": tenant}
    assert (await client.get(f"/v1/customers/{tenant}", headers=headers)).status_code == 200
    hidden = await client.get(
        f"/v1/customers/{tenant}", headers={**headers, "X-Customer-Id": "t-unknown-customer"}
    )
    assert_unauthenticated(hidden)


# --- JWT attacks, with an identity provider's JWKS served over real HTTP ----------------------


class IdentityProvider:
    """Signing keys of an external identity provider, and the JWKS of their public halves."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        # The RSA key states its algorithm; the EC key's (ES256) is inferred from its curve.
        self.jwks = {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": "ec-1", "use": "sig"},
            ]
        }
        self.rsa_public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], algorithm: str = "RS256", kid: str | None = None) -> str:
        key: Any = self.rsa if algorithm == "RS256" else self.ec
        default_kid = "rsa-1" if algorithm == "RS256" else "ec-1"
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or default_kid})


@pytest.fixture(scope="module")
def provider() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module")
def jwks_url(provider: IdentityProvider) -> Iterator[str]:
    """The provider's JWKS, served by a real HTTP server on a free local port."""
    body = json.dumps(provider.jwks).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test output is not the place for access logs."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def idp_tokens(services: Services, cache_prefix: str, jwks_url: str) -> TokenService:
    return TokenService(
        secrets.token_bytes(32),
        services.redis,
        cache_prefix,
        reads=services.request_redis,
        audience=AUDIENCE,
        issuer=ISSUER,
        jwks_url=jwks_url,
    )


@pytest.fixture
async def idp_client(
    services: Services, idp_tokens: TokenService
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services, idp_tokens))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
async def registered(idp_client: Client, idp_tokens: TokenService, tenant: str) -> str:
    """A customer registered through the app that trusts the identity provider."""
    await open_customer(idp_client, bearer(idp_tokens, "staff-1", VENDOR, Role.ADMIN), tenant, {})
    return tenant


def claims_for(tenant: str, /, **changes: Any) -> dict[str, Any]:
    """A valid token's claims for a CUSTOMER_ADMIN of `tenant`; `changes` replace claims, and a
    change to None removes the claim."""
    now = int(at_now().timestamp())
    claims: dict[str, Any] = {
        "sub": "cara",
        "tenant": tenant,
        "role": "CUSTOMER_ADMIN",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": secrets.token_hex(8),
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def seconds_from_now(seconds: int) -> int:
    return int(at_now().timestamp()) + seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], algorithm: str = "none") -> str:
    header = b64(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def hs256_with(key: bytes, claims: dict[str, Any], kid: str = "rsa-1") -> str:
    """An HS256 token signed with `key` by hand (PyJWT refuses a PEM as an HMAC secret)."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def flip_signature_byte(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


def swap_payload(token: str, claims: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_an_identity_providers_tokens_are_accepted(
    idp_client: Client, provider: IdentityProvider, registered: str, algorithm: str
) -> None:
    token = provider.sign(claims_for(registered), algorithm)
    answer = await idp_client.get(
        f"/v1/customers/{registered}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text


async def test_no_token_may_name_an_api_key_as_its_subject(
    idp_client: Client, idp_tokens: TokenService, provider: IdentityProvider, registered: str
) -> None:
    posing = claims_for(registered, sub="api-key:0123456789abcdef", role="TECHNICAL")
    answer = await idp_client.get(
        f"/v1/customers/{registered}",
        headers={"Authorization": f"Bearer {provider.sign(posing)}"},
    )
    assert_unauthenticated(answer)
    assert answer.json()["detail"] == "a token cannot name an API key as its subject"
    with pytest.raises(AuthenticationError, match="cannot name an API key"):
        idp_tokens.issue("api-key:0123456789abcdef", registered, Role.TECHNICAL, at_now())


async def test_our_own_tokens_carry_the_configured_audience_and_issuer(
    idp_client: Client, idp_tokens: TokenService, registered: str
) -> None:
    token, _ = idp_tokens.issue("cara", registered, Role.CUSTOMER_ADMIN, at_now())
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["aud"], claims["iss"]) == (AUDIENCE, ISSUER)
    answer = await idp_client.get(
        f"/v1/customers/{registered}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text


Forge = Callable[[IdentityProvider, str], str]
"""Makes a token for the customer (`str`), with the provider's keys at hand."""


def without(claim: str) -> Forge:
    """A provider's token missing `claim`."""
    return lambda idp, tenant: idp.sign(claims_for(tenant, **{claim: None}))


SIGNATURE_FAILS = "Signature verification failed"
ATTACKS: dict[str, tuple[Forge, str]] = {
    "alg none": (
        lambda idp, tenant: unsigned(claims_for(tenant)),
        "tokens signed with 'none' are not accepted",
    ),
    "alg None, capitalised": (
        lambda idp, tenant: unsigned(claims_for(tenant), "None"),
        "tokens signed with 'None' are not accepted",
    ),
    "HS256 signed with the RSA public key's PEM (algorithm confusion)": (
        lambda idp, tenant: hs256_with(idp.rsa_public_pem, claims_for(tenant)),
        SIGNATURE_FAILS,
    ),
    "an ES256 token naming the RSA key (keys pinned to their algorithm)": (
        lambda idp, tenant: idp.sign(claims_for(tenant), "ES256", kid="rsa-1"),
        "the token says ES256 but its key is for RS256",
    ),
    "an RS256 token naming the EC key": (
        lambda idp, tenant: idp.sign(claims_for(tenant), "RS256", kid="ec-1"),
        "the token says RS256 but its key is for ES256",
    ),
    "a key the provider does not have": (
        lambda idp, tenant: idp.sign(claims_for(tenant), kid="rsa-unknown"),
        "Unable to find a signing key",
    ),
    "HS512": (
        lambda idp, tenant: jwt.encode(
            claims_for(tenant), secrets.token_bytes(64), algorithm="HS512"
        ),
        "tokens signed with 'HS512' are not accepted",
    ),
    "expired": (
        lambda idp, tenant: idp.sign(
            claims_for(tenant, iat=seconds_from_now(-600), exp=seconds_from_now(-60))
        ),
        "the token has expired",
    ),
    "not valid yet (nbf in the future)": (
        lambda idp, tenant: idp.sign(claims_for(tenant, nbf=seconds_from_now(120))),
        "the token is not valid yet",
    ),
    "issued in the future": (
        lambda idp, tenant: idp.sign(claims_for(tenant, iat=seconds_from_now(120))),
        "the token is not valid yet",
    ),
    "wrong audience": (
        lambda idp, tenant: idp.sign(claims_for(tenant, aud="another-api")),
        "the token is for another audience",
    ),
    "no audience": (
        lambda idp, tenant: idp.sign(claims_for(tenant, aud=None)),
        'missing the "aud" claim',
    ),
    "wrong issuer": (
        lambda idp, tenant: idp.sign(claims_for(tenant, iss="https://evil.example")),
        "the token is from another issuer",
    ),
    "no issuer": (
        lambda idp, tenant: idp.sign(claims_for(tenant, iss=None)),
        'missing the "iss" claim',
    ),
    "a flipped signature byte (RS256)": (
        lambda idp, tenant: flip_signature_byte(idp.sign(claims_for(tenant))),
        SIGNATURE_FAILS,
    ),
    "a flipped signature byte (ES256)": (
        lambda idp, tenant: flip_signature_byte(idp.sign(claims_for(tenant), "ES256")),
        SIGNATURE_FAILS,
    ),
    "a tampered payload (raised to vendor ADMIN)": (
        lambda idp, tenant: swap_payload(
            idp.sign(claims_for(tenant)), claims_for(tenant, role="ADMIN", tenant=VENDOR)
        ),
        SIGNATURE_FAILS,
    ),
    "a tampered payload (moved to another tenant)": (
        lambda idp, tenant: swap_payload(idp.sign(claims_for("t-other")), claims_for(tenant)),
        SIGNATURE_FAILS,
    ),
    "lives longer than we accept": (
        lambda idp, tenant: idp.sign(claims_for(tenant, exp=seconds_from_now(25 * 3600))),
        "the token lives longer than the 24 hours we accept",
    ),
    "an ADMIN role for one tenant": (
        lambda idp, tenant: idp.sign(claims_for(tenant, role="ADMIN")),
        "an ADMIN token must be for every tenant",
    ),
    "an unknown role": (
        lambda idp, tenant: idp.sign(claims_for(tenant, role="ROOT")),
        "the token's role or tenant is not one we know",
    ),
    "not a JWT": (lambda idp, tenant: "not.a.jwt", "the token is malformed"),
    **{
        f"no {claim}": (without(claim), f'missing the "{claim}" claim') for claim in REQUIRED_CLAIMS
    },
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_forged_and_invalid_tokens_are_refused(
    idp_client: Client, provider: IdentityProvider, registered: str, attack: str
) -> None:
    forge, reason = ATTACKS[attack]
    token = forge(provider, registered)
    for headers in (
        {"Authorization": f"Bearer {token}"},
        {"Cookie": f"{COOKIE_NAME}={token}"},
    ):
        answer = await idp_client.get(f"/v1/customers/{registered}", headers=headers)
        assert_unauthenticated(answer)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert reason in answer.json()["detail"]


async def test_a_revoked_identity_provider_token_is_refused(
    idp_client: Client, provider: IdentityProvider, registered: str, idp_tokens: TokenService
) -> None:
    token = provider.sign(claims_for(registered), "ES256")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await idp_client.post("/v1/auth/logout", headers=headers)).status_code == 204
    assert_unauthenticated(await idp_client.get(f"/v1/customers/{registered}", headers=headers))

    other = provider.sign(claims_for(registered, sub="tom", role="TECHNICAL"))
    await idp_tokens.revoke_user(registered, "tom", at_now())
    assert_unauthenticated(
        await idp_client.get(
            f"/v1/customers/{registered}", headers={"Authorization": f"Bearer {other}"}
        )
    )
