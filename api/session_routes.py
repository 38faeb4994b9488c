"""Session routes: log in, and the passwords of local users.

Who may log in, and as what, is decided at each login from the ledger and the staff list, never
from the request: a vendor staff member (no `customer_id`) must be on `vendor_staff` and gets
role ADMIN for every tenant; a customer's user must be a user of that customer's account now,
and gets the role the account gives them now. A wrong password, an unknown user, an unknown
customer, a user whose access was revoked and a credential older than the user's current
invitation all get one identical 401, in about the same time (a password is always hashed).

A suspended customer's users do not log in: the suspension freezes the account, and
`api.auth.end_sessions_after` has ended their sessions. They learn why (403) only after
proving their password, so the suspension is not revealed to anyone else.

Passwords are set by a CUSTOMER_ADMIN of the customer (or vendor staff) as a random one-time
password shown once, or changed by their owner. Either way the user's earlier tokens are
revoked: a reset is often the answer to a leak. API keys are checked in `api.auth`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, JSONBody

from api.auth import COOKIE_NAME, VENDOR, Principal, new_password
from api.common import Api, api_of, now
from api.openapi import explained_problems, problems
from api.problems import ApiProblem
from api.staff import check_login, is_vendor_staff, set_password
from commands.aggregates import CUSTOMER
from commands.customer import open_account
from commands.handling import load
from commands.streams import StreamNameError, customer_stream, tenant_of
from domain import customer
from domain.roles import API_KEY_ACTOR_PREFIX, Role, is_api_key_actor

log = structlog.get_logger(__name__)

MAX_PASSWORD: Final = 1024
"""Characters of a password; longer ones are refused before any hashing."""
MIN_NEW_PASSWORD: Final = 12
NO_STORE: Final = {"Cache-Control": "no-store"}
"""Answers carrying a token or a password are never cached."""

UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD)]
NewPassword = Annotated[str, msgspec.Meta(min_length=MIN_NEW_PASSWORD, max_length=MAX_PASSWORD)]


class LoginBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: UserId
    password: Password
    customer_id: str | None = None
    """The customer the user belongs to; absent for vendor staff."""


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A login's answer: the bearer token (also set as the session cookie) and what it grants."""

    token: str
    token_type: str
    expires_at: datetime
    tenant: str
    role: Role


class OneTimePassword(msgspec.Struct, frozen=True, kw_only=True):
    """A password just set for a user: shown this once, kept nowhere but as its hash."""

    customer_id: str
    user_id: str
    password: str


class ChangePasswordBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    current_password: Password
    new_password: NewPassword


class _CredentialsRefusedError(Exception):
    """The user id, customer or password is wrong: the one answer for all of them."""


def _invalid_login() -> ApiProblem:
    return ApiProblem(
        401,
        "invalid-credentials",
        "The credentials are not valid",
        "the user id, the customer or the password is wrong",
        headers={"WWW-Authenticate": 'Bearer realm="valueledger"'},
    )


async def _local_user(api: Api, user_id: str, password: str, customer_id: str | None) -> Role:
    """The role `user_id` logs in with, after checking the password and the ledger (or the
    staff list); _CredentialsRefusedError when anything is wrong."""
    pool = api.services.pool
    if customer_id is None:
        matches = await check_login(pool, VENDOR, user_id, password)
        if not (await is_vendor_staff(pool, user_id) and matches):
            raise _CredentialsRefusedError
        return Role.ADMIN
    try:
        stream = customer_stream(tenant_of(customer_id))
    except StreamNameError:
        account = customer.initial_state()
    else:
        account = (await load(api.services.store, CUSTOMER, stream)).state
    user = account.users.get(user_id)
    matches = await check_login(
        pool, customer_id, user_id, password, not_before=user.invited_at if user else None
    )
    if (
        not matches
        or user is None
        or user.role is Role.ADMIN  # vendor staff on a customer's team log in as staff
        or is_api_key_actor(user_id)
    ):
        raise _CredentialsRefusedError
    if account.status is customer.CustomerStatus.SUSPENDED:
        raise ApiProblem(
            403,
            "customer-suspended",
            "The customer is suspended",
            f"customer {customer_id!r} is suspended, so its users cannot log in; "
            "ask vendor support",
        )
    return user.role


def _set_session_cookie(response: Response[Any], token: str, max_age: int) -> None:
    """The browser's copy of the token: never readable by scripts, sent over HTTPS only and
    only with requests from our own pages (the CSRF defence), for as long as the token lives."""
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=max_age,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


