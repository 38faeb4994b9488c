"""The request path's Redis commands, against real Redis servers.

One contract for both kinds (pipelined, what the service uses; through redis-py, what it uses
for URLs asking for more, such as TLS), on the embedded Redis and the external one: MGET
answers exactly what Redis holds, however many reads are in flight; a Lua script runs by its
SHA-1, is loaded again when Redis has lost it, and its errors are raised. Then what only the
pipelined connection has to get right, on this module's own embedded Redis (paused and cut
off at will) and on local servers that misbehave: replies reach their callers when others
gave up; a stall fails only the reads it outlasts; a connection cut, or silent past its
limit, fails its reads and the next read connects again; readers share one connection
attempt; closing fails what is in flight; the user, password and database come from the URL;
bytes that are not RESP are never taken for an answer; and the same on uvloop. (That one
turn's commands go in one write is not tested: no observable difference but the count of
system calls.)
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import quote

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections.cache import connect_cache
from projections.request_redis import (
    ClientRedis,
    LuaScript,
    PipelinedRedis,
    RequestRedis,
    request_redis,
)
from tests.conftest import RUN_ID, RedisBackend, closed_port

TIMEOUT = 2.0


@pytest.fixture
async def admin(redis_backend: RedisBackend) -> AsyncIterator[redis.asyncio.Redis]:
    """redis-py on the same server: writes the keys, and deletes this run's keys after."""
    client = connect_cache(redis_backend.url)
    yield client
    async for key in client.scan_iter(match=f"vltest:{RUN_ID}:reads:*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(params=["pipelined", "client"])
async def commands(
    request: pytest.FixtureRequest, redis_backend: RedisBackend, admin: redis.asyncio.Redis
) -> AsyncIterator[RequestRedis]:
    chosen: RequestRedis = (
        request_redis(redis_backend.url, admin, timeout=TIMEOUT)
        if request.param == "pipelined"
        else ClientRedis(admin)
    )
    yield chosen
    await chosen.aclose()


# --- the contract -----------------------------------------------------------------------------

values = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"\r\n", b"$-1\r\n", b"*2\r\n", b"-ERR not an error\r\n"]),
    # Long values, so that replies arrive in several pieces.
    st.builds(
        lambda unit, times: unit * times,
        st.binary(min_size=1, max_size=8),
        st.integers(8_000, 12_000),
    ),
)
key_names = st.text(min_size=1, max_size=20)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stored=st.dictionaries(key_names, values, max_size=12),
    missing=st.lists(key_names, max_size=4),
    asked=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=8), min_size=1, max_size=40),
)
async def test_every_read_answers_what_redis_holds_however_many_are_in_flight(
    commands: RequestRedis,
    admin: redis.asyncio.Redis,
    stored: dict[str, bytes],
    missing: list[str],
    asked: list[list[int]],
) -> None:
    """Many reads at once, over keys that hold strings, keys that hold nothing and a key that
    holds a list (MGET answers nil for it): each read gets its own keys' values, in order."""
    space = f"vltest:{RUN_ID}:reads:{secrets.token_hex(4)}:"
    if stored:
        await admin.mset({space + name: value for name, value in stored.items()})
    await cast("Awaitable[int]", admin.rpush(space + "\x00a list", b"not a string"))
    names = [*stored, *(name for name in missing if name not in stored), "\x00a list"]
    expected = {name: stored.get(name) for name in names}

    async def read(picks: list[int]) -> None:
        chosen = [names[pick % len(names)] for pick in picks]
        assert await commands.mget(*(space + name for name in chosen)) == [
            expected[name] for name in chosen
        ]

    await asyncio.gather(*(read(picks) for picks in asked))


async def test_a_read_of_no_keys_is_an_error(commands: RequestRedis) -> None:
    with pytest.raises(ValueError, match="at least one key"):
        await commands.mget()


COUNT = LuaScript(
    """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
return {count, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), ARGV[2]}
"""
)


async def test_a_script_runs_with_its_keys_and_args_and_answers_as_redis_sent_it(
    commands: RequestRedis, admin: redis.asyncio.Redis
) -> None:
    counter, nothing = (f"vltest:{RUN_ID}:reads:{secrets.token_hex(4)}" for _ in range(2))
    assert await commands.run(COUNT, [counter, nothing], [5, "text"]) == [5, b"5", None, b"text"]
    assert await commands.run(COUNT, [counter, nothing], [2, ""]) == [7, b"7", None, b""]
    assert await admin.get(counter) == b"7"


