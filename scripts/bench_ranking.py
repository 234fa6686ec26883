#!/usr/bin/env python3
"""Benchmark of the pure ranking core: signals ingested per second on one core.

A synthetic, skewed stream (many viewers, a few hot sessions, the usual mix of joins,
watch time, likes, chat, clicks, add-to-carts, shares and purchases) is generated first,
then timed through:

  core        livecart's TrendingIndex.ingest (forward decay, per-user caps, incremental
              top-k for products, categories and hosts), with a trending read every
              `--read-every` events
  lazy+sort   a common hand-rolled design: each item keeps (value, last update) and is decayed
              when touched (O(1) per event), and every read decays all items and sorts them;
              no per-user caps (so it does less work per event than the core)
  core, caps off   the same with the per-user caps disabled (what the caps cost)
  decay-all   the textbook naive design: every event first decays every item's score, reads
              sort; also without caps (timed on a prefix: it is slow)

Figures are events per second of process CPU time (robust to other load on the machine)
and of wall time; the best of `--repeat` runs is reported, with the median.

With `--server URL` (or `--spawn N`, which starts N nodes itself) it measures instead the
push latency of running nodes (SPEC §5): `--subscribers` clients send `feed {on: true}`;
background load of `--load` signals per second (likes, product clicks and add-to-carts) comes
from a separate process over `--load / --per-connection` connections, each sending evenly
spaced frames well under the flood limit (20 frames per 2 s), with a lean WebSocket client
that writes pre-encoded frames (so the generator does not measure itself); then, every
`--interval` seconds, a burst of `--burst-users` distinct viewers (20 % more each round)
click, add to cart and share a product nobody touched before. Every client connects before
the load starts. The latency of a round, per subscriber, is from the burst's first frame to
the first `trending` (and `feed`) message listing that product; p50/p95/p99 over all
subscribers and rounds are printed, with the first subscriber's latency and the fan-out
spread, the rate the server accepted (from its /metrics), the closes it made (a 4008 means
the flood limit, not the server, limited the load), the server's CPU, the CPU the clients
used and the load average (clients run on the same machine and compete with the server).
With several nodes, load and bursts go to all but the last node and subscribers to the last.
`--adapter` times the node's ranking adapter alone, per signal.

Usage: python scripts/bench_ranking.py [--events N] [--repeat R] [--read-every N]
       python scripts/bench_ranking.py --adapter
       python scripts/bench_ranking.py --server http://127.0.0.1:8000 --data-dir .livecart
       python scripts/bench_ranking.py --spawn 1 --database-url postgresql://... [--lean-subscribers]
       python scripts/bench_ranking.py --spawn 3 --database-url postgresql://... --redis-url redis://...
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchlib import RawWebSocket, client_frame, loadavg, process_cpu_s, upgrade_request
from livecart.ranking.core import (
    ProductInfo,
    RankingConfig,
    SessionInfo,
    Signal,
    SignalKind,
    SignalWeights,
    TrendingIndex,
)

T0 = 1_700_000_000.0
KINDS: list[SignalKind] = [
    "join",
    "watch",
    "like",
    "chat",
    "product_click",
    "add_to_cart",
    "share",
    "purchase",
]
MIX = [8.0, 20.0, 35.0, 12.0, 13.0, 5.0, 3.0, 1.5]
PRODUCT_KINDS = {"product_click", "add_to_cart", "purchase"}


class World:
    def __init__(self, sessions: int, products_per_session: int, categories: int, seed: int):
        rng = random.Random(seed)
        self.sessions = [
            SessionInfo(f"s{i}", f"cr{i}", f"cat{rng.randrange(categories)}")
            for i in range(sessions)
        ]
        self.products = {
            s.id: [
                ProductInfo(f"{s.id}-p{j}", s.creator, f"cat{rng.randrange(categories)}")
                for j in range(products_per_session)
            ]
            for s in self.sessions
        }

    def index(self, config: RankingConfig) -> TrendingIndex:
        index = TrendingIndex(config, landmark=T0)
        for s in self.sessions:
            for p in self.products[s.id]:
                index.put_product(p)
            index.start_session(s, [p.id for p in self.products[s.id]])
        return index


def make_stream(world: World, n: int, users: int, rate: float, seed: int) -> list[Signal]:
    """`n` signals at `rate` per second of event time; sessions and products Zipf-skewed."""
    rng = random.Random(seed)
    sessions = world.sessions
    zipf = [1.0 / (i + 1) ** 1.1 for i in range(len(sessions))]
    session_picks = rng.choices(range(len(sessions)), weights=zipf, k=n)
    kinds = rng.choices(KINDS, weights=MIX, k=n)
    out = []
    for i in range(n):
        s = sessions[session_picks[i]]
        kind = kinds[i]
        product = None
        if kind in PRODUCT_KINDS or (kind == "share" and rng.random() < 0.5):
            products = world.products[s.id]
            product = products[min(int(rng.expovariate(0.5)), len(products) - 1)].id
        out.append(
            Signal(
                kind,
                f"u{int(rng.paretovariate(1.2)) % users}",
                T0 + i / rate,
                session=s.id,
                product=product,
                count=rng.randint(1, 10),
                minutes=1.0,
                value_cents=rng.randint(500, 20_000),
            )
        )
    return out


def weight_of(s: Signal, w: SignalWeights) -> float:
    if s.kind == "like":
        return w.like * s.count
    if s.kind == "watch":
        return w.watch_per_minute * s.minutes
    if s.kind == "purchase":
        return w.purchase + w.purchase_value * math.log1p(s.value_cents / 100)
    return float(getattr(w, s.kind))


class LazySortOnRead:
    """Per-item (value, last time); decayed on touch; reads decay everything and sort."""

    def __init__(self, world: World, half_life: float) -> None:
        self.rate = math.log(2.0) / half_life
        self.weights = SignalWeights()
        self.creator = {s.id: s.creator for s in world.sessions}
        self.category = {p.id: p.category for ps in world.products.values() for p in ps}
        self.items: dict[str, list[float]] = {}

    def _add(self, key: str, w: float, t: float) -> None:
        entry = self.items.get(key)
        if entry is None:
            self.items[key] = [w, t]
        else:
            entry[0] = entry[0] * math.exp(-self.rate * (t - entry[1])) + w
            entry[1] = t

    def ingest(self, s: Signal) -> None:
        w = weight_of(s, self.weights)
        if s.product is not None:
            self._add("p:" + s.product, w, s.at)
        if s.session is not None:
            self._add("s:" + s.session, w, s.at)
            self._add("h:" + self.creator[s.session], w, s.at)

    def read(self, now: float, k: int) -> list[tuple[float, str]]:
        rate = self.rate
        decayed = ((v * math.exp(-rate * (now - t)), key) for key, (v, t) in self.items.items())
        return heapq.nlargest(k, decayed)


class DecayAll:
    """Every event decays every item first (the periodic pass done on each event)."""

    def __init__(self, world: World, half_life: float) -> None:
        self.inner = LazySortOnRead(world, half_life)
        self.scores: dict[str, float] = {}
        self.last = T0

    def ingest(self, s: Signal) -> None:
        factor = math.exp(-self.inner.rate * (s.at - self.last))
        self.last = s.at
        scores = self.scores
        for key in scores:
            scores[key] *= factor
        w = weight_of(s, self.inner.weights)
        keys = []
        if s.product is not None:
            keys.append("p:" + s.product)
        if s.session is not None:
            keys += ["s:" + s.session, "h:" + self.inner.creator[s.session]]
        for key in keys:
            scores[key] = scores.get(key, 0.0) + w

    def read(self, now: float, k: int) -> list[tuple[float, str]]:
        return heapq.nlargest(k, ((v, key) for key, v in self.scores.items()))


def timed(
    make: Callable[[], tuple[Callable[[Signal], object], Callable[[float], object]]],
    stream: Sequence[Signal],
    read_every: int,
    repeat: int,
) -> tuple[list[float], list[float]]:
    """Events per CPU second and per wall second, one figure per repetition."""
    cpu_rates, wall_rates = [], []
    for _ in range(repeat):
        ingest, read = make()
        c0, w0 = time.process_time(), time.perf_counter()
        for i, s in enumerate(stream, 1):
            ingest(s)
            if i % read_every == 0:
                read(s.at)
        c1, w1 = time.process_time(), time.perf_counter()
        cpu_rates.append(len(stream) / max(c1 - c0, 1e-9))
        wall_rates.append(len(stream) / max(w1 - w0, 1e-9))
    return cpu_rates, wall_rates


# -- server push latency (SPEC §5) ---------------------------------------------------------

SECRET_ENV = "LIVECART_JWT_SECRET"


def _token(secret: str, sub: str, role: str) -> str:
    import jwt

    claims = {"sub": sub, "name": sub, "role": role, "exp": int(time.time()) + 7200}
    return str(jwt.encode(claims, secret, algorithm="HS256"))


def _ws_url(server: str, token: str) -> str:
    base = server.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
    return f"{base}/ws?token={token}"


class LeanClient(RawWebSocket):
    """A WebSocket client that costs the load generator almost nothing per frame (benchlib's):
    it writes frames encoded (and masked) once in advance, answers pings, and counts what it
    receives without decoding it. The `websockets` client would spend more CPU than the
    server's gateway on the same frames (ANCHORS: a generator must not measure itself)."""

    def __init__(self, request: bytes) -> None:
        super().__init__(request)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = False
        self.close_code: int | None = None
        self.received = 0
        self.on_message: Callable[[bytes], None] | None = None

    @classmethod
    async def connect(cls, server: str, token: str) -> LeanClient:
        from urllib.parse import urlsplit

        url = urlsplit(server)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        request = upgrade_request(host, port, f"/ws?token={token}")
        _, client = await asyncio.get_running_loop().create_connection(
            lambda: cls(request), host, port
        )
        await asyncio.wait_for(client.ready, 60)
        return client

    def write(self, data: bytes) -> None:
        if self.open and self.transport is not None:
            self.transport.write(data)

    def on_open(self) -> None:
        self.open = True
        self.ready.set_result(None)

    def on_payload(self, buf: bytes | bytearray, start: int, end: int, now: Any) -> None:
        self.received += 1
        if self.on_message is not None:
            self.on_message(bytes(buf[start:end]))

    def on_close(self, reason: str) -> None:
        self.open = False
        if reason.isdigit() and self.close_code is None:
            self.close_code = int(reason) or 1005
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))

    def close(self) -> None:
        if self.transport is not None:
            if self.open:
                self.send((1000).to_bytes(2, "big"), 8)
            self.open = False
            self.transport.close()


