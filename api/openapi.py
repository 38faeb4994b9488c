"""The OpenAPI document's account of each operation: its roles, errors and headers, completed in
this one place from what the application does around the route.

A route declares only what is its own: its summary and docstring (the description), the
problems its handler raises (``responses=problems(...)``) and, in its ``opt``, whether its
command takes If-Match and whether its answer carries an ETag (`api.common.IF_MATCH`,
`api.common.ETAG`). Everything else is added to every operation when the application is
built, by asking each part that can answer a request on the route what it answers there
(`Documenting`): the guard (roles from `api.policy.POLICY`, the table it enforces; 401, 403,
404), optimistic concurrency (If-Match, 412, ETag), and each middleware (429 with
Retry-After, 413 and the too-deep 400, the Idempotency-Key header and its problems). So a new
route is documented the moment it is routed, and a layer's documentation sits beside the code
that answers.

Every error is a problem (`api.problems` answers every exception), so every 4xx and 5xx of the
document is ``application/problem+json`` with the `Problem` schema, and its description lists
each reason the parts give for that status on that operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute

from api.problems import MEDIA_TYPE, Problem

PROBLEM_SCHEMA: Final = Reference(ref=f"#/components/schemas/{Problem.__name__}")

ERROR_DESCRIPTIONS: Final[dict[int, str]] = {
    403: "The domain refused the caller (`not-authorized`): not the approver assigned to the "
    "stage, or not a role that may change what the command changes.",
    404: "No such resource in the customer.",
    409: "The aggregate kept changing while the command was decided; send it again.",
    422: "A domain rule refused the command; `type` names the rule and `detail` says why.",
    503: "The database cannot be reached (`database-unavailable`); for a command, also: the "
    "customer's ledger stayed busy (`ledger-busy`), or the command's outcome could not be "
    "learned (`outcome-unknown`: read the resource before sending it again); for a query with "
    "`min_position`, also: its read model has not caught up yet.",
}
"""Why a route's own handler answers a status, for `problems`."""


def problems(statuses: Iterable[int]) -> dict[int, ResponseSpec]:
    """The problems a route's handler raises itself, each with its reason from
    `ERROR_DESCRIPTIONS`, for the route decorator's ``responses``."""
    return explained_problems({status: ERROR_DESCRIPTIONS[status] for status in statuses})


def explained_problems(reasons: Mapping[int, str]) -> dict[int, ResponseSpec]:
    """The problems a route's handler raises itself, each with the reason given."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=reason,
            media_type=MEDIA_TYPE,
            generate_examples=False,
        )
        for status, reason in reasons.items()
    }


# --- what a part of the application says about an operation --------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """A header of a request or an answer."""

    name: str
    description: str
    required: bool = False
    pattern: str | None = None


RETRY_AFTER: Final = Header(
    "Retry-After", "Seconds to wait before sending the request again.", pattern=r"^[0-9]+$"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A problem a part of the application can answer on an operation, and why."""

    status: int
    reason: str
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class Documentation:
    """What one part of the application adds to an operation's documentation."""

    answers: tuple[Answer, ...] = ()
    request_headers: tuple[Header, ...] = ()
    success_headers: tuple[Header, ...] = ()
    """Headers of the operation's successful answer."""
    notes: tuple[str, ...] = ()
    """Paragraphs appended to the operation's description (such as its roles)."""


NOTHING: Final = Documentation()


@dataclass(frozen=True, slots=True)
class RouteOperation:
    """One operation as the parts around its handler see it."""

    method: str
    path: str
    """The route's path template, as Litestar matches it (``scope["path_template"]``)."""
    path_parameters: frozenset[str]
    handler: HTTPRouteHandler

    @property
    def opt(self) -> Mapping[str, Any]:
        return self.handler.opt


Documenting: TypeAlias = Callable[[RouteOperation], Documentation]
"""A part of the application that can answer on a route, saying what it answers there."""


# --- completing the document ----------------------------------------------------------------------


