"""What every route module shares: the caller, the services, the answer to a command.

Routes are thin: they authenticate (the `principal` dependency, which also applies the role
policy and the tenant rule), build the domain command with the time and the caller stamped,
call its handler and answer with the receipts' summary and the aggregate's ETag.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import msgspec
from litestar import MediaType, Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter, QueryParameter
from litestar.types import HTTPScope, Scope

from api.auth import (
    COOKIE_NAME,
    AuthenticationError,
    Principal,
    TokenService,
    authenticate_api_key,
)
from api.openapi import Answer, Documentation, Documenting, Header, RouteOperation
from api.policy import POLICY
from api.problems import ApiProblem
from commands.handling import Outcome, Trace
from eventstore.canonical import MAX_SAFE_INTEGER
from projections.queries import MAX_LIMIT
from valueledger.services import Services

EXPORTS_AT_ONCE: Final = 4
"""Exports one process streams at once. An export holds a pooled connection only while it
reads a page, but a slow client makes it last; more than this would let exports crowd the
pool (10 connections, the writer's among them) and the event loop out from under the rest."""


class Api:
    """What route handlers depend on: the shared services and the token service."""

    def __init__(self, services: Services, tokens: TokenService) -> None:
        self.services = services
        self.tokens = tokens
        self.export_slots = asyncio.Semaphore(EXPORTS_AT_ONCE)
        """Taken by each export while it streams; none free is a 503 (`exports-busy`)."""
        self.require_if_match = services.settings.require_if_match
        """`Settings.require_if_match`, read once: a command without If-Match looks it up."""


# --- who is calling -----------------------------------------------------------------------------


IF_MATCH: Final = "if_match"
"""The route opt saying that the route's command takes `If-Match` (`expected_version`), as an
`IfMatch` saying what its version is."""
ETAG: Final = "etag"
"""The route opt saying what the ETag of the route's successful answer is."""

READ_AHEAD: Final = "read_ahead"
"""The route opt naming the `ReadAhead` of a route."""


@dataclass(frozen=True, slots=True)
class IfMatch:
    """What a command route's If-Match is checked against, declared once on the route as
    ``opt={IF_MATCH: IfMatch(...)}``: either the GET whose ETag is the version of what the
    command changes (`read_at`), or that the command creates what it acts on (`creates`).

    A deployment that requires If-Match (`Settings.require_if_match`) refuses a command
    without it with 428, naming the `read_at` GET; a command that creates what it acts on is
    never refused: its stream must not exist yet, or (raising an alert) its id must never
    have been used, so there is no version the client could have read and no change of
    theirs to lose."""

    read_at: str | None = None
    """The path of the GET (``/v1/customers/{customer_id}/setup``), its parameters named as
    the command route's own; one the command's path lacks stays a ``{placeholder}`` for the
    client to fill from its body (a period's ``{period_start}``)."""
    creates: bool = False

    def __post_init__(self) -> None:
        if (self.read_at is None) is not self.creates:
            raise ValueError("say either that the command creates what it acts on or its GET")

    def read_url(self, path_params: Mapping[str, Any]) -> str:
        """The `read_at` GET of the command sent with `path_params`."""
        return _PLACEHOLDER.sub(
            lambda found: str(path_params.get(found[1], found[0])), self.read_at or ""
        )


_PLACEHOLDER: Final = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class ReadAhead:
    """A cached view of the path's customer that a route answers: the caller's authentication
    reads its entry from Redis in the round trip that reads the token's revocations, so a warm
    answer costs no round trip of its own (see `projections.cache`). Declared on the route as
    ``opt={READ_AHEAD: ReadAhead(...)}``; the handler gets the values with `read_ahead_of`."""

    view: str
    type: Any
    params: str = ""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (`name` in lower case, as ASGI gives names), as
    text. Read from the scope: Litestar's `request.headers` builds a case-insensitive
    multidict of every header first (about 20 µs, a tenth of a cached query's time)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


SESSION_COOKIE: Final = "session cookie"
"""The kind `presented_credential` gives the session cookie: with a space, so that no
Authorization scheme (a single token) can pass for it."""


def presented_credential(scope: Scope) -> tuple[str, str] | None:
    """What the request presents to authenticate, as authentication reads it: the
    Authorization header's scheme in lower case and its value without surrounding spaces
    (``("bearer", token)``, ``("apikey", key)``...), else ``(SESSION_COOKIE, token)`` for the
    session cookie, else None. Every spelling that authenticates as one credential (``bearer x``,
    ``Bearer  x``) reads as the same pair, so what is counted or kept per credential cannot be
    dodged by respelling the header."""
    authorization = header(scope, b"authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        return scheme.lower(), value.strip()
    cookies = header(scope, b"cookie")
    if cookies:
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE_NAME and value:
                return SESSION_COOKIE, value
    return None


def query_value(scope: Scope, name: str) -> str | None:
    """The first value of a query parameter, read from the scope. A route that must stay as
    cheap as it is when the parameter is absent reads it so: a request without a query string
    costs one test of an empty string, where a parameter declared to Litestar is parsed into a
    dict and validated on every request."""
    query: bytes = scope["query_string"]
    if not query:
        return None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == name:
            return value
    return None


SAME_SITE: Final = frozenset({"same-origin", "none"})
"""Sec-Fetch-Site values of a request a browser sends from our own pages or on the user's own
initiative (typed in, a bookmark)."""


def refuse_cross_site(scope: HTTPScope) -> None:
    """Refuse (403) a request that changes something and carries the session cookie, when the
    browser says another site sent it. SameSite=strict keeps the cookie off such requests in
    today's browsers; this is the second defence, for a sibling site of the same registrable
    domain (which SameSite counts as the same site) and for browsers without SameSite: the
    Fetch Metadata header where the browser sends it, else the Origin header against our own
    host. A request carrying neither (not a browser's) passes, as do reads."""
    if scope["method"] in {"GET", "HEAD", "OPTIONS"}:
        return
    site = header(scope, b"sec-fetch-site")
    if site is not None:
        if site.strip().lower() in SAME_SITE:
            return
    else:
        origin = header(scope, b"origin")
        if origin is None or urlsplit(origin.strip()).netloc == header(scope, b"host"):
            return
    raise PermissionDeniedException(
        detail="a request from another site may not use the session cookie to change anything; "
        "send it from this service's own pages, or with a bearer token"
    )


async def authenticate(request: Request[Any, Any, Any]) -> Principal:
    """The caller's principal, from `Authorization: Bearer`, `Authorization: ApiKey` or the
    session cookie."""
    api: Api = request.app.state.api
    presented = presented_credential(request.scope)
    try:
        match presented:
            case None:
                pass
            case ("apikey", _):
                return await authenticate_api_key(request)
            case ("bearer", token) if token:
                return await _verify(request, api, token, "bearer")
            case (kind, token) if kind == SESSION_COOKIE:
                refuse_cross_site(request.scope)
                return await _verify(request, api, token, "cookie")
            case _:
                raise AuthenticationError("use 'Authorization: Bearer <token>'")
    except AuthenticationError as error:
        raise NotAuthorizedException(detail=str(error)) from None
    raise NotAuthorizedException(detail="log in first: send a bearer token or the session cookie")


async def _verify(
    request: Request[Any, Any, Any], api: Api, token: str, via: Literal["bearer", "cookie"]
) -> Principal:
    wanted: ReadAhead | None = request.route_handler.opt.get(READ_AHEAD)
    if wanted is None:
        return await api.tokens.verify(token, via)
    customer_id = request.path_params.get("customer_id")

    def keys(principal: Principal) -> Sequence[str]:
        if customer_id is None or not (principal.is_vendor or customer_id == principal.tenant):
            return ()  # the guard refuses the caller next: nothing to read for them
        try:
            return api.services.cache.keys(customer_id, wanted.view, wanted.params, wanted.type)
        except ValueError:
            return ()  # no customer's id: the handler answers 400

    principal, values = await api.tokens.verify_reading(token, via, keys)
    if values:
        request.scope.setdefault("state", {})[READ_AHEAD] = values
    return principal


def read_ahead_of(request: Request[Any, Any, Any]) -> Sequence[bytes | None] | None:
    """The values of the route's `ReadAhead` keys, if the authentication read them."""
    values: Sequence[bytes | None] | None = request.scope.get("state", {}).get(READ_AHEAD)
    return values


def guards(handler: BaseRouteHandler) -> bool:
    """Whether the route needs a caller: it takes the `principal` dependency, which
    authenticates and runs `role_guard`."""
    return "principal" in handler.parsed_fn_signature.parameters


def guard_documentation(operation: RouteOperation) -> Documentation:
    """What the caller's authentication and `role_guard` answer on a guarded route, and its
    roles, from the table the guard reads."""
    if not guards(operation.handler):
        return Documentation()
    roles = ", ".join(sorted(str(role) for role in POLICY[operation.handler.handler_name]))
    answers = [
        Answer(
            401,
            "No valid credential: send a bearer token, an API key or the session cookie.",
            (Header("WWW-Authenticate", "How to authenticate: `Bearer`."),),
        ),
        Answer(403, "The caller's role is not one of the route's roles."),
    ]
    if "customer_id" in operation.path_parameters:
        answers.append(Answer(404, "No such customer, or not the caller's own."))
    return Documentation(answers=tuple(answers), notes=(f"Roles: {roles}.",))


def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Refuse a caller whose role the policy does not list for the route (403), and hide a
    customer from anyone but its own users and vendor staff (404)."""
    principal: Principal | None = connection.scope.get("state", {}).get("principal")
    if principal is None:
        return  # the route is public (no principal dependency): nothing to check
    allowed = POLICY[handler.handler_name]
    if principal.role not in allowed:
        raise PermissionDeniedException(
            detail=f"role {principal.role} cannot {handler.handler_name.replace('_', ' ')}"
        )
    customer_id = connection.path_params.get("customer_id")
    if customer_id is not None and not principal.is_vendor and customer_id != principal.tenant:
        raise NotFoundException(detail=f"no customer {customer_id!r}")


async def principal_dependency(request: Request[Any, Any, Any]) -> Principal:
    state = request.scope.setdefault("state", {})
    principal: Principal | None = state.get("principal")
    if principal is None:  # else authenticated already, by the idempotency keys' owner check
        principal = await authenticate(request)
        state["principal"] = principal
    role_guard(request, request.route_handler)
    return principal


def api_of(request: Request[Any, Any, Any]) -> Api:
    api: Api = request.app.state.api
    return api


def now() -> datetime:
    return datetime.now(UTC)


def trace_of(request: Request[Any, Any, Any]) -> Trace:
    return Trace(
        correlation_id=request.scope.get("state", {}).get("request_id"),
        trace_id=request.scope.get("state", {}).get("trace_id"),
    )


# --- bounded numbers in paths and queries ------------------------------------------------------
# Every whole number a client puts in a path or a query has its range declared here, so it is
# documented in the OpenAPI and checked before the handler runs: one out of range is a 400
# naming the parameter, never a number PostgreSQL's bigint cannot hold (a 500 otherwise).

PageSize: TypeAlias = Annotated[
    int, QueryParameter(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")
]
ReceiptSeq: TypeAlias = Annotated[
    int,
    PathParameter(
        ge=1, le=MAX_SAFE_INTEGER, description="A seq in the customer's chain: 1 to 2^53 - 1."
    ),
]
FirstSeq: TypeAlias = Annotated[
    int,
    QueryParameter(
        ge=1, le=MAX_SAFE_INTEGER, description="The first seq to include: 1 to 2^53 - 1."
    ),
]
SeqAfter: TypeAlias = Annotated[
    int,
    QueryParameter(
        ge=0,
        le=MAX_SAFE_INTEGER,
        description="The last seq already read, 0 to 2^53 - 1: a page's `next_after` (0 reads "
        "from the start).",
    ),
]
VersionNumber: TypeAlias = Annotated[
    int,
    PathParameter(ge=1, le=MAX_SAFE_INTEGER, description="A version number: 1 to 2^53 - 1."),
]


# --- bodies and answers ---------------------------------------------------------------------------


class Accepted(msgspec.Struct, frozen=True, kw_only=True):
    """A command's answer: the receipts it wrote, where they sit, the aggregate's new version."""

    events: tuple[str, ...]
    seqs: tuple[int, ...]
    version: int
    cursor: str | None


def accepted(outcome: Outcome[Any, Any], status: int = 201, **extra: Any) -> Response[Any]:
    body = Accepted(
        events=tuple(record.type for record in outcome.recorded),
        seqs=tuple(record.seq for record in outcome.recorded),
        version=outcome.version,
        cursor=None if outcome.cursor is None else str(outcome.cursor),
    )
    content: Any = {**msgspec.to_builtins(body), **extra} if extra else body
    return Response(content, status_code=status, headers={"ETag": f'"{outcome.version}"'})


def json_answer(body: bytes, status: int = 200) -> Response[bytes]:
    """An answer whose body is JSON already encoded (a cached view's stored bytes)."""
    return Response(body, status_code=status, media_type=MediaType.JSON)


def expected_version(request: Request[Any, Any, Any]) -> int | None:
    """The version `If-Match` names, if any (the aggregate's ETag, a plain number); none
    where the deployment requires one is a 428 (`precondition_required`).

    Only a route that declares ``opt={IF_MATCH: IfMatch(...)}`` may read it: the OpenAPI
    document lists the header, its 412 and its 428 from that declaration."""
    declared: IfMatch | None = request.route_handler.opt.get(IF_MATCH)
    if declared is None:
        raise RuntimeError(
            f"{request.route_handler.handler_name} reads If-Match without declaring IF_MATCH"
        )
    value = header(request.scope, b"if-match")
    if value is None:
        if api_of(request).require_if_match and not declared.creates:
            raise precondition_required(declared.read_url(request.path_params))
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()):
        raise ApiProblem(
            400,
            "invalid-if-match",
            "If-Match is not a version",
            'If-Match must be an ETag this API gave: a quoted number such as "3"',
        )
    return int(text)


def precondition_required(read_url: str) -> ApiProblem:
    """The 428 (RFC 6585) for a command sent without If-Match where the deployment requires
    it, naming the GET whose ETag to send."""
    return ApiProblem(
        428,
        "precondition-required",
        "If-Match is required",
        "this service requires If-Match on a command that changes what exists: send the ETag "
        f"of GET {read_url} as If-Match",
    )


def concurrency_documentation(require_if_match: bool) -> Documenting:
    """What documents the version headers a route declares (`IF_MATCH`, `ETAG`) and what
    If-Match answers, in a deployment that requires If-Match or not."""

    def document(operation: RouteOperation) -> Documentation:
        etag: str | None = operation.opt.get(ETAG)
        success = () if etag is None else (Header("ETag", etag, required=True),)
        declared: IfMatch | None = operation.opt.get(IF_MATCH)
        if declared is None:
            return Documentation(success_headers=success)
        answers = [
            Answer(400, "If-Match is not a version this API gave."),
            Answer(
                412,
                "If-Match names a version the aggregate is no longer at; read it again.",
                (Header("ETag", "The aggregate's current version.", required=True),),
            ),
        ]
        required = require_if_match and not declared.creates
        where = f" `GET {declared.read_at}` gives it." if declared.read_at else ""
        if required:
            answers.append(
                Answer(
                    428,
                    "No If-Match (`precondition-required`): this service requires it on a "
                    f"command that changes what exists.{where}",
                )
            )
        return Documentation(
            request_headers=(
                Header(
                    "If-Match",
                    'The aggregate\'s version as its ETag gave it (a quoted number such as "3"): '
                    "the command is decided only if the aggregate is still at that version."
                    + where,
                    required=required,
                    pattern='^(W/)?"?[0-9]+"?$',
                ),
            ),
            answers=tuple(answers),
            success_headers=success,
        )

    return document