async def test_a_script_redis_has_lost_is_loaded_again(
    commands: RequestRedis, admin: redis.asyncio.Redis, redis_backend: RedisBackend
) -> None:
    if redis_backend.name != "embedded":
        pytest.skip("SCRIPT FLUSH would empty the shared server's script cache")
    counter = f"vltest:{RUN_ID}:reads:{secrets.token_hex(4)}"
    await commands.run(COUNT, [counter, counter], [1, "a"])
    await admin.script_flush()
    assert await admin.script_exists(COUNT.sha1) == [False]
    assert await commands.run(COUNT, [counter, counter], [1, "b"]) == [2, b"2", b"2", b"b"]
    assert await admin.script_exists(COUNT.sha1) == [True]


async def test_a_script_that_fails_raises_what_redis_said(
    commands: RequestRedis, admin: redis.asyncio.Redis
) -> None:
    listed = f"vltest:{RUN_ID}:reads:{secrets.token_hex(4)}"
    await cast("Awaitable[int]", admin.rpush(listed, b"x"))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await commands.run(COUNT, [listed, listed], [1, "a"])
    assert await commands.mget(listed) == [None]  # the connection still answers in turn


# --- the pipelined connection -----------------------------------------------------------------


class Pause:
    """Holds the embedded Redis's replies back for a while (CLIENT PAUSE). Commands that
    arrive meanwhile are answered when the pause runs out (CLIENT UNPAUSE does not wake
    them before, on Redis 7.0), so a test waits for that."""

    def __init__(self, url: str) -> None:
        self.control = redis.asyncio.Redis.from_url(url)

    async def __call__(self, seconds: float) -> None:
        await self.control.execute_command("CLIENT", "PAUSE", str(round(seconds * 1000)), "ALL")


@pytest.fixture
async def paused(embedded_redis: str) -> AsyncIterator[Pause]:
    pause = Pause(embedded_redis)
    await pause.control.ping()  # connected before any pause
    yield pause
    await pause.control.execute_command("CLIENT", "UNPAUSE")
    await pause.control.aclose()


@asynccontextmanager
async def pipelined(
    url: str, answer_within: float = TIMEOUT
) -> AsyncIterator[tuple[redis.asyncio.Redis, PipelinedRedis]]:
    """redis-py on `url` (to arrange keys and look on) and the pipelined connection under
    test, both closed after."""
    admin = connect_cache(url)
    reads = request_redis(url, admin, timeout=answer_within)
    assert isinstance(reads, PipelinedRedis)
    try:
        yield admin, reads
    finally:
        await reads.aclose()
        await admin.aclose()


async def waiting_on(reads: PipelinedRedis, *keys: str) -> asyncio.Task[list[bytes | None]]:
    """A read sent and waiting for its reply."""
    task = asyncio.create_task(reads.mget(*keys))
    await asyncio.sleep(0.05)
    assert not task.done()
    return task


async def test_replies_reach_their_own_readers_when_a_reader_in_between_gave_up(
    embedded_redis: str, paused: Pause
) -> None:
    async with pipelined(embedded_redis) as (admin, reads):
        await admin.mset({"reads:a": b"A", "reads:b": b"B", "reads:c": b"C"})
        assert await reads.mget("reads:a") == [b"A"]  # connected
        await paused(0.5)
        first = await waiting_on(reads, "reads:a")
        gave_up = await waiting_on(reads, "reads:b")
        third = await waiting_on(reads, "reads:c", "reads:a")
        gave_up.cancel()
        assert await first == [b"A"]
        assert await third == [b"C", b"A"]
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        assert await reads.mget("reads:b") == [b"B"]  # B's reply was not left for this one


async def test_a_connection_cut_fails_its_waiting_reads_and_the_next_read_connects_again(
    embedded_redis: str, paused: Pause
) -> None:
    async with pipelined(embedded_redis) as (admin, reads):
        await admin.set("reads:cut", b"still here")
        assert await reads.mget("reads:cut") == [b"still here"]
        await paused(0.5)
        waiting = await waiting_on(reads, "reads:cut")
        # The server cuts every connection but the pausing one.
        await paused.control.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(RedisConnectionError):
            await waiting
        assert await reads.mget("reads:cut") == [b"still here"]


async def test_a_stall_fails_only_the_reads_it_outlasts_and_keeps_the_connection(
    embedded_redis: str, paused: Pause
) -> None:
    """Each read has the timeout from when it was sent, as with redis-py: Redis holding every
    reply back for 1.3 s fails a read sent at the start (1 s timeout), not one sent 0.6 s
    later, which gets its own value once Redis answers, on the same connection."""
    async with pipelined(embedded_redis, answer_within=1.0) as (admin, reads):
        await admin.mset({"reads:early": b"early", "reads:later": b"later"})
        assert await reads.mget("reads:early") == [b"early"]
        clients = len(await admin.client_list())
        await paused(1.3)
        early = asyncio.create_task(reads.mget("reads:early"))
        await asyncio.sleep(0.6)
        later = asyncio.create_task(reads.mget("reads:later"))
        with pytest.raises(RedisTimeoutError):
            await early
        assert await later == [b"later"]
        assert await reads.mget("reads:early") == [b"early"]  # the late reply was dropped
        assert len(await admin.client_list()) == clients


async def test_closing_fails_the_reads_in_flight_and_refuses_later_ones(
    embedded_redis: str, paused: Pause
) -> None:
    async with pipelined(embedded_redis) as (_, reads):
        assert await reads.mget("reads:none") == [None]
        await paused(0.5)
        waiting = [await waiting_on(reads, "reads:none") for _ in range(2)]
        await reads.aclose()
        for task in waiting:
            with pytest.raises(RedisConnectionError, match="closed"):
                await task
        with pytest.raises(RedisConnectionError, match="closed"):
            await reads.mget("reads:none")


async def test_a_user_without_a_password_is_who_the_connection_acts_as(
    embedded_redis: str,
) -> None:
    """A URL naming a user and no password authenticates as that user (as redis-py does),
    never as the default user: here one allowed to read only its own keys."""
    admin = redis.asyncio.Redis.from_url(embedded_redis)
    user = f"limited-{secrets.token_hex(3)}"
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", "nopass", "~allowed:*", "+mget", "+auth"
    )
    await admin.mset({"allowed:x": b"mine", "secret:x": b"not yours"})
    path = embedded_redis.removeprefix("unix://")
    limited = request_redis(f"unix://{user}@{path}", admin, timeout=TIMEOUT)
    try:
        assert await limited.mget("allowed:x") == [b"mine"]
        with pytest.raises(ResponseError, match="NOPERM"):
            await limited.mget("secret:x")
    finally:
        await limited.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_the_user_password_and_database_come_from_the_url(embedded_redis: str) -> None:
    admin = redis.asyncio.Redis.from_url(embedded_redis)
    user, password = f"reader-{secrets.token_hex(3)}", "p@ss word/" + secrets.token_hex(4)
    await admin.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "+mget", "+auth", "+select"
    )
    in_db_3 = redis.asyncio.Redis.from_url(f"{embedded_redis}?db=3")
    await in_db_3.set("reads:db", b"three")
    path = embedded_redis.removeprefix("unix://")
    good = request_redis(
        f"unix://{quote(user)}:{quote(password, safe='')}@{path}?db=3", admin, timeout=TIMEOUT
    )
    wrong = request_redis(f"unix://{quote(user)}:wrong@{path}?db=3", admin, timeout=TIMEOUT)
    try:
        assert await good.mget("reads:db") == [b"three"]
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await wrong.mget("reads:db")
    finally:
        await good.aclose()
        await wrong.aclose()
        await in_db_3.delete("reads:db")
        await in_db_3.aclose()
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()


async def test_a_database_on_a_tcp_url_is_selected(
    external_redis: str | None,
) -> None:
    if external_redis is None:
        pytest.skip("no external Redis answers")
    base = external_redis.rsplit("/", 1)[0]
    key = f"vltest:{RUN_ID}:reads:{secrets.token_hex(4)}"
    in_db_5 = redis.asyncio.Redis.from_url(f"{base}/5")
    await in_db_5.set(key, b"five")
    reads = request_redis(f"{base}/5", in_db_5, timeout=TIMEOUT)
    try:
        assert await reads.mget(key) == [b"five"]
    finally:
        await reads.aclose()
        await in_db_5.delete(key)
        await in_db_5.aclose()


class Misbehaving:
    """A local server that answers each connection's first command with `answer` (or never,
    given None), then waits for the client to hang up; it counts the connections it was
    given."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read(1024)
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
        while await reader.read(1024):
            pass
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.reply, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_bytes_that_are_not_resp_fail_the_read() -> None:
    async with (
        Misbehaving(b"HTTP/1.1 400 Bad Request\r\n\r\n") as url,
        pipelined(url) as (_, reads),
    ):
        with pytest.raises(RedisConnectionError, match="no command asked for"):
            await reads.mget("a")


async def test_a_reply_nobody_asked_for_closes_the_connection() -> None:
    """One command, two replies: the second cannot be anyone's, and a later read must never
    be answered with it, so the connection goes and the next read opens another."""
    server = Misbehaving(b"*1\r\n$1\r\nx\r\n*1\r\n$1\r\ny\r\n")
    async with server as url, pipelined(url) as (_, reads):
        assert await reads.mget("a") == [b"x"]
        await asyncio.sleep(0.05)  # the unasked-for reply arrives
        assert await reads.mget("a") == [b"x"]  # not [b"y"]: from a new connection
        assert server.connections == 2


async def test_a_connection_silent_past_its_limit_is_left_and_the_next_read_connects_anew() -> None:
    """A server that stopped answering (blackholed, say) would time out every read on its
    connection for ever: once nothing has come from it for the silence limit while a read
    waited, the connection goes, and the next read makes another."""
    server = Misbehaving(None)
    async with server as url:
        reads = PipelinedRedis(parse_url(url), timeout=0.2, silence_limit=0.3)
        for connections in (1, 1, 2):
            with pytest.raises(RedisTimeoutError):
                await reads.mget("a")  # silent for 0.2 s, then 0.4 s: over the limit
            assert server.connections == connections
        await reads.aclose()


async def test_readers_arriving_while_a_connection_is_made_share_that_one_attempt() -> None:
    """Eight first reads at once against a server that never answers the AUTH: one connection
    attempt, which all eight wait for and fail with (not eight attempts, one after another)."""
    server = Misbehaving(None)
    async with server as url:
        with_password = url.replace("redis://", "redis://:secret@")
        reads = PipelinedRedis(parse_url(with_password), timeout=0.3)
        outcomes = await asyncio.gather(
            *(reads.mget("a") for _ in range(8)), return_exceptions=True
        )
        assert all(isinstance(outcome, RedisTimeoutError) for outcome in outcomes), outcomes
        assert server.connections == 1
        await reads.aclose()


def test_urls_asking_for_what_only_redis_py_does_go_through_redis_py() -> None:
    client = connect_cache("redis://127.0.0.1:1/0")
    for url in (
        "rediss://127.0.0.1:1/0",
        "redis://127.0.0.1:1/0?socket_timeout=5",
        "redis://127.0.0.1:1/0?ssl_cert_reqs=none",
        "redis://127.0.0.1:1/0?client_name=api",
        "redis://127.0.0.1:1/0?protocol=3",
    ):
        assert isinstance(request_redis(url, client, timeout=1), ClientRedis), url
    for url in ("redis://u:p@127.0.0.1:1/3", "unix:///tmp/redis.sock?db=2"):
        assert isinstance(request_redis(url, client, timeout=1), PipelinedRedis), url


def test_reads_on_uvloop_as_the_server_runs_them(embedded_redis: str) -> None:
    """The same reply matching on uvloop's transports (the server's loop): concurrent reads
    with their own values, one given up in between, across a pause."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        values = {f"reads:uv{n}": b"%d" % n for n in range(20)}
        pause = Pause(embedded_redis)
        async with pipelined(embedded_redis) as (admin, reads), pause.control:
            await admin.mset(values)
            assert await reads.mget("reads:uv0") == [b"0"]
            await pause.control.ping()
            await pause(0.3)
            tasks = [asyncio.create_task(reads.mget(key)) for key in values]
            await asyncio.sleep(0.05)
            tasks[7].cancel()
            for n, task in enumerate(tasks):
                if n == 7:
                    with pytest.raises(asyncio.CancelledError):
                        await task
                else:
                    assert await task == [b"%d" % n]

    uvloop.run(scenario())


async def test_nothing_listening_is_a_connection_error_and_closed_reads_refuse(
    embedded_redis: str,
) -> None:
    async with pipelined(f"redis://127.0.0.1:{closed_port()}/0") as (_, nowhere):
        with pytest.raises(RedisConnectionError):
            await nowhere.mget("a")

    async with pipelined(embedded_redis) as (_, reads):
        assert await reads.mget("reads:none") == [None]
        await reads.aclose()
        with pytest.raises(RedisConnectionError, match="closed"):
            await reads.mget("reads:none")
