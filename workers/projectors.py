"""The projectors' worker: every projector following the ledger, until told to stop.

`valueledger projectors` runs this. SIGTERM or SIGINT sets the stop event: each projector
finishes the batch in hand (its rows and checkpoint commit together, or not at all), releases
its lease and returns, so a restart, here or in another process, goes on exactly from there.
A SIGKILL is safe too: the batch in hand rolls back and is projected again by whoever runs
next.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import asyncpg
import structlog

from projections.projector import Projector
from projections.runner import Invalidate, ProjectionRunner

log = structlog.get_logger(__name__)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM and SIGINT, within the running loop."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run_projectors(
    pool: asyncpg.Pool,
    projectors: Sequence[Projector],
    stop: asyncio.Event,
    *,
    invalidate: Invalidate | None = None,
) -> None:
    """Run every projector until `stop` is set; a projector that fails is logged and the
    others stop too, so the process exits non-zero and its supervisor restarts it."""
    runners = [ProjectionRunner(pool, projector, invalidate=invalidate) for projector in projectors]
    log.info("projectors starting", projectors=[projector.name for projector in projectors])
    tasks = [
        asyncio.create_task(runner.run(stop), name=runner.projector.name) for runner in runners
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "projector failed", projector=task.get_name(), error=str(task.exception())
                )
                stop.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    log.info("projectors stopped; checkpoints saved")
