"""Query routes: GET on the read models, with filters and cursor pagination."""

from __future__ import annotations

from typing import Any, Final

ROUTES: Final[list[Any]] = []
