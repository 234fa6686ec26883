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

With `--server URL` it measures instead the push latency of a running server (SPEC §5):
`--subscribers` WebSocket clients send `feed {on: true}`; background load of `--load` signals
per second (likes and product clicks from many viewers, each connection under the flood
limit) runs from a separate process; then, every `--interval` seconds, a burst of
`--burst-users` distinct viewers (20 % more each round) click, add to cart and share a
product nobody touched before.
The latency of a round, per subscriber, is from the burst's first frame to the first
`trending` (and `feed`) message listing that product; p50/p95/p99 over all subscribers and
rounds are printed with the CPU the load generator itself used (client processes run on the
same machine as the server and compete with it).

Usage: python scripts/bench_ranking.py [--events N] [--repeat R] [--read-every N]
       python scripts/bench_ranking.py --server http://127.0.0.1:8000 --data-dir .livecart
"""

from __future__ import annotations

import argparse
import heapq
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from livecart.core.ranking import (
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


def _token(secret: str, sub: str, role: str) -> str:
    import jwt

    claims = {"sub": sub, "name": sub, "role": role, "exp": int(time.time()) + 7200}
    return str(jwt.encode(claims, secret, algorithm="HS256"))


def _ws_url(server: str, token: str) -> str:
    base = server.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
    return f"{base}/ws?token={token}"


def _producer(
    server: str,
    secret: str,
    session: str,
    products: list[str],
    rate: float,
    per_connection: float,
    seconds: float,
    out: Any,
) -> None:
    """Background load: `rate` signals/s from rate/per_connection viewers (one process)."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    async def one(i: int, counter: list[int], stop: float) -> None:
        rng = random.Random(i)
        async with connect(_ws_url(server, _token(secret, f"bench-load-{i}", "viewer"))) as ws:
            due = time.time() + rng.random() / per_connection
            while time.time() < stop:
                # An absolute schedule, so time spent sending does not lower the rate.
                due += 1.0 / per_connection
                await asyncio.sleep(max(0.0, due - time.time()))
                if rng.random() < 0.7:
                    frame = {"type": "like", "session": session, "count": rng.randint(1, 5)}
                else:
                    name = "product_click" if rng.random() < 0.7 else "add_to_cart"
                    frame = {
                        "type": "signal",
                        "session": session,
                        "name": name,
                        "product": rng.choice(products),
                    }
                await ws.send(json.dumps(frame))
                counter[0] += 1

    async def run() -> None:
        counter = [0]
        n = max(1, math.ceil(rate / per_connection))
        stop = time.time() + seconds
        c0, t0 = time.process_time(), time.time()
        await asyncio.gather(*(one(i, counter, stop) for i in range(n)), return_exceptions=True)
        out.put((counter[0] / max(time.time() - t0, 1e-9), time.process_time() - c0, n))

    asyncio.run(run())


