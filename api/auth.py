"""Who is calling: bearer tokens (JWT), the same token from a browser cookie, and local logins.

Tokens are HS256 JWTs signed with the service's secret (or, when configured, RS256/ES256 tokens
of an external identity provider checked against its JWKS). Every token names its subject,
tenant ("*" for vendor staff), role, issue and expiry times and a unique id (jti); audience and
issuer are checked when configured. The algorithm is pinned per key, so "none" and algorithm
confusion (an HS256 token signed with a public key) are refused. A logout, or a change of the
user's role or access, revokes tokens through a deny-list in Redis that lives as long as the
tokens could.

Local users log in with a password (scrypt, per-user salt, constant-time comparison) and get a
short-lived token. Their tenant and role come from the ledger at login (the customer account,
or the vendor staff list), never from the request. Machine clients send an API key with the
customer it belongs to; the key is checked against the customer's account on every request.

Revocation times are kept to the millisecond and our own tokens carry `iat` to the millisecond
too (RFC 7519 allows a fractional NumericDate), so a login right after a revocation is not
mistaken for a token issued before it.

A client sends the same token with every request, so the claims of our own (HS256) tokens are
remembered once their signature and claims have been checked, for at most VERIFIED_TOKENS
tokens and only until they expire; the deny-list is still read from Redis on every request,
so a revocation takes effect at once. A route may have other keys read in that same round
trip (`verify_reading`): the API reads the route's cached view with the revocations.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import jwt
import jwt.types
import msgspec
import redis.asyncio
from litestar import Request
from redis.exceptions import RedisError

from commands.aggregates import CUSTOMER
from commands.customer import matching_api_key
from commands.handling import load
from commands.streams import StreamNameError, customer_stream, tenant_of
from domain import DomainError, customer
from domain.roles import Role, api_key_actor, is_api_key_actor
from eventstore.store import TENANT_FORMAT, EventStore
from projections.request_redis import ClientRedis, RequestRedis

VENDOR: Final = "*"
"""The tenant claim of vendor staff (ADMIN), who act across tenants."""
TOKEN_TTL: Final = timedelta(minutes=15)
MAX_TOKEN_LIFETIME: Final = timedelta(hours=24)
"""The longest-lived token accepted (from exp - iat), an identity provider's included: a
revocation must outlive every token it revokes, so it is kept this long."""
COOKIE_NAME: Final = "vl_session"
REQUIRED_CLAIMS: Final = ("sub", "tenant", "role", "exp", "iat", "jti")
API_KEY_SCHEME: Final = "apikey"
"""`Authorization: ApiKey <key>`, with the customer in `X-Customer-Id`."""
_NO_SUCH_KEY: Final = "the API key is not valid for that customer"
LEEWAY_SECONDS: Final = 5
VERIFIED_TOKENS: Final = 10_000
"""How many checked tokens are remembered (the oldest is forgotten first): a few MB."""

Via: TypeAlias = Literal["bearer", "cookie", "api_key"]

_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AuthenticationError(Exception):
    """The credential is missing, malformed, expired, revoked or not ours: 401."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller. `tenant` is VENDOR for vendor staff.

    An API key's principal is user ``api-key:<key id>`` in the role the key was issued with
    (FINANCE or TECHNICAL; TECHNICAL, to read only, for a key issued before keys had roles),
    `jti` the same text,
    issued when the key was and expiring at once: the key is checked again on every request,
    and revoking it (RevokeApiKey) is what stops it, not a logout.
    """

    user: str
    tenant: str
    role: Role
    jti: str
    issued_at: datetime
    expires_at: datetime
    via: Via

    @property
    def is_vendor(self) -> bool:
        return self.role is Role.ADMIN and self.tenant == VENDOR


class TokenService:
    """Issues and verifies the service's own tokens; checks revocation in Redis."""

    def __init__(
        self,
        secret: bytes,
        redis_client: redis.asyncio.Redis,
        prefix: str,
        *,
        reads: RequestRedis | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        jwks_url: str | None = None,
        ttl: timedelta = TOKEN_TTL,
        max_lifetime: timedelta = MAX_TOKEN_LIFETIME,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        if not timedelta(0) < ttl <= max_lifetime:
            raise ValueError("the token TTL must be positive and within the maximum lifetime")
        self._secret = secret
        self._redis = redis_client
        self._reads = reads if reads is not None else ClientRedis(redis_client)
        """Revocations are read here (by default through `redis_client`), written there."""
        self._prefix = prefix
        self._audience = audience
        self._issuer = issuer
        self._jwks = jwt.PyJWKClient(jwks_url, timeout=5) if jwks_url else None
        self.ttl = ttl
        self.max_lifetime = max_lifetime
        self._verified: dict[tuple[str, str], Principal] = {}
        """Our own tokens whose signature and claims were checked: (token, via) -> principal."""

    def issue(self, user: str, tenant: str, role: Role, now: datetime) -> tuple[str, Principal]:
        """A signed token for the caller, and the principal it stands for."""
        jti = secrets.token_urlsafe(16)
        expires = now + self.ttl
        claims: dict[str, Any] = {
            "sub": user,
            "tenant": tenant,
            "role": str(role),
            "iat": round(now.timestamp(), 3),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
        }
        if self._audience:
            claims["aud"] = self._audience
        if self._issuer:
            claims["iss"] = self._issuer
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        principal = _principal(claims, "bearer")
        return token, principal

    async def verify(self, token: str, via: Literal["bearer", "cookie"]) -> Principal:
        """The principal of a valid, unrevoked token; AuthenticationError otherwise."""
        principal, _ = await self.verify_reading(token, via, _nothing)
        return principal

    async def verify_reading(
        self,
        token: str,
        via: Literal["bearer", "cookie"],
        also_read: Callable[[Principal], Sequence[str]],
    ) -> tuple[Principal, list[bytes | None]]:
        """`verify`, reading the keys `also_read(principal)` names in the same round trip as
        the token's revocations: the principal and those keys' values."""
        principal = self._remembered(token, via)
        if principal is None:
            principal = await self._checked(token, via)
        extra = also_read(principal)
        try:
            denied, user_since, tenant_since, *values = await self._reads.mget(
                self._revoked_key(principal.jti),
                self._user_key(principal.tenant, principal.user),
                self._tenant_key(principal.tenant),
                *extra,
            )
        except (RedisError, OSError):
            # A deny-list we cannot read must not let revoked tokens in: refuse.
            raise AuthenticationError(
                "cannot check revocations right now; try again in a moment"
            ) from None
        if denied is not None or any(
            since is not None and principal.issued_at.timestamp() <= float(since)
            for since in (user_since, tenant_since)
        ):
            raise AuthenticationError("the token was revoked; log in again")
        return principal, values

    def _remembered(self, token: str, via: Literal["bearer", "cookie"]) -> Principal | None:
        """The principal of a token checked before, unless it has expired since (with the
        same leeway, and the same answer, as the check itself)."""
        principal = self._verified.get((token, via))
        if principal is None:
            return None
        if principal.expires_at.timestamp() <= time.time() - LEEWAY_SECONDS:
            del self._verified[token, via]
            raise AuthenticationError("the token has expired; log in again")
        return principal

    async def _checked(self, token: str, via: Literal["bearer", "cookie"]) -> Principal:
        """The principal of a token whose signature and claims are valid (revocation aside);
        AuthenticationError otherwise. Our own tokens' are remembered."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"the token is malformed: {error}") from None
        algorithm = header.get("alg")
        options: jwt.types.Options = {"require": list(REQUIRED_CLAIMS)}
        try:
            if algorithm == "HS256":
                key: Any = self._secret
            elif algorithm in {"RS256", "ES256"} and self._jwks is not None:
                key = await self._provider_key(token, algorithm)
            else:
                raise AuthenticationError(f"tokens signed with {algorithm!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=options,
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired; log in again") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token is from another issuer") from None
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"the token is not valid: {error}") from None
        principal = _principal(claims, via)
        if principal.expires_at - principal.issued_at > self.max_lifetime:
            raise AuthenticationError(
                f"the token lives longer than the {self.max_lifetime / timedelta(hours=1):g} "
                "hours we accept; ask for a shorter-lived one"
            )
        if algorithm == "HS256":
            # Only ours: a provider's token stays checked against its JWKS as that changes.
            if len(self._verified) >= VERIFIED_TOKENS:
                del self._verified[next(iter(self._verified))]
            self._verified[token, via] = principal
        return principal

    async def _provider_key(self, token: str, algorithm: str) -> Any:
        """The identity provider's key the token names (`kid`), pinned to its own algorithm:
        an RSA key never checks an ES256 token, nor an EC key an RS256 one. The JWKS is fetched
        (and cached) in a thread, so a slow provider never stalls the event loop."""
        assert self._jwks is not None  # noqa: S101 - the caller checked
        try:
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise AuthenticationError(
                "cannot reach the identity provider's keys right now; try again in a moment"
            ) from None
        if signing_key.algorithm_name != algorithm:
            raise AuthenticationError(
                f"the token says {algorithm} but its key is for {signing_key.algorithm_name}"
            )
        return signing_key.key

    async def revoke(self, principal: Principal, now: datetime) -> None:
        """Refuse this token from now until it would have expired anyway."""
        remaining = max(1, int((principal.expires_at - now).total_seconds()) + 5)
        await self._redis.set(self._revoked_key(principal.jti), b"1", ex=remaining)

    async def revoke_user(self, tenant: str, user: str, now: datetime) -> None:
        """Refuse every token of the user issued until now (their role or access changed)."""
        await self._redis.set(
            self._user_key(tenant, user), self._instant(now), ex=self._revocation_seconds()
        )

    async def revoke_tenant(self, tenant: str, now: datetime) -> None:
        """Refuse every token for the tenant issued until now (the customer was suspended)."""
        await self._redis.set(
            self._tenant_key(tenant), self._instant(now), ex=self._revocation_seconds()
        )

    def _revocation_seconds(self) -> int:
        """How long a revocation is kept: as long as any token it could refuse may live."""
        return int(self.max_lifetime.total_seconds()) + LEEWAY_SECONDS

    @staticmethod
    def _instant(now: datetime) -> str:
        return f"{now.timestamp():.3f}"

    def _revoked_key(self, jti: str) -> str:
        return f"{self._prefix}:jti:{jti}"

    def _user_key(self, tenant: str, user: str) -> str:
        return f"{self._prefix}:revoked-before:{tenant}:{user}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}:tenant-revoked-before:{tenant}"


async def end_sessions_after(
    tokens: TokenService, events: Iterable[customer.Event], now: datetime
) -> None:
    """What a route calls after a customer command (its outcome's `events`): a user whose role
    changed or whose access was revoked loses every token issued until now, so their next
    request, or their next login, carries the role the ledger has; a suspension ends every
    session of the customer's users (they cannot log in again until it is lifted)."""
    for event in events:
        match event:
            case customer.UserRoleChanged() | customer.UserAccessRevoked():
                await tokens.revoke_user(event.customer_id, event.user_id, now)
            case customer.CustomerSuspended():
                await tokens.revoke_tenant(event.customer_id, now)
            case _:
                pass


def _nothing(_principal: Principal) -> Sequence[str]:
    return ()


def _principal(claims: dict[str, Any], via: Literal["bearer", "cookie"]) -> Principal:
    try:
        role = Role(claims["role"])
        tenant = str(claims["tenant"])
        user = str(claims["sub"])
    except (KeyError, ValueError):
        raise AuthenticationError("the token's role or tenant is not one we know") from None
    if is_api_key_actor(user):  # only an API key itself acts as its key's user
        raise AuthenticationError("a token cannot name an API key as its subject")
    try:
        issued_at = datetime.fromtimestamp(float(claims["iat"]), UTC)
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (ValueError, TypeError, OverflowError, OSError):
        raise AuthenticationError("the token's times are out of range") from None
    if role is Role.ADMIN:
        if tenant != VENDOR:
            raise AuthenticationError("an ADMIN token must be for every tenant ('*')")
    elif not TENANT_FORMAT.match(tenant):
        raise AuthenticationError("the token's tenant is not a customer id")
    if not user or len(user) > 200:
        raise AuthenticationError("the token's subject is not a user id")
    return Principal(
        user=user,
        tenant=tenant,
        role=role,
        jti=str(claims["jti"]),
        issued_at=issued_at,
        expires_at=expires_at,
        via=via,
    )


# --- API keys ------------------------------------------------------------------------------------


async def authenticate_api_key(request: Request[Any, Any, Any]) -> Principal:
    """The principal of `Authorization: ApiKey <key>` with `X-Customer-Id: <customer>`.

    Called by `api.common.authenticate` for the ApiKey scheme; AuthenticationError (401) for
    anything wrong, with one message whether the customer or the key is unknown.
    """
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    customer_id = request.headers.get("x-customer-id", "").strip()
    if scheme.lower() != API_KEY_SCHEME or not presented.strip() or not customer_id:
        raise AuthenticationError(
            "send 'Authorization: ApiKey <key>' with 'X-Customer-Id: <customer id>'"
        )
    store: EventStore = request.app.state.api.services.store
    return await api_key_principal(store, customer_id, presented.strip(), datetime.now(UTC))


async def api_key_principal(
    store: EventStore, customer_id: str, presented: str, now: datetime
) -> Principal:
    """Check `presented` against the customer's account as the ledger has it now: an unknown
    customer, an unknown or revoked key and a wrong secret are refused alike; a suspended
    customer's valid key is refused saying so."""
    try:
        stream = customer_stream(tenant_of(customer_id))
    except StreamNameError:
        raise AuthenticationError(_NO_SUCH_KEY) from None
    account = (await load(store, CUSTOMER, stream)).state
    key = matching_api_key(account, presented)
    if key is None or account.customer_id != customer_id:
        raise AuthenticationError(_NO_SUCH_KEY)
    try:
        customer.ensure_open(customer_id, account)
    except DomainError as error:
        raise AuthenticationError(error.message) from None
    user = api_key_actor(key.key_id)
    return Principal(
        user=user,
        tenant=customer_id,
        role=key.role or Role.TECHNICAL,  # a schema 1 key reads as it always did
        jti=user,
        issued_at=key.issued_at,
        expires_at=now,
        via="api_key",
    )


# --- passwords -----------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` with a fresh 16-byte salt (base64url)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    encoded = [base64.urlsafe_b64encode(part).decode().rstrip("=") for part in (salt, digest)]
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${encoded[0]}${encoded[1]}"


def password_matches(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_text, digest_text = stored.split("$")
        salt, digest = (
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            for text in (salt_text, digest_text)
        )
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(
        password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(digest)
    )
    return hmac.compare_digest(computed, digest)


def new_password() -> str:
    """A one-time password for a new local user: 20 random characters, shown once."""
    return secrets.token_urlsafe(15)
