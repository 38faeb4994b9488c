"""Every kind of aggregate the ledger holds: how each kind of stream is read back into state.

In one place, with no handler logic, so that any handler can read any stream (go-live reads
five kinds) without import cycles, and tools (docs checks, replays) can list them all.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from commands.handling import Aggregate
from domain import accuracy, alerts, calculation, customer, definition, golive, setup, tickets

CUSTOMER: Final = Aggregate(
    kind="customer",
    initial=customer.initial_state(),
    evolve=customer.evolve,
    event_type=customer.Event,
    upcasters=customer.UPCASTERS,
)
SETUP: Final = Aggregate(
    kind="setup", initial=setup.initial_state, evolve=setup.evolve, event_type=setup.Event
)
DEFINITION: Final = Aggregate(
    kind="definition",
    initial=definition.initial_state,
    evolve=definition.evolve,
    event_type=definition.Event,
)
BILLING: Final = Aggregate(
    kind="billing", initial=golive.initial_state(), evolve=golive.evolve, event_type=golive.Event
)
ALERTS: Final = Aggregate(
    kind="alerts", initial=alerts.initial_state(), evolve=alerts.evolve, event_type=alerts.Event
)
CALCULATION: Final = Aggregate(
    kind="calculation",
    initial=calculation.initial_state(),
    evolve=calculation.evolve,
    event_type=calculation.Event,
)
ACCURACY: Final = Aggregate(
    kind="accuracy",
    initial=accuracy.initial_state(),
    evolve=accuracy.evolve,
    event_type=accuracy.Event,
)
TICKET: Final = Aggregate(
    kind="ticket", initial=tickets.initial_state(), evolve=tickets.evolve, event_type=tickets.Event
)

AGGREGATES: Final[tuple[Aggregate[Any, Any], ...]] = (
    CUSTOMER,
    SETUP,
    DEFINITION,
    BILLING,
    ALERTS,
    CALCULATION,
    ACCURACY,
    TICKET,
)

EVENT_TYPES: Final[frozenset[str]] = frozenset(
    event.__struct_config__.tag
    for aggregate in AGGREGATES
    for event in get_args(aggregate.event_type)
)
"""Every event type the aggregates record: the ``type`` of their records (docs/events.md)."""
