"""A period's calculations as the events leave them: the current one and those it superseded."""

from __future__ import annotations

from datetime import datetime

import msgspec

from domain.calculation.events import Receipt, ValueRecalculated


class CalculationState(msgspec.Struct, frozen=True, kw_only=True):
    """One (customer, definition, period) stream.

    `current` is the receipt in force (None before the first calculation); `superseded` the
    receipts it replaced, oldest first. Receipts are kept whole, so the state can show any
    of them, as recorded.
    """

    current: Receipt | None = None
    superseded: tuple[Receipt, ...] = ()

    @property
    def history(self) -> tuple[Receipt, ...]:
        """Every receipt of the period, oldest first; the last one is current."""
        return self.superseded if self.current is None else (*self.superseded, self.current)

    @property
    def calculation_ids(self) -> tuple[str, ...]:
        """The ids of all the period's calculations, oldest first."""
        return tuple(receipt.calculation_id for receipt in self.history)

    @property
    def period(self) -> tuple[datetime, datetime] | None:
        """The period [start, end) the stream is for, once it has a calculation."""
        if self.current is None:
            return None
        return (self.current.period_start, self.current.period_end)

    def receipt(self, calculation_id: str) -> Receipt | None:
        """The receipt of the calculation with `calculation_id`, current or superseded."""
        return next((r for r in self.history if r.calculation_id == calculation_id), None)

    def superseded_by(self, calculation_id: str) -> ValueRecalculated | None:
        """The recalculation that superseded `calculation_id`; None while it is current."""
        return next(
            (
                receipt
                for receipt in self.history
                if isinstance(receipt, ValueRecalculated) and receipt.supersedes == calculation_id
            ),
            None,
        )


def initial_state() -> CalculationState:
    """The state before any event: a period with no calculation."""
    return CalculationState()