@post(
    "/v1/auth/login",
    status_code=200,
    summary="Log in: a short-lived token and its cookie",
    responses=explained_problems(
        {
            401: "The user id, the customer or the password is wrong.",
            403: "The customer is suspended: its users cannot log in.",
        }
    )
    | problems((503,)),
)
async def login(request: Request[Any, Any, Any], data: JSONBody[LoginBody]) -> Response[Session]:
    """Check a local user's password; answer a bearer token and set the same token as the
    session cookie. The role and tenant come from the ledger (or the staff list)."""
    api = api_of(request)
    try:
        role = await _local_user(api, data.user_id, data.password, data.customer_id)
    except _CredentialsRefusedError:
        log.info("login refused", customer=data.customer_id)
        raise _invalid_login() from None
    tenant = VENDOR if data.customer_id is None else data.customer_id
    token, principal = api.tokens.issue(data.user_id, tenant, role, now())
    session = Session(
        token=token,
        token_type="Bearer",  # noqa: S106 - the OAuth 2 token type, not a secret
        expires_at=principal.expires_at,
        tenant=tenant,
        role=role,
    )
    response = Response(session, status_code=200, headers=NO_STORE)
    _set_session_cookie(response, token, int(api.tokens.ttl.total_seconds()))
    return response


@post(
    "/v1/customers/{customer_id:str}/users/{user_id:str}/password",
    status_code=201,
    summary="Set a one-time password for a user (CUSTOMER_ADMIN)",
    responses=explained_problems(
        {
            403: "The ledger no longer lists the caller as a CUSTOMER_ADMIN of the customer, "
            "or the user cannot have a password (vendor staff, an API key).",
            404: "The customer has no such user.",
        }
    )
    | problems((503,)),
)
async def set_user_password(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    user_id: FromPath[str],
) -> Response[OneTimePassword]:
    """Give a user of the customer a random password, answered this once; their earlier
    sessions end. The caller must be a CUSTOMER_ADMIN of the customer in the ledger now (or
    vendor staff)."""
    api = api_of(request)
    account = await open_account(api.services.store, customer_id)
    if not principal.is_vendor:
        caller = account.users.get(principal.user)
        if caller is None or caller.role is not Role.CUSTOMER_ADMIN:
            raise PermissionDeniedException(
                detail=f"only a CUSTOMER_ADMIN of customer {customer_id!r} can set its users' "
                "passwords, and the ledger no longer lists you as one; log in again"
            )
    user = account.users.get(user_id)
    if user is None:
        raise NotFoundException(
            detail=f"customer {customer_id!r} has no user {user_id!r}; invite them first"
        )
    if user.role is Role.ADMIN or is_api_key_actor(user_id):
        raise PermissionDeniedException(
            detail=f"user {user_id!r} cannot have a password on a customer: vendor staff log in "
            f"as vendor staff, and ids starting with {API_KEY_ACTOR_PREFIX!r} belong to API keys"
        )
    at = now()
    password = new_password()
    await set_password(api.services.pool, customer_id, user_id, password, at=at)
    await api.tokens.revoke_user(customer_id, user_id, at)
    log.info("password set", customer=customer_id, user=user_id, by=principal.user)
    answer = OneTimePassword(customer_id=customer_id, user_id=user_id, password=password)
    return Response(answer, status_code=201, headers=NO_STORE)


@post(
    "/v1/auth/password",
    status_code=204,
    summary="Change your own password",
    responses=explained_problems(
        {
            403: "The current password is wrong, or the caller is an API key.",
            422: "The new password is the current one.",
        }
    )
    | problems((503,)),
)
async def change_own_password(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    data: JSONBody[ChangePasswordBody],
) -> Response[None]:
    """Replace the caller's password, proving the current one. Every token of theirs, this one
    included, is revoked and the cookie cleared: log in again with the new password."""
    if principal.via == "api_key":
        raise PermissionDeniedException(detail="an API key has no password; issue a new key")
    if data.new_password == data.current_password:
        raise ApiProblem(
            422,
            "password-unchanged",
            "The new password is the current one",
            "choose a new password different from the current one",
        )
    api = api_of(request)
    customer_id = None if principal.tenant == VENDOR else principal.tenant
    try:
        await _local_user(api, principal.user, data.current_password, customer_id)
    except _CredentialsRefusedError:
        raise ApiProblem(
            403,
            "wrong-password",
            "The current password is wrong",
            "the current password is not the one you log in with; nothing was changed",
        ) from None
    at = now()
    await set_password(
        api.services.pool, principal.tenant, principal.user, data.new_password, at=at
    )
    await api.tokens.revoke_user(principal.tenant, principal.user, at)
    log.info("password changed", tenant=principal.tenant, user=principal.user)
    response: Response[None] = Response(None, status_code=204)
    _set_session_cookie(response, "", 0)
    return response


ROUTES: Final[list[Any]] = [login, set_user_password, change_own_password]
