"""What the benchmark scripts share: percentiles, machine facts and the header line, process
CPU and memory from /proc, the event loop and the bounded `main()`, the check that a target is
on this machine, a PostgreSQL to run against (a scratch database or an embedded server), and
a lean raw-asyncio WebSocket client (masked client frames, server frames walked in place)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return float("nan")


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def machine_line(extra: str = "") -> str:
    """The header line every benchmark prints first: cores, CPU, memory, kernel, Python and
    the load average now (1/5/15 min; the machine may be shared with other work)."""
    return (
        f"machine: {os.cpu_count()} cores, {cpu_model()}, {mem_total_gib():.0f} GiB, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
        + (f", {extra}" if extra else "")
        + f"; load average before: {loadavg()} (1/5/15 min)"
    )


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def tree_cpu_s(root: int) -> float:
    """utime + stime of a process and all its descendants (e.g. PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in members:
                members.add(child)
                frontier.append(child)
    return sum(x for x in map(process_cpu_s, members) if x == x)


def children_of(pid: int) -> list[int]:
    """The direct children of a process (e.g. the workers of `serve --workers N`)."""
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def use_uvloop() -> str:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:
        return "asyncio"


# Linux: bind() to an address without taking a port; connect() picks one for the 4-tuple.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connect_from(
    protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, source: str = ""
) -> asyncio.BaseTransport:
    """A TCP connection to host:port (numeric) from the local address `source` (any when
    empty). A client that binds each socket to a source address with port 0 costs the kernel
    a search for a port free for every destination, longer with every connection it holds
    (tens of thousands make it most of a load generator's CPU): IP_BIND_ADDRESS_NO_PORT
    leaves the port to connect(), which only needs one free for this destination."""
    loop = asyncio.get_running_loop()
    if not source:
        transport, _ = await loop.create_connection(protocol_factory, host, port)
        return transport
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if sys.platform == "linux":
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
        transport, _ = await loop.create_connection(protocol_factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return transport


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (child processes inherit it); returns the new
    soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_main(amain: Coroutine[Any, Any, int], script: str, max_seconds: float | None) -> int:
    """Run a benchmark's `amain(...)` on uvloop (when installed), bounded by `max_seconds`
    (None: unbounded); 2 when it gave up."""
    use_uvloop()

    async def bounded() -> int:
        async with asyncio.timeout(max_seconds):
            return await amain

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        print(f"{script}: gave up after {max_seconds:.0f}s", file=sys.stderr)
        return 2


def run_generator(
    body: Callable[[Any, dict[str, Any]], Coroutine[Any, Any, None]],
    pipe: Any,
    cfg: dict[str, Any],
) -> None:
    """A load-generator child process: Ctrl-C is the parent's to handle, `body(pipe, cfg)`
    runs on uvloop (when installed), and a failure reaches the parent as ("failed", what)
    instead of a child dying silently."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_uvloop()
    try:
        asyncio.run(body(pipe, cfg))
    except Exception as exc:
        with contextlib.suppress(Exception):
            pipe.send(("failed", f"{type(exc).__name__}: {exc}"))


def recv_from(pipe: Any, timeout: float, script: str) -> Any:
    """A load generator's next message (blocking: call it in a thread); SystemExit when it
    does not answer within `timeout` or reports a failure."""
    if not pipe.poll(timeout):
        raise SystemExit(f"{script}: a load generator did not answer in time")
    msg = pipe.recv()
    if msg[0] == "failed":
        raise SystemExit(f"{script}: a load generator failed: {msg[1]}")
    return msg


def require_local(url: str, what: str, script: str) -> None:
    if url.startswith("redis+cluster://"):
        from livecart.redisconn import cluster_nodes

        hosts = [h for h, _ in cluster_nodes(url)[0]]
    else:
        hosts = [urlsplit(url).hostname or ""]
    for host in hosts:
        if host not in LOCAL_HOSTS:
            raise SystemExit(f"{script}: {what} must be on 127.0.0.1, got {host!r}")


def redis_commands(url: str) -> int:
    """Commands processed so far by Redis (summed over the masters of a Redis Cluster);
    -1 when it cannot be read. A shared single Redis also counts other clients' commands."""
    try:
        if url.startswith("redis+cluster://"):
            from redis.cluster import ClusterNode, RedisCluster

            from livecart.redisconn import cluster_nodes

            nodes, user, password = cluster_nodes(url)
            rc = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                username=user,
                password=password,
            )
            try:
                infos = rc.info("stats", target_nodes=RedisCluster.PRIMARIES)
                return sum(int(i["total_commands_processed"]) for i in infos.values())
            finally:
                rc.close()
        import redis

        r = redis.Redis.from_url(url)
        try:
            return int(r.info("stats")["total_commands_processed"])
        finally:
            r.close()
    except Exception:
        return -1


