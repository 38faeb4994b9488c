"""Cross-cutting request handling: limits, idempotency, logging, tracing, metrics."""

from __future__ import annotations

from typing import Any, Final

MIDDLEWARE: Final[list[Any]] = []
ROUTES: Final[list[Any]] = []
