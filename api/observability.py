"""Seeing what the service does: one JSON log line per request, a trace span per request,
Prometheus metrics, and the probes (/healthz in api.app, /readyz and /metrics here).

Every request gets a request id (X-Request-Id when the client sent a sane one, else a new
one; echoed in the response) and a trace id: the OpenTelemetry span's, which continues the
caller's ``traceparent`` when there is one. Without an SDK configured the span records
nothing, but a caller's trace id still carries through; with neither, a random W3C trace id is
made up so logs and problems can still be matched. The trace id is put in
``scope["state"]["trace_id"]``, where problem details and command metadata read it, and both
ids are bound to structlog's context for everything logged during the request.

The request's log line has the ids, method, route template, status, duration, and the
caller's tenant, user and role once authenticated. Never the Authorization header, cookies,
Idempotency-Key, query string or body; `redact_secrets` also scrubs anything secret-looking
that other code might log.

Exporting spans needs the optional extra ``otel`` (the SDK and the OTLP exporter);
`configure_tracing` installs it from the standard OTEL_* variables when it is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import random
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, TextIO

import asyncpg
import msgspec
import structlog
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.common import api_of
from api.openapi import explained_problems
from api.problems import MEDIA_TYPE, PROBLEM_BASE, Problem
from eventstore.tracing import recording
from projections.cache import REDIS_ERRORS
from projections.metrics import ProjectionStatus, projection_status, refresh_lag_gauges
from projections.registry import PROJECTORS
from valueledger.settings import redact_urls_in

log = structlog.get_logger("valueledger.request")
tracer = trace.get_tracer("valueledger.api")

REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
"""A client's X-Request-Id is used only if it is this tame (it ends up in logs)."""
METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
"""Methods logged and counted by name; any other a client invents is ``_OTHER`` (as in
OpenTelemetry's HTTP conventions), so it cannot grow the metrics either."""
UNMATCHED: Final = "<unmatched>"
"""The route of a request no route matched, in logs, metrics and spans: never its path, which
the client chooses (a label per path would grow the metrics without bound)."""

REQUESTS: Final = Counter(
    "valueledger_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY: Final = Histogram(
    "valueledger_http_request_duration_seconds",
    "Time from a request's arrival to its last byte, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IN_FLIGHT: Final = Gauge(
    "valueledger_http_requests_in_flight", "HTTP requests being answered right now."
)
LAG_REFRESH_FAILURES: Final = Counter(
    "valueledger_projection_lag_refresh_failures_total",
    "Scrapes of /metrics whose projection lag could not be read from PostgreSQL.",
)


# --- logging ------------------------------------------------------------------------------------

SECRET_FIELDS: Final = re.compile(
    r"authorization|cookie|token|password|secret|idempotency|api_?key|signature|private",
    re.IGNORECASE,
)
SECRET_TEXT: Final = re.compile(
    r"(?i:bearer|basic)\s+\S+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)
"""A bearer or basic credential, or a JWT, wherever it appears in a string."""
REDACTED: Final = "[redacted]"


@functools.lru_cache(maxsize=1024)
def _secret_field(name: str) -> bool:
    """Whether a field is named like a secret: asked for every field of every log line, about
    a few dozen names the code uses, so the answers are kept."""
    return SECRET_FIELDS.search(name) is not None


def redact_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank fields named like secrets, and in strings the credentials and
    the secrets of URLs (as redact_url finds them: `error="could not connect to
    postgresql://u:pw@h/db"`). Only a string holding "://" is searched for URLs (redact_urls_in
    looks first), so the request's own line, which has none, costs next to nothing more."""
    for name, value in list(event.items()):
        if _secret_field(name):
            event[name] = REDACTED
        elif isinstance(value, str):
            event[name] = SECRET_TEXT.sub(REDACTED, redact_urls_in(value))
    return event


def configure_logging(
    level: str | None = None, *, file: TextIO | None = None, cache: bool = True
) -> None:
    """JSON lines on stdout (or `file`): timestamp, level, event, the request's context, and
    no secrets. Level from `level` or VALUELEDGER_LOG_LEVEL (default INFO)."""
    name = (level or os.environ.get("VALUELEDGER_LOG_LEVEL") or "INFO").upper()
    levels = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
    if name not in levels:
        raise ValueError(f"invalid configuration: VALUELEDGER_LOG_LEVEL {name!r}")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks first, so that redaction reads them too (an exception's message may
            # quote a URL with its password).
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levels[name]),
        # print() with a flush per line, without print's machinery: the same lines, cheaper.
        logger_factory=structlog.WriteLoggerFactory(file=file or sys.stdout),
        cache_logger_on_first_use=cache,
    )


# --- tracing ------------------------------------------------------------------------------------