def _producer(
    servers: list[str],
    secret: str,
    session: str,
    products: list[str],
    rate: float,
    per_connection: float,
    first: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """Background load: `rate` signals/s, round-robin over rate/per_connection viewers (so each
    connection sends at `per_connection`/s, evenly spaced), spread over `servers`."""
    import json

    n = max(1, math.ceil(rate / per_connection))
    rng = random.Random(first)
    frames = [
        client_frame(json.dumps({"type": "like", "session": session, "count": c}).encode())
        for c in range(1, 6)
    ] * 3
    frames += [
        client_frame(
            json.dumps({"type": "signal", "session": session, "name": name, "product": p}).encode()
        )
        for p in products
        for name in ("product_click", "product_click", "add_to_cart")
    ]

    async def run() -> None:
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> LeanClient:
            async with sem:
                server = servers[i % len(servers)]
                return await LeanClient.connect(
                    server, _token(secret, f"bench-load-{first + i}", "viewer")
                )

        conns = await asyncio.gather(*(one(i) for i in range(n)))
        ready.put(("load", n))
        while not go.is_set():
            await asyncio.sleep(0.01)
        start_at, stop_at = go_times(go)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        c0, t0 = time.process_time(), time.time()
        sent = 0
        k = 0
        while (now := time.time()) < stop_at:
            due = int((now - t0) * rate) - sent
            for _ in range(due):
                conns[k].write(frames[rng.randrange(len(frames))])
                k = (k + 1) % n
            sent += due
            await asyncio.sleep(0.005)
        elapsed = time.time() - t0
        closes: dict[int, int] = {}
        for c in conns:
            if c.close_code is not None:
                closes[c.close_code] = closes.get(c.close_code, 0) + 1
            c.close()
        out.put((sent / max(elapsed, 1e-9), time.process_time() - c0, elapsed, n, closes))

    asyncio.run(run())


def go_times(go: Any) -> tuple[float, float]:
    """The load's start and stop times, published with the `go` event."""
    return go.start.value, go.stop.value


class _Go:
    """An event plus the start and stop times every process uses."""

    def __init__(self, ctx: Any) -> None:
        self.event = ctx.Event()
        self.start = ctx.Value("d", 0.0)
        self.stop = ctx.Value("d", 0.0)

    def is_set(self) -> bool:
        return bool(self.event.is_set())

    def set(self, start: float, stop: float) -> None:
        self.start.value, self.stop.value = start, stop
        self.event.set()


def _note_pushes(
    mine: dict[tuple[str, str], float], messages: list[dict[str, Any]], now: float
) -> None:
    """When each item first reached this subscriber, by push kind (`trending`, `feed`)."""
    for message in messages:
        kind = message.get("type")
        if kind == "trending":
            ids = [p["id"] for p in message.get("products", [])]
        elif kind == "feed":
            ids = [item["id"] for item in message.get("items", [])[:10]]
        else:
            continue
        for item in ids:
            mine.setdefault((kind, item), now)


def _subscribers(
    server: str, secret: str, first: int, count: int, ready: Any, go: Any, out: Any
) -> None:
    """`count` feed subscribers; records when each first saw every product id, per message type."""
    import json

    from websockets.asyncio.client import connect

    seen: list[dict[tuple[str, str], float]] = [{} for _ in range(count)]
    closes: dict[int, int] = {}

    async def one(i: int, sem: asyncio.Semaphore, connected: list[int]) -> None:
        token = _token(secret, f"bench-sub-{first + i}", "viewer")
        async with sem:
            ws = await connect(_ws_url(server, token), max_queue=None, open_timeout=60)
            await ws.send(json.dumps({"type": "feed", "on": True}))
        connected[0] += 1
        if connected[0] == count:
            ready.put(("subscribers", count))
        mine = seen[i]
        try:
            while True:
                stop_at = go.stop.value if go.is_set() else time.time() + 3600
                left = stop_at - time.time()
                if left <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=min(left, 1.0))
                except TimeoutError:
                    continue
                _note_pushes(mine, json.loads(raw), time.time())
        except Exception:
            code = ws.close_code or 1006
            closes[code] = closes.get(code, 0) + 1
        finally:
            await ws.close()

    async def run() -> None:
        sem = asyncio.Semaphore(100)
        connected = [0]
        c0 = time.process_time()
        await asyncio.gather(
            *(one(i, sem, connected) for i in range(count)), return_exceptions=True
        )
        out.put((seen, time.process_time() - c0, closes))

    asyncio.run(run())


