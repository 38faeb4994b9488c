"""The one way a command reaches the ledger: load the stream, fold it, decide, append.

Each aggregate instance is one stream; its events are folded with the domain's `evolve` into
the state its `decide` needs, and the decided events are appended expecting the version that
was read, so a command decided on a stale state can never be recorded. One command is one
append, and so one transaction.

A lost race (`ConcurrencyError`) is decided again on the new state, at most `ATTEMPTS` times in
all, because deciding again applies every rule to what is now true. When the caller named the
version it decided on (an HTTP `If-Match`), the race is theirs to resolve and is reported at
once instead.

Loading remembers, per store and in this process, the state it folded for each of the last
FOLDED_STREAMS streams and the version it folded to; the next load of the stream reads only the
events from the next version on and folds them onto it. Events are never changed and states are
immutable values (`evolve` returns a new state and leaves its input alone), so that state is
the one a fold from the first event would give; and since the stream's newer events are always
read from the store, what other processes appended is never missed. Only states folded from
stored events are remembered, never one evolved from events a command has just decided.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
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
FOLDED_STREAMS: Final = 2048
"""How many streams' folded states `load` remembers per store (the least recently loaded are
forgotten first): a state is as large as its stream's history, so the bound is in streams, kept
to what a busy process works on at once (two per customer for the commands of bench.api)."""

APPEND_SECONDS: Final = Histogram(
    "valueledger_append_duration_seconds",
    "Time to append one command's events (signing and commit), by aggregate kind.",
    ["aggregate"],
)
CONFLICTS: Final = Counter(
    "valueledger_concurrency_conflicts_total",
    "Commands that found their stream at another version than the one they were decided on "
    "(or, with If-Match, than the caller's), by aggregate kind and outcome: 'decided again' "
    "(an append that lost a race, decided anew), 'reported' (a race lost on the last attempt "
    "or under If-Match: 409 or 412), 'stale version' (If-Match named a version the stream had "
    "left before the command was decided: 412).",
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


class FoldedStates:
    """The states `load` folded, by aggregate kind and stream: (version, state), the least
    recently used forgotten first once there are more than `limit`."""

    def __init__(self, limit: int = FOLDED_STREAMS) -> None:
        self.limit = limit
        self._states: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, kind: str, stream: str) -> tuple[int, Any] | None:
        found = self._states.get((kind, stream))
        if found is not None:
            self._states.move_to_end((kind, stream))
        return found

    def put(self, kind: str, stream: str, version: int, state: Any) -> None:
        known = self._states.get((kind, stream))
        if known is not None and known[0] >= version:
            return  # a load that read further got here first
        self._states[kind, stream] = (version, state)
        self._states.move_to_end((kind, stream))
        while len(self._states) > self.limit:
            self._states.popitem(last=False)


_FOLDED: Final[weakref.WeakKeyDictionary[EventStore, FoldedStates]] = weakref.WeakKeyDictionary()


def folded_states(store: EventStore) -> FoldedStates:
    """The states `load` remembers for `store` in this process."""
    folded = _FOLDED.get(store)
    if folded is None:
        folded = _FOLDED[store] = FoldedStates()
    return folded


async def load(store: EventStore, aggregate: Aggregate[State, Event], stream: str) -> Loaded[State]:
    """The stream's current state and version: the state remembered from the last load, with
    the events appended since then folded onto it (see the module docstring)."""
    folded = folded_states(store)
    known = folded.get(aggregate.kind, stream)
    version, state = known if known is not None else (0, aggregate.initial)
    records = await store.read_stream(stream, version + 1)
    if not records:
        return Loaded(state, version)
    state = aggregate.fold(records, state)
    version = records[-1].version
    folded.put(aggregate.kind, stream, version, state)
    return Loaded(state, version)


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
                CONFLICTS.labels(aggregate.kind, "stale version").inc()
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
