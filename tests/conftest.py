"""Shared fixtures: a real PostgreSQL (DATABASE_URL's server, else the embedded one), a fresh
database per test run, and Redis when REDIS_URL (or the local default) answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from livecart.runtime.db import EmbeddedPostgres, connect_pool, migrate

from .redis_cluster import RedisCluster6

T = TypeVar("T")


class Clock:
    """A clock a test moves by hand (seconds since the epoch, starting now)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop in a worker thread: safe whatever loop this thread
    is running (pytest-asyncio's, or Playwright's in the browser tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    tmp = tempfile.mkdtemp(prefix="livecart-test-pg-")
    server = EmbeddedPostgres(tmp)
    uri = server.start()
    try:
        yield uri
    finally:
        server.stop()


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str, *, migrated: bool = True) -> Iterator[str]:
    """A fresh database on `server_url`'s server (migrated unless told otherwise), dropped
    afterwards (forcibly: connections still open do not keep it)."""
    name = prefix + secrets.token_hex(4)
    url = _with_database(server_url, name)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_in_thread(admin(f'CREATE DATABASE "{name}"'))
    try:
        if migrated:
            run_in_thread(migrate(url))
        yield url
    finally:
        run_in_thread(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    with scratch_database(pg_server_url, "livecart_test_") as url:
        yield url


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(database_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


def redis_url_or_skip() -> str:
    """REDIS_URL (default redis://127.0.0.1:6379/0) if it answers; in CI a missing Redis fails."""
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but {url} does not answer: {exc}")
        pytest.skip(f"Redis not reachable at {url} ({exc}); set REDIS_URL to run this test")
    return url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster6]:
    """A real Redis Cluster (3 masters, 3 replicas) from the machine's redis-server, for the
    whole session; in CI a missing redis-server fails."""
    try:
        cluster = RedisCluster6().__enter__()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a Redis Cluster is required in CI but could not start: {exc}")
        pytest.skip(f"no Redis Cluster ({exc})")
    try:
        yield cluster
    finally:
        cluster.stop()
