"""Every projector the service runs, in one place: the worker runs each one, and the CLI
rebuilds or reports them by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from projections.alerts import AlertsList
from projections.approvals import ApprovalsQueue
from projections.dashboard import CustomerDashboard
from projections.projector import Projector
from projections.receipts import ReceiptsIndex
from projections.tickets import SupportTickets

PROJECTORS: Final[tuple[Projector, ...]] = (
    ReceiptsIndex(),
    CustomerDashboard(),
    ApprovalsQueue(),
    AlertsList(),
    SupportTickets(),
)
"""All projectors; each owns its tables (no table has two owners) and has a unique name."""

BY_NAME: Final[Mapping[str, Projector]] = {projector.name: projector for projector in PROJECTORS}
"""The projectors by name (the checkpoint's key and the CLI's argument)."""


def projector_named(name: str) -> Projector:
    """The projector called `name`; a KeyError names the ones there are."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no projector {name!r}; there are {', '.join(BY_NAME)}") from None
