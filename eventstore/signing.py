"""Signing off the event loop, in batches.

RSA signing is the ceiling of a signed append (about 3,600 signatures/s per core here).
`cryptography` releases the GIL while it signs, so signatures can use every core; but a thread
hand-off costs more than one signature is worth when nothing else is waiting. So a lone small
batch is signed inline, and as soon as signatures are in flight, everything that queues behind
them goes to the threads in one hand-off per batch.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric import rsa

from eventstore.receipts import sign_hash

INLINE_LIMIT = 2
"""Up to this many signatures, with no signing in flight, are cheaper to sign in place."""


def _sign_all(key: rsa.RSAPrivateKey, hashes: list[str]) -> list[str]:
    return [sign_hash(key, digest) for digest in hashes]


class BatchSigner:
    def __init__(self, threads: int | None = None) -> None:
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="ledger-sign")
        self._in_flight = 0

    async def sign(self, key: rsa.RSAPrivateKey, hashes: list[str]) -> list[str]:
        if self._in_flight == 0 and len(hashes) <= INLINE_LIMIT:
            return _sign_all(key, hashes)
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            if len(hashes) >= 2 * self._threads:
                # A big batch is split across the threads so that it uses every core.
                share = -(-len(hashes) // self._threads)
                parts = [hashes[i : i + share] for i in range(0, len(hashes), share)]
                signed = await asyncio.gather(
                    *(loop.run_in_executor(self._executor, _sign_all, key, p) for p in parts)
                )
                return [signature for part in signed for signature in part]
            return await loop.run_in_executor(self._executor, _sign_all, key, hashes)
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
