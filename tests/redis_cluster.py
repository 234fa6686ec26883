"""A real Redis Cluster for tests and benchmarks, started from the machine's `redis-server`:
3 masters and 3 replicas on consecutive ports (each port + 10,000, its cluster bus port,
stays below 65,536), one temporary directory per instance, joined by
`redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`.

    with RedisCluster6() as c:
        c.url            # redis+cluster://127.0.0.1:P,127.0.0.1:P+1,…
        c.kill(port)     # SIGKILL one instance (a failover test)

For a benchmark: `python -m tests.redis_cluster` starts one, prints its URL and keeps it
until interrupted.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int) -> list[int]:
    for _ in range(200):
        base = random.randrange(20000, 55536 - 10000 - n)
        ports = list(range(base, base + n))
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout


class RedisCluster6:
    def __init__(self, *, node_timeout_ms: int = 1000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.root = Path(tempfile.mkdtemp(prefix="livecart-redis-cluster-"))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def __enter__(self) -> RedisCluster6:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, port: int) -> None:
        d = self.root / str(port)
        d.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(d),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--appendonly", "no",
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                "--save", "",
                "--daemonize", "no",
                "--logfile", str(d / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed for a Redis Cluster")
        self.ports = _pick_ports(6)
        for p in self.ports:
            self._spawn(p)
        deadline = time.monotonic() + 15
        for p in self.ports:
            while _cli(p, "PING").strip() != "PONG":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {p} did not start")
                time.sleep(0.05)
        out = subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0, *, replicas: bool = True) -> None:
        """Until every live instance reports cluster_state:ok, every slot has a master and
        (with `replicas`) every replica's link to its master is up."""
        deadline = time.monotonic() + timeout
        while True:
            live = [p for p in self.ports if p in self.procs]
            states = [_cli(p, "CLUSTER", "INFO") for p in live]
            ok = all("cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states)
            if ok and replicas:
                for p in live:
                    info = _cli(p, "INFO", "replication")
                    if "role:slave" in info and "master_link_status:up" not in info:
                        ok = False
            if ok:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout} s: {states}")
            time.sleep(0.1)

    def master_of(self, key: str, timeout: float = 20.0) -> int:
        """The port of the master that owns `key`'s slot now (waits while none does, as
        during a failover)."""
        deadline = time.monotonic() + timeout
        while True:
            port = self._master_of(key)
            if port is not None:
                return port
            if time.monotonic() > deadline:
                raise RuntimeError(f"no master owns the slot of {key}")
            time.sleep(0.1)

    def _master_of(self, key: str) -> int | None:
        live = [p for p in self.ports if p in self.procs]
        slot = int(_cli(live[0], "CLUSTER", "KEYSLOT", key).strip())
        for p in live:
            for line in _cli(p, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for r in parts[8:]:
                    lo, _, hi = r.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                        if port in self.procs:
                            return port
        return None

    def shard_subscribers(self, channel: str) -> dict[int, int]:
        """Subscribers of a sharded channel per master that has any."""
        out = {}
        for p in self.masters():
            n = int(_cli(p, "PUBSUB", "SHARDNUMSUB", channel).split()[1])
            if n:
                out[p] = n
        return out

    def masters(self) -> list[int]:
        return [
            p
            for p in self.ports
            if p in self.procs and "role:master" in _cli(p, "INFO", "replication")
        ]

    def restart(self, port: int) -> None:
        """Start a killed instance again: it rejoins from its nodes.conf (as a replica when
        its slots failed over meanwhile)."""
        self._spawn(port)
        deadline = time.monotonic() + 15
        while _cli(port, "PING").strip() != "PONG":
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not restart")
            time.sleep(0.05)
        self.wait_ok()

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        self.procs.clear()
        if os.environ.get("LIVECART_KEEP_CLUSTER_DIRS") != "1":
            shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    with RedisCluster6() as cluster:
        print(cluster.url, flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
