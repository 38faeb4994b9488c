"""The request path's Redis commands over one pipelined connection.

Every authenticated request reads its token's revocations, and a cached query the view it
answers, with one MGET; a rate-limited request is counted by a Lua script first. Through
redis-py's asyncio client each such command cost about 70 µs of CPU (measured on uvloop, 32
requests in flight), and in the server under load 0.1 to 0.2 ms: a pool checkout behind a
lock with a liveness probe of the socket, a retry wrapper, a timeout around a stream read, and
for scripts a Script object made per request. Redis answers the commands of one connection
in order, so requests in flight can share one connection instead: each queues its command
and a future, and replies, parsed by hiredis (the parser redis-py uses too), settle the
futures in turn. The commands queued in one turn of the event loop go in one write (a busy
server sends several per write, and Redis reads them in one go). An MGET costs about 9 µs,
and its timeout 5 µs more. Everything else (writes, transactions, pipelines) stays with
redis-py.

TLS connections (``rediss://``) go through redis-py, which owns the certificate options.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import hiredis
import redis.asyncio
from redis.asyncio.connection import ConnectKwargs, SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script, run by its SHA-1 (EVALSHA) and sent whole (EVAL, which also loads it)
    only when Redis does not have it: after a restart, a SCRIPT FLUSH, a failover."""

    text: str
    sha1: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha1", digest)


class RequestRedis(Protocol):
    """The Redis commands of the request path. Failures are redis-py's RedisErrors."""

    async def mget(self, *keys: str) -> list[bytes | None]:
        """Each key's value as bytes, or None where the key holds no string."""

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """The script's reply (integers as int, strings as bytes, tables as lists)."""

    async def aclose(self) -> None: ...


def request_redis(url: str, client: redis.asyncio.Redis, *, timeout: float) -> RequestRedis:
    """The commands for the Redis at `url`: pipelined, or through `client` over TLS."""
    options = parse_url(url)
    if options.get("connection_class") is SSLConnection:
        return ClientRedis(client)
    return PipelinedRedis(options, timeout=timeout)


class _Commands:
    """The request path's commands, on a way of sending one command and reading its reply."""

    async def _call(self, *words: str | bytes) -> Any:
        raise NotImplementedError

    async def mget(self, *keys: str) -> list[bytes | None]:
        if not keys:
            raise ValueError("MGET needs at least one key")
        values: list[bytes | None] = await self._call(b"MGET", *keys)
        return values

    async def run(self, script: LuaScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        words = (str(len(keys)), *keys, *(str(arg) for arg in args))
        try:
            return await self._call(b"EVALSHA", script.sha1, *words)
        except ResponseError as error:
            # redis-py raises NoScriptError (its message without the code); the pipelined
            # connection, the error reply as Redis sent it.
            if not isinstance(error, NoScriptError) and not str(error).startswith("NOSCRIPT"):
                raise
        return await self._call(b"EVAL", script.text, *words)


class ClientRedis(_Commands):
    """The commands through a redis-py client (for TLS). Closing it is its owner's business."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def _call(self, *words: str | bytes) -> Any:
        # A command name given as bytes matches none of redis-py's reply callbacks: the reply
        # comes as Redis sent it, as on the pipelined connection.
        return await self._client.execute_command(*words)  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        return None


def _command(*words: str | bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Replies(asyncio.Protocol):
    """One connection: commands written in order, replies matched to their futures in order.

    A future whose caller gave up (timed out, cancelled) stays in the queue, so the reply
    meant for it is still taken off in its turn and the next reply reaches the next future."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport (uvloop's does not subclass asyncio's).
        self._transport = cast("asyncio.Transport", transport)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost or self._transport is None:
            raise RedisConnectionError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.append(command)
        self._waiting.append(reply)
        return reply

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self.lost and self._transport is not None:
            self._transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter = self._waiting.popleft()
                if waiter.done():
                    continue
                if isinstance(reply, ResponseError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as error:
            # Bytes that are not RESP, or a reply nobody asked for: nothing read on this
            # connection can be trusted to be whose it seems.
            self.abort(RedisConnectionError(f"Redis sent what no command asked for: {error}"))

    def abort(self, error: Exception) -> None:
        """Close the connection at once and fail every command waiting on it."""
        self._fail_waiting(error)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(RedisConnectionError(f"the Redis connection was lost ({exc!r})"))

    def _fail_waiting(self, error: Exception) -> None:
        self.lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class PipelinedRedis(_Commands):
    """The commands of the requests in flight over one connection, opened on first use and
    again after it breaks. A command answered later than `timeout` fails with redis-py's
    TimeoutError and closes the connection (a server that lags that far is treated as gone);
    a broken connection fails its commands with redis-py's ConnectionError, as redis-py would."""

    def __init__(self, options: ConnectKwargs, *, timeout: float) -> None:
        self._options = options
        self._timeout = timeout
        self._replies: _Replies | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _call(self, *words: str | bytes) -> Any:
        replies = self._replies
        if replies is None or replies.lost:
            replies = await self._open()
        answer = replies.send(_command(*words))
        try:
            async with asyncio.timeout(self._timeout):
                return await answer
        except TimeoutError:
            replies.abort(RedisTimeoutError("an earlier Redis command timed out"))
            raise RedisTimeoutError(f"Redis did not answer within {self._timeout} s") from None

    async def _open(self) -> _Replies:
        async with self._opening:
            if self._closed:
                raise RedisConnectionError("the request path's Redis connection is closed")
            replies = self._replies
            if replies is not None and not replies.lost:
                return replies  # opened by another caller while this one waited
            self._replies = await self._connect()
            return self._replies

    async def _connect(self) -> _Replies:
        loop = asyncio.get_running_loop()
        options = self._options
        replies: _Replies | None = None
        try:
            async with asyncio.timeout(self._timeout):
                if "path" in options:
                    _, replies = await loop.create_unix_connection(_Replies, options["path"])
                else:
                    _, replies = await loop.create_connection(
                        _Replies, options.get("host", "localhost"), options.get("port", 6379)
                    )
                setup: list[asyncio.Future[Any]] = []
                password = options.get("password")
                if password is not None:
                    user = options.get("username")
                    words = ("AUTH", user, password) if user else ("AUTH", password)
                    setup.append(replies.send(_command(*words)))
                if options.get("db"):
                    setup.append(replies.send(_command("SELECT", str(options["db"]))))
                for answer in setup:
                    await answer
        except BaseException as error:
            if replies is not None:
                replies.abort(RedisConnectionError(f"setting up the connection failed: {error!r}"))
            if isinstance(error, TimeoutError):
                raise RedisTimeoutError(f"Redis did not connect within {self._timeout} s") from None
            if isinstance(error, OSError):
                raise RedisConnectionError(f"cannot connect to Redis: {error}") from error
            raise
        return replies

    async def aclose(self) -> None:
        async with self._opening:
            self._closed = True
            if self._replies is not None:
                self._replies.abort(
                    RedisConnectionError("the request path's Redis connection was closed")
                )
                self._replies = None
