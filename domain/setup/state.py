"""Where a customer's setup stands: the receipt of each completed step, or None.

The state keeps each step's own event, so its evidence (and when it was done, and by whom) is
at hand for the next step's checks and for display. Steps are only ever complete in order:
`completed_steps` is always a prefix of `STEPS`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

import msgspec

from domain.setup.events import (
    STEPS,
    AccuracyVerified,
    ApiIntegrationCompleted,
    BaselineEstablished,
    DataSourceConnected,
    MetricsMapped,
    Step,
)


class SetupState(msgspec.Struct, frozen=True, kw_only=True):
    """One customer's setup wizard, step by step."""

    api_integration: ApiIntegrationCompleted | None = None
    data_source: DataSourceConnected | None = None
    metrics_config: MetricsMapped | None = None
    baseline: BaselineEstablished | None = None
    testing: AccuracyVerified | None = None

    @property
    def completed_at(self) -> dict[Step, datetime]:
        """When each completed step was (last) completed, in step order."""
        times: dict[Step, datetime] = {}
        if self.api_integration is not None:
            times["api_integration"] = self.api_integration.completed_at
        if self.data_source is not None:
            times["data_source"] = self.data_source.connected_at
        if self.metrics_config is not None:
            times["metrics_config"] = self.metrics_config.mapped_at
        if self.baseline is not None:
            times["baseline"] = self.baseline.established_at
        if self.testing is not None:
            times["testing"] = self.testing.verified_at
        return times

    @property
    def completed_steps(self) -> tuple[Step, ...]:
        """The completed steps, in order."""
        return tuple(self.completed_at)

    @property
    def next_step(self) -> Step | None:
        """The first step not yet complete; None once the setup is complete."""
        done = self.completed_at
        return next((step for step in STEPS if step not in done), None)

    @property
    def is_complete(self) -> bool:
        """Whether all five steps are complete."""
        return self.next_step is None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The mapped metric names, in mapping order; empty until step 3 is complete."""
        if self.metrics_config is None:
            return ()
        return tuple(mapping.metric for mapping in self.metrics_config.mappings)

    @property
    def accuracy(self) -> Decimal | None:
        """The measured accuracy as a percentage (2 places), once step 5 is complete."""
        return None if self.testing is None else Decimal(self.testing.accuracy)


initial_state: Final = SetupState()
"""A setup with no step done."""
