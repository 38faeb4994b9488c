"""Session routes: log in and out, API keys for machine clients."""

from __future__ import annotations

from typing import Any, Final

ROUTES: Final[list[Any]] = []
