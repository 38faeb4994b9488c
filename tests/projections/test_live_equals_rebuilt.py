"""Read models built live equal read models rebuilt from scratch, for random command sequences.

Hypothesis draws two or three customers and a sequence of commands for them (setup steps and
redos, definitions drafted, revised, submitted, approved and sent back, alerts, go-live,
pauses, thresholds, calculations and recalculations, verdicts, tickets, suspensions), issued
through the real handlers; refusals are part of the game. The customers' commands run
concurrently with each other and with every projector, which steps batch after batch (of a
drawn size) while the events arrive. Once all is appended and caught up, each projector is
run again from nothing, over the same customers' records in commit order, into a scratch
schema made by `vl_create_read_models`; then once more over the same records, which must
change nothing (idempotence). The rows of those customers must be equal, table by table.

Every run starts one customer live with a calculated day, so each run reaches billing. A real
`rebuild` (with its swap) is tested in test_rebuild.py; replaying the whole shared ledger per
example would make this test quadratic.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.aggregates import DEFINITION
from commands.customer import handle_customer
from commands.definition import handle_definition
from commands.golive import handle_billing
from commands.handling import load
from commands.setup import handle_setup
from domain import DomainError, customer, golive, setup, tickets
from domain.definition import ApprovalStage
from domain.roles import Role
from eventstore.store import EventStore, RecordedEvent
from projections.registry import PROJECTORS
from projections.runner import ProjectionRunner, apply_batch
from projections.tables import READ_MODELS_SCHEMA
from tests.commands.journey import STAFF, approve, complete_setup, draft, register_with_team
from tests.projections.scenes import (
    DAY,
    acknowledge_alert,
    approve_stage,
    calculate,
    confirm,
    dispute,
    go_live,
    pause_billing,
    raise_alert,
    request_changes,
    resolve_alert,
    revise,
    rows_of,
    submit,
    ticket,
)

EPOCH: Final = datetime(2026, 3, 1, tzinfo=UTC)
DEFINITIONS: Final = ("value", "extra")
ACTIONS: Final = (
    "setup",
    "redo",
    "draft",
    "draft",
    "submit",
    "approve",
    "approve",
    "approve",
    "send_back",
    "raise",
    "acknowledge",
    "resolve",
    "go_live",
    "go_live",
    "pause",
    "resume",
    "threshold",
    "calculate",
    "calculate",
    "calculate",
    "feedback",
    "feedback",
    "ticket",
    "ticket",
    "ticket",
    "suspend",
    "reactivate",
    "time",
)
HEAD_STARTS: Final = ("none", "setup", "draft", "approved", "live")


@dataclass
class Customer:
    """One customer of a run, and what its commands so far have made (ids to act on)."""

    tenant: str
    clock: datetime = EPOCH
    versions: dict[str, int] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    calculations: dict[datetime, list[str]] = field(default_factory=dict)
    tickets: list[str] = field(default_factory=list)
    sequence: int = 0

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=7)
        return self.clock

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-{self.sequence}"


async def refusable(step: Awaitable[object]) -> bool:
    """Whether the command was recorded (False: the rules refused it)."""
    try:
        await step
    except DomainError:
        return False
    return True


async def head_start(store: EventStore, who: Customer, how: str) -> None:
    tenant = who.tenant
    await register_with_team(store, tenant, who.tick())
    if how == "none":
        return
    await complete_setup(store, tenant, at=who.tick())
    if how == "setup":
        return
    await handle_definition(store, draft(tenant, "value", at=who.tick()))
    who.versions["value"] = 1
    if how == "draft":
        return
    await approve(store, tenant, "value", 1, at=who.tick())
    if how == "approved":
        return
    await go_live(store, tenant, who.tick(), who.clock)
    who.clock += 2 * DAY
    await act(store, who, "calculate", 0)


async def act(store: EventStore, who: Customer, action: str, n: int) -> None:
    """Issue one command (or a few, for the setup) of `action`, parameterised by `n`."""
    tenant, at = who.tenant, who.tick()
    definition_id = DEFINITIONS[n % 2]
    version = who.versions.get(definition_id, 1)
    if action == "setup":
        measured = (Decimal(100), Decimal((98, 100, 80, 40)[n % 4]))
        await refusable(complete_setup(store, tenant, measured, at=at))
    elif action == "redo":
        step: setup.Command = (
            setup.ConnectDataSource(
                source_kind="stripe", connection_test_passed=True, at=at, by="tom"
            )
            if n % 2
            else setup.CompleteApiIntegration(
                credential_fingerprint="b" * 64,
                credential_reference="vault://kv/key-2",
                validation_passed=True,
                at=at,
                by="tom",
            )
        )
        await refusable(handle_setup(store, tenant, step, by_role=Role.TECHNICAL))
    elif action == "draft":
        if definition_id in who.versions:
            if await refusable(revise(store, tenant, definition_id, version, at)):
                who.versions[definition_id] = version + 1
        elif await refusable(handle_definition(store, draft(tenant, definition_id, at=at))):
            who.versions[definition_id] = 1
    elif action == "submit":
        await refusable(submit(store, tenant, definition_id, version, at))
    elif action in {"approve", "send_back"}:
        stream = f"{tenant}:definition:{definition_id}"
        running = (await load(store, DEFINITION, stream)).state.under_review
        stage = ApprovalStage.FINANCE_REVIEW if running is None else running.stage
        assert stage is not None
        if action == "approve":
            await refusable(approve_stage(store, tenant, definition_id, version, stage, at))
        else:
            await refusable(request_changes(store, tenant, definition_id, version, stage, at))
    elif action == "raise":
        alert_id = who.next_id("alert")
        severity = ("info", "warning", "critical")[n % 3]
        if await refusable(raise_alert(store, tenant, alert_id, severity, at)):
            who.alerts.append(alert_id)
    elif action in {"acknowledge", "resolve"} and who.alerts:
        alert_id = who.alerts[n % len(who.alerts)]
        change = acknowledge_alert if action == "acknowledge" else resolve_alert
        await refusable(change(store, tenant, alert_id, at))
    elif action == "go_live":
        await refusable(go_live(store, tenant, at, at + timedelta(hours=(0, 20)[n % 2])))
    elif action == "pause":
        await refusable(pause_billing(store, tenant, at))
    elif action == "resume":
        await refusable(
            handle_billing(
                store,
                golive.ResumeBilling(
                    customer_id=tenant,
                    reason_sealed="sealed-reason",
                    at=at,
                    by="cara",
                    by_role=Role.CUSTOMER_ADMIN,
                ),
            )
        )
    elif action == "threshold":
        await refusable(
            handle_billing(
                store,
                golive.SetAccuracyThreshold(
                    customer_id=tenant,
                    threshold=Decimal(("90.00", "86.50")[n % 2]),
                    at=at,
                    by=STAFF,
                    by_role=Role.ADMIN,
                ),
            )
        )
    elif action == "calculate":
        start = who.clock.replace(hour=0, minute=0) - (n % 4 + 1) * DAY
        calculation_id = who.next_id("calc")
        recalculate = bool(who.calculations.get(start))
        revenue = ("900", "1500", "4000")[n % 3]
        calculated = await refusable(
            calculate(store, tenant, start, revenue, calculation_id, at=at, recalculate=recalculate)
        )
        if calculated:
            who.calculations.setdefault(start, []).append(calculation_id)
    elif action == "feedback" and who.calculations:
        start = sorted(who.calculations)[n % len(who.calculations)]
        calculation_id = who.calculations[start][-1]
        if n % 2:
            await refusable(dispute(store, tenant, start, calculation_id, "1", at))
        else:
            await refusable(confirm(store, tenant, start, calculation_id, at))
    elif action == "ticket":
        await refusable(_ticket_step(store, who, n, at))
    elif action in {"suspend", "reactivate"}:
        command: customer.Command = (
            customer.SuspendCustomer(
                customer_id=tenant, reason="unpaid", at=at, by=STAFF, by_role=Role.ADMIN
            )
            if action == "suspend"
            else customer.ReactivateCustomer(
                customer_id=tenant, reason="paid", at=at, by=STAFF, by_role=Role.ADMIN
            )
        )
        await refusable(handle_customer(store, command))
    elif action == "time":
        who.clock += timedelta(hours=(6, 30, 54)[n % 3])


async def _ticket_step(store: EventStore, who: Customer, n: int, at: datetime) -> None:
    """Open a ticket, or move the latest one on: assign, either side posts, resolve, close,
    reopen."""
    if not who.tickets or n % 7 == 0:
        ticket_id = who.next_id("ticket")
        who.tickets.append(ticket_id)
        opened = tickets.OpenTicket(
            ticket_id=ticket_id,
            customer_id=who.tenant,
            subject_sealed="sealed-subject",
            body_sealed="sealed-body",
            priority=tickets.TicketPriority(("low", "normal", "high", "urgent")[n % 4]),
            at=at,
            by="tom",
            by_role=Role.TECHNICAL,
        )
        await ticket(store, who.tenant, opened)
        return
    ticket_id = who.tickets[-1]
    staff: dict[str, Any] = {"at": at, "by": "staff-2", "by_role": Role.ADMIN}
    customer_side: dict[str, Any] = {"at": at, "by": "cara", "by_role": Role.CUSTOMER_ADMIN}
    message_id = who.next_id("m")
    command: tickets.Command = (
        tickets.AssignTicket(ticket_id=ticket_id, assignee=("staff-2", STAFF)[n % 2], **staff),
        tickets.PostTicketMessage(
            ticket_id=ticket_id, message_id=message_id, body_sealed="sealed", **staff
        ),
        tickets.PostTicketMessage(
            ticket_id=ticket_id, message_id=message_id, body_sealed="sealed", **customer_side
        ),
        tickets.AwaitCustomerReply(ticket_id=ticket_id, **staff),
        tickets.ResolveTicket(ticket_id=ticket_id, resolution_sealed="sealed", **staff),
        tickets.CloseTicket(ticket_id=ticket_id, **customer_side),
        tickets.ReopenTicket(ticket_id=ticket_id, reason_sealed="sealed", **customer_side),
    )[n % 7 - 1]
    await ticket(store, who.tenant, command)


# --- comparing -----------------------------------------------------------------------------------


async def project_from_scratch(
    connection: asyncpg.Connection[Any],
    schema: str,
    records: Sequence[RecordedEvent],
    batch_size: int,
) -> None:
    """Apply `records` to every projector's tables in `schema`, batch by batch."""
    for projector in PROJECTORS:
        for first in range(0, len(records), batch_size):
            async with connection.transaction():
                await connection.execute(f"SET LOCAL search_path = {schema}, public")
                await apply_batch(connection, projector, records[first : first + batch_size])


