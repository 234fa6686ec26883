#!/usr/bin/env python3
"""Chat fan-out benchmark: one room, N viewers, a publisher chatting into it.

Every system runs in its own server process on 127.0.0.1 (started here, one process each) and
gets the same workload: N viewers (default 1,000, 5,000 and 10,000) held by `--generators`
load-generator processes (each N/generators connections, one WebSocket each, joined to the
room), and `--publishers` publisher connections in this process that send chat messages at a
fixed total rate (`--rate`, default 10 msg/s, for `--seconds`), then, in "max" mode, at a
rate doubled every `--step-seconds` until a step is no longer sustained (delivered + skipped <
95 % of published x viewers, or p99 > 1 s), with one step between the last good and the
first bad rate to narrow it down.

Systems:
  livecart     `python -m livecart serve` (ours), chat rate limits, duplicate window and the
               flood detector raised for the publishers through LIVECART_* env; the publishers
               are creators who do not own the room, so their chat takes the full moderation
               path; the room log is archived to PostgreSQL (embedded unless --database-url)
  websockets   bare `websockets` server, `broadcast()` of one message per frame
  broadcaster  Starlette + encode/broadcaster (memory backend), the canonical chat example,
               under uvicorn
  socketio     python-socketio rooms (ASGI) under uvicorn
  (the baselines are in scripts/fanout_baselines.py; uvloop everywhere, no compression)

What is counted: chat messages, not frames (a livecart frame may carry several): a viewer
counts `"type":"chat"` in every frame's raw bytes. `chat_sampled {skipped: K}` messages (huge
rooms) are added up separately; delivered + skipped = published x viewers is the completeness
check. Latency: the publisher puts `t=<time.time_ns()>` in each message's text; one viewer in
`--sample-every` (default 50) finds those stamps with a regex on the raw frame and takes
receive time minus stamp (same machine, same clock). Delivered msg/s = chat messages
received / (last receipt - first publish). Server CPU = utime + stime of the server process(es)
over the phase (/proc); livecart's PostgreSQL CPU is printed apart. RSS per connection = (RSS
with N idle joined viewers - RSS before they connect) / N. Generator CPU = viewer processes +
this (publishing) process.

The viewers use a minimal WebSocket client on asyncio Protocols (`--client raw`: handshake,
unmasked server frames walked in place, pings answered), which costs a fraction of the CPU of
the `websockets` client (`--client websockets`, also available) on this 2-core machine where
the load generator competes with the server.

    python scripts/bench_fanout.py [--viewers 1000,5000,10000] [--rate 10] [--seconds 8]
        [--mode fixed,max] [--systems livecart,websockets,broadcaster,socketio]
        [--generators 2] [--publishers 4] [--client raw|websockets|websockets-deflate] [--quick]
        [--database-url URL] [--redis-url URL --nodes 2] [--redis-url URL --workers 1,2]
        [--delays 12]

`--redis-url` may name a Redis Cluster (`redis+cluster://127.0.0.1:P,…`; `python -m
tests.redis_cluster` starts one from the machine's redis-server and prints its URL).
`--workers 1,2` adds livecart rows served by one `serve --workers N` (sharing Redis) per
count, in the same run as the others.

Video time (`--delays S`, livecart only): livecart runs twice in the same invocation, first
with no delay reported (the baseline), then with every viewer reporting a `delay` spread
evenly over [0, S] seconds (SPEC §12: each gets the room's frames that much later, shared per
250 ms bucket). The delayed run waits S seconds after the joins for the delays in force to
climb, its drains wait S seconds longer, and a viewer's receipt time counts minus its own
delay (latency and the delivered rate measure the server, not the delay asked for). The
delayed run's delivered rate is printed against the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import multiprocessing as mp
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    Database,
    RawWebSocket,
    children_of,
    connect_from,
    database,
    loadavg,
    machine_line,
    percentile,
    pg_writes,
    process_cpu_s,
    raise_nofile,
    recv_from,
    redis_commands,
    require_local,
    rss_kib,
    run_generator,
    run_main,
    self_cpu_s,
    tree_cpu_s,
    upgrade_request,
    use_uvloop,
)
from benchlib import postmaster_pid as postmaster_pid  # bench_join_storm imports it from here
from fanout_baselines import MODULES, PACKAGES, READY
from livecart.runtime.process import NodeProcess

SYSTEMS = ("livecart", "websockets", "broadcaster", "socketio")
LABELS = {
    "livecart": "livecart (ours)",
    "websockets": "bare websockets broadcast()",
    "broadcaster": "Starlette + broadcaster",
    "socketio": "python-socketio rooms",
}
TARGET_VS_WEBSOCKETS = 2.0
TARGET_VS_OTHERS = 5.0
TARGET_P99_MS = 250.0
TARGET_RSS_KIB = 20.0
TARGET_CONNECTIONS = 10_000
SUSTAINED_FRACTION = 0.95
SUSTAINED_P99_MS = 1000.0
MAX_RATE = 20_000.0  # publisher ceiling in max mode, msg/s
CHAT = b'"type":"chat"'
SAMPLED = b'"chat_sampled"'
SKIPPED = re.compile(rb'"skipped":(\d+)')
STAMP = re.compile(rb"t=(\d{16,20})")


# ---------------------------------------------------------------- small helpers


def fmt(x: float, spec: str = ",.0f") -> str:
    return "–" if x != x else format(x, spec)


# ---------------------------------------------------------------- load generator (child)


class Stats:
    """Counters of one generator process, shared by all its viewers."""

    def __init__(self, groups: int) -> None:
        self.chat = 0
        self.skipped = 0
        self.last_ns = 0
        self.lat: list[list[int]] = [[] for _ in range(groups)]
        self.closed = 0
        self.codes: dict[str, int] = {}
        self.stopping = False


class Viewer:
    """What a viewer does with each server frame; the transport is in a subclass."""

    is_socketio = False

    def __init__(self, stats: Stats, group: int, sampled: bool, join: bytes) -> None:
        self.delay_ns = 0  # video time: this viewer's reported delay (its receipts count minus it)
        self.delay_frame = b""
        self.stats = stats
        self.group = group
        self.sampled = sampled
        self.join = join
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.joined: asyncio.Future[None] = loop.create_future()
        self.is_joined = False
        self.gone = False
        self.early = b""  # what came before `joined`, to explain a join that never completes

    def send(self, payload: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def on_payload(self, buf: bytes | bytearray, start: int, end: int, now: int) -> None:
        st = self.stats
        n = buf.count(CHAT, start, end)
        if n:
            st.chat += n
            now -= self.delay_ns
            st.last_ns = max(st.last_ns, now)
            if self.sampled:
                lat = st.lat[self.group]
                for m in STAMP.finditer(buf, start, end):
                    lat.append(now - int(m.group(1)))
        elif self.is_socketio and end - start <= 512:
            # engine.io / socket.io control packets: open, namespace connect, ping.
            head = bytes(buf[start : start + 2])
            if head == b"2" and end - start == 1:
                self.send(b"3")
            elif head == b"0{":
                self.send(b"40")
            elif head == b"40":
                self.send(self.join)
        if buf.find(SAMPLED, start, end) >= 0:
            st.skipped += sum(int(k) for k in SKIPPED.findall(buf, start, end))
        if not self.is_joined:
            if buf.find(b"joined", start, end) >= 0:
                self.is_joined = True
                if self.delay_frame:
                    self.send(self.delay_frame)
                if not self.joined.done():
                    self.joined.set_result(None)
            elif len(self.early) < 2000:
                self.early += bytes(buf[start:end])[:500] + b" | "

    def lost(self, code: str) -> None:
        if self.gone:
            return
        self.gone = True
        if not self.stats.stopping:
            self.stats.closed += 1
            self.stats.codes[code] = self.stats.codes.get(code, 0) + 1
        for fut in (self.opened, self.joined):
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed ({code})"))


class RawViewer(Viewer, RawWebSocket):
    """The viewer on benchlib's lean client: handshake, then server frames walked in place."""

    clock = staticmethod(time.time_ns)
    send = RawWebSocket.send
    close = RawWebSocket.close

    def __init__(
        self, stats: Stats, group: int, sampled: bool, join: bytes, request: bytes
    ) -> None:
        Viewer.__init__(self, stats, group, sampled, join)
        RawWebSocket.__init__(self, request)

    def on_open(self) -> None:
        self.opened.set_result(None)
        if not self.is_socketio:
            self.send(self.join)

    def on_close(self, reason: str) -> None:
        self.lost(reason)


