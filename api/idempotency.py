"""Idempotency-Key for POST (the IETF httpapi Idempotency-Key draft): a retried command is
answered, not done twice.

A POST may carry ``Idempotency-Key`` (1 to 255 printable ASCII characters; the draft's quoted
form ``"key"`` is accepted too). Keys belong to the authenticated caller (a hash of its tenant
and user id, or of its API key's), not to the token: a client that logs in again and retries
with a new token still gets the first answer, for the whole 24 hours, while no other caller
can ever reach it. A request whose credential does not authenticate is passed on untouched
(the route answers 401); one with no credential at all shares the anonymous scope. Keys live in
Redis under the service's cache prefix. The request's fingerprint is SHA-256 of method, path,
query and body.

* The first request takes the key with SET NX, as a *running* marker that expires after
  RUNNING_TTL seconds (so a crashed process cannot lock a key for a day), and runs.
* Its answer (status; Content-Type, ETag and Location; body) is then kept for KEEP_TTL
  (24 hours), unless the request did not get to act: 401, 408, 409, 425, 428 (sent without
  the If-Match the service requires), 429 and every 5xx release the key so the client may
  retry with it.
* The same key and fingerprint again: the kept answer, with ``Idempotent-Replayed: true``.
* The same key with another fingerprint: 422. The same key while the first still runs: 409.

Redis down: a POST with a key is refused (503, Retry-After), because running it without the
guarantee could record a command twice when the client retries. POSTs without a key are not
affected. The routes under /v1/auth/ (passwords in, tokens out: nothing of theirs belongs in
Redis) and any route with ``opt={"idempotency": False}`` ignore the header: so does issuing an
API key, whose answer holds the key itself, shown once (a retry issues another key; revoke
the one never received).

The kept answers are only as durable as Redis: run it with persistence (appendonly) in
production. If a kept answer is lost anyway, a retry is decided again as a new command; the
domain refuses it wherever the command names its own id (a user, an alert with
``alert_id``, a definition), so clients that must never record twice name their ids.
The event store's own idempotency keys are not used here: a command decided again carries a
new time, so its events differ from the first ones, and its answer (ids made by the route, a
new API key's secret) cannot be rebuilt from the ledger.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec
import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from prometheus_client import Counter

from api.common import authenticate, header, presented_credential
from api.openapi import RETRY_AFTER, Answer, Documentation, Header, RouteOperation
from api.problems import ApiProblem
from api.ratelimit import ClientGoneError, api_of_scope, read_body, replaying, send_problem
from projections.cache import REDIS_ERRORS

HEADER: Final = b"idempotency-key"
KEY_PATTERN: Final = r"[\x20-\x7e]{1,255}"
KEY_FORMAT: Final = re.compile(KEY_PATTERN + r"\Z")
RUNNING_TTL: Final = 60
"""Seconds a running marker holds the key; a request running longer than this can no longer
count on it."""
KEEP_TTL: Final = 24 * 3600
"""Seconds an answer is kept for replay (24 hours)."""
KEPT_HEADERS: Final = (b"content-type", b"etag", b"location")
MAX_KEPT_BODY: Final = 1024 * 1024
"""Larger answers are not kept (the key is released); no command answers with that much."""
NOT_FOR: Final = ("/v1/auth/",)
"""Routes whose requests carry passwords and whose answers carry fresh tokens: neither a
fingerprint of the one nor a copy of the other belongs in Redis (a repeated login or password
change is harmless anyway)."""
NOT_KEPT: Final = frozenset({401, 408, 409, 425, 428, 429})
"""Answers that mean the request did not get to act, so a retry should run it."""

log = structlog.get_logger(__name__)

OUTCOMES: Final = Counter(
    "valueledger_idempotency_total",
    "POSTs with an Idempotency-Key, by outcome (first, replayed, conflict, mismatch, unavailable).",
    ["outcome"],
)

_SET_IF_OURS: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_DELETE_IF_OURS: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class KeptEntry(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis holds under a key: a running marker (owner set) or a kept answer."""

    state: Literal["running", "done"]
    fingerprint: str
    owner: str = ""
    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(KeptEntry)


