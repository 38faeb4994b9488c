"""Request limits: requests per minute per credential and per client address, body size, JSON
nesting depth.

Rate limits are fixed windows counted in Redis by one Lua script (INCR, and PEXPIRE when the
window opens), so several API processes share one count and no increment is lost between
them. A window opens with a key's first request and lasts `window_seconds`; a request over a
limit gets 429 with Retry-After, the seconds until its window closes. Counting is per
credential (a hash of the token or API key as authentication reads it, whatever the header's
spelling and whether a token comes as a bearer token or as the session cookie) and per client
address (for IPv6, per /64, which one subscriber usually holds whole). The credential is
counted before it is checked, so a flood of bad tokens counts against its address; a new
login is a new token, and logins are limited per address like any request.

The client address is the socket's peer. Only when that peer is a trusted proxy
(VALUELEDGER_TRUSTED_PROXIES) is X-Forwarded-For read, from the right: the first address not
itself a trusted proxy is the client. Anything left of it was written by the client and may
be forged, so a spoofed header gains nothing.

Redis down: requests are let through (counted in valueledger_rate_limit_unavailable_total and
logged once until Redis answers again). Limits protect the service; refusing every request
because the limiter cannot count would turn a Redis outage into an API outage.

Bodies are read here once, up to the route's request_max_body_size (413 beyond it), and
handed on unchanged; a JSON body nested deeper than MAX_JSON_DEPTH is refused with 400 before
any decoder recurses into it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, HTTPReceiveMessage, HTTPScope, Receive, Scope, Send
from litestar.utils import normalize_path
from prometheus_client import Counter

from api.common import SESSION_COOKIE, Api, header, presented_credential
from api.openapi import RETRY_AFTER, Answer, Documentation, RouteOperation
from api.problems import ApiProblem, invalid_body, problem_response
from projections.cache import REDIS_ERRORS
from projections.request_redis import LuaScript, RequestRedis

MAX_JSON_DEPTH: Final = 32
"""Arrays and objects nested deeper than this (the body itself is level 1) are refused; the
ledger's own limit for event data is the same."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

log = structlog.get_logger(__name__)

LIMITED: Final = Counter(
    "valueledger_rate_limited_total",
    "Requests refused with 429, by the limit they exceeded (credential or address).",
    ["limit"],
)
UNAVAILABLE: Final = Counter(
    "valueledger_rate_limit_unavailable_total",
    "Requests let through uncounted because Redis did not answer the rate limiter.",
)

_COUNT_SCRIPT: Final = LuaScript("""
local result = {}
for _, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  result[#result + 1] = count
  result[#result + 1] = ttl
end
return result
""")
"""Count one request under every key and return (count, milliseconds left) per key. The
expiry is set whenever a key has none, so a key can never be left counting forever."""


# --- settings -----------------------------------------------------------------------------------


_ENV_NAMES: Final = {
    "per_credential": "VALUELEDGER_RATE_LIMIT_CREDENTIAL",
    "per_address": "VALUELEDGER_RATE_LIMIT_ADDRESS",
    "window_seconds": "VALUELEDGER_RATE_LIMIT_WINDOW",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSettings:
    """The limits, from the environment when the application is built."""

    per_credential: int = 600
    """Requests per window per credential; 0 turns the limit off."""
    per_address: int = 1200
    """Requests per window per client address; 0 turns the limit off."""
    window_seconds: int = 60
    trusted_proxies: tuple[IpNetwork, ...] = ()
    """Peers whose X-Forwarded-For is believed (addresses or CIDR blocks)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RateLimitSettings:
        env = os.environ if environ is None else environ
        numbers: dict[str, int] = {}
        for field, name in _ENV_NAMES.items():
            text = env.get(name, "").strip()
            if not text:
                continue
            if not (text.isascii() and text.isdigit()):
                raise ValueError(f"invalid configuration: {name} must be a whole number >= 0")
            numbers[field] = int(text)
        if numbers.get("window_seconds") == 0:
            raise ValueError("invalid configuration: VALUELEDGER_RATE_LIMIT_WINDOW must be >= 1")
        proxies = parse_networks(env.get("VALUELEDGER_TRUSTED_PROXIES", ""))
        return cls(**numbers, trusted_proxies=proxies)


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """`10.0.0.0/8, 192.0.2.7, fd00::/8` as networks; a bad entry is an error naming it."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"invalid configuration: VALUELEDGER_TRUSTED_PROXIES: {item!r} is not an IP "
                "address or CIDR block"
            ) from None
    return tuple(networks)


# --- the caller ---------------------------------------------------------------------------------


def credential_of(scope: Scope) -> str | None:
    """A stable name for the caller's credential that reveals nothing of it: SHA-256 of the
    credential as authentication reads it (a token is one credential whether it comes as a
    bearer token or as the session cookie); None for an anonymous request."""
    presented = presented_credential(scope)
    if presented is None:
        return None
    scheme, value = presented
    kind = "token" if scheme in ("bearer", SESSION_COOKIE) else scheme
    return hashlib.sha256(f"{kind}\0{value}".encode("latin-1", "replace")).hexdigest()