class RawSocketIOViewer(RawViewer):
    is_socketio = True


class LibViewer(Viewer):
    """The same viewer on the `websockets` library's asyncio client."""

    def __init__(
        self, stats: Stats, group: int, sampled: bool, join: bytes, deflate: bool = False
    ) -> None:
        super().__init__(stats, group, sampled, join)
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None
        self.deflate = deflate  # offer permessage-deflate (the server may decline it)

    def send(self, payload: bytes) -> None:
        if self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.send(payload.decode()))

    async def run(self, url: str) -> None:
        from websockets.asyncio.client import connect

        try:
            self.ws = await connect(
                url,
                compression="deflate" if self.deflate else None,
                max_queue=None,
                max_size=None,
                ping_interval=None,  # the server's pings are still answered
                open_timeout=120,
                close_timeout=1,
                proxy=None,
            )
        except Exception as exc:
            self.lost(type(exc).__name__)
            return
        self.opened.set_result(None)
        if not self.is_socketio:
            self.send(self.join)
        self.task = asyncio.current_task()
        try:
            while True:
                data = await self.ws.recv(decode=False)
                self.on_payload(data, 0, len(data), time.time_ns())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            self.lost(str(code) if code is not None else type(exc).__name__)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()


class LibSocketIOViewer(LibViewer):
    is_socketio = True


def generator_main(pipe: Any, cfg: dict[str, Any]) -> None:
    """Child process: hold this generator's viewers and answer the parent's commands."""
    raise_nofile()
    run_generator(_generator, pipe, cfg)


def _paths(cfg: dict[str, Any]) -> list[str]:
    if cfg["system"] != "livecart":
        return [cfg["path"]] * len(cfg["viewers"])
    import jwt

    now = int(time.time())
    return [
        "/ws?token="
        + jwt.encode(
            {"sub": user, "name": user, "role": "viewer", "iat": now, "exp": now + 86400},
            cfg["secret"],
            algorithm="HS256",
        )
        for user in cfg["users"]
    ]


def video_time(v: Viewer, cfg: dict[str, Any], i: int) -> None:
    """`--delays`: the viewer reports its delay once joined, and counts receipts minus it."""
    ms = cfg.get("delays_ms", [0] * (i + 1))[i]
    if ms:
        v.delay_ns = ms * 1_000_000
        v.delay_frame = (
            b'{"type":"delay","session":"' + cfg["session"].encode() + b'","ms":%d}' % ms
        )


async def _generator(pipe: Any, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats(cfg["groups"])
    raw = cfg["client"] == "raw"
    socketio = cfg["system"] == "socketio"
    join: bytes = cfg["join"]
    viewers: list[Viewer] = []
    tasks: list[asyncio.Task[None]] = []  # the library client's reader tasks
    paths = _paths(cfg)
    last_join = [0.0]  # when the latest join completed
    pipe.send(("up", os.getpid()))

    async def connect(i: int) -> None:
        host, port, group, sampled = cfg["viewers"][i]
        if raw:
            request = upgrade_request(host, port, paths[i])
            cls = RawSocketIOViewer if socketio else RawViewer
            v: Viewer = cls(stats, group, sampled, join, request)
            video_time(v, cfg, i)
            viewers.append(v)
            # A source address per generator (127.0.0.x) gives each its own ephemeral
            # ports: one address tops out near 28,000 connections to one server port.
            await connect_from(lambda: v, host, port, cfg.get("source", ""))  # type: ignore[arg-type,return-value]
        else:
            lcls = LibSocketIOViewer if socketio else LibViewer
            lv = lcls(stats, group, sampled, join, cfg["client"] == "websockets-deflate")
            v = lv
            video_time(v, cfg, i)
            viewers.append(v)
            tasks.append(loop.create_task(lv.run(f"ws://{host}:{port}{paths[i]}")))
        try:
            try:
                await asyncio.wait_for(v.opened, 120)
            except TimeoutError:
                raise TimeoutError("no WebSocket handshake within 120 s") from None
            # Still the worker's turn: at most `concurrency` joins in flight per generator,
            # so the run measures the room's steady state, not a reconnect storm.
            try:
                await asyncio.wait_for(v.joined, cfg["join_timeout"])
            except TimeoutError:
                early = v.early.decode("utf-8", "replace")
                raise TimeoutError(
                    f"no `joined` within {cfg['join_timeout']:g} s; received before: "
                    f"{early[:300]} … {early[-300:]}"
                ) from None
        except BaseException:
            # A viewer that did not join is dropped, so that it counts nowhere.
            v.gone = True
            viewers.remove(v)
            with contextlib.suppress(Exception):
                v.close()
            raise
        last_join[0] = time.monotonic()

    async def worker(todo: Iterator[int], errors: list[BaseException]) -> None:
        for i in todo:
            try:
                await connect(i)
            except Exception as exc:
                errors.append(exc)

    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        cmd = msg[0]
        if cmd == "connect":
            started = time.monotonic()
            last_join[0] = started
            # `concurrency` connections in flight: as many workers, each taking the next viewer
            # (no coroutine per viewer waiting at a gate).
            todo = iter(range(len(cfg["viewers"])))
            errors: list[BaseException] = []
            await asyncio.gather(*(worker(todo, errors) for _ in range(cfg["concurrency"])))
            pipe.send(
                (
                    "ready",
                    {
                        "ok": len(cfg["viewers"]) - len(errors),
                        "failed": len(errors),
                        "error": f"{type(errors[0]).__name__}: {errors[0]}" if errors else "",
                        "seconds": time.monotonic() - started,
                        "ok_seconds": last_join[0] - started,
                    },
                )
            )
        elif cmd == "count":
            pipe.send(("count", stats.chat + stats.skipped))
        elif cmd == "take":
            lat, stats.lat = stats.lat, [[] for _ in range(cfg["groups"])]
            pipe.send(
                (
                    "take",
                    {
                        "chat": stats.chat,
                        "skipped": stats.skipped,
                        "last_ns": stats.last_ns,
                        "lat": lat,
                        "closed": stats.closed,
                        "codes": dict(stats.codes),
                        "cpu": self_cpu_s(),
                    },
                )
            )
        elif cmd == "stop":
            stats.stopping = True
            for v in viewers:
                with contextlib.suppress(Exception):
                    v.close()
            await asyncio.sleep(0.2)
            pipe.send(("stopped", None))
            return


class Generators:
    """The load-generator processes of one system run, driven over pipes."""

    def __init__(self, cfgs: list[dict[str, Any]]) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        for cfg in cfgs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=generator_main, args=(child, cfg), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)

    async def wait(self, timeout: float = 120) -> list[Any]:
        return list(
            await asyncio.gather(
                *(asyncio.to_thread(recv_from, p, timeout, "bench_fanout") for p in self.pipes)
            )
        )

    async def ask(self, *cmd: Any, timeout: float = 60) -> list[Any]:
        for p in self.pipes:
            p.send(cmd)
        return [m[1] for m in await self.wait(timeout)]

    async def close(self) -> None:
        with contextlib.suppress(BaseException):
            await self.ask("stop", timeout=15)
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.kill()


