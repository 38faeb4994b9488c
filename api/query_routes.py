"""Query routes: GET on the read models, with filters and keyset pagination.

A list answers one page: its `items` and `next_after`, the cursor to send back as `after` for
the next page (null on the last). Filters are checked by `projections.queries`; a value it
does not know, a bad cursor or a limit out of range is a 400.

Read-your-writes. A command's answer carries the cursor of its last receipt
(``epoch.tx.position``); a query given it as `min_position` first waits, up to
`READ_YOUR_WRITES_WAIT` seconds, until every projector it reads has projected past it (their
checkpoints), then answers. If they have not, the answer is 503 with ``Retry-After: 1``: the
write is safe in the ledger, only its read model is behind. Cached views are then read from
PostgreSQL, not the cache: the runner invalidates the cache just after it commits, so for a
moment a cached entry may predate a checkpoint that has already moved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery

from api.auth import Principal
from api.command_routes import READ_ERRORS, read
from api.common import PageSize, SeqAfter, api_of
from api.problems import ApiProblem, invalid_parameter
from commands.streams import tenant_of
from eventstore.store import START, Cursor
from projections import queries
from projections.alerts import AlertsList
from projections.approvals import ApprovalsQueue
from projections.cache import CALCULATION_TTL, DASHBOARD_TTL
from projections.dashboard import CustomerDashboard
from projections.receipts import ReceiptsIndex
from projections.runner import checkpoint_name
from projections.tickets import SupportTickets

READ_YOUR_WRITES_WAIT: Final = 2.0
"""Seconds a query waits for its read models to reach `min_position` before answering 503."""
POLL_INTERVAL: Final = 0.05
"""Seconds between looks at the checkpoints while waiting."""
QUERY_ERRORS: Final = READ_ERRORS

_CHECKPOINTS: Final = (
    "SELECT name, epoch, tx_id::text AS tx_id, position FROM subscription_checkpoints"
    " WHERE name = ANY($1::text[])"
)


# --- read-your-writes ---------------------------------------------------------------------------


def _target(min_position: str) -> Cursor:
    try:
        return Cursor.parse(min_position)
    except ValueError as error:
        raise invalid_parameter(
            "min_position", f"{error}; send back a command's `cursor`"
        ) from None


async def caught_up(
    request: Request[Any, Any, Any], projectors: Iterable[str], target: Cursor
) -> bool:
    """Whether every named projector's checkpoint is at or past `target`."""
    names = [checkpoint_name(name) for name in projectors]
    rows = await api_of(request).services.pool.fetch(_CHECKPOINTS, names)
    at = {row["name"]: Cursor(row["epoch"], int(row["tx_id"]), row["position"]) for row in rows}
    return all(at.get(name, START) >= target for name in names)


