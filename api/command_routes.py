"""Command routes: one POST per command of the domain (filled in by the routes' issue work)."""

from __future__ import annotations

from typing import Any, Final

ROUTES: Final[list[Any]] = []
