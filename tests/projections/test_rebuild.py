"""Every projector rebuilds from position 0 and swaps its tables in, equal to the live ones;
the registry names each projector once and gives every read-model table one owner."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from commands.definition import handle_definition
from domain import tickets
from domain.roles import Role
from eventstore.store import EventStore
from projections.registry import BY_NAME, PROJECTORS, projector_named
from projections.runner import ProjectionRunner, rebuild
from projections.tables import READ_MODELS_SCHEMA
from tests.commands.journey import START, approve, complete_setup, draft, register_with_team
from tests.projections.scenes import DAY, calculate, go_live, raise_alert, rows_of, ticket


async def test_every_projector_rebuilds_to_its_live_rows(
    store: EventStore, tenant: str, database_url: str
) -> None:
    await register_with_team(store, tenant, START)
    await complete_setup(store, tenant, at=START)
    await handle_definition(store, draft(tenant, "value", at=START))
    await approve(store, tenant, "value", 1, at=START)
    await go_live(store, tenant, START, START + timedelta(hours=15))
    await calculate(store, tenant, START + timedelta(hours=15), "3000", "c-1")
    await raise_alert(store, tenant, "feed-down", "warning", START + DAY)
    await ticket(
        store,
        tenant,
        tickets.OpenTicket(
            ticket_id="t-1",
            customer_id=tenant,
            subject_sealed="sealed",
            body_sealed="sealed",
            priority=tickets.TicketPriority.HIGH,
            at=START + DAY,
            by="tom",
            by_role=Role.TECHNICAL,
        ),
    )
    runners = [ProjectionRunner(store.pool, projector) for projector in PROJECTORS]
    for runner in runners:
        await runner.catch_up()
    owner = await asyncpg.connect(database_url)
    try:
        live = await rows_of(owner, READ_MODELS_SCHEMA, [tenant])
        assert all(live.values()), [table for table, rows in live.items() if not rows]
        for projector in PROJECTORS:
            await rebuild(owner, projector, batch_size=500)
        assert await rows_of(owner, READ_MODELS_SCHEMA, [tenant]) == live
    finally:
        await owner.close()
    # The live runners go on from the rebuilt tables' checkpoints, on the swapped-in tables,
    # which the application role can still write.
    await raise_alert(store, tenant, "slow-feed", "info", START + 2 * DAY)
    for runner in runners:
        await runner.catch_up()
    alerts = await store.pool.fetch(
        "SELECT alert_id FROM read_models.alerts WHERE tenant = $1 ORDER BY alert_id", tenant
    )
    assert [row["alert_id"] for row in alerts] == ["feed-down", "slow-feed"]


async def test_each_read_model_table_has_one_owner(store: EventStore) -> None:
    owned = [table.name for projector in PROJECTORS for table in projector.tables]
    assert len(owned) == len(set(owned))
    assert len(BY_NAME) == len(PROJECTORS)
    assert projector_named("dashboard") is BY_NAME["dashboard"]
    created = await store.pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        READ_MODELS_SCHEMA,
    )
    assert sorted(owned) == sorted(row["table_name"] for row in created)
    for projector in PROJECTORS:
        for table in projector.tables:
            columns = await store.pool.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                READ_MODELS_SCHEMA,
                table.name,
            )
            assert tuple(row["column_name"] for row in columns) == table.columns, table.name
