"""The one way a command reaches the ledger: load the stream, fold it, decide, append.

Each aggregate instance is one stream; its events are folded with the domain's `evolve` into
the state its `decide` needs, and the decided events are appended expecting the version that
was read, so a command decided on a stale state can never be recorded. One command is one
append, and so one transaction.

A lost race (`ConcurrencyError`) is decided again on the new state, at most `ATTEMPTS` times in
all, because deciding again applies every rule to what is now true. When the caller named the
version it decided on (an HTTP `If-Match`), the race is theirs to resolve and is reported at
once instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import msgspec
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from domain.roles import Role
from domain.upcasting import Upcaster, upcast
from eventstore.errors import ConcurrencyError
from eventstore.store import (
    Actor,
    Cursor,
    EventStore,
    Metadata,
    NewEvent,
    RecordedEvent,
    StreamState,
)

ATTEMPTS: Final = 3
"""How many times a command is decided before a lost race is reported to the caller."""

APPEND_SECONDS: Final = Histogram(
    "valueledger_append_duration_seconds",
    "Time to append one command's events (signing and commit), by aggregate kind.",
    ["aggregate"],
)
CONFLICTS: Final = Counter(
    "valueledger_concurrency_conflicts_total",
    "Appends that lost a race, by aggregate kind and by whether the command was decided again.",
    ["aggregate", "outcome"],
)
_tracer: Final = trace.get_tracer(__name__)

State = TypeVar("State")
Event = TypeVar("Event", bound=msgspec.Struct)


@dataclass(frozen=True, slots=True)
class Aggregate(Generic[State, Event]):
    """How one kind of stream is read back into the state its decider needs."""

    kind: str
    initial: State
    evolve: Callable[[State, Event], State]
    event_type: Any
    """The union of the aggregate's event Structs, tagged by ``type``."""
    upcasters: Mapping[tuple[str, int], Upcaster] = field(default_factory=dict)

    def event_of(self, recorded: RecordedEvent) -> Event:
        """The domain event a record holds, brought up to its current shape."""
        data = upcast(recorded.type, recorded.data, self.upcasters)
        event: Event = msgspec.convert({**data, "type": recorded.type}, self.event_type)
        return event

    def fold(self, records: Sequence[RecordedEvent], state: State | None = None) -> State:
        """The state after `records`, starting from `state` (the initial state by default)."""
        current = self.initial if state is None else state
        for recorded in records:
            current = self.evolve(current, self.event_of(recorded))
        return current


def new_event(event: msgspec.Struct) -> NewEvent:
    """The record for a domain event: its tag as the type, its other fields as the data."""
    data = msgspec.to_builtins(event)
    return NewEvent(type=data.pop("type"), data=data)


class Trace(msgspec.Struct, frozen=True, kw_only=True):
    """The request a command came in, so its receipts can be tied to logs and traces."""

    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None


def receipt_metadata(by: str, by_role: Role, trace: Trace | None) -> Metadata:
    """Who sent the command, with which role, within which request: signed into each receipt."""
    trace = trace or Trace()
    return Metadata(
        actor=Actor(user=by, role=str(by_role)),
        correlation_id=trace.correlation_id,
        causation_id=trace.causation_id,
        trace_id=trace.trace_id,
    )


@dataclass(frozen=True, slots=True)
class Loaded(Generic[State]):
    """A stream folded: its state and the version it was read at (0: no stream yet)."""

    state: State
    version: int


@dataclass(frozen=True, slots=True)
class Outcome(Generic[State, Event]):
    """What a command did: the events it decided, their receipts, and the state after them."""

    events: list[Event]
    recorded: list[RecordedEvent]
    state: State
    version: int

    @property
    def cursor(self) -> Cursor | None:
        """Where the last receipt sits in the commit-safe order (None: nothing was written)."""
        return self.recorded[-1].cursor if self.recorded else None


async def load(store: EventStore, aggregate: Aggregate[State, Event], stream: str) -> Loaded[State]:
    """The stream's current state and version."""
    records = await store.read_stream(stream)
    return Loaded(aggregate.fold(records), records[-1].version if records else 0)


async def execute(
    store: EventStore,
    aggregate: Aggregate[State, Event],
    *,
    tenant: str,
    stream: str,
    metadata: Metadata,
    decide: Callable[[State], Awaitable[list[Event]]],
    expected_version: int | None = None,
) -> Outcome[State, Event]:
    """Decide on the stream's current state and append the result atomically.

    `decide` is called again after a lost race, so it must read anything else it needs (facts
    from other streams) itself, each time. With `expected_version`, a stream at any other
    version raises `ConcurrencyError` before anything is decided.

    Replaying a retried request is the API's job (it keeps the first response under the
    request's Idempotency-Key): a command decided again carries a new time, so it is a new
    command to the ledger.
    """
    with _tracer.start_as_current_span(
        f"command {aggregate.kind}", attributes={"valueledger.stream": stream}
    ) as span:
        for attempt in range(1, ATTEMPTS + 1):
            loaded = await load(store, aggregate, stream)
            if expected_version is not None and loaded.version != expected_version:
                raise ConcurrencyError(stream, expected_version, loaded.version)
            events = await decide(loaded.state)
            if not events:
                return Outcome([], [], loaded.state, loaded.version)
            started = time.perf_counter()
            try:
                with _tracer.start_as_current_span("append"):
                    recorded = await store.append(
                        stream,
                        [new_event(event) for event in events],
                        loaded.version or StreamState.NO_STREAM,
                        tenant,
                        metadata,
                    )
            except ConcurrencyError:
                retried = expected_version is None and attempt < ATTEMPTS
                CONFLICTS.labels(aggregate.kind, "decided again" if retried else "reported").inc()
                if not retried:
                    raise
                continue
            APPEND_SECONDS.labels(aggregate.kind).observe(time.perf_counter() - started)
            span.set_attribute("valueledger.attempts", attempt)
            state = loaded.state
            for event in events:
                state = aggregate.evolve(state, event)
            return Outcome(events, recorded, state, recorded[-1].version)
    raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