# ---------------------------------------------------------------- servers


class BaselineProcess(NodeProcess):
    """`python scripts/fanout_baselines.py SYSTEM` in a child process."""

    ready_line = READY

    def __init__(self, system: str) -> None:
        super().__init__("")
        self.system = system

    def command(self, port: int) -> tuple[list[str], dict[str, str]]:
        script = Path(__file__).resolve().parent / "fanout_baselines.py"
        return [sys.executable, str(script), self.system, "--port", str(port)], dict(os.environ)

    def start(self, port: int = 0, timeout: float = 30) -> BaselineProcess:
        try:
            super().start(port, timeout)
        except RuntimeError as exc:
            raise SystemExit(f"bench_fanout: the {self.system} baseline did not start: {exc}") from None
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def livecart_node(
    database_url: str,
    secret: str,
    redis_url: str = "",
    extra_env: dict[str, str] | None = None,
    workers: int = 0,
) -> Any:
    env = {
        "LIVECART_JWT_SECRET": secret,
        # The publishers send far more than a person may: lift the per-user chat limits and
        # the per-connection flood detector (viewers only send their `join`).
        "LIVECART_CHAT_RATE_PER_S": "100000",
        "LIVECART_CHAT_BURST": "100000",
        "LIVECART_FLOOD_FRAMES": "100000",
        "LIVECART_FLOOD_WINDOW_S": "1",
        "LIVECART_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    return NodeProcess(
        tempfile.mkdtemp(prefix="livecart-bench-fanout-"),
        database_url=database_url,
        env=env,
        extra_args=(["--redis-url", redis_url] if redis_url else [])
        + (["--workers", str(workers)] if workers > 1 else []),
    )


@dataclass
class Target:
    """What the viewers and publishers of one system connect to."""

    system: str
    label: str
    ports: list[int]  # one per server process (node)
    pids: list[int]
    session: str = "room"
    secret: str = ""
    run: str = ""


async def livecart_room(base_url: str, secret: str, run: str) -> str:
    """A creator with a product in the showcase and a live session (tests/e2e/harness.py)."""
    import httpx

    from livecart import auth

    h = {"authorization": f"Bearer {auth.issue(secret, f'fo-creator-{run}', 'creator')}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        r = await http.post(
            "/api/products",
            headers=h,
            json={"title": "Ceramic mug", "price_cents": 1500, "stock": 100, "category": "home"},
        )
        r.raise_for_status()
        product = r.json()["id"]
        r = await http.post(
            "/api/sessions", headers=h, json={"title": "Fan-out bench", "category": "home"}
        )
        r.raise_for_status()
        session: str = r.json()["id"]
        r = await http.post(
            f"/api/sessions/{session}/products", headers=h, json={"product_id": product}
        )
        r.raise_for_status()
        (await http.post(f"/api/sessions/{session}/start", headers=h)).raise_for_status()
    return session


# ---------------------------------------------------------------- publisher (this process)


class Publisher:
    """`--publishers` WebSocket connections on the first server that send chat at a rate."""

    def __init__(self, target: Target, count: int) -> None:
        self.t = target
        self.count = count
        self.conns: list[Any] = []
        self.users = [f"fo-pub-{target.run}-{k}" for k in range(count)]
        self.readers: list[asyncio.Task[None]] = []
        self.sent = 0
        self.acks = 0
        self.errors: dict[str, int] = {}

    def url(self, k: int) -> str:
        port = self.t.ports[0]
        if self.t.system == "livecart":
            from livecart import auth

            token = auth.issue(self.t.secret, self.users[k], "creator")
            return f"ws://127.0.0.1:{port}/ws?token={token}"
        if self.t.system == "socketio":
            return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://127.0.0.1:{port}/ws?publisher=1"

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        for k in range(self.count):
            ws = await connect(
                self.url(k),
                compression=None,
                max_queue=None,
                max_size=None,
                ping_interval=None,
                open_timeout=60,
                close_timeout=1,
                proxy=None,
            )
            if self.t.system == "socketio":
                first = await asyncio.wait_for(ws.recv(), 10)
                assert first.startswith("0{"), first
                await ws.send("40")
                ack = await asyncio.wait_for(ws.recv(), 10)
                assert ack.startswith("40"), ack
            self.conns.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: Any) -> None:
        import msgspec

        with contextlib.suppress(Exception):
            async for raw in ws:
                if self.t.system == "socketio":
                    if raw == "2":
                        await ws.send("3")
                    continue
                if isinstance(raw, str):
                    raw = raw.encode()
                self.acks += raw.count(b'"type":"ack"')
                if b'"type":"error"' in raw or b'"type":"held"' in raw:
                    for m in msgspec.json.decode(raw):
                        if m.get("type") in ("error", "held"):
                            code = str(m.get("code", m.get("type")))
                            self.errors[code] = self.errors.get(code, 0) + 1

    def frame(self, k: int, i: int) -> str:
        import msgspec

        text = f"t={time.time_ns()} n={i} fan-out bench {self.t.run}"
        body: dict[str, Any] = {
            "type": "chat",
            "session": self.t.session,
            "text": text,
            "ref": f"p{i}",
        }
        if self.t.system != "livecart":
            body["user"] = self.users[k]
        encoded = msgspec.json.encode(body).decode()
        return f'42["chat",{encoded}]' if self.t.system == "socketio" else encoded

    async def run(self, rate: float, seconds: float) -> tuple[int, int, float]:
        """Send `rate` msg/s for `seconds`, round robin over the connections; returns (sent,
        first send time_ns, span in seconds)."""
        loop = asyncio.get_running_loop()
        total = max(1, round(rate * seconds))
        first_ns = time.time_ns()
        t0 = loop.time()
        i = 0
        while i < total:
            due = min(total, int((loop.time() - t0) * rate) + 1)
            while i < due:
                k = self.sent % self.count
                await self.conns[k].send(self.frame(k, self.sent))
                self.sent += 1
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        return total, first_ns, loop.time() - t0

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        for ws in self.conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)