def _parse_address(text: str) -> IpAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IpAddress, proxies: tuple[IpNetwork, ...]) -> bool:
    return any(address in network for network in proxies)


def client_address(scope: Scope, proxies: tuple[IpNetwork, ...]) -> IpAddress | None:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    right-most address of X-Forwarded-For that is not a trusted proxy itself."""
    client = scope.get("client")
    peer = _parse_address(str(client[0])) if client else None
    if peer is None or not _trusted(peer, proxies):
        return peer
    hops = [
        hop
        for key, value in scope["headers"]
        if key == b"x-forwarded-for"
        for hop in bytes(value).decode("latin-1").split(",")
    ]
    current = peer
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None:
            break  # a malformed hop: nothing left of it can be believed
        current = address
        if not _trusted(address, proxies):
            break
    return current


def address_key(address: IpAddress) -> str:
    """What an address is counted as: itself for IPv4, its /64 for IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- answering from middleware --------------------------------------------------------------------


async def send_problem(scope: Scope, receive: Receive, send: Send, problem: ApiProblem) -> None:
    """Answer with `problem` as problem details, exactly as the exception handler would."""
    request: Request[Any, Any, Any] = Request(scope, receive)
    response = problem_response(request, problem)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def api_of_scope(scope: Scope) -> Api:
    api: Api = scope["app"].state.api
    return api


# --- rate limits --------------------------------------------------------------------------------


