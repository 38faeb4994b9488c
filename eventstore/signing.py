"""Signing off the event loop, in batches.

RSA signing is the ceiling of a signed append (about 3,600 signatures/s per core here).
`cryptography` releases the GIL while it signs, so signatures can use every core; but a thread
hand-off costs more than one signature is worth when nothing else is waiting. So:

- a small request with nothing queued or in flight is signed in place;
- otherwise a request is cut into one share per thread, and the shares queue; each free
  signing thread takes everything queued as one batch. The store sends one request per round
  of appends (every tenant's records at once), so the cut is what lets a round use every core,
  also while the round before is being committed; a lone writer never pays for a hand-off.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric import rsa

from eventstore.receipts import sign_hash

INLINE_LIMIT = 2
"""Up to this many signatures, with nothing else waiting, are cheaper to sign in place."""

_Request = tuple[rsa.RSAPrivateKey, list[str], asyncio.Future[list[str]]]


def _sign_requests(requests: list[_Request]) -> list[list[str]]:
    return [[sign_hash(key, digest) for digest in hashes] for key, hashes, _ in requests]


class BatchSigner:
    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="ledger-sign")
        self._queue: list[_Request] = []
        self._in_flight = 0

    async def sign(self, key: rsa.RSAPrivateKey, hashes: list[str], *, alone: bool) -> list[str]:
        """The base64 signatures of `hashes`, in order. `alone` says that no other append is
        being committed in this process right now, so the event loop has nothing else to do."""
        idle = not self._queue and self._in_flight == 0
        if alone and idle and len(hashes) <= INLINE_LIMIT:
            return [sign_hash(key, digest) for digest in hashes]
        loop = asyncio.get_running_loop()
        share = -(-len(hashes) // self._threads)
        futures = [
            self._enqueue(loop, key, hashes[i : i + share]) for i in range(0, len(hashes), share)
        ]
        self._pump(loop)
        if len(futures) == 1:
            return await futures[0]
        signed = await asyncio.gather(*futures)
        return [signature for part in signed for signature in part]

    def _enqueue(
        self, loop: asyncio.AbstractEventLoop, key: rsa.RSAPrivateKey, hashes: list[str]
    ) -> asyncio.Future[list[str]]:
        future: asyncio.Future[list[str]] = loop.create_future()
        self._queue.append((key, hashes, future))
        return future

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand everything queued to the free threads, split evenly among them."""
        free = self._threads - self._in_flight
        if not self._queue or free <= 0:
            return
        queued, self._queue = self._queue, []
        groups = min(free, len(queued))
        size = -(-len(queued) // groups)
        for start in range(0, len(queued), size):
            batch = queued[start : start + size]
            self._in_flight += 1
            job = self._executor.submit(_sign_requests, batch)
            job.add_done_callback(self._finisher(loop, batch))

    def _finisher(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Request]
    ) -> Callable[[Future[list[list[str]]]], None]:
        def finished(done: Future[list[list[str]]]) -> None:  # on the signing thread
            loop.call_soon_threadsafe(self._finish, loop, batch, done)

        return finished

    def _finish(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Request], done: Future[list[list[str]]]
    ) -> None:
        self._in_flight -= 1
        error = done.exception()
        for index, (_key, _hashes, future) in enumerate(batch):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[index])
        self._pump(loop)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
