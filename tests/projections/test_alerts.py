"""The alerts list: every alert of a customer, newest first, filtered by severity and state,
paged by cursor, with its evidence; an upheld dispute's alert among them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from commands.accuracy import dispute_alert_id
from commands.definition import handle_definition
from eventstore.store import EventStore
from projections.alerts import AlertsList
from projections.queries import AlertEntry, InvalidCursorError, alerts_list
from tests.commands.journey import START, approve, complete_setup, draft, register_with_team
from tests.projections.scenes import (
    DAY,
    acknowledge_alert,
    calculate,
    catch_up,
    dispute,
    raise_alert,
    resolve_alert,
)

HOUR = timedelta(hours=1)
ALERTS = AlertsList()


async def _ids(
    store: EventStore, tenant: str, severity: str | None = None, state: str | None = None
) -> list[str]:
    page = await alerts_list(store.pool, tenant, severity=severity, state=state)
    return [entry.alert_id for entry in page.items]


async def test_alerts_newest_first_filtered_and_paged(store: EventStore, tenant: str) -> None:
    await register_with_team(store, tenant, START)
    await raise_alert(
        store, tenant, "feed-down", "critical", START + HOUR, {"status": "500", "source": "crm"}
    )
    await raise_alert(store, tenant, "slow-feed", "warning", START + 2 * HOUR)
    await raise_alert(store, tenant, "note", "info", START + 3 * HOUR)
    await acknowledge_alert(store, tenant, "feed-down", START + 4 * HOUR)
    await resolve_alert(store, tenant, "slow-feed", START + 5 * HOUR)
    await catch_up(store, ALERTS)

    page = await alerts_list(store.pool, tenant)

    assert page.next_after is None
    assert page.items == [
        AlertEntry(
            alert_id="note",
            kind="data_source_error",
            severity="info",
            status="open",
            summary="note looks off",
            source_reference="feed:note",
            raised_at=START + 3 * HOUR,
            raised_by="tom",
            raised_by_role="TECHNICAL",
            acknowledged_at=None,
            acknowledged_by=None,
            resolved_at=None,
            resolved_by=None,
            evidence={"status": "500"},
        ),
        AlertEntry(
            alert_id="slow-feed",
            kind="data_source_error",
            severity="warning",
            status="resolved",
            summary="slow-feed looks off",
            source_reference="feed:slow-feed",
            raised_at=START + 2 * HOUR,
            raised_by="tom",
            raised_by_role="TECHNICAL",
            acknowledged_at=None,
            acknowledged_by=None,
            resolved_at=START + 5 * HOUR,
            resolved_by="staff-1",
            evidence={"status": "500"},
        ),
        AlertEntry(
            alert_id="feed-down",
            kind="data_source_error",
            severity="critical",
            status="acknowledged",
            summary="feed-down looks off",
            source_reference="feed:feed-down",
            raised_at=START + HOUR,
            raised_by="tom",
            raised_by_role="TECHNICAL",
            acknowledged_at=START + 4 * HOUR,
            acknowledged_by="tom",
            resolved_at=None,
            resolved_by=None,
            evidence={"source": "crm", "status": "500"},
        ),
    ]
    assert await _ids(store, tenant, severity="critical") == ["feed-down"]
    assert await _ids(store, tenant, state="open") == ["note"]
    assert await _ids(store, tenant, state="acknowledged") == ["feed-down"]
    assert await _ids(store, tenant, state="resolved") == ["slow-feed"]
    assert await _ids(store, tenant, state="unresolved") == ["note", "feed-down"]
    assert await _ids(store, tenant, severity="warning", state="unresolved") == []

    first = await alerts_list(store.pool, tenant, limit=2)
    assert [entry.alert_id for entry in first.items] == ["note", "slow-feed"]
    assert first.next_after is not None
    second = await alerts_list(store.pool, tenant, after=first.next_after, limit=2)
    assert [entry.alert_id for entry in second.items] == ["feed-down"]
    assert second.next_after is None

    with pytest.raises(ValueError, match="severity must be one of info, warning, critical"):
        await alerts_list(store.pool, tenant, severity="fatal")
    with pytest.raises(ValueError, match="state must be one of"):
        await alerts_list(store.pool, tenant, state="closed")
    with pytest.raises(InvalidCursorError):
        await alerts_list(store.pool, tenant, after="bm90IGEgY3Vyc29y")


async def test_a_dispute_below_the_threshold_lists_its_alert(
    store: EventStore, tenant: str
) -> None:
    """A dispute that leaves the measured accuracy below the threshold makes the service
    raise a critical alert, listed like any other."""
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    await handle_definition(store, draft(tenant, "value", at=START))
    await approve(store, tenant, "value", 1, at=START)
    period = START.replace(hour=0) + DAY
    await calculate(store, tenant, period, "3000", "c-1")
    # 1080 against an expected 2160 scores 50.00, below 85; the measured accuracy
    # (98.98 + 50.00) / 2 = 74.49 is below it too, so the alert is critical.
    await dispute(store, tenant, period, "c-1", "2160", period + 3 * DAY)
    await catch_up(store, ALERTS)

    [entry] = (await alerts_list(store.pool, tenant)).items

    assert (entry.alert_id, entry.kind, entry.severity, entry.status) == (
        dispute_alert_id("c-1"),
        "accuracy_dispute",
        "critical",
        "open",
    )
    assert (entry.raised_by, entry.raised_by_role, entry.raised_at) == (
        "system:accuracy",
        "ADMIN",
        period + 3 * DAY,
    )
    assert entry.evidence["measured_accuracy"] == "74.49"
    assert entry.evidence["score"] == "50.00"