async def await_read_models(
    request: Request[Any, Any, Any], projectors: Iterable[str], min_position: str | None
) -> None:
    """Return once the read models of `projectors` include `min_position` (at once when it
    is None); after `READ_YOUR_WRITES_WAIT` seconds, a 503 problem with Retry-After."""
    if min_position is None:
        return
    target = _target(min_position)
    names = tuple(projectors)
    deadline = time.monotonic() + READ_YOUR_WRITES_WAIT
    while not await caught_up(request, names, target):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ApiProblem(
                503,
                "read-model-behind",
                "The read model has not caught up with your write yet",
                f"{', '.join(names)} not yet at {target}; the write is recorded, retry in a moment",
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(min(POLL_INTERVAL, remaining))


@contextmanager
def refused_as_bad_request() -> Iterator[None]:
    """A filter, cursor or limit the query refuses (ValueError) is the caller's 400."""
    try:
        yield
    except queries.InvalidCursorError as error:
        raise invalid_parameter("after", str(error)) from None
    except ValueError as error:
        raise ApiProblem(400, "invalid-request", "The request is not valid", str(error)) from None


# --- pages --------------------------------------------------------------------------------------


class ApprovalsPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[queries.WaitingApproval]
    next_after: str | None = None


class AlertsPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[queries.AlertEntry]
    next_after: str | None = None


class TicketsPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[queries.TicketEntry]
    next_after: str | None = None


class ReceiptsPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[queries.ReceiptEntry]
    next_after: str | None = None
    """The last seq of this page when it is full (the next page may be empty)."""


# --- routes -------------------------------------------------------------------------------------


@read("/v1/overview", summary="The vendor overview", errors=QUERY_ERRORS)
async def vendor_overview(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    tenant: FromQuery[list[str] | None] = None,
    min_position: FromQuery[str | None] = None,
) -> queries.VendorOverview:
    """The business metrics across customers (every one, or the `tenant`s given): stages,
    time to go live, approval success, accuracy, onboarding per month. Cached 5 minutes and
    refreshed as soon as the projector changes it."""
    del principal
    api = api_of(request)
    await await_read_models(request, [CustomerDashboard.name], min_position)
    chosen = None if tenant is None else sorted(set(tenant))

    async def load() -> queries.VendorOverview:
        with refused_as_bad_request():
            return await queries.vendor_overview(api.services.pool, tenants=chosen)

    if min_position is not None:
        return await load()
    return await api.services.cache.get_or_load(
        None,
        "overview",
        "" if chosen is None else ",".join(chosen),
        DASHBOARD_TTL,
        load,
        queries.VendorOverview,
    )


@read("/v1/approvals", summary="The approvals queue", errors=QUERY_ERRORS)
async def approvals_queue(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    approver: FromQuery[str | None] = None,
    tenant: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    limit: PageSize = 50,
    min_position: FromQuery[str | None] = None,
) -> ApprovalsPage:
    """What waits for an approver, longest waiting first. A customer's user sees their own
    queue in their own customer; vendor staff name the `approver`, and may narrow to one
    `tenant`."""
    if principal.is_vendor:
        if approver is None:
            raise invalid_parameter("approver", "say whose queue to read (?approver=<user id>)")
        whose, where = approver, tenant
    else:
        if approver not in {None, principal.user}:
            raise PermissionDeniedException(detail="you can read only your own approvals queue")
        if tenant not in {None, principal.tenant}:
            raise NotFoundException(detail=f"no customer {tenant!r}")
        whose, where = principal.user, principal.tenant
    await await_read_models(request, [ApprovalsQueue.name], min_position)
    with refused_as_bad_request():
        page = await queries.approvals_queue(
            api_of(request).services.pool, whose, tenant=where, after=after, limit=limit
        )
    return ApprovalsPage(items=page.items, next_after=page.next_after)


@read(
    "/v1/customers/{customer_id:str}/alerts", summary="The customer's alerts", errors=QUERY_ERRORS
)
async def alerts_list(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    severity: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    limit: PageSize = 50,
    min_position: FromQuery[str | None] = None,
) -> AlertsPage:
    """The customer's alerts, newest first; `severity` is info, warning or critical, `status`
    open, acknowledged, resolved or unresolved (open or acknowledged)."""
    del principal
    await await_read_models(request, [AlertsList.name], min_position)
    with refused_as_bad_request():
        page = await queries.alerts_list(
            api_of(request).services.pool,
            customer_id,
            severity=severity,
            state=status,
            after=after,
            limit=limit,
        )
    return AlertsPage(items=page.items, next_after=page.next_after)


@read(
    "/v1/customers/{customer_id:str}/tickets",
    summary="The customer's support tickets",
    errors=QUERY_ERRORS,
)
async def customer_tickets(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    status: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    limit: PageSize = 50,
    min_position: FromQuery[str | None] = None,
) -> TicketsPage:
    """The customer's tickets, newest first; `status` is a ticket status or unresolved
    (neither resolved nor closed). Subjects and texts are on each ticket's own GET."""
    del principal
    await await_read_models(request, [SupportTickets.name], min_position)
    with refused_as_bad_request():
        page = await queries.tickets_for_customer(
            api_of(request).services.pool, customer_id, status=status, after=after, limit=limit
        )
    return TicketsPage(items=page.items, next_after=page.next_after)


@read("/v1/tickets", summary="Tickets assigned to vendor staff", errors=QUERY_ERRORS)
async def assigned_tickets(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    assignee: FromQuery[str | None] = None,
    tenant: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    limit: PageSize = 50,
    min_position: FromQuery[str | None] = None,
) -> TicketsPage:
    """The tickets assigned to `assignee` (the caller by default), across customers unless a
    `tenant` is given, oldest first: the order they are worked through."""
    await await_read_models(request, [SupportTickets.name], min_position)
    with refused_as_bad_request():
        page = await queries.tickets_for_assignee(
            api_of(request).services.pool,
            assignee or principal.user,
            status=status,
            tenant=tenant,
            after=after,
            limit=limit,
        )
    return TicketsPage(items=page.items, next_after=page.next_after)


@read(
    "/v1/customers/{customer_id:str}/receipts",
    summary="The customer's receipts index",
    errors=QUERY_ERRORS,
)
async def receipts_index(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    after: SeqAfter = 0,
    limit: PageSize = 100,
    min_position: FromQuery[str | None] = None,
) -> ReceiptsPage:
    """The customer's chain of receipts in order, by seq; each receipt itself is served
    signed by the ledger routes."""
    del principal
    await await_read_models(request, [ReceiptsIndex.name], min_position)
    with refused_as_bad_request():
        items = await queries.receipts_index(
            api_of(request).services.pool,
            customer_id,
            after_seq=after,
            limit=limit,
        )
    following = str(items[-1].seq) if items and len(items) == limit else None
    return ReceiptsPage(items=items, next_after=following)


class CalculationsPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[queries.LatestCalculation]
    next_after: str | None = None


@read(
    "/v1/customers/{customer_id:str}/calculations",
    summary="The customer's calculation results",
    errors=QUERY_ERRORS,
)
async def calculation_results(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    customer_id: FromPath[str],
    definition_id: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    limit: PageSize = 50,
    min_position: FromQuery[str | None] = None,
) -> CalculationsPage:
    """The current calculation of each period, newest first. Cached 1 hour and refreshed as
    soon as the projector changes the customer's rows."""
    del principal
    api = api_of(request)
    await await_read_models(request, [CustomerDashboard.name], min_position)

    async def load() -> CalculationsPage:
        with refused_as_bad_request():
            page = await queries.calculation_results(
                api.services.pool,
                customer_id,
                definition_id=definition_id,
                after=after,
                limit=limit,
            )
        return CalculationsPage(items=page.items, next_after=page.next_after)

    if min_position is not None:
        return await load()
    key = msgspec.json.encode([definition_id, after, limit]).decode()
    return await api.services.cache.get_or_load(
        tenant_of(customer_id), "calculations", key, CALCULATION_TTL, load, CalculationsPage
    )


ROUTES: Final[list[Any]] = [
    vendor_overview,
    approvals_queue,
    alerts_list,
    customer_tickets,
    assigned_tickets,
    receipts_index,
    calculation_results,
]
