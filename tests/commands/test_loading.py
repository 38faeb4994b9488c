"""Loading a stream again folds only what was appended since, onto the state it remembered:
the result must always be the fold from the first event, whoever appended the rest."""

from __future__ import annotations

from pathlib import Path

from commands.aggregates import ALERTS, CUSTOMER
from commands.alerts import handle_alert
from commands.customer import handle_customer
from commands.handling import FoldedStates, Loaded, folded_states, load
from commands.streams import alerts_stream, customer_stream
from domain import alerts
from domain.roles import Role
from eventstore.store import EventStore
from tests.commands.test_customer_and_setup import AT, STAFF, invite, register
from tests.conftest import settings_for
from valueledger.bootstrap import open_store


def raise_alert(tenant: str, alert_id: str) -> alerts.RaiseAlert:
    return alerts.RaiseAlert(
        customer_id=tenant,
        alert_id=alert_id,
        kind="manual",
        severity=alerts.AlertSeverity.INFO,
        summary=f"alert {alert_id}",
        evidence={"metric": "revenue"},
        at=AT,
        by=STAFF,
        by_role=Role.ADMIN,
    )


async def test_a_stream_loaded_again_is_the_fold_from_its_first_event(
    store: EventStore, database_url: str, key_folder: Path, tenant: str
) -> None:
    stream = customer_stream(tenant)
    await handle_customer(store, register(tenant))
    assert (await load(store, CUSTOMER, stream)).version == 1
    # Another process appends: its store is not this one, and this one remembers version 1.
    async with open_store(settings_for(database_url, key_folder), database_url) as other:
        await handle_customer(other, invite(tenant, "fay", Role.FINANCE))
        await handle_customer(other, invite(tenant, "tom", Role.TECHNICAL))
    again = await load(store, CUSTOMER, stream)
    assert again == Loaded(CUSTOMER.fold(await store.read_stream(stream)), 3)
    assert {"fay", "tom"} <= set(again.state.roles_by_user())
    assert folded_states(store).get(CUSTOMER.kind, stream) == (3, again.state)


async def test_only_states_folded_from_the_ledger_are_remembered(
    store: EventStore, tenant: str
) -> None:
    """A command's outcome is evolved from the events it decided, not read back from the
    ledger: what the ledger's bytes fold to is what is remembered."""
    await handle_customer(store, register(tenant))
    stream = alerts_stream(tenant)
    for n in range(3):
        outcome = await handle_alert(store, raise_alert(tenant, f"a-{n}"))
        remembered = folded_states(store).get(ALERTS.kind, stream)
        assert remembered is None or remembered[0] == outcome.version - 1
    loaded = await load(store, ALERTS, stream)
    assert loaded == Loaded(ALERTS.fold(await store.read_stream(stream)), 3)
    assert sorted(loaded.state.alerts) == ["a-0", "a-1", "a-2"]


def test_the_least_recently_loaded_streams_are_forgotten_first() -> None:
    folded = FoldedStates(limit=2)
    folded.put("k", "a", 1, "state a")
    folded.put("k", "b", 1, "state b")
    assert folded.get("k", "a") == (1, "state a")  # now b is the least recently used
    folded.put("k", "c", 1, "state c")
    assert len(folded) == 2
    assert folded.get("k", "b") is None
    assert folded.get("k", "a") == (1, "state a")
    folded.put("k", "a", 1, "an older read")  # a load that read no further changes nothing
    assert folded.get("k", "a") == (1, "state a")