class RateLimiter:
    """Counts requests per credential and per address in Redis; see the module docstring."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self._failing = False

    def keys(self, prefix: str, scope: Scope) -> list[tuple[str, str, int]]:
        """(limit name, Redis key, limit) for every limit that applies to the request."""
        keys = []
        if self.settings.per_credential > 0:
            credential = credential_of(scope)
            if credential is not None:
                keys.append(
                    ("credential", f"{prefix}:rl:c:{credential[:40]}", self.settings.per_credential)
                )
        if self.settings.per_address > 0:
            address = client_address(scope, self.settings.trusted_proxies)
            if address is not None:
                keys.append(
                    ("address", f"{prefix}:rl:a:{address_key(address)}", self.settings.per_address)
                )
        return keys

    async def retry_after(
        self, redis: RequestRedis, prefix: str, scope: Scope
    ) -> tuple[str, int] | None:
        """Count the request; (the limit exceeded, seconds to wait) if it is over a limit."""
        keys = self.keys(prefix, scope)
        if not keys:
            return None
        try:
            counts = await redis.run(
                _COUNT_SCRIPT, [key for _, key, _ in keys], [self.settings.window_seconds * 1000]
            )
        except REDIS_ERRORS as error:
            UNAVAILABLE.inc()
            if not self._failing:
                self._failing = True
                log.warning("rate_limit_unavailable", error=type(error).__name__)
            return None
        if self._failing:
            self._failing = False
            log.info("rate_limit_recovered")
        exceeded: tuple[str, int] | None = None
        for index, (name, _, limit) in enumerate(keys):
            count, left_ms = int(counts[2 * index]), int(counts[2 * index + 1])
            if count > limit:
                wait = max(1, math.ceil(left_ms / 1000))
                if exceeded is None or wait > exceeded[1]:
                    exceeded = (name, wait)
        return exceeded


class RateLimitMiddleware:
    """429 for a caller over its limit; the settings are read when the application is built.
    /healthz is never limited: liveness must not depend on Redis."""

    UNLIMITED: Final = frozenset({"/healthz"})

    def __init__(self, app: ASGIApp, settings: RateLimitSettings | None = None) -> None:
        self.app = app
        self.limiter = RateLimiter(settings or RateLimitSettings.from_env())

    @classmethod
    def documentation(cls, operation: RouteOperation) -> Documentation:
        if operation.path in cls.UNLIMITED:
            return Documentation()
        return Documentation(
            answers=(
                Answer(
                    429,
                    "The caller's credential or client address has sent more requests than its "
                    "limit allows; Retry-After says when its window closes.",
                    (replace(RETRY_AFTER, required=True),),
                ),
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Before routing (see api.platform), so by the path as sent, spelled as routing reads it.
        if scope["type"] != ScopeType.HTTP or unlimited(scope["path"], self.UNLIMITED):
            await self.app(scope, receive, send)
            return
        services = api_of_scope(scope).services
        exceeded = await self.limiter.retry_after(
            services.request_redis, services.settings.cache_prefix, scope
        )
        if exceeded is None:
            await self.app(scope, receive, send)
            return
        limit, wait = exceeded
        LIMITED.labels(limit).inc()
        refused_route(scope)
        problem = ApiProblem(
            429,
            "rate-limited",
            "Too many requests",
            f"this {limit} has made more requests than its limit allows; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
        await send_problem(scope, receive, send, problem)


def unlimited(path: str, paths: frozenset[str]) -> bool:
    """Whether `path` routes to one of `paths`: routing ignores a trailing slash and repeated
    slashes, so `/healthz/` is the health check too (normalised only when spelled so)."""
    if path in paths:
        return True
    return ("//" in path or path.endswith("/")) and normalize_path(path) in paths


def refused_route(scope: HTTPScope) -> None:
    """Name, in the scope, the route a request refused before routing would have reached, so
    that its log line, metrics and span carry the route like any answer of it (an unknown path
    stays unmatched). Only refusals pay for the lookup, which routing caches anyway."""
    router = scope["app"].asgi_router
    try:
        *_, template = router.handle_routing(
            path=normalize_path(scope["path"]), method=scope["method"]
        )
    except HTTPException:
        return
    scope["path_template"] = template


# --- bodies -------------------------------------------------------------------------------------


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


async def read_body(receive: Receive, limit: int | None) -> bytes:
    """The whole request body, refusing more than `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out `body` in one message, then waits for the disconnect."""
    given = False

    async def replay() -> HTTPReceiveMessage:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # type: ignore[return-value]  # an HTTP request's receive

    return replay


_JSON_TOKEN: Final = re.compile(rb'["\\\[\]{}]')


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects in `body` nest deeper than `limit`.

    A linear scan of the structural characters outside strings; it does not validate the
    JSON (the decoder does that next), so it never recurses and cannot be made to backtrack.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_TOKEN.finditer(body):
        position = match.start()
        char = body[position]
        if in_string:
            if position == escaped_at:
                continue
            if char == 0x5C:  # backslash: the next character is escaped
                escaped_at = position + 1
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        elif char in b"]}":
            depth -= 1
    return False


class BodyLimitsMiddleware:
    """Reads a request's body once, bounded by the route's request_max_body_size (413), and
    refuses JSON nested deeper than MAX_JSON_DEPTH (400), and an empty body (400) or one not
    labelled JSON (415) on a route that reads one; later layers read it as usual."""

    METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @classmethod
    def documentation(cls, operation: RouteOperation) -> Documentation:
        if operation.method not in cls.METHODS:
            return Documentation()
        reads = reads_a_body(operation.handler)
        answers = [
            Answer(
                400,
                f"The JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels "
                "(`json-too-deep`)"
                + (", or it is empty (`invalid-request` at `$`)." if reads else "."),
            )
        ]
        limit = operation.handler.resolve_request_max_body_size()
        if limit is not None:
            answers.append(Answer(413, f"The body is larger than {limit} bytes."))
        if reads:
            answers.append(
                Answer(
                    415,
                    "The body is not labelled JSON: send it with "
                    "`Content-Type: application/json` (`unsupported-media-type`).",
                )
            )
        return Documentation(answers=tuple(answers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        handler = scope["route_handler"]
        limit = (
            handler.resolve_request_max_body_size()
            if isinstance(handler, HTTPRouteHandler)
            else None
        )
        declared = header(scope, b"content-length")
        too_large = ApiProblem(
            413,
            "body-too-large",
            "The request body is too large",
            f"send at most {limit} bytes",
        )
        if (
            limit is not None
            and declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            await send_problem(scope, receive, send, too_large)
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLargeError:
            await send_problem(scope, receive, send, too_large)
            return
        except ClientGoneError:
            return  # nobody is listening for an answer
        # Every body is checked, whatever its Content-Type says: the decoders do not ask.
        if json_depth_exceeds(body):
            problem = ApiProblem(
                400,
                "json-too-deep",
                "The JSON body is nested too deeply",
                f"arrays and objects may nest at most {MAX_JSON_DEPTH} levels",
            )
            await send_problem(scope, receive, send, problem)
            return
        refusal = json_body_refusal(scope, body)
        if refusal is not None:
            await send_problem(scope, receive, send, refusal)
            return
        await self.app(scope, replaying(body, receive), send)


def reads_a_body(handler: Any) -> bool:
    """Whether the route's handler takes a JSON body (Litestar's `data` parameter)."""
    return "data" in handler.parsed_fn_signature.parameters


def json_body_refusal(scope: Scope, body: bytes) -> ApiProblem | None:
    """Why a route that reads a JSON body cannot read this one, if it cannot. Litestar would
    report an empty body as a missing parameter named `data`, and decode a body labelled
    anything at all as JSON."""
    if not reads_a_body(scope["route_handler"]):
        return None  # a route without a body (a POST such as logout)
    if not body.strip():
        return invalid_body("$", "the body is empty; send a JSON object")
    label = header(scope, b"content-type") or ""
    media_type = label.partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return None
    return ApiProblem(
        415,
        "unsupported-media-type",
        "The body is not labelled as JSON",
        f"send the body as JSON, with Content-Type: application/json (not {label!r})"
        if label
        else "send the body as JSON, with Content-Type: application/json",
    )