async def pg_writes(database_url: str) -> tuple[int, int]:
    """(transactions committed, rows inserted + updated + deleted) so far in the database
    (pg_stat_database, which PostgreSQL updates about once a second); (-1, -1) on failure."""
    try:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows"
                " FROM pg_stat_database WHERE datname = current_database()"
            )
        finally:
            await conn.close()
        return int(row["xact_commit"]), int(row["rows"])
    except Exception:
        return -1, -1


# ---------------------------------------------------------------- PostgreSQL to run against


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Database:
    url: str  # what the run connects to
    label: str  # for the header: where it is and what becomes of it
    pid: int | None = None  # the embedded server's postmaster (to count its CPU), else None


@contextlib.asynccontextmanager
async def database(url: str, *, scratch: bool = True) -> AsyncIterator[Database]:
    """The PostgreSQL a run uses. Given `url`: with `scratch`, a fresh database created on
    that server for this run and dropped (forcibly) afterwards (if it cannot be created, `url`
    itself); else `url` as it is. Without `url`: an embedded PostgreSQL in a temporary data
    directory, removed afterwards."""
    import asyncpg

    if url:
        if not scratch:
            yield Database(url, url)
            return
        name = "livecart_bench_" + secrets.token_hex(4)
        try:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            yield Database(url, f"{url} (no scratch database: {exc})")
            return
        try:
            yield Database(
                with_database(url, name), f"{url} (scratch database {name}, dropped after)"
            )
        finally:
            with contextlib.suppress(Exception):
                conn = await asyncpg.connect(url)
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    await conn.close()
        return
    from livecart.runtime.db import EmbeddedPostgres

    data_dir = tempfile.mkdtemp(prefix="livecart-bench-pg-")
    embedded = EmbeddedPostgres(data_dir)
    try:
        embedded_url = await embedded.astart()
        label = f"embedded PostgreSQL in {data_dir} (temporary)"
        yield Database(embedded_url, label, postmaster_pid(embedded.path))
    finally:
        await embedded.astop()
        shutil.rmtree(data_dir, ignore_errors=True)