# ---------------------------------------------------------------- one run


@dataclass
class Phase:
    rate: float  # asked, msg/s
    seconds: float  # publishing span
    published: int = 0  # accepted by the server (livecart: acknowledged)
    sent: int = 0
    delivered: int = 0
    skipped: int = 0
    expected: int = 0
    rate_delivered: float = float("nan")
    lat_ms: list[list[float]] = field(default_factory=list)  # per node
    server_cpu_s: float = 0.0
    pg_cpu_s: float = float("nan")
    gen_cpu_s: float = 0.0
    pub_cpu_s: float = 0.0
    wall_s: float = 0.0
    drained: bool = True
    closed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    redis_cmds: int = -1  # commands Redis processed during the phase (-1: no Redis)
    pg_commits: int = -1  # PostgreSQL transactions committed during the phase
    pg_rows: int = -1  # PostgreSQL rows inserted, updated or deleted during the phase

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "published": self.published,
            "delivered": self.delivered,
            "skipped": self.skipped,
            "rate_delivered": self.rate_delivered,
            "p50_ms": self.pct(50),
            "p99_ms": self.pct(99),
            "server_cpu_s": self.server_cpu_s,
            "pg_cpu_s": self.pg_cpu_s,
            "cpu_us_per_delivery": self.cpu_us_per_msg,
            "sustained": self.sustained,
            "redis_cmds": self.redis_cmds,
            "pg_commits": self.pg_commits,
            "pg_rows": self.pg_rows,
        }

    @property
    def complete(self) -> float:
        return (self.delivered + self.skipped) / self.expected if self.expected else float("nan")

    def pct(self, p: float, group: int | None = None) -> float:
        if group is None:
            values = sorted(x for g in self.lat_ms for x in g)
        else:
            values = sorted(self.lat_ms[group]) if group < len(self.lat_ms) else []
        return percentile(values, p)

    @property
    def sustained(self) -> bool:
        return (
            self.complete >= SUSTAINED_FRACTION
            and self.pct(99) <= SUSTAINED_P99_MS
            and self.drained
            and not self.closed
        )

    @property
    def cpu_us_per_msg(self) -> float:
        return self.server_cpu_s / self.delivered * 1e6 if self.delivered else float("nan")


@dataclass
class RunResult:
    system: str
    label: str
    viewers: int
    connected: int = 0
    connect_s: float = 0.0
    joined_s: float = 0.0  # until the last successful join
    connect_error: str = ""
    rss_kib_per_conn: float = float("nan")
    fixed: Phase | None = None
    steps: list[Phase] = field(default_factory=list)
    closed_total: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped_reason: str = ""
    idle_cpu_per_s: float = float("nan")  # server CPU with every viewer joined, nothing sent

    @property
    def sustained_phases(self) -> list[Phase]:
        """The fixed phase and the max-mode steps that were sustained."""
        phases = ([self.fixed] if self.fixed is not None else []) + self.steps
        return [p for p in phases if p.sustained]

    @property
    def best(self) -> Phase | None:
        """The sustained phase (fixed or a max step) with the most delivered msg/s."""
        good = self.sustained_phases
        return max(good, key=lambda s: s.rate_delivered) if good else None

    @property
    def max_rate(self) -> float:
        """Delivered msg/s at the best sustained step; if none was sustained, the delivered
        rate of the overloaded fixed phase (marked as such by the caller)."""
        if self.best is not None:
            return self.best.rate_delivered
        if self.fixed is not None:
            return self.fixed.rate_delivered
        return float("nan")