def _subscribers(
    server: str, secret: str, first: int, count: int, out: Any, stop_at: float
) -> None:
    """`count` feed subscribers; records when each first saw every product id, per message type."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    seen: list[dict[tuple[str, str], float]] = [{} for _ in range(count)]

    async def one(i: int) -> None:
        token = _token(secret, f"bench-sub-{first + i}", "viewer")
        async with connect(_ws_url(server, token), max_queue=None) as ws:
            await ws.send(json.dumps({"type": "feed", "on": True}))
            mine = seen[i]
            while time.time() < stop_at:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, stop_at - time.time()))
                except TimeoutError:
                    break
                now = time.time()
                for message in json.loads(raw):
                    kind = message.get("type")
                    if kind == "trending":
                        ids = [p["id"] for p in message.get("products", [])]
                    elif kind == "feed":
                        ids = [item["id"] for item in message.get("items", [])[:10]]
                    else:
                        continue
                    for item in ids:
                        mine.setdefault((kind, item), now)

    async def run() -> None:
        c0 = time.process_time()
        await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        out.put((seen, time.process_time() - c0))

    asyncio.run(run())


def _quantile(ordered: list[float]) -> Callable[[float], float]:
    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))]

    return q


def bench_server(args: argparse.Namespace) -> int:
    import asyncio
    import multiprocessing as mp

    import httpx
    import msgspec
    from websockets.asyncio.client import connect

    secret = args.secret or (Path(args.data_dir) / "jwt_secret").read_text().strip()
    server = args.server.rstrip("/")
    creator = _token(secret, "bench-creator", "creator")
    headers = {"Authorization": f"Bearer {creator}"}
    background, targets = 5, args.rounds
    with httpx.Client(base_url=server, headers=headers, timeout=30) as http:
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

    warmup = 10.0
    total = warmup + args.rounds * args.interval + 10.0
    start = time.time()
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    procs = []
    per_proc = math.ceil(args.subscribers / args.client_procs)
    for k in range(args.client_procs):
        n = min(per_proc, args.subscribers - k * per_proc)
        if n > 0:
            procs.append(
                ctx.Process(
                    target=_subscribers,
                    args=(server, secret, k * per_proc, n, results, start + total),
                )
            )
    load_out: Any = ctx.Queue()
    producer = ctx.Process(
        target=_producer,
        args=(server, secret, session, background_ids, args.load, 8.0, total - 5.0, load_out),
    )
    for p in [*procs, producer]:
        p.start()

    # Each burst is 20 % larger than the one before, so its product clearly leads every
    # earlier target (near-ties are held back by the push hysteresis, by design).
    sizes = [round(args.burst_users * args.burst_growth**r) for r in range(args.rounds)]

    async def bursts() -> list[float]:
        conns = [
            await connect(_ws_url(server, _token(secret, f"bench-burst-{i}", "viewer")))
            for i in range(max(sizes))
        ]
        await asyncio.sleep(max(0.0, start + warmup - time.time()))
        sent_at = []
        for target, size in zip(target_ids, sizes, strict=True):
            sent_at.append(time.time())
            for name in ("product_click", "add_to_cart", "share"):
                frame = {"type": "signal", "session": session, "name": name, "product": target}
                text = msgspec.json.encode(frame).decode()
                await asyncio.gather(*(ws.send(text) for ws in conns[:size]))
            await asyncio.sleep(args.interval)
        for ws in conns:
            await ws.close()
        return sent_at

    sent_at = asyncio.run(bursts())
    seen_all: list[dict[tuple[str, str], float]] = []
    client_cpu = 0.0
    for _ in procs:
        seen, cpu = results.get()
        seen_all += seen
        client_cpu += cpu
    achieved, load_cpu, load_conns = load_out.get()
    for p in [*procs, producer]:
        p.join()

    print(
        f"server {server}: {len(seen_all)} feed subscribers, background load {achieved:,.0f} "
        f"signals/s from {load_conns} viewers (asked {args.load:,.0f}), {args.rounds} bursts of "
        f"{sizes[0]}–{sizes[-1]} viewers"
    )
    for kind in ("trending", "feed"):
        latencies = []
        missed = 0
        for target, t0 in zip(target_ids, sent_at, strict=True):
            for seen in seen_all:
                at = seen.get((kind, target))
                if at is None or at < t0:
                    missed += 1
                else:
                    latencies.append(at - t0)
        latencies.sort()
        if latencies:
            q = _quantile(latencies)
            print(
                f"  {kind:<8} burst → push: p50 {q(0.5) * 1000:,.0f} ms  p95 {q(0.95) * 1000:,.0f} ms"
                f"  p99 {q(0.99) * 1000:,.0f} ms  max {latencies[-1] * 1000:,.0f} ms"
                f"  ({len(latencies):,} deliveries, {missed:,} never seen)"
            )
        else:
            print(f"  {kind:<8} no push listed a burst product ({missed:,} expected)")
    elapsed = time.time() - start
    print(
        f"  load generator CPU: subscribers {client_cpu / elapsed:.0%}, load {load_cpu / elapsed:.0%}"
        " of a core (same machine as the server)"
    )
    print("  target: p99 ≤ 1 s at 10,000 signals/s with 2,000 subscribers")
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
    server = parser.add_argument_group("server push latency (only with --server)")
    server.add_argument("--server", help="base URL of a running livecart node")
    server.add_argument("--data-dir", default=".livecart", help="where the node keeps jwt_secret")
    server.add_argument("--secret", help="the node's JWT secret (instead of --data-dir)")
    server.add_argument("--subscribers", type=int, default=2_000)
    server.add_argument("--client-procs", type=int, default=2)
    server.add_argument("--load", type=float, default=10_000.0, help="background signals/s")
    server.add_argument("--rounds", type=int, default=10)
    server.add_argument("--interval", type=float, default=5.0)
    server.add_argument("--burst-users", type=int, default=100)
    server.add_argument("--burst-growth", type=float, default=1.2)
    args = parser.parse_args(argv)
    if args.server:
        return bench_server(args)

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
        f"(one every ~{config.max_exponent / math.log(2.0) * config.half_life_s / 86_400:.1f} days "
        "of event time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
