"""The one error the formula language raises, whatever went wrong and wherever."""

from __future__ import annotations

from domain import DomainError


class FormulaError(DomainError):
    """A formula that cannot be accepted or evaluated.

    `position` is the 1-based column (in characters) of the offending token in the formula's
    text, so an editor can put the cursor on it; the message names the same column and says
    how to fix the formula, always as ``<problem> at column <n>; <remedy>``.
    """

    def __init__(self, position: int, problem: str, remedy: str) -> None:
        super().__init__(f"{problem} at column {position}; {remedy}")
        self.position = position
        self.problem = problem
        self.remedy = remedy