def _lean_subscribers(
    server: str, secret: str, first: int, count: int, ready: Any, go: Any, out: Any
) -> None:
    """The same as `_subscribers` with `LeanClient` and msgspec: no compression is negotiated
    and decoding is cheap, so the figures show the server more than the client."""
    import msgspec

    seen: list[dict[tuple[str, str], float]] = [{} for _ in range(count)]
    closes: dict[int, int] = {}
    decode = msgspec.json.Decoder(list[dict[str, Any]]).decode
    feed_on = client_frame(b'{"type": "feed", "on": true}')

    def handler(mine: dict[tuple[str, str], float]) -> Callable[[bytes], None]:
        def on_message(raw: bytes) -> None:
            _note_pushes(mine, decode(raw), time.time())

        return on_message

    async def run() -> None:
        sem = asyncio.Semaphore(100)
        c0 = time.process_time()

        async def one(i: int) -> LeanClient:
            async with sem:
                token = _token(secret, f"bench-sub-{first + i}", "viewer")
                client = await LeanClient.connect(server, token)
            client.on_message = handler(seen[i])
            client.write(feed_on)
            return client

        clients = await asyncio.gather(*(one(i) for i in range(count)))
        ready.put(("subscribers", count))
        while not go.is_set() or time.time() < go.stop.value:
            await asyncio.sleep(0.2)
        for client in clients:
            if client.close_code is not None:
                closes[client.close_code] = closes.get(client.close_code, 0) + 1
            client.close()
        out.put((seen, time.process_time() - c0, closes))

    asyncio.run(run())


