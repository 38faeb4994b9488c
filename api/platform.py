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
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Litestar

from api.idempotency import IdempotencyMiddleware
from api.observability import RequestTelemetryMiddleware, metrics, readyz
from api.ratelimit import BodyLimitsMiddleware, RateLimitMiddleware

MIDDLEWARE: Final[list[Any]] = [BodyLimitsMiddleware, IdempotencyMiddleware]
"""Litestar middleware: run for the routes it matched."""
ROUTES: Final[list[Any]] = [metrics, readyz]


def around_every_request(app: Litestar) -> Litestar:
    """Wrap `app`'s request handling, routing and its 404s included, in the telemetry and the
    rate limits (whose settings are read now)."""
    app.asgi_handler = RequestTelemetryMiddleware(RateLimitMiddleware(app.asgi_handler))
    return app
