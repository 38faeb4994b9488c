"""Seeing what the service does, over HTTP against the real services: a command's trace from the
request down to its SQL, a server error's problem and log line, the ledger's metrics, and
requests no route matches."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import structlog
from litestar import Litestar
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, TraceState
from opentelemetry.util._once import Once
from opentelemetry.util.types import Attributes
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.auth import TokenService
from api.observability import configure_logging
from domain.roles import Role
from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from tests.api.conftest import bearer
from tests.api.test_customers import registration
from tests.conftest import FreshDatabases, client_address, settings_for
from valueledger.services import Services, open_services

Client = httpx.AsyncClient
NO_STREAM = StreamState.NO_STREAM


@asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[Client]:
    """A client of `app` from an address no other request comes from."""
    transport = httpx.ASGITransport(app=app, client=(client_address(), 123))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# --- traces -------------------------------------------------------------------------------------


class WhileReading(Sampler):
    """Records spans only while a test reads them. The services' tracers hold on to the SDK's
    tracer once they have seen it, so after the test they must get spans that record nothing."""

    def __init__(self) -> None:
        self.reading = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Any = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        del parent_context, trace_id, name, kind, links, trace_state
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if self.reading else Decision.DROP, attributes
        )

    def get_description(self) -> str:
        return "WhileReading"


@pytest.fixture(scope="session")
def span_sdk() -> tuple[TracerProvider, WhileReading, InMemorySpanExporter]:
    """One SDK for the run (the services' tracers remember the first they meet)."""
    sampler = WhileReading()
    provider = TracerProvider(sampler=sampler)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, sampler, exporter


@pytest.fixture
def spans(
    span_sdk: tuple[TracerProvider, WhileReading, InMemorySpanExporter],
) -> Iterator[InMemorySpanExporter]:
    """The OpenTelemetry SDK installed, as `configure_tracing` installs it, for this test only:
    afterwards the process is back to no SDK at all, as every other test expects."""
    provider, sampler, exporter = span_sdk
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    sampler.reading = True
    exporter.clear()
    try:
        yield exporter
    finally:
        sampler.reading = False
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def ancestry(span: ReadableSpan, spans: Mapping[int, ReadableSpan]) -> list[str]:
    """The names of `span` and its parents up to the root of what was recorded."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in spans:
        span = spans[span.parent.span_id]
        names.append(span.name)
    return names


async def test_a_command_is_traced_from_the_request_to_its_sql(
    client: Client, staff: dict[str, str], tenant: str, spans: InMemorySpanExporter
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    body = registration(tenant)
    answer = await client.post(
        "/v1/customers",
        json=body,
        headers={**staff, "traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    assert answer.status_code == 201, answer.text

    finished = spans.get_finished_spans()
    recorded = {span.context.span_id: span for span in finished if span.context is not None}
    [statement] = [span for span in finished if span.name == "append events"]
    assert ancestry(statement, recorded) == [
        "append events",
        "append",
        "command customer",
        "POST /v1/customers",
    ]
    [request] = [span for span in finished if span.kind is SpanKind.SERVER]
    assert request.parent is not None
    assert request.parent.span_id == int(caller_span, 16)  # the caller's span, continued
    assert {span.context.trace_id for span in finished if span.context} == {int(trace_id, 16)}
    # Loading the stream before deciding is a read of its own, inside the command.
    reads = [span for span in finished if span.name == "SELECT events"]
    assert reads
    assert {tuple(ancestry(read, recorded)[1:]) for read in reads} == {
        ("command customer", "POST /v1/customers")
    }

    for sql in [statement, *reads]:
        assert sql.kind is SpanKind.CLIENT
        assert sql.attributes is not None
        assert sql.attributes["db.system"] == "postgresql"
        assert sql.attributes["db.collection.name"] == "events"
        assert sql.attributes["db.operation.name"] in {"append", "SELECT"}
    # No parameter or secret in any span: not the tenant's data, nor the credential.
    token = staff["Authorization"].removeprefix("Bearer ")
    written = json.dumps([dict(span.attributes or {}) for span in finished])
    for value in (token, body["name"], *body["billing_contact"].values()):
        assert value not in written
    sql_written = json.dumps([dict(span.attributes or {}) for span in [statement, *reads]])
    assert tenant not in sql_written


async def test_an_append_statement_shared_by_two_callers_is_linked_to_both(
    store: EventStore, meta: Metadata, spans: InMemorySpanExporter
) -> None:
    """Appends queued together go into one statement: its span is the first caller's child and
    linked to the other's, so neither trace misses its SQL."""
    tracer = trace.get_tracer(__name__)
    appending = []
    for caller in ("first", "second"):
        tenant = f"t-{secrets.token_hex(6)}"
        with tracer.start_as_current_span(caller):  # each task keeps the context it began in
            appending.append(
                asyncio.create_task(
                    store.append(f"{tenant}:s", [NewEvent("Opened", {})], NO_STREAM, tenant, meta)
                )
            )
    await asyncio.gather(*appending)

    finished = spans.get_finished_spans()
    callers = {span.name: span.context.span_id for span in finished if span.context}
    [statement] = [span for span in finished if span.name == "append events"]
    assert statement.parent is not None
    assert statement.parent.span_id == callers["first"]
    assert [link.context.span_id for link in statement.links] == [callers["second"]]


# --- a server error -----------------------------------------------------------------------------


@pytest.fixture
async def own_services(
    main_server: FreshDatabases, redis_url: str, key_folder: Path, cache_prefix: str
) -> AsyncIterator[tuple[Services, str]]:
    """Services over a database of this test's own, which it may break."""
    url = await main_server.create(f"broken_{secrets.token_hex(3)}")
    settings = msgspec.structs.replace(
        settings_for(url, key_folder), redis_url=redis_url, cache_prefix=cache_prefix
    )
    async with open_services(settings, url, redis_url) as opened:
        yield opened, url


async def test_an_unexpected_failure_is_a_500_with_the_trace_id_and_no_internals(
    own_services: tuple[Services, str], tokens: TokenService, tenant: str
) -> None:
    services, url = own_services
    # The dashboard's read model gone (as after a botched migration): its query fails in a way
    # no handler expects.
    owner = await asyncpg.connect(url)
    try:
        await owner.execute(
            "ALTER TABLE read_models.dashboard_customers RENAME TO dashboard_customers_gone"
        )
    finally:
        await owner.close()
    trace_id = secrets.token_hex(16)
    output = io.StringIO()
    saved = structlog.get_config()
    configure_logging("INFO", file=output, cache=False)
    try:
        async with serve(create_app(services, tokens)) as client:
            answer = await client.get(
                f"/v1/customers/{tenant}/dashboard",
                headers={
                    **bearer(tokens, "ann", tenant, Role.FINANCE),
                    "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
                },
            )
    finally:
        structlog.configure(**saved)

    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["type"].endswith("/internal")
    assert problem["trace_id"] == trace_id
    assert set(problem) == {"type", "title", "status", "detail", "instance", "trace_id"}
    for internal in ("dashboard_customers", "read_models", "SELECT", "Undefined", "Traceback"):
        assert internal not in answer.text

    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    [error] = [line for line in lines if line["event"] == "unexpected error"]
    assert error["level"] == "error"
    assert error["trace_id"] == trace_id
    assert "UndefinedTableError" in error["exception"]  # the cause, for whoever reads the logs
    [request] = [line for line in lines if line["event"] == "request"]
    assert (request["status"], request["level"], request["trace_id"]) == (500, "error", trace_id)


# --- metrics ------------------------------------------------------------------------------------


def sample(text: str, name: str, labels: Mapping[str, str]) -> float:
    """A sample's value in a /metrics exposition (0 when it is not there yet)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return 0.0


async def test_metrics_count_appends_and_stale_versions(
    client: Client, staff: dict[str, str], tenant: str
) -> None:
    appends = ("valueledger_append_duration_seconds_count", {"aggregate": "customer"})
    stale = (
        "valueledger_concurrency_conflicts_total",
        {"aggregate": "customer", "outcome": "stale version"},
    )
    before = (await client.get("/metrics")).text
    assert (await client.post("/v1/customers", json=registration(tenant), headers=staff)).is_success
    registered = (await client.get("/metrics")).text
    assert sample(registered, *appends) == sample(before, *appends) + 1

    invite = {"user_id": "ann", "role": "FINANCE", "name": "Ann", "email": "ann@acme.example"}
    path = f"/v1/customers/{tenant}/users"
    first = await client.post(path, json=invite, headers={**staff, "If-Match": '"1"'})
    assert first.is_success, first.text
    again = {**invite, "user_id": "bob"}
    refused = await client.post(path, json=again, headers={**staff, "If-Match": '"1"'})
    assert refused.status_code == 412
    after = (await client.get("/metrics")).text
    assert sample(after, *stale) == sample(registered, *stale) + 1
    assert sample(after, *appends) == sample(registered, *appends) + 1  # the refused wrote none


# --- requests no route matches ------------------------------------------------------------------


async def test_an_unknown_path_is_logged_counted_and_rate_limited(
    services: Services, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALUELEDGER_RATE_LIMIT_ADDRESS", "2")
    path = f"/nope-{secrets.token_hex(4)}"
    app = create_app(services, tokens)
    output = io.StringIO()
    saved = structlog.get_config()
    configure_logging("INFO", file=output, cache=False)
    try:
        async with serve(app) as client:
            answers = [
                await client.request(method, path, headers={"X-Request-Id": f"nope-{number}"})
                for number, method in enumerate(["GET", "BREW", "GET"])
            ]
    finally:
        structlog.configure(**saved)
    async with serve(app) as scraper:  # from an address of its own: this one is over its limit
        metrics = (await scraper.get("/metrics")).text

    assert [answer.status_code for answer in answers] == [404, 404, 429]
    assert answers[0].headers["content-type"] == "application/problem+json"
    assert [answer.headers["x-request-id"] for answer in answers] == [
        "nope-0",
        "nope-1",
        "nope-2",
    ]
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    logged = [line for line in lines if line["event"] == "request"]
    unmatched = [line for line in logged if line["request_id"].startswith("nope-")]
    assert [(line["method"], line["route"], line["status"]) for line in unmatched] == [
        ("GET", "<unmatched>", 404),
        ("_OTHER", "<unmatched>", 404),  # a method made up by the client is not a label either
        ("GET", "<unmatched>", 429),
    ]
    for method in ("GET", "_OTHER"):
        labels = {"method": method, "route": "<unmatched>", "status": "404"}
        assert sample(metrics, "valueledger_http_requests_total", labels) >= 1
    assert path not in metrics  # the path a client chose is never a label
    assert "BREW" not in metrics