def _quantile(ordered: list[float]) -> Callable[[float], float]:
    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))]

    return q


def _scrape(servers: list[str]) -> dict[str, float]:
    """Sums over the nodes of the counters the report needs."""
    import httpx

    totals: dict[str, float] = {}
    for server in servers:
        for line in httpx.get(f"{server}/metrics", timeout=30).text.splitlines():
            if line.startswith(("livecart_ranking_events_total", "livecart_closes_total")):
                name, value = line.rsplit(" ", 1)
                totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def _spawn(args: argparse.Namespace, secret: str) -> list[Any]:
    """Start `--spawn` nodes on one PostgreSQL (and one Redis for more than one)."""
    import tempfile

    from livecart.runtime.process import NodeProcess

    if args.spawn > 1 and not args.redis_url:
        raise SystemExit("--spawn N > 1 needs --redis-url (nodes share ranking through Redis)")
    env = {SECRET_ENV: secret, "LIVECART_LOG_LEVEL": "warning"}
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.flood_frames:
        env["LIVECART_FLOOD_FRAMES"] = str(args.flood_frames)
    nodes = []
    for i in range(args.spawn):
        node = NodeProcess(
            tempfile.mkdtemp(prefix=f"bench-ranking-n{i}-"),
            database_url=args.database_url or "",
            env={**env, "LIVECART_NODE_ID": f"bench{i}"},
        )
        nodes.append(node.start())
    return nodes


