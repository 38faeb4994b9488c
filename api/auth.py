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
or the vendor staff list), never from the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import jwt
import jwt.types
import msgspec
import redis.asyncio
from redis.exceptions import RedisError

from domain.roles import Role
from eventstore.store import TENANT_FORMAT

VENDOR: Final = "*"
"""The tenant claim of vendor staff (ADMIN), who act across tenants."""
TOKEN_TTL: Final = timedelta(minutes=15)
COOKIE_NAME: Final = "vl_session"
REQUIRED_CLAIMS: Final = ("sub", "tenant", "role", "exp", "iat", "jti")

_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AuthenticationError(Exception):
    """The credential is missing, malformed, expired, revoked or not ours: 401."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller. `tenant` is VENDOR for vendor staff."""

    user: str
    tenant: str
    role: Role
    jti: str
    issued_at: datetime
    expires_at: datetime
    via: Literal["bearer", "cookie"]

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
        audience: str | None = None,
        issuer: str | None = None,
        jwks_url: str | None = None,
        ttl: timedelta = TOKEN_TTL,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret
        self._redis = redis_client
        self._prefix = prefix
        self._audience = audience
        self._issuer = issuer
        self._jwks = jwt.PyJWKClient(jwks_url) if jwks_url else None
        self.ttl = ttl

    def issue(self, user: str, tenant: str, role: Role, now: datetime) -> tuple[str, Principal]:
        """A signed token for the caller, and the principal it stands for."""
        jti = secrets.token_urlsafe(16)
        expires = now + self.ttl
        claims: dict[str, Any] = {
            "sub": user,
            "tenant": tenant,
            "role": str(role),
            "iat": int(now.timestamp()),
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
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                raise AuthenticationError(f"tokens signed with {algorithm!r} are not accepted")
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=options,
                leeway=5,
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
        if await self.revoked(principal):
            raise AuthenticationError("the token was revoked; log in again")
        return principal

    async def revoke(self, principal: Principal, now: datetime) -> None:
        """Refuse this token from now until it would have expired anyway."""
        remaining = max(1, int((principal.expires_at - now).total_seconds()) + 5)
        await self._redis.set(self._revoked_key(principal.jti), b"1", ex=remaining)

    async def revoke_user(self, tenant: str, user: str, now: datetime) -> None:
        """Refuse every token of the user issued until now (their role or access changed)."""
        seconds = int(self.ttl.total_seconds()) + 5
        await self._redis.set(self._user_key(tenant, user), str(int(now.timestamp())), ex=seconds)

    async def revoked(self, principal: Principal) -> bool:
        try:
            denied, since = await self._redis.mget(
                self._revoked_key(principal.jti), self._user_key(principal.tenant, principal.user)
            )
        except (RedisError, OSError):
            # A deny-list we cannot read must not let revoked tokens in: refuse.
            raise AuthenticationError(
                "cannot check revocations right now; try again in a moment"
            ) from None
        if denied is not None:
            return True
        return since is not None and int(principal.issued_at.timestamp()) <= int(since)

    def _revoked_key(self, jti: str) -> str:
        return f"{self._prefix}:jti:{jti}"

    def _user_key(self, tenant: str, user: str) -> str:
        return f"{self._prefix}:revoked-before:{tenant}:{user}"


def _principal(claims: dict[str, Any], via: Literal["bearer", "cookie"]) -> Principal:
    try:
        role = Role(claims["role"])
        tenant = str(claims["tenant"])
        user = str(claims["sub"])
    except (KeyError, ValueError):
        raise AuthenticationError("the token's role or tenant is not one we know") from None
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
        issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        via=via,
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
