"""What the benchmark scripts share: percentiles, machine facts, process CPU and memory
from /proc, the event loop, the check that a target is on this machine, and a lean WebSocket
client for load generators."""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import time
from urllib.parse import urlsplit

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


# ---------------------------------------------------------------- a lean WebSocket client


def ws_request(url: str) -> bytes:
    """The HTTP upgrade request of a WebSocket client for `ws://host:port/path?query`."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ws_client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame (RFC 6455 §5.3), masked with a zero key: the payload goes as it is, so
    a load generator spends nothing on masking."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class RawWebSocket(asyncio.Protocol):
    """A minimal WebSocket client on an asyncio Protocol: the upgrade, then each server
    message handed to `on_message(payload, now)` (`now`: time.perf_counter() of the read);
    pings answered. `opened` resolves once upgraded; `closed` holds why it ended."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: str | None = None
        self._upgraded = False
        self._rest = b""

    def on_message(self, payload: bytes, now: float) -> None:
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(ws_client_frame(payload))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._rest + data if self._rest else data
        pos = 0
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._rest = buf
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.connection_lost(ConnectionError(buf[:200].decode("latin-1")))
                return
            self._upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
            pos = end + 4
        n = len(buf)
        while n - pos >= 2:
            length, hdr = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + hdr + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            if opcode <= 2:
                self.on_message(buf[pos + hdr : end], now)
            elif opcode == 9 and self.transport is not None:
                self.transport.write(ws_client_frame(buf[pos + hdr : end], 10))
            elif opcode == 8:
                self.closed = "close " + str(int.from_bytes(buf[pos + hdr : pos + hdr + 2], "big"))
            pos = end
        self._rest = buf[pos:] if pos < n else b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = "eof" if exc is None else f"{type(exc).__name__}: {exc}"
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(self.closed))