def bench_server(args: argparse.Namespace) -> int:
    import secrets as secrets_mod

    nodes: list[Any] = []
    if args.spawn:
        secret = args.secret or secrets_mod.token_hex(32)
        nodes = _spawn(args, secret)
        servers = [n.url for n in nodes]
        pids = [n.proc.pid for n in nodes]
    else:
        secret = args.secret or (Path(args.data_dir) / "jwt_secret").read_text().strip()
        servers = [s.rstrip("/") for s in args.server.split(",")]
        pids = [int(p) for p in args.server_pid.split(",")] if args.server_pid else []
    try:
        return _bench_servers(args, secret, servers, pids)
    finally:
        for node in nodes:
            node.stop()


def _bench_servers(
    args: argparse.Namespace, secret: str, servers: list[str], pids: list[int]
) -> int:
    import httpx

    creator = _token(secret, "bench-creator", "creator")
    headers = {"Authorization": f"Bearer {creator}"}
    background, targets = 5, args.rounds
    with httpx.Client(base_url=servers[0], headers=headers, timeout=30) as http:
        product_ids = []
        for i in range(background + targets):
            body = {"title": f"bench product {i}", "price_cents": 1000, "stock": 100}
            body["category"] = "bench"
            r = http.post("/api/products", json=body)
            r.raise_for_status()
            product_ids.append(r.json()["id"])
        r = http.post("/api/sessions", json={"title": "bench session", "category": "bench"})
        r.raise_for_status()
        session = r.json()["id"]
        for pid in product_ids:
            http.post(
                f"/api/sessions/{session}/products", json={"product_id": pid}
            ).raise_for_status()
        http.post(f"/api/sessions/{session}/start").raise_for_status()
    background_ids, target_ids = product_ids[:background], product_ids[background:]
    try:
        return _run_load(args, secret, servers, pids, session, background_ids, target_ids)
    finally:
        with httpx.Client(base_url=servers[0], headers=headers, timeout=30) as http:
            http.post(f"/api/sessions/{session}/end")  # the next run starts from a clean market