# ---------------------------------------------------------------- a lean WebSocket client


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One final masked client frame (RFC 6455 §5.2-5.3); text unless `opcode` says else."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def upgrade_request(host: str, port: int, path: str) -> bytes:
    """The HTTP/1.1 request that opens a WebSocket on `path` (RFC 6455 §4.1)."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class RawWebSocket(asyncio.Protocol):
    """A WebSocket client that costs a load generator almost nothing per frame: it writes the
    upgrade request, then walks the server's frames in place, answers pings, echoes a close,
    and hands each message to `on_payload(buf, start, end, now)` without copying or decoding
    it (fragments are joined first; `now` is `clock()` when the bytes were read). Subclasses
    override the `on_*` hooks; `send` writes a masked text frame."""

    clock = staticmethod(time.perf_counter)

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.rest = b""
        self.fragments: list[bytes] = []

    # hooks

    def on_open(self) -> None:
        """The server accepted the upgrade."""

    def on_payload(self, buf: bytes | bytearray, start: int, end: int, now: Any) -> None:
        """One text or binary message: buf[start:end]."""

    def on_close(self, reason: str) -> None:
        """The connection ends: the server's close code, `http <status line>` when the
        upgrade was refused, `eof`, or the transport's error. A close frame is followed by
        the end of the transport, so this may come twice: the first reason is the one."""

    # the transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)  # type: ignore[attr-defined]

    def send(self, payload: bytes, opcode: int = 1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(payload, opcode))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        now = self.clock()
        buf: bytes | bytearray = self.rest + data if self.rest else data
        pos = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.rest = bytes(buf)
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status:
                self.rest = b""
                self.on_close("http " + status.decode("latin-1"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.on_open()
            pos = end + 4
        n = len(buf)
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            end = pos + hdr + length
            if end > n:
                break
            first = buf[pos]
            opcode = first & 0x0F
            if opcode <= 2:
                if first & 0x80 and not self.fragments:
                    self.on_payload(buf, pos + hdr, end, now)
                else:  # a fragmented message (RFC 6455 §5.4)
                    self.fragments.append(bytes(buf[pos + hdr : end]))
                    if first & 0x80:
                        whole = b"".join(self.fragments)
                        self.fragments.clear()
                        self.on_payload(whole, 0, len(whole), now)
            elif opcode == 9:  # ping
                self.send(bytes(buf[pos + hdr : end]), 10)
            elif opcode == 8:  # close
                code = int.from_bytes(buf[pos + hdr : pos + hdr + 2], "big") if length >= 2 else 0
                self.send(bytes(buf[pos + hdr : pos + hdr + 2]), 8)
                self.rest = b""
                self.on_close(str(code))
                assert self.transport is not None
                self.transport.close()
                return
            pos = end
        self.rest = bytes(buf[pos:]) if pos < n else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_close("eof" if exc is None else type(exc).__name__)


class Viewer(RawWebSocket):
    """One WebSocket to a livecart node, its server frames parsed as JSON arrays: futures for
    the answer to a ref (with the time it was read) and for the first message of a type."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.waiting: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.kinds: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.closed: str | None = None

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message).encode())

    def answer(self, ref: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        """Resolves to (clock() when read, the message) for the next message with `ref`;
        fails with ConnectionError once the connection is closed (also if it already is: the
        server may close in the same read as its `101`)."""
        fut: asyncio.Future[tuple[float, dict[str, Any]]]
        fut = self.waiting[ref] = asyncio.get_running_loop().create_future()
        if self.closed is not None:
            fut.set_exception(ConnectionError(self.closed))
        return fut

    def first(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        """Resolves to the first message of type `kind` (even one already read)."""
        fut = self.kinds.get(kind)
        if fut is None:
            fut = self.kinds[kind] = asyncio.get_running_loop().create_future()
        return fut

    def on_open(self) -> None:
        self.opened.set_result(None)

    def on_payload(self, buf: bytes | bytearray, start: int, end: int, now: Any) -> None:
        for m in json.loads(buf[start:end]):
            ref = m.get("ref")
            if ref is not None and ref in self.waiting:
                fut = self.waiting.pop(ref)
                if not fut.done():
                    fut.set_result((now, m))
            kind = self.first(m.get("type", ""))
            if not kind.done():
                kind.set_result(m)

    def on_close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        for fut in [self.opened, *self.waiting.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError(self.closed))


async def connect(host: str, port: int, path: str, timeout: float = 30) -> Viewer:
    """A `Viewer` on ws://host:port/path, once the server accepted the upgrade."""
    loop = asyncio.get_running_loop()
    _, viewer = await loop.create_connection(
        lambda: Viewer(upgrade_request(host, port, path)), host, port
    )
    await asyncio.wait_for(viewer.opened, timeout)
    return viewer
