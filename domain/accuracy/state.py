"""A customer's feedback as its events leave it, and the measured accuracy it yields.

The measured accuracy is the mean, rounded half-even to 2 places, of the setup wizard's
latest accuracy test and the score of every verdict given since that test was verified (a
re-test starts the count again: feedback on the old configuration stops counting). Each
verdict is one observation: a confirmation scores 100.00, a dispute scores
`domain.setup.measurement_accuracy` of the calculation's values against the expected ones.

Worked example, with a setup test of 92.50 and a threshold of 90: a confirmation (100.00)
gives (92.50 + 100.00) / 2 = 96.25; then a dispute scoring 87.50 gives
(92.50 + 100.00 + 87.50) / 3 = 93.333... = 93.33 (a warning: 87.50 is below 90); then a dispute
scoring 60.00 gives (92.50 + 100.00 + 87.50 + 60.00) / 4 = 85.00 (critical: below 90). After a
re-test at 95.00, the measured accuracy is 95.00 until the next verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import assert_never

import msgspec

from domain.accuracy.events import CalculationConfirmed, CalculationDisputed, Verdict
from domain.formula import decimal_context
from domain.setup import ACCURACY_PLACES


def measured_accuracy(setup_accuracy: Decimal, feedback_scores: Sequence[Decimal]) -> Decimal:
    """The customer's measured accuracy: the mean of the setup test's accuracy and the scores
    of the verdicts since it, as a percentage rounded half-even to 2 places.

    Computed in the formula language's decimal context (34 significant digits), rounded once
    at the end: (92.50 + 97.55) / 2 = 95.025 gives 95.02. With no feedback it is the setup
    test's accuracy.
    """
    context = decimal_context()
    total = setup_accuracy
    for score in feedback_scores:
        total = context.add(total, score)
    mean = context.divide(total, Decimal(1 + len(feedback_scores)))
    return mean.quantize(ACCURACY_PLACES, rounding=ROUND_HALF_EVEN, context=context)


def given_at(verdict: Verdict) -> datetime:
    """When the verdict was given."""
    match verdict:
        case CalculationConfirmed():
            return verdict.confirmed_at
        case CalculationDisputed():
            return verdict.disputed_at
        case _:
            assert_never(verdict)


class AccuracyState(msgspec.Struct, frozen=True, kw_only=True):
    """One customer's verdicts, by calculation id, in the order they were given.

    `customer_id` is empty until the first verdict. The mapping is replaced, never changed in
    place, by `evolve`.
    """

    customer_id: str = ""
    verdicts: Mapping[str, Verdict] = msgspec.field(default_factory=dict)

    def scores_since(self, setup_verified_at: datetime) -> tuple[Decimal, ...]:
        """The scores of the verdicts given at or after the setup test, oldest first."""
        return tuple(
            Decimal(verdict.score)
            for verdict in self.verdicts.values()
            if given_at(verdict) >= setup_verified_at
        )

    def measured_accuracy(self, setup_accuracy: Decimal, setup_verified_at: datetime) -> Decimal:
        """The measured accuracy now, against the setup test verified at `setup_verified_at`."""
        return measured_accuracy(setup_accuracy, self.scores_since(setup_verified_at))


def initial_state() -> AccuracyState:
    """The state before any event: a customer who has given no feedback."""
    return AccuracyState()
