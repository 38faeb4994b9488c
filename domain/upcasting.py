"""Reading old event shapes: upcasters bring a stored event's data up to its current shape.

Stored bytes are never rewritten (they are signed receipts), so when an event's shape must
change, its `schema` number goes up and an upcaster from the old number to the next is added
here, keyed by (event type, old schema). Reading applies them in a chain until none applies.
Upcasters are pure functions on the decoded JSON data, so an auditor's tool can do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes the data of one schema version and returns the data of the next (schema included)."""


def upcast(
    event_type: str, data: Mapping[str, Any], upcasters: Mapping[tuple[str, int], Upcaster]
) -> dict[str, Any]:
    """The event's data in its current shape; a fresh dict, the stored one is never changed."""
    current = dict(data)
    schema = int(current.get("schema", 1))
    while (step := upcasters.get((event_type, schema))) is not None:
        current = step(current)
        following = int(current.get("schema", 1))
        if following <= schema:
            raise ValueError(f"the upcaster of {event_type} schema {schema} did not raise it")
        schema = following
    return current
