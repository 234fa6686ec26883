"""What the benchmark scripts share: percentiles, machine facts, process CPU and memory
from /proc, the event loop, and the check that a target is on this machine."""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import socket
import sys
from collections.abc import Callable
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
