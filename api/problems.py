"""Every error the API returns, as RFC 9457 problem details, mapped in this one place.

A problem's `type` is a stable URI per kind of problem (``.../problems/duplicate-user``), its
`title` a short summary of that kind, its `detail` the precise message for this occurrence
(for a domain rule, the rule's own message, written for a person). Validation problems list
each bad value: a body's by its JSON path in the document the client sent, a path or query
parameter's by its name. A body that is not JSON at all is `malformed-json`. A server error
says nothing about internals but carries the trace id, so support can find it in the logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_412_PRECONDITION_FAILED,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import Empty
from litestar.utils.scope.state import ScopeState

from commands.personal_data import PersonalDataError
from commands.streams import StreamNameError
from domain import DomainError
from domain.golive import PreflightFailedError
from eventstore.errors import (
    AppendOutcomeUnknownError,
    ConcurrencyError,
    IdempotencyKeyReusedError,
    InvalidAppendError,
    LedgerBusyError,
)

PROBLEM_BASE: Final = "https://valueledger.dev/problems/"
MEDIA_TYPE: Final = "application/problem+json"

log = structlog.get_logger(__name__)

_NOT_FOUND: Final = re.compile(r"(NotFound|NotRegistered|NotOpened)Error$|^Unknown\w*Error$")


class FieldProblem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One invalid value, and why: a field of the body by its JSON path in the document sent
    (``$.billing_contact.email``; ``$`` is the whole body), or a path or query parameter by its
    name (``limit``)."""

    path: str | None = None
    parameter: str | None = None
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, with the extensions this API uses."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: tuple[FieldProblem, ...] | None = None
    """Validation problems: every bad field."""
    checks: tuple[Mapping[str, Any], ...] | None = None
    """A refused go-live: every pre-flight check, passed or not."""
    trace_id: str | None = None


