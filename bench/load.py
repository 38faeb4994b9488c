"""Load generators for the HTTP benchmarks: clients that each hold one keep-alive connection
and send one request at a time.

Two kinds, chosen per run (every case of a run uses the same kind, so their ratios compare):

- ``raw``: a minimal HTTP/1.1 client written for this benchmark on asyncio's protocol API (on
  uvloop where it is installed). Each request is one prepared write (request line, Host,
  Accept, User-Agent, Authorization, and for a body its Content-Type and Content-Length); the
  answer is read up to the end of its headers, then Content-Length bytes of body. It speaks
  only what these benchmarks need: no chunked answers, no redirects, no TLS, no compression.
  Per request it costs the generator a few tens of microseconds of CPU, a tenth of httpx's,
  so on a machine whose cores the server shares, the server gets the CPU.
- ``httpx``: an ``httpx.AsyncClient`` limited to one connection, on plain asyncio: what the
  benchmark used first, about 0.4 ms of CPU per request, kept to compare with earlier figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from valueledger.serve import event_loop_factory

ClientKind = Literal["raw", "httpx"]
CLIENT_KINDS: Final[tuple[ClientKind, ...]] = ("raw", "httpx")
TIMEOUT: Final = 30.0
R = TypeVar("R")


class LoadClient(Protocol):
    """One connection to the server, one request at a time."""

    async def send(self, method: str, path: str, body: bytes | None = None) -> int:
        """Send a request and read its whole answer: its status."""
        ...

    async def close(self) -> None: ...


def describe(kind: ClientKind) -> str:
    if kind == "raw":
        return "a minimal HTTP/1.1 client of this benchmark (bench/load.py) on " + (
            "uvloop" if event_loop_factory() is not None else "asyncio"
        )
    return "httpx.AsyncClient on asyncio"


def run(kind: ClientKind, main: Coroutine[Any, Any, R]) -> R:
    """Run the benchmark's loop: uvloop for the raw client where it is installed, plain
    asyncio for httpx (as its figures were first measured)."""
    factory = event_loop_factory() if kind == "raw" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def connect(kind: ClientKind, base_url: str, headers: dict[str, str]) -> Callable[[], LoadClient]:
    """A factory of clients of `kind` for the server at `base_url`, each sending `headers`."""
    if kind == "raw":
        return lambda: RawClient(base_url, headers)
    return lambda: HttpxClient(base_url, headers)


class HttpxClient:
    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def send(self, method: str, path: str, body: bytes | None = None) -> int:
        extra = {} if body is None else {"content-type": "application/json"}
        answer = await self._client.request(method, path, content=body, headers=extra)
        return answer.status_code

    async def close(self) -> None:
        await self._client.aclose()


class AnswerError(Exception):
    """The server's answer could not be read (closed, malformed, chunked or too slow)."""


class _Answers(asyncio.Protocol):
    """Collects one answer at a time from the connection's bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            self._complete(self.waiter)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or AnswerError("the server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def _complete(self, waiter: asyncio.Future[int]) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if not head.startswith(b"http/1.1 ") or at < 0:
            waiter.set_exception(AnswerError(f"no Content-Length: {head[:200]!r}"))
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        del self.buffer[:total]
        waiter.set_result(int(head[9:12]))


class RawClient:
    """See the module docstring: one connection, opened on the first request (again after a
    failure)."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"the raw client needs http://host:port, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port
        fixed = {
            "Host": parts.netloc,
            "Accept": "*/*",
            "User-Agent": "valueledger-bench",
            **headers,
        }
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._transport: asyncio.Transport | None = None
        self._answers: _Answers | None = None

    async def send(self, method: str, path: str, body: bytes | None = None) -> int:
        transport, answers = self._transport, self._answers
        if transport is None or answers is None or answers.lost is not None:
            transport, answers = await self._open()
        if body is None:
            request = f"{method} {path} HTTP/1.1\r\n{self._headers}\r\n".encode()
        else:
            request = (
                f"{method} {path} HTTP/1.1\r\n{self._headers}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        answers.waiter = waiter
        transport.write(request)
        try:
            async with asyncio.timeout(TIMEOUT):
                status: int = await waiter
        except BaseException:
            await self.close()  # whatever was half read cannot be trusted: start afresh
            raise
        return status

    async def _open(self) -> tuple[asyncio.Transport, _Answers]:
        await self.close()
        loop = asyncio.get_running_loop()
        transport, answers = await loop.create_connection(_Answers, self._host, self._port)
        self._transport, self._answers = transport, answers
        return transport, answers

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = self._answers = None
