"""Why the setup wizard refused a step. Every message says what was wrong and what to do.

Messages never repeat a credential reference or fingerprint back, in case a secret was pasted
into the wrong field: they describe it (its length) instead.
"""

from __future__ import annotations

from domain import DomainError
from domain.setup.events import STEP_TITLES, Step


class SetupError(DomainError):
    """Any refusal by the setup wizard; `step` is the step that was being completed."""

    def __init__(self, step: Step, message: str) -> None:
        super().__init__(message)
        self.step = step


class StepOutOfOrderError(SetupError):
    """A step was attempted before an earlier one was complete; `missing` is the first such."""

    def __init__(self, step: Step, missing: Step) -> None:
        super().__init__(
            step,
            f"{STEP_TITLES[step]} cannot be done yet: {STEP_TITLES[missing]} is not complete; "
            "the steps go in order, so complete it first",
        )
        self.missing = missing


class InvalidEvidenceError(SetupError):
    """The evidence for a step is missing or malformed."""

    def __init__(self, step: Step, problem: str, remedy: str) -> None:
        super().__init__(step, f"{STEP_TITLES[step]}: {problem}; {remedy}")
        self.problem = problem
        self.remedy = remedy


class CredentialsNotValidatedError(SetupError):
    """The credentials failed validation at the provider, so step 1 stays as it was."""

    def __init__(self, detail: str) -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(
            "api_integration",
            f"{STEP_TITLES['api_integration']}: the credentials failed validation{reason}; "
            "check them with the provider, then record and validate them again",
        )


class ConnectionTestFailedError(SetupError):
    """The data source's connection test failed, so step 2 stays as it was."""

    def __init__(self, source_kind: str, detail: str) -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(
            "data_source",
            f"{STEP_TITLES['data_source']}: the connection test to {source_kind} failed{reason}; "
            "fix the connection settings and run the test again",
        )