def validation(described: Operation) -> Documentation:
    """Litestar checks the path, the query and the body against the handler's signature
    before it runs: a 400 problem listing each bad field."""
    if not (described.parameters or described.request_body):
        return NOTHING
    return Documentation(
        answers=(
            Answer(
                400,
                "A path id, a query parameter or the body is not valid. `invalid-request`: "
                "`errors` lists each bad value, a body's by its JSON `path` in the document "
                "sent (`$` is the whole body, as in `$.items[2].name`), a path or query "
                "parameter's by its `parameter` name, each with a `message` saying what is "
                "wrong. `malformed-json`: the body is not JSON; `detail` says why, and at "
                "which byte.",
            ),
        )
    )


def complete_document(app: Litestar, parts: Sequence[Documenting]) -> None:
    """Add to every operation of `app`'s OpenAPI document what `parts` say about it.

    The document Litestar built is completed in place: it is the one the app serves at
    /schema (and `app.openapi_schema`), built once per application."""
    document = app.openapi_schema
    if Problem.__name__ not in (document.components.schemas or {}):
        raise ValueError(
            "no route declares a problem, so the Problem schema is not in the document"
        )
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path_item = (document.paths or {}).get(route.path_format or "/")
        for method, (handler, _) in route.route_handler_map.items():
            described: Operation | None = getattr(path_item, method.lower(), None)
            if described is None:
                continue  # not in the document (/metrics, /schema itself, OPTIONS)
            operation = RouteOperation(
                method=method,
                path=route.path,
                path_parameters=frozenset(route.path_parameters),
                handler=handler,
            )
            said = [validation(described), *(part(operation) for part in parts)]
            _complete(described, said)


def _complete(described: Operation, said: list[Documentation]) -> None:
    notes = [note for documentation in said for note in documentation.notes]
    if notes:
        described.description = "\n\n".join(filter(None, (described.description, *notes)))
    headers = [header for documentation in said for header in documentation.request_headers]
    if headers:
        described.parameters = [
            *(described.parameters or []),
            *(
                Parameter(
                    name=header.name,
                    param_in="header",
                    schema=_text(header),
                    required=header.required,
                    description=header.description,
                )
                for header in headers
            ),
        ]
    responses = described.responses or {}
    for status, response in list(responses.items()):
        if int(status) >= 400 and not _is_problem(response):
            del responses[status]  # Litestar's own validation error, which we never answer
    for documentation in said:
        for answer in documentation.answers:
            _add_reason(responses, answer)
    for status, response in responses.items():
        code = int(status)
        if isinstance(response, OpenAPIResponse) and code in {429, 503}:
            _add_headers(response, (RETRY_AFTER,))  # every 429 and 503 here carries one
        if isinstance(response, OpenAPIResponse) and 200 <= code < 300:
            _add_headers(response, [h for d in said for h in d.success_headers])
    described.responses = dict(sorted(responses.items()))


def _is_problem(response: OpenAPIResponse | Reference) -> bool:
    return isinstance(response, OpenAPIResponse) and MEDIA_TYPE in (response.content or {})


def _add_reason(responses: dict[str, OpenAPIResponse | Reference], answer: Answer) -> None:
    status = str(answer.status)
    response = responses.get(status)
    if not isinstance(response, OpenAPIResponse):
        response = OpenAPIResponse(
            description="",
            content={MEDIA_TYPE: OpenAPIMediaType(schema=PROBLEM_SCHEMA)},
        )
        responses[status] = response
    reasons = [reason for reason in response.description.split("\n\n") if reason]
    if answer.reason not in reasons:
        response.description = "\n\n".join([*reasons, answer.reason])
    _add_headers(response, answer.headers)


def _add_headers(response: OpenAPIResponse, headers: Iterable[Header]) -> None:
    for header in headers:
        known = (response.headers or {}).get(header.name)
        if isinstance(known, OpenAPIHeader):
            known.required = known.required or header.required
            continue
        response.headers = {
            **(response.headers or {}),
            header.name: OpenAPIHeader(
                schema=_text(header), description=header.description, required=header.required
            ),
        }


def _text(header: Header) -> Schema:
    return Schema(type=OpenAPIType.STRING, pattern=header.pattern)
