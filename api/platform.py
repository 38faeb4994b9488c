"""Cross-cutting request handling: limits, idempotency, logging, tracing, metrics.

The middleware run in this order, outermost first (a request passes them top to bottom):

1. `RequestTelemetryMiddleware`: request id, trace span, log line and metrics, so every
   answer is seen, refusals by the layers below included;
2. `RateLimitMiddleware`: 429 before any work is done;
3. `BodyLimitsMiddleware`: the body read once, bounded, and its JSON depth checked;
4. `IdempotencyMiddleware`: a retried POST answered from Redis instead of run twice.

Litestar runs its middleware for matched routes only, so the first two wrap the whole
application instead (`around_every_request`): a request for an unknown path is logged, counted
and rate limited like any other. The last two need the matched route (its body limit, its
method) and are Litestar middleware.

Each layer, and the guard and If-Match handling of `api.common`, documents what it answers on
a route (`documenting`); `api.openapi` adds that to every operation of the document.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Litestar

from api.common import concurrency_documentation, guard_documentation
from api.idempotency import IdempotencyMiddleware
from api.observability import RequestTelemetryMiddleware, metrics, readyz
from api.openapi import Documenting
from api.ratelimit import BodyLimitsMiddleware, RateLimitMiddleware

MIDDLEWARE: Final[list[Any]] = [BodyLimitsMiddleware, IdempotencyMiddleware]
"""Litestar middleware: run for the routes it matched."""
ROUTES: Final[list[Any]] = [metrics, readyz]


def documenting(require_if_match: bool) -> tuple[Documenting, ...]:
    """Every part that can answer on a route besides its handler, outermost first, in a
    deployment that requires If-Match (`Settings.require_if_match`) or not."""
    return (
        guard_documentation,
        concurrency_documentation(require_if_match),
        RateLimitMiddleware.documentation,
        *(layer.documentation for layer in MIDDLEWARE),
    )


def around_every_request(app: Litestar) -> Litestar:
    """Wrap `app`'s request handling, routing and its 404s included, in the telemetry and the
    rate limits (whose settings are read now)."""
    app.asgi_handler = RequestTelemetryMiddleware(RateLimitMiddleware(app.asgi_handler))
    return app
