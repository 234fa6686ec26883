"""`redisconn.Pipeliner` against a real Redis: commands asked for at once share one pipeline,
each caller gets its own reply or its own error, a script runs once per call, and an
unreachable Redis fails the callers instead of leaving them waiting."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from livecart.redisconn import Pipeliner, connect
from tests.conftest import redis_url_or_skip
from tests.redis_cluster import RedisCluster6

pytestmark = pytest.mark.redis


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    redis = aioredis.Redis.from_url(redis_url_or_skip())
    prefix = f"test:pipeliner:{secrets.token_hex(4)}:"
    redis.test_prefix = prefix  # type: ignore[attr-defined]
    yield redis
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_a_burst_goes_in_few_pipelines_each_caller_its_reply(client: Any) -> None:
    p = client.test_prefix
    pipeline = Pipeliner(client)

    async def incr(i: int) -> Any:
        return await pipeline.call(lambda pipe: pipe.incrby(f"{p}{i % 7}", i))

    replies = await asyncio.gather(*(incr(i) for i in range(500)))
    # Each caller got the reply of its own command: the counters' final values add up.
    finals = {i % 7: 0 for i in range(500)}
    for i in range(500):
        finals[i % 7] += i
    for k, total in finals.items():
        assert int(await client.get(f"{p}{k}")) == total
    assert max(replies) == max(finals.values())
    assert len(set(replies)) == 500  # every INCRBY saw a different running total
    # One pipeline for the whole burst asked in one turn of the loop.
    assert pipeline.batches == 1
    await pipeline.close()


async def test_an_error_reaches_only_its_caller(client: Any) -> None:
    p = client.test_prefix
    await client.set(f"{p}text", "not a number")
    pipeline = Pipeliner(client)
    good, bad, after = await asyncio.gather(
        pipeline.call(lambda pipe: pipe.incr(f"{p}n")),
        pipeline.call(lambda pipe: pipe.incr(f"{p}text")),
        pipeline.call(lambda pipe: pipe.incr(f"{p}n")),
        return_exceptions=True,
    )
    assert good == 1 and after == 2
    assert isinstance(bad, ResponseError)


async def test_scripts_run_once_per_call(client: Any) -> None:
    p = client.test_prefix
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    pipeline = Pipeliner(client)
    replies = await asyncio.gather(*(pipeline.script(script, [f"{p}s"], [1]) for _ in range(5)))
    assert sorted(replies) == [1, 2, 3, 4, 5]
    assert int(await client.get(f"{p}s")) == 5


async def test_an_unreachable_redis_fails_every_caller() -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    pipeline = Pipeliner(down)
    results = await asyncio.gather(
        *(pipeline.call(lambda pipe: pipe.get("x")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results)
    # Nothing is left over: the next call runs a fresh pipeline (and fails the same way).
    with pytest.raises((RedisConnectionError, OSError)):
        await pipeline.call(lambda pipe: pipe.get("x"))
    await down.aclose()


async def test_commands_and_scripts_share_a_pipeline_on_a_cluster(
    redis_cluster: RedisCluster6,
) -> None:
    """On Redis Cluster the pipeline is split by shard; a command queued on it is not awaited
    (awaiting a cluster pipeline starts it afresh, which would drop what was queued)."""
    client = connect(redis_cluster.url, socket_connect_timeout=2.0, socket_timeout=2.0)
    pipeline = Pipeliner(client)
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    tag = secrets.token_hex(4)
    try:
        replies = await asyncio.gather(
            *(pipeline.call(lambda pipe, i=i: pipe.set(f"{{u{i}}}:{tag}", i)) for i in range(20)),
            *(pipeline.script(script, [f"{{u{i}}}:{tag}:n"], [i]) for i in range(20)),
        )
        assert replies == [True] * 20 + list(range(20))
        assert pipeline.batches == 1
        for i in range(20):
            assert int(await client.get(f"{{u{i}}}:{tag}")) == i
    finally:
        await client.aclose()


async def test_a_script_redis_has_not_loaded_is_loaded_and_each_call_runs_once(
    client: Any,
) -> None:
    """Scripts go as bare EVALSHA (no `SCRIPT EXISTS` before each pipeline): one Redis has not
    seen answers NOSCRIPT, and the calls run again, once each, after loading it."""
    p = client.test_prefix
    # A source of its own: no other test (nor an earlier run) has loaded this sha.
    script = client.register_script(
        f"-- {secrets.token_hex(8)}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
    )
    assert (await client.script_exists(script.sha)) == [False]
    pipeline = Pipeliner(client)
    replies = await asyncio.gather(*(pipeline.script(script, [f"{p}s"], [1]) for _ in range(5)))
    assert sorted(replies) == [1, 2, 3, 4, 5]
    assert int(await client.get(f"{p}s")) == 5
    assert (await client.script_exists(script.sha)) == [True]
    assert pipeline.batches == 1
    await pipeline.close()


async def test_a_batch_redis_never_answers_fails_by_its_deadline() -> None:
    """With `timeout_s` the client needs no socket timeout: a Redis that takes the commands
    and never answers fails the batch's callers by the deadline, with redis-py's TimeoutError
    (what a socket timeout raises), and the next batch does not read the stale replies."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # reads and never answers

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1.0)
    pipeline = Pipeliner(client, timeout_s=0.3)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(pipeline.call(lambda pipe: pipe.execute_command("GET", "x")) for _ in range(3)),
            return_exceptions=True,
        )
        elapsed = asyncio.get_running_loop().time() - started
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert not any(isinstance(r, TimeoutError) for r in results)  # not the builtin one
        assert 0.25 <= elapsed < 2.0
        with pytest.raises(RedisTimeoutError):
            await pipeline.call(lambda pipe: pipe.execute_command("GET", "x"))
    finally:
        await pipeline.close()
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()


async def test_callers_of_a_batch_in_flight_are_cancelled_with_the_pipeliner() -> None:
    """Shutdown cancels the pipeliner's task: the callers whose batch is at Redis (here a
    Redis that never answers) are cancelled with it, never left waiting."""
    held: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1.0)
    pipeline = Pipeliner(client)  # no deadline: only the cancellation ends the batch
    try:
        callers = [
            asyncio.ensure_future(pipeline.call(lambda pipe: pipe.execute_command("GET", "x")))
            for _ in range(3)
        ]
        async with asyncio.timeout(5):
            while not held:  # the batch reached the mute Redis
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task = pipeline._task
        assert task is not None
        task.cancel()
        results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 2)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    finally:
        await pipeline.close()
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
