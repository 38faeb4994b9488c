"""Every projector of the service, by name: the worker runs them, the CLI rebuilds them."""

from __future__ import annotations

from typing import Final

from projections.projector import Projector
from projections.receipts import ReceiptsIndex

PROJECTORS: Final[tuple[Projector, ...]] = (ReceiptsIndex(),)
