"""Ledger routes: receipts in the receipt format, public keys, streaming exports."""

from __future__ import annotations

from typing import Any, Final

ROUTES: Final[list[Any]] = []