class ApiProblem(Exception):
    """A problem the API raises itself (authentication, rate limits, preconditions...)."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: tuple[FieldProblem, ...] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors


def invalid_body(path: str, message: str) -> ApiProblem:
    """The 400 for a body the route refuses as a whole or at one JSON path."""
    return ApiProblem(
        400,
        "invalid-request",
        "The request is not valid",
        f"{path}: {message}",
        errors=(FieldProblem(path=path, message=message),),
    )


def invalid_parameter(name: str, message: str) -> ApiProblem:
    """The 400 for a path or query parameter the route refuses, naming it."""
    return ApiProblem(
        400,
        "invalid-request",
        "The request is not valid",
        f"{name}: {message}",
        errors=(FieldProblem(parameter=name, message=message),),
    )


def kebab(name: str) -> str:
    """``DuplicateUserError`` -> ``duplicate-user``."""
    stem = name.removesuffix("Error").removesuffix("Exception")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", stem).lower()


def _title(error: BaseException) -> str:
    doc = (type(error).__doc__ or type(error).__name__).strip().splitlines()[0]
    return doc.rstrip(".")


def problem_for(  # noqa: PLR0911 (one return per kind of problem)
    error: BaseException, request: Request[Any, Any, Any]
) -> tuple[Problem, dict[str, str]]:
    """The problem (and extra headers) an exception becomes."""
    instance = request.url.path
    trace_id = request.scope.get("state", {}).get("trace_id")
    match error:
        case ApiProblem():
            return (
                Problem(
                    type=PROBLEM_BASE + error.kind,
                    title=error.title,
                    status=error.status,
                    detail=error.detail,
                    instance=instance,
                    errors=error.errors,
                ),
                error.headers,
            )
        case PreflightFailedError():
            checks = tuple(msgspec.to_builtins(check) for check in error.checks)
            return (
                Problem(
                    type=PROBLEM_BASE + "preflight-failed",
                    title="Go-live pre-flight checks failed",
                    status=HTTP_422_UNPROCESSABLE_ENTITY,
                    detail=str(error),
                    instance=instance,
                    checks=checks,
                ),
                {},
            )
        case DomainError():
            name = type(error).__name__
            if name == "NotAuthorizedError":
                status = HTTP_403_FORBIDDEN
            elif _NOT_FOUND.search(name):
                status = HTTP_404_NOT_FOUND
            else:
                status = HTTP_422_UNPROCESSABLE_ENTITY
            return (
                Problem(
                    type=PROBLEM_BASE + kebab(name),
                    title=_title(error),
                    status=status,
                    detail=error.message,
                    instance=instance,
                ),
                {},
            )
        case ConcurrencyError():
            stated = "if-match" in request.headers
            return (
                Problem(
                    type=PROBLEM_BASE + ("stale-version" if stated else "concurrent-change"),
                    title=(
                        "The resource changed since the version you sent"
                        if stated
                        else "The resource kept changing while the command was decided"
                    ),
                    status=HTTP_412_PRECONDITION_FAILED if stated else HTTP_409_CONFLICT,
                    detail=(
                        f"it is at version {error.actual}, not {error.expected}; read it again "
                        "and decide on what it is now"
                    ),
                    instance=instance,
                ),
                {"ETag": f'"{error.actual}"'},
            )
        case IdempotencyKeyReusedError():
            return (
                _simple(HTTP_422_UNPROCESSABLE_ENTITY, "idempotency-key-reused", error, instance),
                {},
            )
        case StreamNameError() | InvalidAppendError() | PersonalDataError():
            return _simple(HTTP_400_BAD_REQUEST, "invalid-request", error, instance), {}
        case asyncpg.CharacterNotInRepertoireError() | asyncpg.UntranslatableCharacterError():
            # Text PostgreSQL cannot hold (a NUL) reached a query as a parameter: bad input.
            return (
                Problem(
                    type=PROBLEM_BASE + "invalid-request",
                    title="The request is not valid",
                    status=HTTP_400_BAD_REQUEST,
                    detail="a parameter holds a character text cannot contain (such as NUL)",
                    instance=instance,
                ),
                {},
            )
        case ValidationException():
            return _validation(error, request), {}
        case ClientException() if isinstance(error.__cause__, SerializationException):
            return _malformed_json(error.__cause__, instance), {}  # the body, decoded
        case AppendOutcomeUnknownError():
            return (
                _server_side(
                    HTTP_503_SERVICE_UNAVAILABLE,
                    "outcome-unknown",
                    "Whether the change was recorded is not known",
                    "the connection to the ledger broke while the change was being committed; "
                    "read the resource before sending the command again",
                    instance,
                    trace_id,
                ),
                {"Retry-After": "1"},
            )
        case LedgerBusyError():
            return (
                _server_side(
                    HTTP_503_SERVICE_UNAVAILABLE,
                    "ledger-busy",
                    "The customer's ledger is busy",
                    "another writer held the customer's ledger too long; nothing was written, "
                    "send the command again",
                    instance,
                    trace_id,
                ),
                {"Retry-After": "1"},
            )
        case (
            ConnectionError()
            | asyncpg.PostgresConnectionError()
            | asyncpg.CannotConnectNowError()
            | asyncpg.AdminShutdownError()
            | asyncpg.CrashShutdownError()
        ):
            log.warning("database unavailable", path=instance, error=type(error).__name__)
            return (
                _server_side(
                    HTTP_503_SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "The ledger's database cannot be reached",
                    "the request could not be completed against the database; try again",
                    instance,
                    trace_id,
                ),
                {"Retry-After": "1"},
            )
        case NotAuthorizedException():
            return (
                _simple(HTTP_401_UNAUTHORIZED, "unauthenticated", error, instance),
                {"WWW-Authenticate": 'Bearer realm="valueledger"'},
            )
        case PermissionDeniedException():
            return _simple(HTTP_403_FORBIDDEN, "forbidden", error, instance), {}
        case NotFoundException():
            return _simple(HTTP_404_NOT_FOUND, "not-found", error, instance), {}
        case HTTPException():
            return (
                Problem(
                    type=PROBLEM_BASE + kebab(type(error).__name__),
                    title=error.detail or "HTTP error",
                    status=error.status_code,
                    detail=error.detail,
                    instance=instance,
                ),
                dict(error.headers or {}),
            )
        case _:
            log.exception("unexpected error", path=instance, trace_id=trace_id)
            return (
                _server_side(
                    HTTP_500_INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal server error",
                    "something went wrong on our side; quote the trace id to support",
                    instance,
                    trace_id,
                ),
                {},
            )


def _server_side(
    status: int, kind: str, title: str, detail: str, instance: str, trace_id: str | None
) -> Problem:
    """A problem on our side: its own words only (never the error's), and the trace id."""
    return Problem(
        type=PROBLEM_BASE + kind,
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        trace_id=trace_id,
    )


def _simple(status: int, kind: str, error: BaseException, instance: str) -> Problem:
    detail = getattr(error, "detail", None) or str(error)
    return Problem(
        type=PROBLEM_BASE + kind,
        title=_title(error),
        status=status,
        detail=detail,
        instance=instance,
    )


_PARAMETER_SOURCES: Final = frozenset({"query", "path", "header", "cookie"})
_AT_PATH: Final = re.compile(r"^(?P<message>.*) - at `(?P<path>\$.*)`$", re.DOTALL)
_MEMBER: Final = re.compile(
    r"^Object (?P<kind>contains unknown|missing required) field `(?P<name>.*)`$"
)
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AT_BYTE: Final = re.compile(r"\(byte (\d+)\)")


def _validation(error: ValidationException, request: Request[Any, Any, Any]) -> Problem:
    """Each bad value: a parameter by its name, the body by a JSON path into the document the
    client sent (Litestar's own keys name its `data` parameter instead, and drop the path)."""
    fields: list[FieldProblem] = []
    extra = error.extra if isinstance(error.extra, list) else []
    body_reported = False
    for item in extra:
        if not isinstance(item, Mapping):
            continue
        key = str(item.get("key") or "")
        message = str(item.get("message", ""))
        if key and item.get("source") in _PARAMETER_SOURCES:  # a str enum, or "body"
            fields.append(FieldProblem(parameter=key, message=message))
        elif not body_reported:
            body_reported = True
            fields.append(_body_field(request) or FieldProblem(path="$", message=message))
    if not fields:
        fields.append(FieldProblem(path="$", message=error.detail or "the request is not valid"))
    detail = "; ".join(f"{field.path or field.parameter}: {field.message}" for field in fields)
    return Problem(
        type=PROBLEM_BASE + "invalid-request",
        title="The request is not valid",
        status=HTTP_400_BAD_REQUEST,
        detail=detail,
        instance=request.url.path,
        errors=tuple(fields),
    )


def _body_field(request: Request[Any, Any, Any]) -> FieldProblem | None:
    """The body's first bad value, at the JSON path msgspec gives it: the decoded document is
    converted again to the route's body type, as Litestar did (this costs nothing on a valid
    request). An unknown or missing member is reported at its own path, not its object's."""
    body = request.route_handler.parsed_fn_signature.parameters.get("data")
    document = ScopeState.from_scope(request.scope).json
    if body is None or document is Empty:
        return None
    try:
        msgspec.convert(document, body.annotation, strict=False)
    except msgspec.ValidationError as invalid:
        text = str(invalid)
        at = _AT_PATH.match(text)
        message, path = (at["message"], at["path"]) if at else (text, "$")
        member = _MEMBER.match(message)
        if member is None:
            return FieldProblem(path=path, message=message)
        name = member["name"]
        inside = f"{path}.{name}" if _IDENTIFIER.match(name) else f"{path}[{json.dumps(name)}]"
        if member["kind"] == "contains unknown":
            return FieldProblem(path=inside, message="unknown field; leave it out")
        return FieldProblem(path=inside, message="missing; this field is required")
    return None


def _malformed_json(error: BaseException, instance: str) -> Problem:
    """A body that is not JSON at all; msgspec's reason names the byte where it fails."""
    reason = str(error)
    if reason == "Input data was truncated":
        reason = "JSON is malformed: the body ends before the JSON value does"
    reason = _AT_BYTE.sub(r"(at byte \1, counting from 0)", reason)
    return Problem(
        type=PROBLEM_BASE + "malformed-json",
        title="The body is not valid JSON",
        status=HTTP_400_BAD_REQUEST,
        detail=reason,
        instance=instance,
        errors=(FieldProblem(path="$", message=reason),),
    )


_ENCODER: Final = msgspec.json.Encoder()


def problem_response(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """Litestar's exception handler for every exception: the problem as problem+json."""
    problem, headers = problem_for(error, request)
    trace_id = request.scope.get("state", {}).get("trace_id")
    if trace_id is not None and problem.trace_id is None and problem.status >= 500:
        problem = msgspec.structs.replace(problem, trace_id=trace_id)
    return Response(
        content=_ENCODER.encode(problem),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )
