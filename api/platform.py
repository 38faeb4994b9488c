"""Cross-cutting request handling: limits, idempotency, logging, tracing, metrics.

The middleware run in this order, outermost first (a request passes them top to bottom):

1. `RequestTelemetryMiddleware`: request id, trace span, log line and metrics, so every
   answer is seen, refusals by the layers below included;
2. `RateLimitMiddleware`: 429 before any work is done;
3. `BodyLimitsMiddleware`: the body read once, bounded, and its JSON depth checked;
4. `IdempotencyMiddleware`: a retried POST answered from Redis instead of run twice.

Litestar runs middleware for matched routes only: an unknown path gets its 404 without them.

Each middleware, and the guard and If-Match handling of `api.common`, documents what it answers
on a route (`DOCUMENTING`); `api.openapi` adds that to every operation of the document.
"""

from __future__ import annotations

from typing import Any, Final

from api.common import concurrency_documentation, guard_documentation
from api.idempotency import IdempotencyMiddleware
from api.observability import RequestTelemetryMiddleware, metrics, readyz
from api.openapi import Documenting
from api.ratelimit import BodyLimitsMiddleware, RateLimitMiddleware

MIDDLEWARE: Final[list[Any]] = [
    RequestTelemetryMiddleware,
    RateLimitMiddleware,
    BodyLimitsMiddleware,
    IdempotencyMiddleware,
]
ROUTES: Final[list[Any]] = [metrics, readyz]
DOCUMENTING: Final[tuple[Documenting, ...]] = (
    guard_documentation,
    concurrency_documentation,
    *(layer.documentation for layer in MIDDLEWARE),
)
"""Every part that can answer on a route besides its handler, outermost first."""