class Runner:
    def __init__(self, args: argparse.Namespace, database_url: str, pg_pid: int | None) -> None:
        self.delay_s = 0.0  # video time: viewers' delays spread over [0, delay_s] (livecart)
        self.args = args
        self.database_url = database_url
        self.pg_pid = pg_pid

    # ------------------------------------------------------------ servers

    async def start(
        self, system: str, n_nodes: int, workers: int = 0
    ) -> tuple[Target, list[Any]]:
        run = secrets.token_hex(3)
        if system != "livecart":
            proc = await asyncio.to_thread(BaselineProcess(system).start)
            return Target(system, LABELS[system], [proc.port], [proc.pid], run=run), [proc]
        secret = secrets.token_urlsafe(32)
        redis = self.args.redis_url if n_nodes > 1 or workers else ""
        nodes = [
            livecart_node(self.database_url, secret, redis, self.args.livecart_env, workers)
            for _ in range(n_nodes)
        ]
        started = []
        try:
            for node in nodes:
                try:
                    await asyncio.to_thread(node.start, 0, 120)
                except RuntimeError as exc:
                    raise SystemExit(f"bench_fanout: {exc}") from None
                started.append(node)
            session = await livecart_room(nodes[0].url, secret, run)
        except BaseException:
            for node in started:
                self.stop_one(node)
            raise
        label = LABELS["livecart"] if n_nodes == 1 else f"livecart, {n_nodes} nodes + Redis"
        pids = [node.proc.pid for node in nodes]
        if workers:
            label = f"livecart, {workers} worker{'s' if workers > 1 else ''} + Redis"
            # `serve --workers N` forks N node processes; count their CPU and memory.
            pids += [c for pid in pids for c in children_of(pid)] if workers > 1 else []
        if self.delay_s:
            label += f", delays 0–{self.delay_s:g} s"
        target = Target(
            "livecart",
            label,
            [node.port for node in nodes],
            pids,
            session=session,
            secret=secret,
            run=run,
        )
        return target, nodes

    @staticmethod
    def stop_one(server: Any) -> None:
        server.stop()
        data_dir = getattr(server, "data_dir", None)
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    def server_cpu(self, t: Target) -> float:
        return sum(process_cpu_s(pid) for pid in t.pids)

    def pg_cpu(self, t: Target) -> float:
        if t.system != "livecart" or self.pg_pid is None:
            return float("nan")
        return tree_cpu_s(self.pg_pid)

    # ------------------------------------------------------------ generators

    def generator_cfgs(self, t: Target, n: int) -> list[dict[str, Any]]:
        a = self.args
        if t.system == "livecart":
            join = b'{"type":"join","session":"' + t.session.encode() + b'"}'
            path = ""
        elif t.system == "socketio":
            join = b'42["join","' + t.session.encode() + b'"]'
            path = "/socket.io/?EIO=4&transport=websocket"
        else:
            join = b'{"type":"join","session":"' + t.session.encode() + b'"}'
            path = "/ws"
        cfgs = []
        nodes = len(t.ports)
        for g in range(a.generators):
            idx = list(range(g, n, a.generators))
            cfgs.append(
                {
                    "system": t.system,
                    "client": a.client,
                    "groups": len(t.ports),
                    # (host, port, node index, sampled for latency): viewers alternate nodes,
                    # and 1 in sample_every of each node's viewers measures latency
                    "viewers": [
                        (
                            "127.0.0.1",
                            t.ports[i % nodes],
                            i % nodes,
                            (i // nodes) % a.sample_every == 0,
                        )
                        for i in idx
                    ],
                    "users": [f"fo-{t.run}-{i}" for i in idx],
                    # video time: viewer i reports i/(n-1) of the spread (0 without --delays)
                    "delays_ms": [round(self.delay_s * 1000 * i / max(1, n - 1)) for i in idx],
                    "session": t.session,
                    "secret": t.secret,
                    "join": join,
                    "path": path,
                    "concurrency": a.connect_concurrency,
                    "join_timeout": a.join_timeout,
                }
            )
        return cfgs

    # ------------------------------------------------------------ a phase

    async def phase(
        self,
        t: Target,
        gens: Generators,
        pub: Publisher,
        viewers: int,
        rate: float,
        seconds: float,
        drain_s: float,
    ) -> Phase:
        ph = Phase(rate, seconds)
        before = await gens.ask("take")
        live = t.system == "livecart"
        redis_url = self.args.redis_url if live and (len(t.ports) > 1 or "worker" in t.label) else ""
        rc0 = await asyncio.to_thread(redis_commands, redis_url) if redis_url else -1
        db0 = await pg_writes(self.database_url) if live else (-1, -1)
        cpu0, pg0, pub0 = self.server_cpu(t), self.pg_cpu(t), self_cpu_s()
        acks0, err0 = pub.acks, dict(pub.errors)
        wall0 = time.monotonic()
        ph.sent, first_ns, ph.seconds = await pub.run(rate, seconds)
        ph.expected = ph.sent * viewers
        # Drain: until every copy arrived, or the count stops moving, or drain_s passed.
        deadline = time.monotonic() + drain_s + self.delay_s
        base = sum(b["chat"] + b["skipped"] for b in before)
        last, still = -1, 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            got = sum(await gens.ask("count")) - base
            acked = t.system != "livecart" or pub.acks + sum(pub.errors.values()) >= pub.sent
            if got >= ph.expected and acked:
                break
            still = still + 1 if got == last else 0
            last = got
            if still >= 4 + 4 * self.delay_s and acked:
                break
        else:
            ph.drained = False
        after = await gens.ask("take")
        ph.wall_s = time.monotonic() - wall0
        ph.server_cpu_s = self.server_cpu(t) - cpu0
        ph.pg_cpu_s = self.pg_cpu(t) - pg0
        if redis_url and rc0 >= 0:
            ph.redis_cmds = await asyncio.to_thread(redis_commands, redis_url) - rc0
        if live and db0[0] >= 0:
            await asyncio.sleep(1.1)  # pg_stat_database is flushed about once a second
            db1 = await pg_writes(self.database_url)
            ph.pg_commits, ph.pg_rows = db1[0] - db0[0], db1[1] - db0[1]
        ph.pub_cpu_s = self_cpu_s() - pub0
        ph.gen_cpu_s = sum(a["cpu"] - b["cpu"] for a, b in zip(after, before, strict=True))
        ph.delivered = sum(a["chat"] - b["chat"] for a, b in zip(after, before, strict=True))
        ph.skipped = sum(a["skipped"] - b["skipped"] for a, b in zip(after, before, strict=True))
        ph.closed = sum(a["closed"] - b["closed"] for a, b in zip(after, before, strict=True))
        if t.system == "livecart":
            ph.published = pub.acks - acks0
            ph.errors = {k: v - err0.get(k, 0) for k, v in pub.errors.items() if v > err0.get(k, 0)}
            ph.expected = ph.published * viewers
        else:
            ph.published = ph.sent
        last_ns = max(a["last_ns"] for a in after)
        if ph.delivered and last_ns > first_ns:
            ph.rate_delivered = ph.delivered / ((last_ns - first_ns) / 1e9)
        groups = len(t.ports)
        ph.lat_ms = [[x / 1e6 for a in after for x in a["lat"][g]] for g in range(groups)]
        return ph

    async def settle(self, gens: Generators, limit_s: float) -> bool:
        """Wait until no more chat arrives (a backlog left by an overloaded step)."""
        deadline = time.monotonic() + limit_s
        last = -1
        while time.monotonic() < deadline:
            got = sum(await gens.ask("count"))
            if got == last:
                return True
            last = got
            await asyncio.sleep(0.5)
        return False

    # ------------------------------------------------------------ one system, one size

    async def run(
        self, system: str, viewers: int, n_nodes: int = 1, workers: int = 0
    ) -> RunResult:
        a = self.args
        t, servers = await self.start(system, n_nodes, workers)
        res = RunResult(system, t.label, viewers)
        gens: Generators | None = None
        pub = Publisher(t, a.publishers)
        try:
            await pub.open()
            gens = Generators(self.generator_cfgs(t, viewers))
            await gens.wait(120)  # "up": imported, tokens signed
            await asyncio.sleep(0.5)
            rss0 = sum(rss_kib(pid) for pid in t.pids)
            ready = await gens.ask("connect", timeout=600)
            res.connected = sum(r["ok"] for r in ready)
            res.connect_s = max(r["seconds"] for r in ready)
            res.joined_s = max(r["ok_seconds"] for r in ready)
            res.connect_error = next((r["error"] for r in ready if r["error"]), "")
            await asyncio.sleep(1.0)
            rss1 = sum(rss_kib(pid) for pid in t.pids)
            if res.connected:
                res.rss_kib_per_conn = (rss1 - rss0) / res.connected
            print(
                f"  {t.label}: {res.connected:,}/{viewers:,} viewers joined in "
                f"{res.joined_s:.1f}s; RSS {rss0 / 1024:,.1f} → {rss1 / 1024:,.1f} MiB"
                + (
                    f"; {viewers - res.connected:,} FAILED (gave up after {res.connect_s:.0f}s), "
                    f"first: {res.connect_error}"
                    if res.connect_error
                    else ""
                ),
                flush=True,
            )
            if not res.connected:
                res.skipped_reason = "no viewer could join"
                return res
            if self.delay_s:
                # Delays in force climb at 1 s per s from each viewer's join.
                await asyncio.sleep(self.delay_s + 1.0)
            if a.delays:  # what the server costs idle (pings, coalescing), to net it out
                cpu0, t0 = self.server_cpu(t), time.monotonic()
                await asyncio.sleep(3.0)
                res.idle_cpu_per_s = (self.server_cpu(t) - cpu0) / (time.monotonic() - t0)
            if "fixed" in a.modes:
                res.fixed = await self.phase(
                    t, gens, pub, res.connected, a.rate, a.seconds, a.drain_seconds
                )
                self.report_phase("fixed", res.fixed)
            # With --delays the two runs are compared in max mode whatever the fixed phase did.
            if "max" in a.modes and (res.fixed is None or res.fixed.sustained or a.delays):
                await self.max_mode(t, gens, pub, res)
            elif "max" in a.modes:
                res.notes.append(
                    f"max mode skipped: {a.rate:g} msg/s was not sustained, so the fixed phase's "
                    "delivered rate stands for its throughput under overload"
                )
            final = await gens.ask("take")
            res.closed_total = sum(f["closed"] for f in final)
            for f in final:
                for code, k in f["codes"].items():
                    res.close_codes[code] = res.close_codes.get(code, 0) + k
        finally:
            if gens is not None:
                await gens.close()
            await pub.close()
            for s in servers:
                await asyncio.to_thread(self.stop_one, s)
        return res

    async def max_mode(self, t: Target, gens: Generators, pub: Publisher, res: RunResult) -> None:
        a = self.args
        rate = a.rate * 2 if res.fixed is not None else a.rate
        good: float | None = a.rate if res.fixed is not None else None
        bad: float | None = None
        while rate <= MAX_RATE:
            step = await self.phase(
                t, gens, pub, res.connected, rate, a.step_seconds, a.step_drain_seconds
            )
            res.steps.append(step)
            self.report_phase("max step", step)
            if not step.sustained:
                bad = rate
                break
            good = rate
            rate *= 2
        else:
            res.notes.append(f"max mode stopped at the publisher ceiling ({MAX_RATE:,.0f} msg/s)")
        if bad is not None and good is not None and bad / good > 1.3:
            if await self.settle(gens, 30):
                mid = math.sqrt(good * bad)
                step = await self.phase(
                    t, gens, pub, res.connected, mid, a.step_seconds, a.step_drain_seconds
                )
                res.steps.append(step)
                self.report_phase("max step", step)
            else:
                res.notes.append("the backlog of the failed step did not drain in 30 s")

    @staticmethod
    def report_phase(kind: str, ph: Phase) -> None:
        extra = ""
        if ph.errors:
            extra += " errors " + ", ".join(f"{k} {v}" for k, v in sorted(ph.errors.items()))
        if not ph.drained:
            extra += " (not drained)"
        if ph.closed:
            extra += f" {ph.closed} viewers closed"
        print(
            f"    {kind} {ph.rate:,.0f} msg/s: published {ph.published:,} in {ph.seconds:.1f}s, "
            f"delivered {ph.delivered:,}"
            + (f" + skipped {ph.skipped:,}" if ph.skipped else "")
            + f" of {ph.expected:,} ({ph.complete:.1%})"
            f" → {fmt(ph.rate_delivered)} msg/s, p50 {fmt(ph.pct(50), ',.1f')} ms, "
            f"p99 {fmt(ph.pct(99), ',.1f')} ms, server CPU {ph.server_cpu_s:.2f}s, "
            f"generators {ph.gen_cpu_s:.2f}s + publisher {ph.pub_cpu_s:.2f}s "
            f"over {ph.wall_s:.1f}s{extra} → {'ok' if ph.sustained else 'NOT sustained'}",
            flush=True,
        )


# ---------------------------------------------------------------- report


def print_tables(args: argparse.Namespace, n: int, results: list[RunResult]) -> None:
    ours = next((r for r in results if r.system == "livecart"), None)
    if "fixed" in args.modes:
        print(f"\nfixed rate: {args.rate:g} msg/s for {args.seconds:g}s, {n:,} viewers\n")
        print(
            "| system | delivered msg/s | p50 ms | p99 ms | server CPU s | RSS KiB/conn "
            "| generator CPU s | skipped | (delivered+skipped)/expected | server µs/delivery |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            ph = r.fixed
            if ph is None:
                print(f"| {r.label} | {r.skipped_reason or 'not run'} | | | | | | | | |")
                continue
            print(
                f"| {r.label} | {fmt(ph.rate_delivered)} | {fmt(ph.pct(50), ',.1f')} | "
                f"{fmt(ph.pct(99), ',.1f')} | {ph.server_cpu_s:.2f} | "
                f"{fmt(r.rss_kib_per_conn, ',.1f')} | {ph.gen_cpu_s + ph.pub_cpu_s:.2f} | "
                f"{ph.skipped:,} | {ph.complete:.1%} | {fmt(ph.cpu_us_per_msg, ',.2f')} |"
            )
    if "max" in args.modes:
        print(f"\nmax sustained (≥ {SUSTAINED_FRACTION:.0%} delivered, p99 ≤ "
              f"{SUSTAINED_P99_MS:,.0f} ms; {args.step_seconds:g}s steps), {n:,} viewers\n")
        print(
            "| system | delivered msg/s | at published msg/s | p50 ms | p99 ms | server CPU s "
            "| server µs/delivery | generator CPU s | skipped | highest sustained publish "
            "msg/s | steps after the fixed phase (msg/s, ✗ = not sustained) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in results:
            best = r.best
            steps = ", ".join(f"{s.rate:,.0f}{'' if s.sustained else '✗'}" for s in r.steps)
            if best is None:
                if r.fixed is not None:
                    overload = f"{fmt(r.max_rate)} (overloaded at the fixed {args.rate:g} msg/s)"
                else:
                    overload = "no step sustained" if r.steps else "not run"

                print(f"| {r.label} | {overload} | | | | | | | | | {steps} |")
                continue
            top = max(s.published / s.seconds for s in r.sustained_phases)
            print(
                f"| {r.label} | {fmt(best.rate_delivered)} | {best.published / best.seconds:,.0f} | "
                f"{fmt(best.pct(50), ',.1f')} | "
                f"{fmt(best.pct(99), ',.1f')} | {best.server_cpu_s:.2f} | "
                f"{fmt(best.cpu_us_per_msg, ',.2f')} | {best.gen_cpu_s + best.pub_cpu_s:.2f} | "
                f"{best.skipped:,} | {top:,.0f} | {steps} |"
            )
    print()
    for r in results:
        bits = []
        if r.fixed is not None and not math.isnan(r.fixed.pg_cpu_s):
            bits.append(f"PostgreSQL CPU in the fixed phase {r.fixed.pg_cpu_s:.2f}s")
        if r.fixed is not None and len(r.fixed.lat_ms) > 1:
            bits.append(
                "fixed-phase p99 by node: "
                + ", ".join(
                    f"node {g + 1} {fmt(r.fixed.pct(99, g), ',.1f')} ms"
                    for g in range(len(r.fixed.lat_ms))
                )
                + " (node 2's viewers are cross-node: the publishers are on node 1)"
            )
        if r.closed_total:
            codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.close_codes.items()))
            bits.append(f"{r.closed_total} viewer connections closed by the server ({codes})")
        if r.fixed is not None:
            gen = r.fixed.gen_cpu_s / max(r.fixed.wall_s, 1e-9) / args.generators
            bits.append(
                f"generators at {gen:.0%} of a core each in the fixed phase"
                + (
                    f", {r.best.gen_cpu_s / max(r.best.wall_s, 1e-9) / args.generators:.0%} "
                    "at the best max step"
                    if r.best is not None and r.best is not r.fixed
                    else ""
                )
            )
        bits += r.notes
        if bits:
            print(f"- {r.label}: " + "; ".join(bits))
    if ours is None:
        return
    for r in results:
        if r is ours:
            continue
        parts = []
        if ours.fixed is not None and r.fixed is not None:
            parts.append(f"fixed {ours.fixed.rate_delivered / r.fixed.rate_delivered:.2f}x")
        if "max" in args.modes:
            parts.append(f"max {ours.max_rate / r.max_rate:.2f}x")
            if r.best is None:
                parts.append(
                    f"the baseline's figure is its throughput while overloaded at "
                    f"{args.rate:g} msg/s, not a sustained rate"
                )
        print(f"- ours / {r.label}: " + ", ".join(parts) + " (delivered msg/s)")


def print_delays(base: RunResult, delayed: RunResult) -> None:
    """Video time: the delayed run's delivered rate against the no-delay run's."""
    print(f"\n  delay-bucketed fan-out ({delayed.connected:,} viewers, delays spread evenly):")
    def peak(r: RunResult) -> Phase | None:
        phases = ([r.fixed] if r.fixed is not None else []) + r.steps
        rated = [p for p in phases if p.rate_delivered == p.rate_delivered]
        return max(rated, key=lambda p: p.rate_delivered) if rated else None

    pairs = [("fixed", base.fixed, delayed.fixed)]
    pairs.append(("best sustained", base.best, delayed.best))
    pairs.append(("peak (any step)", peak(base), peak(delayed)))
    def net_us(r: RunResult, p: Phase) -> float:
        """Server CPU per delivered message, net of what the server spends idle."""
        busy = p.server_cpu_s - r.idle_cpu_per_s * p.wall_s
        return busy / p.delivered * 1e6 if p.delivered else float("nan")

    for kind, b, d in pairs:
        if b is None or d is None:
            print(f"    {kind}: not measured (or not sustained) in one of the runs")
            continue
        ratio = d.rate_delivered / b.rate_delivered if b.rate_delivered else float("nan")
        print(
            f"    {kind}: {fmt(d.rate_delivered)} msg/s delivered with delays vs "
            f"{fmt(b.rate_delivered)} without (×{ratio:.2f}, cost {1 - ratio:.1%}; "
            f"asked {b.rate:,.0f} / {d.rate:,.0f} msg/s); p99 beyond the delay "
            f"{fmt(d.pct(99), ',.1f')} ms vs {fmt(b.pct(99), ',.1f')} ms; "
            f"server CPU per delivered message {fmt(d.cpu_us_per_msg, ',.1f')} µs vs "
            f"{fmt(b.cpu_us_per_msg, ',.1f')} µs (net of idle: {fmt(net_us(delayed, d), ',.2f')}"
            f" vs {fmt(net_us(base, b), ',.2f')} µs, ×{net_us(delayed, d) / net_us(base, b):.2f};"
            f" idle {delayed.idle_cpu_per_s:.3f} / {base.idle_cpu_per_s:.3f} CPU s/s)",
            flush=True,
        )


def print_checks(args: argparse.Namespace, all_results: dict[int, list[RunResult]]) -> bool:
    checks: list[tuple[str, bool | None, str]] = []
    at = 5000 if 5000 in all_results else None
    if at is not None and "max" in args.modes:
        rs = all_results[at]
        ours = next((r for r in rs if r.system == "livecart"), None)
        for r in rs:
            if ours is None or r is ours:
                continue
            want = TARGET_VS_WEBSOCKETS if r.system == "websockets" else TARGET_VS_OTHERS
            ratio = ours.max_rate / r.max_rate
            checks.append(
                (f"at 5,000 viewers, delivered ≥ {want:g}x {r.label}", ratio >= want, f"{ratio:.2f}x")
            )
    else:
        checks.append(("delivered ratios at 5,000 viewers", None, "needs --viewers 5000 --mode max"))
    for n, rs in all_results.items():
        ours = next((r for r in rs if r.system == "livecart"), None)
        if ours is not None and ours.fixed is not None:
            p99 = ours.fixed.pct(99)
            ok = p99 <= TARGET_P99_MS and ours.fixed.complete >= SUSTAINED_FRACTION
            checks.append(
                (f"p99 ≤ {TARGET_P99_MS:.0f} ms at {args.rate:g} msg/s, {n:,} viewers", ok,
                 f"{fmt(p99, ',.1f')} ms, {ours.fixed.complete:.1%} delivered")
            )
    largest = max(all_results) if all_results else None
    ours_l = next((r for r in all_results.get(largest or 0, []) if r.system == "livecart"), None)
    if ours_l is not None:
        checks.append(
            (f"≤ {TARGET_RSS_KIB:g} KiB server memory per idle connection ({largest:,} viewers)",
             ours_l.rss_kib_per_conn <= TARGET_RSS_KIB, f"{ours_l.rss_kib_per_conn:,.1f} KiB")
        )
    ours_10k = next(
        (r for n, rs in all_results.items() if n >= TARGET_CONNECTIONS for r in rs
         if r.system == "livecart" and r.label == LABELS["livecart"]),
        None,
    )
    if ours_10k is not None:
        held = ours_10k.connected - ours_10k.closed_total
        checks.append(
            (f"{TARGET_CONNECTIONS:,} connections held by one node",
             held >= TARGET_CONNECTIONS, f"{held:,} joined and kept to the end")
        )
    else:
        checks.append((f"{TARGET_CONNECTIONS:,} connections held by one node", None,
                       "needs --viewers 10000"))
    print()
    for label, ok, value in checks:
        verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
        print(f"target {label}: {verdict} ({value})")
    return all(ok is not False for _, ok, _ in checks)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--viewers", default="1000,5000,10000", help="room sizes, comma-separated")
    p.add_argument("--rate", type=float, default=10.0, help="fixed chat rate, msg/s (all publishers)")
    p.add_argument("--seconds", type=float, default=8.0, help="fixed phase length")
    p.add_argument("--mode", default="fixed,max", help="fixed, max or both")
    p.add_argument("--step-seconds", type=float, default=3.0, help="max mode: length of a step")
    p.add_argument("--drain-seconds", type=float, default=15.0,
                   help="fixed phase: longest wait for the last copies")
    p.add_argument("--step-drain-seconds", type=float, default=4.0,
                   help="max mode: longest wait for a step's last copies")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="systems to measure, comma-separated")
    p.add_argument("--generators", type=int, default=2, help="viewer load-generator processes")
    p.add_argument("--publishers", type=int, default=4, help="publisher connections")
    p.add_argument("--sample-every", type=int, default=50, help="1 viewer in K measures latency")
    p.add_argument("--client", choices=("raw", "websockets", "websockets-deflate"),
                   default="raw",
                   help="viewer WebSocket client (default: the minimal raw one); "
                   "websockets-deflate offers permessage-deflate, which livecart accepts "
                   "with --livecart-env LIVECART_WS_DEFLATE=true (its cost)")
    p.add_argument("--connect-concurrency", type=int, default=100,
                   help="connections opened at once per generator")
    p.add_argument("--join-timeout", type=float, default=60.0,
                   help="seconds a viewer waits for `joined` before it counts as failed")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                   help="PostgreSQL on 127.0.0.1 for livecart (default: $DATABASE_URL, else an "
                   "embedded PostgreSQL in a temporary data dir)")
    p.add_argument("--redis-url", default="", help="Redis on 127.0.0.1, for --nodes 2")
    p.add_argument("--nodes", type=int, default=1,
                   help="with --redis-url: also run livecart as this many nodes sharing Redis "
                   "(viewers alternate nodes, publishers on node 1)")
    p.add_argument("--workers", default="",
                   help="with --redis-url: also run livecart as one node with each of these "
                   "worker counts (`serve --workers N`, e.g. 1,2), in the same run")
    p.add_argument("--livecart-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for the livecart nodes (repeatable), e.g. "
                   "LIVECART_CHAT_DISPLAY_BUDGET=0 to turn huge-room chat sampling off")
    p.add_argument("--json", default="",
                   help="also write every run's figures to this file (for scripts/capacity.py)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 viewers, 3s fixed phase, 2s steps")
    p.add_argument("--max-seconds", type=float, default=1800, help="bound on the whole run")
    p.add_argument("--delays", type=float, default=0.0, metavar="S",
                   help="video time: also run livecart with viewers' delays spread over "
                   "[0, S] seconds and print its delivered rate against the no-delay run")
    args = p.parse_args(argv)
    if args.quick:
        if "--viewers" not in " ".join(argv if argv is not None else sys.argv):
            args.viewers = "200"
        args.seconds, args.step_seconds, args.drain_seconds = 3.0, 2.0, 8.0
        args.step_drain_seconds = 3.0
    try:
        args.viewer_counts = [int(x.replace("_", "")) for x in args.viewers.split(",") if x]
    except ValueError:
        p.error("--viewers takes numbers separated by commas, e.g. 1000,5000")
    try:
        args.livecart_env = dict(kv.split("=", 1) for kv in args.livecart_env)
    except ValueError:
        p.error("--livecart-env takes NAME=VALUE")
    args.modes = {m.strip() for m in args.mode.split(",") if m.strip()}
    if not args.modes or args.modes - {"fixed", "max"}:
        p.error("--mode is fixed, max or fixed,max")
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(args.system_list) - set(SYSTEMS):
        p.error(f"--systems takes {', '.join(SYSTEMS)}")
    if min([*args.viewer_counts, args.generators, args.publishers, args.sample_every]) < 1:
        p.error("counts must be positive")
    if args.rate <= 0 or args.seconds <= 0 or args.step_seconds <= 0:
        p.error("--rate, --seconds and --step-seconds must be positive")
    if args.nodes > 1 and not args.redis_url:
        p.error("--nodes > 1 needs --redis-url")
    try:
        args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error("--workers takes numbers separated by commas, e.g. 1,2")
    if args.worker_counts and (not args.redis_url or min(args.worker_counts) < 1):
        p.error("--workers needs --redis-url and counts >= 1")
    if args.redis_url:
        require_local(args.redis_url, "--redis-url", "bench_fanout")
    if args.database_url:
        require_local(args.database_url, "--database-url", "bench_fanout")
    return args


