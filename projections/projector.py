"""What a projector is: a name, the tables it owns, and two pure functions over a batch.

`wants` names the rows an event will read or change (so the runner loads them all at once);
`apply` changes them in the batch's `View`. Both see the ledger's record and, when the record
is one of our aggregates' events, the domain event decoded (through the upcasters, so an old
shape projects as its current one). Neither does I/O: the runner does, in one transaction
with the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

import msgspec

from commands.aggregates import AGGREGATES
from commands.handling import Aggregate
from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View

_BY_KIND: Final[dict[str, Aggregate[Any, Any]]] = {
    aggregate.kind: aggregate for aggregate in AGGREGATES
}


def domain_event(record: RecordedEvent) -> msgspec.Struct | None:
    """The domain event a record holds, or None for a record that is not one of ours (its
    stream is not named ``<tenant>:<kind>...`` after an aggregate, or its type is unknown)."""
    prefix = f"{record.tenant}:"
    if not record.stream.startswith(prefix):
        return None
    aggregate = _BY_KIND.get(record.stream[len(prefix) :].split(":", 1)[0])
    if aggregate is None:
        return None
    try:
        event: msgspec.Struct = aggregate.event_of(record)
    except (msgspec.ValidationError, ValueError):
        return None
    return event


class Projector(Protocol):
    """A read model's maintainer. Implementations are stateless; all state is in the rows."""

    name: str
    """Stable name: the checkpoint's key and the CLI's argument."""
    tables: tuple[Table[Any], ...]
    """The tables it owns and alone writes; a rebuild replaces exactly these."""

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        """The rows `apply` will read for this event (rows it only writes need not be named)."""
        ...

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        """Apply one event to the view; True when it changed something of its tenant's."""
        ...
