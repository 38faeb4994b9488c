"""A customer's billing switch as its events leave it: whether it went live, from when billing
runs, every pause, and the accuracy threshold.

The whole pause history is kept (not just the current pause), so `billing_active_at` answers
for past instants as well as for now.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec

from domain.golive.events import WentLive

DEFAULT_THRESHOLD: Final = "85.00"
"""The measured accuracy a customer needs to go live unless vendor staff set a higher one."""


class BillingPause(msgspec.Struct, frozen=True, kw_only=True):
    """One pause: billing stops at `paused_at` and runs again at `resumed_at` (None while the
    pause lasts). The paused interval is half-open: [paused_at, resumed_at)."""

    paused_at: datetime
    reason_sealed: str
    paused_by: str
    resumed_at: datetime | None = None
    resume_reason_sealed: str = ""
    resumed_by: str = ""


class GoLiveState(msgspec.Struct, frozen=True, kw_only=True):
    """The billing switch's current state.

    `receipt` is the go-live event once the customer went live; `pauses` holds every pause in
    order, only the last of which can still be running.
    """

    customer_id: str = ""
    accuracy_threshold: str = DEFAULT_THRESHOLD
    receipt: WentLive | None = None
    pauses: tuple[BillingPause, ...] = ()

    @property
    def live(self) -> bool:
        """Whether the customer went live (billing may still be paused or not started yet)."""
        return self.receipt is not None

    @property
    def billing_starts_at(self) -> datetime | None:
        """When value-based billing starts; None before going live."""
        return None if self.receipt is None else self.receipt.billing_starts_at

    @property
    def threshold(self) -> Decimal:
        """The measured accuracy going live needs, as a percentage with 2 decimal places."""
        return Decimal(self.accuracy_threshold)

    @property
    def current_pause(self) -> BillingPause | None:
        """The pause in progress, if billing is paused now."""
        if self.pauses and self.pauses[-1].resumed_at is None:
            return self.pauses[-1]
        return None

    @property
    def paused(self) -> bool:
        """Whether billing is paused (and not resumed since)."""
        return self.current_pause is not None

    @property
    def paused_since(self) -> datetime | None:
        """When the pause in progress began; None when billing is not paused."""
        pause = self.current_pause
        return None if pause is None else pause.paused_at

    @property
    def pause_reason_sealed(self) -> str:
        """Why billing is paused (sealed by the command layer); empty when it is not."""
        pause = self.current_pause
        return "" if pause is None else pause.reason_sealed

    @property
    def last_changed_at(self) -> datetime | None:
        """When billing last went live, paused or resumed: later pauses and resumptions must
        not be dated before it, so the pause history stays in order."""
        if self.pauses:
            last = self.pauses[-1]
            return last.paused_at if last.resumed_at is None else last.resumed_at
        return None if self.receipt is None else self.receipt.went_live_at

    def billing_active_at(self, instant: datetime) -> bool:
        """Whether value-based billing runs at `instant` (timezone-aware).

        It runs from `billing_starts_at` on, except within a pause [paused_at, resumed_at);
        never before going live.
        """
        if instant.utcoffset() is None:
            raise ValueError("instant must be timezone-aware; give the time in UTC")
        starts = self.billing_starts_at
        if starts is None or instant < starts:
            return False
        return not any(
            pause.paused_at <= instant and (pause.resumed_at is None or instant < pause.resumed_at)
            for pause in self.pauses
        )

    def billing_inactive_reason(self, start: datetime, end: datetime) -> str:
        """Why value-based billing does not run for the whole period [start, end), as a fixed
        phrase a calculation receipt can carry in clear; empty when it runs throughout."""
        if end <= start:
            raise ValueError("a period must end after it starts")
        starts = self.billing_starts_at
        if starts is None:
            return "the customer has not gone live"
        if start < starts:
            return "the period starts before billing started"
        if not self.billing_active_at(start) or any(
            start < pause.paused_at < end for pause in self.pauses
        ):
            return "billing was paused during the period"
        return ""


def initial_state() -> GoLiveState:
    """The state before any event: not live, default threshold, never paused."""
    return GoLiveState()