def parse_key(value: str) -> str | None:
    """The key, or None when the header is not a valid key."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return value if KEY_FORMAT.match(value) else None


def fingerprint(scope: HTTPScope, body: bytes) -> str:
    digest = hashlib.sha256()
    path = scope.get("raw_path") or scope["path"].encode()
    for part in (scope["method"].encode(), bytes(path)):
        digest.update(part + b"\0")
    digest.update(bytes(scope.get("query_string", b"")) + b"\0")
    digest.update(body)
    return digest.hexdigest()


def entry_key(prefix: str, caller: str, key: str) -> str:
    """The Redis key of an Idempotency-Key sent by `caller` (see `caller_of`)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{prefix}:idem:{caller[:40]}:{digest}"


async def caller_of(scope: Scope) -> str | None:
    """Whose the request's keys are: a hash of its authenticated caller's tenant and user id
    (an API key is a user of its own), ``anonymous`` when it presents no credential, None when
    its credential does not authenticate (the route will answer 401, which is never kept)."""
    if presented_credential(scope) is None:
        return "anonymous"
    try:
        principal = await authenticate(Request(scope))
    except NotAuthorizedException:
        return None
    # Kept for the route (which then authenticates no second time) and for the request's log
    # line, which names the caller also when the answer is a replay.
    scope.setdefault("state", {})["principal"] = principal
    return caller_name(principal.tenant, principal.user)


def caller_name(tenant: str, user: str) -> str:
    """The caller's name in its keys: it reveals neither the user nor any credential."""
    return hashlib.sha256(f"{tenant}\0{user}".encode()).hexdigest()


def _problem(status: int, kind: str, title: str, detail: str, retry: bool = False) -> ApiProblem:
    return ApiProblem(status, kind, title, detail, headers={"Retry-After": "1"} if retry else None)


def takes_keys(method: str, path_template: str, opt: Mapping[str, Any]) -> bool:
    """Whether requests to the route may carry an Idempotency-Key (see the module docstring)."""
    return (
        method == "POST"
        and opt.get("idempotency", True) is not False
        and not path_template.startswith(NOT_FOR)
    )


class IdempotencyMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def documentation(operation: RouteOperation) -> Documentation:
        if not takes_keys(operation.method, operation.path, operation.opt):
            return Documentation()
        return Documentation(
            request_headers=(
                Header(
                    "Idempotency-Key",
                    "1 to 255 printable ASCII characters (a UUID, say): the same key with the "
                    "same request again within 24 hours answers the first answer instead of "
                    "running it twice.",
                    pattern=f"^{KEY_PATTERN}$",
                ),
            ),
            answers=(
                Answer(400, "The Idempotency-Key header is not a valid key."),
                Answer(
                    409,
                    "A request with this Idempotency-Key is still running; retry with the same "
                    "key once it has its answer.",
                    (RETRY_AFTER,),
                ),
                Answer(
                    422, "The Idempotency-Key was sent before with another method, path or body."
                ),
                Answer(
                    503,
                    "Idempotency keys cannot be checked right now; the request was not run.",
                    (RETRY_AFTER,),
                ),
            ),
            success_headers=(
                Header("Idempotent-Replayed", "`true` on an answer replayed for a key."),
            ),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        raw_key = header(scope, HEADER)
        if raw_key is None or not takes_keys(
            scope["method"], str(scope.get("path_template", "")), scope["route_handler"].opt
        ):
            await self.app(scope, receive, send)
            return
        key = parse_key(raw_key)
        if key is None:
            await send_problem(
                scope,
                receive,
                send,
                _problem(
                    400,
                    "invalid-idempotency-key",
                    "The Idempotency-Key header is not valid",
                    "use 1 to 255 printable ASCII characters, e.g. a UUID",
                ),
            )
            return
        try:
            body = await read_body(receive, None)  # already bounded by BodyLimitsMiddleware
        except ClientGoneError:
            return
        caller = await caller_of(scope)
        if caller is None:
            await self.app(scope, replaying(body, receive), send)
            return
        await Idempotent(self.app, scope, key, caller, fingerprint(scope, body)).run(
            replaying(body, receive), send
        )


class Idempotent:
    """One POST with an Idempotency-Key, from taking the key to keeping the answer."""

    def __init__(
        self, app: ASGIApp, scope: Scope, key: str, caller: str, request_print: str
    ) -> None:
        services = api_of_scope(scope).services
        self.app = app
        self.scope = scope
        self.redis = services.redis
        self.redis_key = entry_key(services.settings.cache_prefix, caller, key)
        self.fingerprint = request_print
        self.marker = _ENCODER.encode(
            KeptEntry(state="running", fingerprint=request_print, owner=secrets.token_hex(16))
        )
        """Our running marker, unique to this request: the key is only kept or released
        while it still holds exactly these bytes."""
        self.done = False

    async def run(self, receive: Receive, send: Send) -> None:
        try:
            existing = await self._take()
        except (*REDIS_ERRORS, msgspec.DecodeError) as error:
            OUTCOMES.labels("unavailable").inc()
            log.warning("idempotency_unavailable", error=type(error).__name__)
            await send_problem(
                self.scope,
                receive,
                send,
                _problem(
                    503,
                    "idempotency-unavailable",
                    "Idempotency keys cannot be checked right now",
                    "the request was not run; retry with the same Idempotency-Key",
                    retry=True,
                ),
            )
            return
        if existing is not None:
            await self._answer_existing(existing, receive, send)
            return
        OUTCOMES.labels("first").inc()
        try:
            await self.app(self.scope, receive, self._keeping(send))
        finally:
            if not self.done:
                await self._release()

    async def _take(self) -> KeptEntry | None:
        """None when this request now holds the key, else what holds it."""
        for _ in range(3):  # an entry may expire between SET NX and GET: try again
            if await self.redis.set(self.redis_key, self.marker, nx=True, ex=RUNNING_TTL):
                return None
            raw = await self.redis.get(self.redis_key)
            if raw is not None:
                return _DECODER.decode(raw)
        raise ConnectionError("the idempotency key kept expiring")

    async def _answer_existing(self, entry: KeptEntry, receive: Receive, send: Send) -> None:
        if entry.fingerprint != self.fingerprint:
            OUTCOMES.labels("mismatch").inc()
            problem = _problem(
                422,
                "idempotency-key-reused",
                "The Idempotency-Key was used for another request",
                "this key was sent with another method, path or body; use a new key for a "
                "new request",
            )
        elif entry.state == "running":
            OUTCOMES.labels("conflict").inc()
            problem = _problem(
                409,
                "idempotency-request-in-progress",
                "A request with this Idempotency-Key is still running",
                "wait for the first request's answer, then retry with the same key",
                retry=True,
            )
        else:
            OUTCOMES.labels("replayed").inc()
            await send(
                {
                    "type": "http.response.start",
                    "status": entry.status,
                    "headers": [
                        *entry.headers,
                        (b"idempotent-replayed", b"true"),
                        (b"content-length", str(len(entry.body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": entry.body, "more_body": False})
            return
        await send_problem(self.scope, receive, send, problem)

    def _keeping(self, send: Send) -> Send:
        """`send`, keeping the answer in Redis before its last byte goes out."""
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0

        async def keeping(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend(
                    (bytes(name).lower(), bytes(value))
                    for name, value in message.get("headers", ())
                    if bytes(name).lower() in KEPT_HEADERS
                )
            elif message["type"] == "http.response.body":
                chunk = bytes(message.get("body", b""))
                size += len(chunk)
                if size <= MAX_KEPT_BODY:
                    chunks.append(chunk)
                if not message.get("more_body", False) and not self.done:
                    self.done = True
                    if status < 500 and status not in NOT_KEPT and size <= MAX_KEPT_BODY:
                        await self._keep(status, tuple(headers), b"".join(chunks))
                    else:
                        await self._release()
            await send(message)

        return keeping

    async def _keep(
        self, status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes
    ) -> None:
        entry = KeptEntry(
            state="done", fingerprint=self.fingerprint, status=status, headers=headers, body=body
        )
        try:
            # redis-py's annotations take only text arguments; it sends bytes and numbers as given.
            await self.redis.eval(  # type: ignore[misc]
                _SET_IF_OURS,
                1,
                self.redis_key,
                self.marker,  # type: ignore[arg-type]
                _ENCODER.encode(entry),  # type: ignore[arg-type]
                KEEP_TTL * 1000,  # type: ignore[arg-type]
            )
        except REDIS_ERRORS as error:
            # The command ran; a retry after the marker expires would run it again.
            log.error(  # noqa: TRY400 - a lost Redis, not a bug: no traceback
                "idempotency_answer_not_kept", error=type(error).__name__, status=status
            )

    async def _release(self) -> None:
        try:
            await self.redis.eval(  # type: ignore[misc]
                _DELETE_IF_OURS,
                1,
                self.redis_key,
                self.marker,  # type: ignore[arg-type]
            )
        except REDIS_ERRORS as error:
            log.warning("idempotency_key_not_released", error=type(error).__name__)