async def archive_size(database_url: str) -> dict[str, float] | None:
    """Rows in the room log archive and its bytes on disk with indexes (the growth per event
    for docs/capacity.md)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, pg_total_relation_size('room_events') AS bytes,"
                " coalesce(avg(pg_column_size(r.*)), 0) AS row_bytes FROM room_events r"
            )
        finally:
            await conn.close()
    except Exception:
        return None
    n = int(row["n"])
    return {
        "rows": n,
        "bytes": int(row["bytes"]),
        "bytes_per_row": int(row["bytes"]) / n if n else float("nan"),
        "tuple_bytes": float(row["row_bytes"]),
    }


async def amain(args: argparse.Namespace) -> int:
    nofile = raise_nofile()
    systems = []
    for s in args.system_list:
        if s != "livecart" and importlib.util.find_spec(MODULES[s]) is None:
            print(f"bench_fanout: skipping the {s} baseline: `pip install {PACKAGES[s]}` to run it")
            continue
        systems.append(s)
    need = max(args.viewer_counts) + args.publishers + 64
    if nofile < need:
        print(f"bench_fanout: RLIMIT_NOFILE is {nofile}, below the {need} sockets a run needs")

    if "livecart" in systems:
        db_context: Any = database(args.database_url, scratch=False)
    else:
        db_context = contextlib.nullcontext(Database("", "none"))
    async with db_context as db:
        return await measure(args, systems, nofile, db)


async def measure(args: argparse.Namespace, systems: list[str], nofile: int, db: Database) -> int:
    database_url, pg_pid, db_label = db.url, db.pid, db.label
    import websockets

    print("## Chat fan-out benchmark\n")
    print(machine_line(f"RLIMIT_NOFILE {nofile}"))
    print(
        f"settings: viewers {', '.join(f'{n:,}' for n in args.viewer_counts)}; "
        f"fixed {args.rate:g} msg/s for {args.seconds:g}s; modes {','.join(sorted(args.modes))}"
        f" ({args.step_seconds:g}s steps, ×2 from {args.rate * 2:g} msg/s); "
        f"{args.generators} generator processes ({args.client} client, "
        f"websockets {websockets.__version__}, {use_uvloop()}), {args.publishers} publisher "
        f"connections, latency sampled on 1 viewer in {args.sample_every}; "
        f"livecart database: {db_label}"
        + (
            "; livecart env " + " ".join(f"{k}={v}" for k, v in args.livecart_env.items())
            if args.livecart_env
            else ""
        )
        + (f"; Redis {args.redis_url}, {args.nodes} nodes" if args.nodes > 1 else "")
        + (f"; workers {args.workers}" if args.worker_counts else ""),
        flush=True,
    )
    runner = Runner(args, database_url, pg_pid)
    plan: list[tuple[str, int, int]] = [(s, 1, 0) for s in systems]
    if args.nodes > 1 and "livecart" in systems:
        plan.insert(1, ("livecart", args.nodes, 0))
    if "livecart" in systems:
        for i, w in enumerate(args.worker_counts):
            plan.insert(1 + i, ("livecart", 1, w))
    all_results: dict[int, list[RunResult]] = {}
    for n in args.viewer_counts:
        print(f"\n### {n:,} viewers\n", flush=True)
        results = []
        for system, nodes, workers in plan:
            what = f" ({nodes} nodes)" if nodes > 1 else f" ({workers} workers)" if workers else ""
            print(f"- {LABELS[system]}{what}, load average {loadavg()}", flush=True)
            results.append(await runner.run(system, n, nodes, workers))
            if system == "livecart" and nodes == 1 and not workers and args.delays:
                runner.delay_s = args.delays
                print(f"- livecart, delays spread over 0–{args.delays:g} s, "
                      f"load average {loadavg()}", flush=True)
                delayed = await runner.run(system, n, nodes)
                runner.delay_s = 0.0
                print_delays(results[-1], delayed)
        all_results[n] = results
        print_tables(args, n, results)
    print(f"\nload average after: {loadavg()} (1/5/15 min)")
    ok = print_checks(args, all_results)
    if args.json:
        archive = await archive_size(database_url) if "livecart" in systems else None
        doc = {
            "bench": "fanout",
            "load_after": loadavg(),
            "cores": os.cpu_count(),
            "archive": archive,
            "runs": [
                {
                    "system": r.system,
                    "label": r.label,
                    "viewers": r.viewers,
                    "connected": r.connected,
                    "joined_s": r.joined_s,
                    "rss_kib_per_conn": r.rss_kib_per_conn,
                    "fixed": r.fixed.as_dict() if r.fixed is not None else None,
                    "steps": [st.as_dict() for st in r.steps],
                }
                for rs in all_results.values()
                for r in rs
            ],
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(doc, indent=1))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(amain(args), "bench_fanout", args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
