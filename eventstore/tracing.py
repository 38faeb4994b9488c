"""Spans for the store's SQL, after OpenTelemetry's database conventions.

Each statement the store sends on a request's behalf (its stream reads, and the append
statement its commit task sends for the appends of a round) gets a client span named by a short
summary (``SELECT events``, ``append events``), with ``db.system`` ``postgresql``, the operation
and the table. Never the statement's parameters: they hold tenants' data and signatures; and a
failure is recorded by its type alone, as the driver's message may quote a value.

The append statement runs in the store's commit task, for every append of its round, whatever
request each came from. Its span is a child of the first append's span (so one command's trace
reads request, command, append, SQL), linked to the others' spans.

With no SDK installed a span would record nothing, so none is started (as for the request's
span in `api.observability`): the request path pays one check of the tracer provider.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, StatusCode

_tracer: Final = trace.get_tracer("valueledger.eventstore")
_NO_SPAN: Final = contextlib.nullcontext()


def recording() -> bool:
    """Whether an SDK is installed, so spans are recorded at all."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def caller_context() -> otel_context.Context | None:
    """The caller's trace context, kept with an append for its statement's span; None (and
    nothing read) without an SDK."""
    return otel_context.get_current() if recording() else None


def sql_span(
    operation: str, table: str, callers: Sequence[otel_context.Context] = ()
) -> AbstractContextManager[Any]:
    """A client span around one statement: `operation` on `table` (a summary, not its text).
    Its parent is the current span, or the first of `callers` (linked to the rest)."""
    if not recording():
        return _NO_SPAN
    return _recorded(operation, table, callers)


@contextlib.contextmanager
def _recorded(
    operation: str, table: str, callers: Sequence[otel_context.Context]
) -> Iterator[trace.Span]:
    links = [Link(trace.get_current_span(caller).get_span_context()) for caller in callers[1:]]
    with _tracer.start_as_current_span(
        f"{operation} {table}",
        context=callers[0] if callers else None,
        kind=SpanKind.CLIENT,
        links=links,
        attributes={
            "db.system": "postgresql",
            "db.system.name": "postgresql",
            "db.operation.name": operation,
            "db.collection.name": table,
            "db.query.summary": f"{operation} {table}",
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.set_attribute("error.type", type(error).__qualname__)
            span.set_status(StatusCode.ERROR)
            raise
