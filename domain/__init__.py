"""The onboarding domain: the business rules, written once as pure, synchronous code.

Nothing here does I/O, reads a clock or draws a random number: time, ids and the actor arrive
on the command, so deciding again from the same inputs gives the same answer (replays and
signatures depend on it). A test walks these imports to keep it so.
"""

from __future__ import annotations


class DomainError(Exception):
    """A business rule refused a request.

    The message is written for a person, says what was wrong and how to put it right, and is
    shown as it is by the API, the workers and the CLI.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