def _run_load(
    args: argparse.Namespace,
    secret: str,
    servers: list[str],
    pids: list[int],
    session: str,
    background_ids: list[str],
    target_ids: list[str],
) -> int:
    import multiprocessing as mp

    import msgspec

    # With several nodes: load and bursts go to all but the last, subscribers to the last,
    # so every push a subscriber sees was caused by signals counted on other nodes.
    load_servers = servers[:-1] if len(servers) > 1 else servers
    watch_server = servers[-1]
    run_id = f"{int(time.time()) % 100000}"
    ctx = mp.get_context("spawn")
    ready: Any = ctx.Queue()
    results: Any = ctx.Queue()
    load_out: Any = ctx.Queue()
    go = _Go(ctx)
    procs = []
    per_proc = math.ceil(args.subscribers / args.client_procs)
    for k in range(args.client_procs):
        n = min(per_proc, args.subscribers - k * per_proc)
        if n > 0:
            procs.append(
                ctx.Process(
                    target=_lean_subscribers if args.lean_subscribers else _subscribers,
                    args=(watch_server, secret, k * per_proc, n, ready, go, results),
                )
            )
    load_procs = []
    for k in range(args.load_procs):
        load_procs.append(
            ctx.Process(
                target=_producer,
                args=(
                    load_servers,
                    secret,
                    session,
                    background_ids,
                    args.load / args.load_procs,
                    args.per_connection,
                    k * 1_000_000,
                    ready,
                    go,
                    load_out,
                ),
            )
        )
    t_setup = time.time()
    for p in [*procs, *load_procs]:
        p.start()
    for _ in range(len(procs) + len(load_procs)):
        ready.get(timeout=600)
    setup_s = time.time() - t_setup

    # Each burst is 20 % larger than the one before, so its product clearly leads every
    # earlier target (near-ties are held back by the push hysteresis, by design).
    sizes = [round(args.burst_users * args.burst_growth**r) for r in range(args.rounds)]
    warmup = args.warmup

    async def bursts() -> tuple[list[float], float, float]:
        sem = asyncio.Semaphore(100)

        async def one(i: int) -> LeanClient:
            async with sem:
                token = _token(secret, f"bench-burst-{run_id}-{i}", "viewer")
                return await LeanClient.connect(load_servers[i % len(load_servers)], token)

        conns = await asyncio.gather(*(one(i) for i in range(max(sizes))))
        start = time.time() + 1.0
        stop = start + warmup + args.rounds * args.interval + 3.0
        go.set(start, stop)
        await asyncio.sleep(max(0.0, start + warmup - time.time()))
        measured_from = time.time()
        before = await asyncio.to_thread(_scrape, servers)
        cpu_before = [process_cpu_s(p) for p in pids]
        sent_at = []
        for target, size in zip(target_ids, sizes, strict=True):
            frames = [
                client_frame(
                    msgspec.json.encode(
                        {"type": "signal", "session": session, "name": name, "product": target}
                    )
                )
                for name in ("product_click", "add_to_cart", "share")
            ]
            sent_at.append(time.time())
            for frame in frames:
                for ws in conns[:size]:
                    ws.write(frame)
                await asyncio.sleep(0)
            await asyncio.sleep(args.interval)
        after = await asyncio.to_thread(_scrape, servers)
        cpu_after = [process_cpu_s(p) for p in pids]
        measured_s = time.time() - measured_from
        for ws in conns:
            ws.close()
        burst_signals = 3 * sum(sizes)
        events = sum(v for k, v in after.items() if k.startswith("livecart_ranking_events"))
        events -= sum(v for k, v in before.items() if k.startswith("livecart_ranking_events"))
        print(f"  measured window {measured_s:.1f} s; load average {loadavg()}")
        closes = {
            k.split('"')[1]: after[k] - before.get(k, 0.0)
            for k in after
            if k.startswith("livecart_closes_total") and after[k] - before.get(k, 0.0) > 0
        }
        accepted = (events - burst_signals) / measured_s
        cpu = [(b - a) / measured_s for a, b in zip(cpu_before, cpu_after, strict=True)]
        print(
            f"  server accepted {accepted:,.0f} background signals/s over the window "
            f"(asked {args.load:,.0f}); closes during it: {closes or 'none'}"
        )
        if cpu:
            per_signal = sum(cpu) / max(events / measured_s, 1e-9) * 1e6
            print(
                "  server CPU: "
                + ", ".join(f"{c:.0%}" for c in cpu)
                + f" of a core ({per_signal:,.0f} µs of CPU per accepted signal, pushes included)"
            )
        return sent_at, accepted, measured_s

    print(
        f"servers {', '.join(servers)}: {args.subscribers} feed subscribers ({'lean client' if args.lean_subscribers else 'websockets client, permessage-deflate'}) on {watch_server}, "
        f"load {args.load:,.0f} signals/s over {math.ceil(args.load / args.per_connection)} "
        f"connections ({args.per_connection:g}/s each; flood limit 20 frames/2 s unless changed) "
        f"to {', '.join(load_servers)}; {args.rounds} bursts of {sizes[0]}–{sizes[-1]} viewers; "
        f"clients connected in {setup_s:.0f} s; load average {loadavg()}"
    )
    sent_at, _, _ = asyncio.run(bursts())
    seen_all: list[dict[tuple[str, str], float]] = []
    client_cpu = 0.0
    sub_closes: dict[int, int] = {}
    for _ in procs:
        seen, cpu, closes = results.get()
        seen_all += seen
        client_cpu += cpu
        for code, n in closes.items():
            sub_closes[code] = sub_closes.get(code, 0) + n
    load_rate = load_cpu = load_elapsed = 0.0
    load_conns = 0
    load_closes: dict[int, int] = {}
    for _ in load_procs:
        rate, cpu, elapsed, n, closes = load_out.get()
        load_rate += rate
        load_cpu += cpu
        load_elapsed = max(load_elapsed, elapsed)
        load_conns += n
        for code, c in closes.items():
            load_closes[code] = load_closes.get(code, 0) + c
    for p in [*procs, *load_procs]:
        p.join()

    print(
        f"  load generator sent {load_rate:,.0f} signals/s from {load_conns} connections "
        f"(closed by the server: {load_closes or 'none'}); subscribers closed: "
        f"{sub_closes or 'none'}"
    )
    for kind in ("trending", "feed"):
        latencies = []
        firsts = []  # per burst: the first subscriber to see it (decision + one delivery)
        spreads = []  # per burst: from the first subscriber to the 99th percentile (fan-out)
        missed = 0
        for target, t0 in zip(target_ids, sent_at, strict=True):
            burst = []
            for seen in seen_all:
                at = seen.get((kind, target))
                if at is None or at < t0:
                    missed += 1
                else:
                    burst.append(at - t0)
            if burst:
                burst.sort()
                firsts.append(burst[0])
                spreads.append(_quantile(burst)(0.99) - burst[0])
            latencies += burst
        latencies.sort()
        if latencies:
            q = _quantile(latencies)
            print(
                f"  {kind:<8} burst → push: p50 {q(0.5) * 1000:,.0f} ms  p95 {q(0.95) * 1000:,.0f} ms"
                f"  p99 {q(0.99) * 1000:,.0f} ms  max {latencies[-1] * 1000:,.0f} ms"
                f"  ({len(latencies):,} deliveries, {missed:,} never seen)"
            )
            print(
                f"  {'':<8} first subscriber: median {statistics.median(firsts) * 1000:,.0f} ms, "
                f"worst {max(firsts) * 1000:,.0f} ms; first → 99th percentile subscriber "
                f"(fan-out): median {statistics.median(spreads) * 1000:,.0f} ms, "
                f"worst {max(spreads) * 1000:,.0f} ms"
            )
        else:
            print(f"  {kind:<8} no push listed a burst product ({missed:,} expected)")
    print(
        f"  load generator CPU: subscribers {client_cpu / load_elapsed:.0%}, "
        f"load {load_cpu / load_elapsed:.0%} of a core (same machine as the server)"
    )
    print("  target: p99 ≤ 1 s at 10,000 signals/s with 2,000 subscribers")
    return 0


