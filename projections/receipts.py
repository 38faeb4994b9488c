"""The receipts index: per tenant and chain sequence, the event type, its stream and time.

It indexes every record of the ledger, ours or not, so that a dashboard can list a
customer's receipts and link each one to its signed receipt (`GET /receipts/{tenant}/{seq}`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec

from eventstore.store import RecordedEvent
from projections.tables import Key, Table, View


class ReceiptRow(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    seq: int
    type: str
    stream_id: str
    recorded_at: datetime


RECEIPTS: Final = Table("receipts", ReceiptRow, key=("tenant", "seq"), key_types=("text", "int8"))


class ReceiptsIndex:
    """Projects every record into `receipts`; needs no row read first."""

    name = "receipts"
    tables: tuple[Table[Any], ...] = (RECEIPTS,)

    def wants(
        self, record: RecordedEvent, event: msgspec.Struct | None
    ) -> Iterable[tuple[Table[Any], Key]]:
        return ()

    def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
        view.put(
            RECEIPTS,
            ReceiptRow(
                tenant=record.tenant,
                seq=record.seq,
                type=record.type,
                stream_id=record.stream,
                recorded_at=record.recorded_at,
            ),
        )
        return True