def configure_tracing(service_name: str = "valueledger") -> bool:
    """Install the OpenTelemetry SDK with an OTLP exporter, if the ``otel`` extra is installed,
    an OTLP endpoint is configured and OTEL_SDK_DISABLED is not true. Endpoint, headers,
    protocol, sampler and resource come from the standard OTEL_* variables; OTEL_SERVICE_NAME
    overrides `service_name`. Returns whether spans are now exported."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    if not any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False  # nowhere configured to send spans: keep the no-op tracer
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    exporter_module = (
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
        if protocol == "grpc"
        else "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    )
    try:  # optional: imported by name so the service runs (and type-checks) without them
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        sdk_export = importlib.import_module("opentelemetry.sdk.trace.export")
        sdk_resources = importlib.import_module("opentelemetry.sdk.resources")
        exporter = importlib.import_module(exporter_module)
    except ImportError:
        log.info("tracing_not_exported", reason="install the 'otel' extra to export spans")
        return False
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = sdk_resources.Resource.create({} if named else {"service.name": service_name})
    provider = sdk_trace.TracerProvider(resource=resource)
    provider.add_span_processor(sdk_export.BatchSpanProcessor(exporter.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def random_id() -> str:
    """128 random bits in hex: a request id, or a trace id when the caller sent none. Not a
    secret, so drawn as OpenTelemetry's SDK draws trace ids, without a system call."""
    return f"{random.getrandbits(128):032x}"


def trace_id_of(span: trace.Span) -> str:
    """The span's W3C trace id, or a fresh random one when there is no valid span."""
    context = span.get_span_context()
    if context.is_valid:
        return trace.format_trace_id(context.trace_id)
    return random_id()


def server_span(method: str, headers: Mapping[str, str]) -> AbstractContextManager[trace.Span]:
    """The request's server span, continuing the caller's trace (``traceparent``); named by
    the method alone until routing has found the route. With no SDK installed a span would
    record nothing, so none is started: the caller's span context is carried as it came, which
    is all the logs and problems read from it, at a fraction of the cost of a no-op span made
    current."""
    context = propagate.extract(headers)
    if not recording():
        return contextlib.nullcontext(trace.get_current_span(context))
    return tracer.start_as_current_span(
        method,
        context=context,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method},
    )


# --- the request middleware ---------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers as text, for trace context extraction (first value of each)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
    return headers


def status_of(error: BaseException) -> int:
    """The status an exception escaping the middleware below will be answered with; 499
    (nginx's "client closed request") when the client went away first."""
    if isinstance(error, asyncio.CancelledError):
        return 499
    status = getattr(error, "status_code", None) or getattr(error, "status", None)
    return status if isinstance(status, int) else 500


class RequestTelemetryMiddleware:
    """Request id, trace span, structlog context, metrics and the request's log line. It wraps
    the whole application, routing included (`api.platform.around_every_request`), so it sees
    every answer: rate limits, and requests no route matches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._metrics: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        """The request counter's and latency histogram's child per (method, route, status),
        looked up once instead of through `labels` (a lock and a validation) per request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _headers(scope)
        method = scope["method"] if scope["method"] in METHODS else "_OTHER"
        offered = headers.get("x-request-id", "")
        request_id = offered if REQUEST_ID.match(offered) else random_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        with server_span(method, headers) as span:
            trace_id = trace_id_of(span)
            state["trace_id"] = trace_id
            state["request_id"] = request_id

            answered = False

            async def sending(message: Message) -> None:
                nonlocal status, answered
                if message["type"] == "http.response.start":
                    status, answered = message["status"], True
                    message["headers"] = [
                        *message.get("headers", ()),
                        (b"x-request-id", request_id.encode()),
                    ]
                await send(message)

            IN_FLIGHT.inc()
            with structlog.contextvars.bound_contextvars(request_id=request_id, trace_id=trace_id):
                try:
                    await self.app(scope, receive, sending)
                except BaseException as error:
                    if not answered:  # else the status sent stands: the client got it
                        status = status_of(error)
                    raise
                finally:
                    IN_FLIGHT.dec()
                    seconds = time.perf_counter() - started
                    # Set by routing, which ran inside; absent when no route matched.
                    matched = scope.get("path_template")
                    route = matched or UNMATCHED
                    if matched and span.is_recording():
                        span.update_name(f"{method} {matched}")
                        span.set_attribute("http.route", matched)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                    requests, latency = self._metrics_of(method, route, status)
                    requests.inc()
                    latency.observe(seconds)
                    self._log(state, method, route, status, seconds)

    def _metrics_of(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        found = self._metrics.get((method, route, status))
        if found is None:
            labels = (method, route, str(status))
            found = self._metrics[method, route, status] = (
                REQUESTS.labels(*labels),
                LATENCY.labels(*labels),
            )
        return found

    @staticmethod
    def _log(
        state: Mapping[str, Any], method: str, route: str, status: int, seconds: float
    ) -> None:
        principal = state.get("principal")
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "tenant": getattr(principal, "tenant", None),
            "user": getattr(principal, "user", None),
            "role": None if principal is None else str(principal.role),
        }
        if status >= 500:
            log.error("request", **fields)
        else:
            log.info("request", **fields)