def bench_adapter(args: argparse.Namespace) -> int:
    """CPU per signal in the node's ranking adapter (`RankingService.record`), alone.

    No server and no database: stub ports, with the catalog, the viewers and the room already
    cached, as on a node in steady state. What the gateway spends on a frame (WebSocket
    parsing, decoding, flood check, dispatch) is not included: compare with the server's CPU
    per signal that `--server`/`--spawn` prints.
    """
    from types import SimpleNamespace

    from livecart.auth import Identity
    from livecart.ranking import RankingService
    from livecart.ranking.profiles import Viewer
    from livecart.runtime.metrics import Metrics

    metrics = Metrics()
    rooms: dict[str, Any] = {}

    async def no_orders(who: Identity) -> list[Any]:
        return []

    service = RankingService(
        cast(Any, None),
        redis_url=None,
        room_of=rooms.get,
        orders_of=no_orders,
        event_counter=metrics.ranking_events.labels,
        observe_push=metrics.push_seconds.observe,
    )
    session = SessionInfo("s1", "cr1", "bench")
    products = [ProductInfo(f"p{i}", "cr1", "bench") for i in range(5)]
    for p in products:
        service.catalog.products[p.id] = p
        service.index.put_product(p)
    service.index.start_session(session, [p.id for p in products])
    rooms["s1"] = SimpleNamespace(category="bench", tags=[], creator="cr1")
    users = [Identity(f"u{i}", f"u{i}", "viewer", False) for i in range(2_500)]
    for who in users:
        service.profiles.viewers[who.sub] = Viewer(False, True, None)
    rng = random.Random(args.seed)
    n = args.adapter_signals
    plan: list[tuple[Identity, SignalKind, str | None, int]] = []
    for i in range(n):
        who = users[i % len(users)]
        if rng.random() < 0.7:
            plan.append((who, "like", None, rng.randint(1, 5)))
        else:
            kind: SignalKind = "product_click" if rng.random() < 0.7 else "add_to_cart"
            plan.append((who, kind, rng.choice(products).id, 1))

    async def run() -> float:
        record = service.record
        c0 = time.process_time()
        for who, kind, product, count in plan:
            record(who, kind, "s1", product_id=product, count=count)
        return time.process_time() - c0

    best = min(asyncio.run(run()) for _ in range(args.repeat))
    print(
        f"ranking adapter: {n:,} signals (70 % likes, 30 % clicks and add-to-carts from 2,500 "
        f"viewers) in {best:.3f} s CPU: {best / n * 1e6:.1f} µs per signal "
        f"({n / best:,.0f} signals/s on one core)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--products-per-session", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20_000.0, help="event-time rate, signals/s")
    parser.add_argument("--read-every", type=int, default=2_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    server = parser.add_argument_group("server push latency (with --server or --spawn)")
    server.add_argument(
        "--server", help="base URL of a running livecart node (several: comma-separated)"
    )
    server.add_argument("--server-pid", help="its process id(s), to report the server's CPU")
    server.add_argument(
        "--spawn", type=int, default=0, help="start this many nodes instead (needs --database-url)"
    )
    server.add_argument("--database-url", help="PostgreSQL for --spawn (embedded when omitted)")
    server.add_argument("--redis-url", help="Redis for --spawn (needed with more than one node)")
    server.add_argument(
        "--flood-frames", type=int, default=0, help="LIVECART_FLOOD_FRAMES for --spawn (default 20)"
    )
    server.add_argument("--data-dir", default=".livecart", help="where the node keeps jwt_secret")
    server.add_argument("--secret", help="the node's JWT secret (instead of --data-dir)")
    server.add_argument("--subscribers", type=int, default=2_000)
    server.add_argument(
        "--lean-subscribers",
        action="store_true",
        help="subscribers without the websockets library (no compression, cheap decoding)",
    )
    server.add_argument("--client-procs", type=int, default=2)
    server.add_argument("--load", type=float, default=10_000.0, help="background signals/s")
    server.add_argument("--load-procs", type=int, default=1)
    server.add_argument(
        "--per-connection",
        type=float,
        default=4.0,
        help="signals/s per load connection (the flood limit is 20 frames per 2 s)",
    )
    server.add_argument("--warmup", type=float, default=5.0)
    server.add_argument("--rounds", type=int, default=10)
    server.add_argument("--interval", type=float, default=5.0)
    server.add_argument("--burst-users", type=int, default=100)
    server.add_argument("--burst-growth", type=float, default=1.2)
    parser.add_argument(
        "--adapter", action="store_true", help="time the node's ranking adapter per signal"
    )
    parser.add_argument("--adapter-signals", type=int, default=200_000)
    args = parser.parse_args(argv)
    if args.server or args.spawn:
        return bench_server(args)
    if args.adapter:
        return bench_adapter(args)

    world = World(args.sessions, args.products_per_session, 12, args.seed)
    stream = make_stream(world, args.events, args.users, args.rate, args.seed)
    config = RankingConfig()
    print(
        f"python {platform.python_version()} on {platform.machine()}, one process, one thread; "
        f"{len(stream):,} signals, {args.users:,} users, {len(world.sessions)} live sessions, "
        f"{len(world.sessions) * args.products_per_session:,} live products; "
        f"a trending read every {args.read_every:,} signals"
    )

    def core() -> tuple[Callable[[Signal], object], Callable[[float], object]]:
        index = world.index(config)
        return index.ingest, lambda now: index.snapshot(now, 10)

    uncapped = RankingConfig(user_item_cap=math.inf, user_host_cap=math.inf)

    def core_uncapped() -> tuple[Callable[[Signal], object], Callable[[float], object]]:
        index = world.index(uncapped)
        return index.ingest, lambda now: index.snapshot(now, 10)

    def lazy() -> tuple[Callable[[Signal], object], Callable[[float], object]]:
        baseline = LazySortOnRead(world, config.half_life_s)
        return baseline.ingest, lambda now: baseline.read(now, 10)

    def decay_all() -> tuple[Callable[[Signal], object], Callable[[float], object]]:
        baseline = DecayAll(world, config.half_life_s)
        return baseline.ingest, lambda now: baseline.read(now, 10)

    rows = [
        ("core (forward decay)", timed(core, stream, args.read_every, args.repeat), len(stream)),
        (
            "core, caps off",
            timed(core_uncapped, stream, args.read_every, args.repeat),
            len(stream),
        ),
        ("lazy+sort baseline", timed(lazy, stream, args.read_every, args.repeat), len(stream)),
        (
            "decay-all baseline",
            timed(decay_all, stream[: args.naive_events], args.read_every, args.repeat),
            args.naive_events,
        ),
    ]
    best_core = max(rows[0][1][0])
    print(
        f"\n{'implementation':<22} {'events':>9} {'best ev/s (CPU)':>16} {'median (CPU)':>13} "
        f"{'best ev/s (wall)':>17} {'core ×':>8}"
    )
    for name, (cpu, wall), n in rows:
        print(
            f"{name:<22} {n:>9,} {max(cpu):>16,.0f} {statistics.median(cpu):>13,.0f} "
            f"{max(wall):>17,.0f} {best_core / max(cpu):>8.1f}"
        )

    # Read cost alone, on the state left by a full ingest.
    index = world.index(config)
    baseline = LazySortOnRead(world, config.half_life_s)
    for s in stream:
        index.ingest(s)
        baseline.ingest(s)
    now = stream[-1].at
    reads = 2_000
    c0 = time.process_time()
    for _ in range(reads):
        index.snapshot(now, 10)
    core_read = (time.process_time() - c0) / reads
    c0 = time.process_time()
    for _ in range(reads // 10):
        baseline.read(now, 10)
    lazy_read = (time.process_time() - c0) / (reads // 10)
    print(
        f"\ntrending read (top 10 products + top 10 hosts): core {core_read * 1e6:,.1f} µs, "
        f"lazy+sort {lazy_read * 1e6:,.1f} µs over {len(baseline.items):,} items "
        f"({lazy_read / core_read:,.0f}× slower)"
    )
    target = 200_000
    verdict = "meets" if best_core >= target else "misses"
    print(f"target ≥ {target:,} signals/s on one core: {verdict} ({best_core:,.0f}/s CPU)")
    print(
        f"landmark moves during the run: {index.landmark_moves} "
        f"(one every {index.landmark_period / 86_400:.1f} days of event time, at period "
        "boundaries)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