scenarios = st.fixed_dictionaries(
    {
        "head_starts": st.lists(st.sampled_from(HEAD_STARTS), min_size=1, max_size=2),
        "steps": st.lists(
            st.tuples(st.integers(0, 2), st.sampled_from(ACTIONS), st.integers(0, 41)),
            min_size=15,
            max_size=45,
        ),
        "live_batch": st.sampled_from([1, 2, 5, 50]),
        "rebuild_batch": st.sampled_from([1, 3, 17, 1000]),
    }
)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenario=scenarios)
async def test_live_read_models_equal_rebuilt_ones(
    store: EventStore, database_url: str, scenario: dict[str, Any]
) -> None:
    run = secrets.token_hex(4)
    starts: list[str] = ["live", *scenario["head_starts"]]
    customers = [Customer(f"lr-{run}-{n}") for n in range(len(starts))]
    tenants = [who.tenant for who in customers]
    runners = [
        ProjectionRunner(store.pool, projector, batch_size=scenario["live_batch"])
        for projector in PROJECTORS
    ]
    stop = asyncio.Event()

    async def follow() -> None:
        while not stop.is_set():
            for runner in runners:
                await runner.step()
            await asyncio.sleep(0)

    async def play(who: Customer, how: str) -> None:
        await head_start(store, who, how)
        for index, action, n in scenario["steps"]:
            if customers[index % len(customers)] is who:
                await act(store, who, action, n)

    following = asyncio.create_task(follow())
    try:
        await asyncio.gather(*(play(who, how) for who, how in zip(customers, starts, strict=True)))
    finally:
        stop.set()
        await following
    for runner in runners:
        await runner.catch_up()

    records = sorted(
        [record for tenant in tenants for record in await store.read_tenant(tenant, limit=100_000)],
        key=lambda record: record.cursor,
    )
    scratch = f"scratch_{run}"
    owner = await asyncpg.connect(database_url)
    try:
        live = await rows_of(owner, READ_MODELS_SCHEMA, tenants)
        await owner.execute(f"CREATE SCHEMA {scratch}")
        await owner.execute("SELECT vl_create_read_models($1)", scratch)
        await project_from_scratch(owner, scratch, records, scenario["rebuild_batch"])
        rebuilt = await rows_of(owner, scratch, tenants)
        await project_from_scratch(owner, scratch, records, scenario["rebuild_batch"])
        again = await rows_of(owner, scratch, tenants)
    finally:
        await owner.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
        await owner.close()

    assert len(live["dashboard_customers"]) == len(customers)
    assert live["dashboard_calculations"], "the live customer has a calculated day"
    for table, rows in live.items():
        assert rows == rebuilt[table], table
        assert again[table] == rebuilt[table], f"{table}: applying the events twice changed it"