# --- /metrics and /readyz -----------------------------------------------------------------------

CHECK_TIMEOUT: Final = 2.0
"""Seconds each readiness check may take before it counts as failed."""


@get("/metrics", include_in_schema=False, summary="Prometheus metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every metric of this process; the projection lag gauges are read fresh at each scrape
    (if PostgreSQL does not answer, the previous values are served and the failure counted)."""
    services = api_of(request).services
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await refresh_lag_gauges(services.pool, PROJECTORS)
    except (asyncpg.PostgresError, OSError, TimeoutError) as error:
        LAG_REFRESH_FAILURES.inc()
        log.warning("projection_lag_unavailable", error=type(error).__name__)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


DEFAULT_MAX_LAG_EVENTS: Final = 10_000
DEFAULT_MAX_LAG_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadinessSettings:
    """How far behind the projectors may be while the API still calls itself ready."""

    max_lag_events: int = DEFAULT_MAX_LAG_EVENTS
    max_lag_seconds: float = DEFAULT_MAX_LAG_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadinessSettings:
        env = os.environ if environ is None else environ
        events = env.get("VALUELEDGER_READY_MAX_LAG_EVENTS", "").strip()
        seconds = env.get("VALUELEDGER_READY_MAX_LAG_SECONDS", "").strip()
        try:
            return cls(
                max_lag_events=int(events) if events else DEFAULT_MAX_LAG_EVENTS,
                max_lag_seconds=float(seconds) if seconds else DEFAULT_MAX_LAG_SECONDS,
            )
        except ValueError:
            raise ValueError(
                "invalid configuration: VALUELEDGER_READY_MAX_LAG_EVENTS must be a whole "
                "number and VALUELEDGER_READY_MAX_LAG_SECONDS a number"
            ) from None


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    ok: bool
    detail: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    checks: tuple[Check, ...]


async def _check(name: str, probe: Any) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            detail = await probe()
    except TimeoutError:
        return Check(name=name, ok=False, detail=f"no answer within {CHECK_TIMEOUT} s")
    except (*REDIS_ERRORS, asyncpg.PostgresError) as error:
        return Check(name=name, ok=False, detail=f"{type(error).__name__}: {error}"[:200])
    if isinstance(detail, Check):
        return detail
    return Check(name=name, ok=True, detail=str(detail))


def _lag_check(statuses: list[ProjectionStatus], limits: ReadinessSettings) -> Check:
    behind = [
        f"{status.name} is {status.events_behind} events / {status.seconds_behind:.1f} s behind"
        for status in statuses
        if status.events_behind > limits.max_lag_events
        or status.seconds_behind > limits.max_lag_seconds
    ]
    if behind:
        return Check(name="projections", ok=False, detail="; ".join(behind))
    return Check(
        name="projections",
        ok=True,
        detail=f"{len(statuses)} projectors within {limits.max_lag_events} events "
        f"and {limits.max_lag_seconds:g} s",
    )


@get(
    "/readyz",
    summary="Ready: PostgreSQL, Redis and the projectors answer in time",
    responses=explained_problems(
        {
            503: "Not ready: PostgreSQL or Redis does not answer in time, or a projector lags; "
            "`checks` lists every check."
        }
    ),
)
async def readyz(request: Request[Any, Any, Any]) -> Response[Any]:
    """200 when PostgreSQL and Redis answer and every projector is within the lag limits
    (VALUELEDGER_READY_MAX_LAG_EVENTS, default 10000; VALUELEDGER_READY_MAX_LAG_SECONDS,
    default 60); otherwise 503 problem details listing every check."""
    services = api_of(request).services
    limits = ReadinessSettings.from_env()

    async def postgres() -> str:
        await services.pool.fetchval("SELECT 1")
        return "answers"

    async def redis() -> str:
        # Both ways the service talks to Redis: redis-py's pool, and the request path's
        # connection (which authenticates on its own, and every authenticated request needs).
        await services.redis.ping()
        await services.request_redis.mget(f"{services.settings.cache_prefix}:readyz")
        return "answers"

    async def projections() -> Check:
        return _lag_check(await projection_status(services.pool, PROJECTORS), limits)

    checks = tuple(
        await asyncio.gather(
            _check("postgres", postgres), _check("redis", redis), _check("projections", projections)
        )
    )
    failing = [check.name for check in checks if not check.ok]
    if not failing:
        return Response(Readiness(status="ready", checks=checks))
    problem = Problem(
        type=PROBLEM_BASE + "not-ready",
        title="The service is not ready",
        status=503,
        detail=f"not ready: {', '.join(failing)}",
        instance=request.url.path,
        checks=tuple(msgspec.to_builtins(check) for check in checks),
    )
    return Response(
        msgspec.json.encode(problem),
        status_code=503,
        media_type=MEDIA_TYPE,
        headers={"Retry-After": "5"},
    )
