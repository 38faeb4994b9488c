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

A URL asking for TLS (``rediss://``) or any option the pipelined connection does not implement
(socket timeouts or keepalive, a client name, RESP3) is served by redis-py instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

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


_PIPELINED_OPTIONS: Final = frozenset({"host", "port", "path", "db", "username", "password"})
"""What a URL may say for the pipelined connection; a URL saying more (TLS, socket timeouts or
keepalive, a client name, RESP3...) is served by redis-py, which implements every option."""


def request_redis(url: str, client: redis.asyncio.Redis, *, timeout: float) -> RequestRedis:
    """The commands for the Redis at `url` (the URL `client` was made from): pipelined, or
    through `client` when the URL asks for something only redis-py does."""
    options = parse_url(url)
    if options.get("connection_class") is SSLConnection or not set(options) <= (
        _PIPELINED_OPTIONS | {"connection_class"}
    ):
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
    """The commands through a redis-py client, for URLs the pipelined connection does not
    serve (TLS, options it does not implement). Closing the client is its owner's business."""

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
        self.heard_at = asyncio.get_running_loop().time()
        """When Redis last sent anything (or the connection was made)."""

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
        self.heard_at = asyncio.get_running_loop().time()
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
            self.abort(f"Redis sent what no command asked for: {error}")

    def abort(self, why: str) -> None:
        """Close the connection at once and fail every command waiting on it."""
        self._fail_waiting(why)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_waiting(f"the Redis connection was lost ({exc!r})")

    def _fail_waiting(self, why: str) -> None:
        self.lost = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                # One exception each: a raised exception's traceback is its own.
                waiter.set_exception(RedisConnectionError(why))


class PipelinedRedis(_Commands):
    """The commands of the requests in flight over one connection, opened on first use and
    again after it breaks.

    Each command has `timeout` to be answered, counted from when it was sent, as with
    redis-py: one that times out fails alone with redis-py's TimeoutError, and its reply, when
    it comes, is taken off in its turn and dropped, so a stall shorter than that fails only
    the commands it outlasts. A connection from which nothing at all has come for
    `silence_limit` (default: four timeouts) while a command waited is taken for dead (a
    server gone without a word, a connection dropped by a NAT while idle): it is closed,
    failing the commands on it, and the next command connects again. A broken connection
    fails its commands with redis-py's ConnectionError, as redis-py would. Callers that need a
    connection while one is being made wait for that one attempt, and share its outcome."""

    def __init__(
        self, options: ConnectKwargs, *, timeout: float, silence_limit: float | None = None
    ) -> None:
        self._options = options
        self._timeout = timeout
        self._silence_limit = 4 * timeout if silence_limit is None else silence_limit
        self._replies: _Replies | None = None
        self._connecting: asyncio.Task[_Replies] | None = None
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
            silent = asyncio.get_running_loop().time() - replies.heard_at
            if silent >= self._silence_limit:
                replies.abort(f"Redis sent nothing for {silent:.2f} s: the connection is dead")
            raise RedisTimeoutError(f"Redis did not answer within {self._timeout} s") from None

    async def _open(self) -> _Replies:
        if self._closed:
            raise RedisConnectionError("the request path's Redis connection is closed")
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.get_running_loop().create_task(self._connect())
            connecting.add_done_callback(self._connected)
        # Shielded: a caller that gives up does not cancel the attempt the others wait for.
        return await asyncio.shield(connecting)

    def _connected(self, attempt: asyncio.Task[_Replies]) -> None:
        self._connecting = None
        if attempt.cancelled() or attempt.exception() is not None:
            return
        replies = attempt.result()
        if self._closed:  # closed while connecting: nobody may use it
            replies.abort("the request path's Redis connection was closed")
        else:
            self._replies = replies

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
                user, password = options.get("username"), options.get("password")
                if user or password:  # as redis-py: a user with no password authenticates too
                    words = ("AUTH", user, password or "") if user else ("AUTH", password or "")
                    setup.append(replies.send(_command(*words)))
                if options.get("db"):
                    setup.append(replies.send(_command("SELECT", str(options["db"]))))
                for answer in setup:
                    await answer
        except BaseException as error:
            if replies is not None:
                replies.abort(f"setting up the connection failed: {error!r}")
            if isinstance(error, TimeoutError):
                raise RedisTimeoutError(f"Redis did not connect within {self._timeout} s") from None
            if isinstance(error, OSError):
                raise RedisConnectionError(f"cannot connect to Redis: {error}") from error
            raise
        return replies

    async def aclose(self) -> None:
        """Close the connection, failing the commands waiting on it; no command is sent after.
        A connection being made is closed as soon as it is made."""
        self._closed = True
        connecting = self._connecting
        if connecting is not None:  # bounded by the timeout; closed by _connected if made
            with contextlib.suppress(Exception):
                await asyncio.shield(connecting)
        if self._replies is not None:
            self._replies.abort("the request path's Redis connection was closed")
            self._replies = None
