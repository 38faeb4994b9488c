"""The store's errors: each says what was refused and what the caller can do about it."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base of everything the store raises on purpose."""


class InvalidAppendError(EventStoreError, ValueError):
    """The append itself is malformed (ids, payload, size); nothing was written."""


class ConcurrencyError(EventStoreError):
    """The stream was not at the expected version; nothing was written. Reload and decide again."""

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, not at the expected version {expected}"
        )


class IdempotencyKeyReusedError(EventStoreError):
    """The idempotency key was used before for a different append; nothing was written."""

    def __init__(self, tenant: str, key: str) -> None:
        self.tenant = tenant
        self.key = key
        super().__init__(
            f"idempotency key {key!r} of tenant {tenant!r} was already used for different content"
        )


class StreamOwnershipError(InvalidAppendError):
    """A stream belongs to exactly one tenant's chain."""


class AppendOutcomeUnknownError(EventStoreError):
    """The connection broke while the append was being committed, and whether it was could not
    be learned afterwards (the database was unreachable). Read the stream before deciding again,
    or retry with the same idempotency key, which makes the retry safe either way."""


class LedgerBusyError(EventStoreError):
    """Another session held the tenant's chain head for longer than the store waits (an
    operator's transaction, a stuck writer); nothing was written. Try again."""


class SigningKeyError(EventStoreError):
    """The signing key is unknown to the store, retired, or not the current one."""
