"""Dashboard picture from a real run: one node under scripted load, /metrics scraped every second,
plotted like docs/grafana-dashboard.json into docs/img/dashboard.png.

Starts `python -m livecart serve --port 0` (the embedded PostgreSQL in a temporary data dir, or
--database-url), creates a creator, products, a live session and an offer over REST, then drives
WebSocket clients from this process for --seconds: viewers and guests joining over a ramp,
chatters just under the allowed rate (1 message/s per user, burst 5) with a few duplicates,
blocked terms and links, two spammers bursting past the rate limit, likes, product signals,
feed subscriptions, buys on rotating offers (a new offer opens once the current one sells out
or is ended), bad frames, reconnects with `since`, a flooder (closed with 4008), a forged token,
and moderation deletes and timeouts. Everything runs on 127.0.0.1 and stops after --seconds.
Rates and latency quantiles come from counter and histogram-bucket deltas between scrapes,
computed the way Prometheus' rate() and histogram_quantile() do.

    python scripts/plot_dashboard.py [--seconds 60] [--viewers 200] [--chatters 40]
                                     [--database-url URL] [--out docs/img/dashboard.png]

Prints what moved (and what did not) and writes the PNG. Needs matplotlib
(`pip install matplotlib`) and the test extras (httpx, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import cpu_model
from livecart.runtime.process import NodeProcess

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "img" / "dashboard.png"
HOST = "127.0.0.1"

PHRASES = [
    "love the {p}!",
    "how big is the {p}?",
    "does the {p} ship to Canada",
    "just bought the {p}",
    "what colours does the {p} come in?",
    "is the {p} dishwasher safe",
    "hi from Lisbon",
    "first time here, hello everyone",
    "the glaze on that {p} is gorgeous",
    "can you show the {p} closer",
    "price for two {p}s?",
    "waiting for the next drop",
    "my {p} arrived yesterday, so good",
    "is there a discount code today",
    "that {p} would make a great gift",
    "how long does shipping take",
    "back again, hi!",
    "the lighting is great today",
    "does the {p} come with a box",
    "sold out so fast last time",
    "what is the {p} made of",
    "any more stock of the {p} coming?",
    "greetings from Osaka",
    "this show is my Sunday ritual",
    "can I pay with a gift card",
    "I want the {p} in blue",
    "is the {p} handmade",
    "love your studio",
    "how heavy is the {p}",
    "please restock the {p}",
    "great deal on the {p}",
    "will there be an auction later?",
    "where do you source the clay",
    "my sister loves the {p}",
    "how do I clean the {p}",
    "the {p} looks smaller than I thought",
    "happy Friday everyone",
    "can you pin the {p}",
    "adding the {p} to my wishlist",
    "that was quick!",
]
PRODUCTS = [
    ("Speckled stoneware mug", 2400),
    ("Pour-over coffee kit", 5900),
    ("Linen tea towels", 3200),
    ("Walnut serving board", 4500),
]
BLOCKED_TERM = "scamcoin"
BAD_FRAMES: list[str | bytes] = [
    "{not json",
    '{"type": "teleport", "session": "x"}',
    '{"type": "chat", "session": 12}',
    '{"type": "buy", "session": "s", "offer": "o", "qty": 0, "ref": "r"}',
    "[1, 2, 3]",
    "x" * 17_000,  # over the 16 KiB frame limit
]
# Grafana's dark theme and classic palette, so the picture reads like the imported dashboard.
BG, PANEL, GRID, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#96d98d"]
FIXED_COLORS = {
    "viewer": "#73bf69",
    "guest": "#8ab8ff",
    "creator": "#f2cc0c",
    "moderator": "#b877d9",
    "admin": "#ff780a",
    "reserved": "#73bf69",
    "sold_out": "#ff780a",
    "limit_reached": "#f2cc0c",
    "offer_closed": "#f2495c",
    "1000": "#73bf69",
    "1001": "#8ab8ff",
    "4008": "#f2495c",
    "4009": "#ff780a",
    "acks": "#73bf69",
    # frames in by type
    "chat": "#f2cc0c",
    "like": "#f2495c",
    "buy": "#73bf69",
    "join": "#ff780a",
    "invalid": "#b877d9",
    "ping": "#5794f2",
    "signal": "#37c4c4",
    "feed": "#c4c4c4",
    "bid": "#fade2a",
    "report": "#ff9830",
    "leave": "#8e8e9e",
    # chat refusals by code
    "refused: rate_limited": "#ff780a",
    "refused: duplicate": "#f2cc0c",
    "refused: blocked": "#f2495c",
    "refused: held": "#b877d9",
    "refused: muted": "#5794f2",
    "refused: slow_mode": "#96d98d",
    "p50": "#8ab8ff",
    "p99": "#ff780a",
}


def require() -> None:
    missing = [m for m in ("matplotlib", "httpx", "websockets") if not importlib.util.find_spec(m)]
    if missing:
        names = " ".join(missing)
        them = "them" if len(missing) > 1 else "it"
        print(
            f"plot_dashboard.py draws with matplotlib and drives the node with httpx and "
            f"websockets; missing here: {', '.join(missing)}.\n"
            f"Install {them} into this environment and run again:\n\n    pip install {names}\n",
            file=sys.stderr,
        )
        sys.exit(2)


# ---------------------------------------------------------------- the server


class Server(NodeProcess):
    """`python -m livecart serve --port 0` in a child process, logging JSON at warning level."""

    def __init__(self, database_url: str, data_dir: str, secret: str) -> None:
        super().__init__(
            data_dir,
            database_url=database_url,
            env={
                "LIVECART_JWT_SECRET": secret,
                "LIVECART_NODE_ID": "plot-node",
                "LIVECART_LOG_FORMAT": "json",
                "LIVECART_LOG_LEVEL": "warning",
            },
            host=HOST,
        )


# ---------------------------------------------------------------- scraping


Key = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[Key, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("livecart_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class Scrapes:
    t: list[float] = field(default_factory=list)
    samples: list[dict[Key, float]] = field(default_factory=list)

    def collapse(self, i: int, name: str, by: str | None = None) -> dict[str, float]:
        """`sum by (by) (name)` at scrape i ("" when by is None)."""
        out: dict[str, float] = {}
        for (n, labels), v in self.samples[i].items():
            if n == name:
                k = dict(labels).get(by, "") if by else ""
                out[k] = out.get(k, 0.0) + v
        return out

    def keys(self, name: str, by: str | None) -> list[str]:
        seen: set[str] = set()
        for i in range(len(self.t)):
            seen.update(self.collapse(i, name, by))
        return sorted(seen)

    def gauge(self, name: str, by: str | None = None) -> dict[str, list[float]]:
        keys = self.keys(name, by)
        rows = [self.collapse(i, name, by) for i in range(len(self.t))]
        return {k: [r.get(k, math.nan) for r in rows] for k in keys}

    def rate(self, name: str, by: str | None = None, window: int = 5) -> dict[str, list[float]]:
        keys = self.keys(name, by)
        rows = [self.collapse(i, name, by) for i in range(len(self.t))]
        out: dict[str, list[float]] = {k: [] for k in keys}
        for i in range(len(self.t)):
            j = max(0, i - window)
            dt = self.t[i] - self.t[j]
            for k in keys:
                out[k].append((rows[i].get(k, 0.0) - rows[j].get(k, 0.0)) / dt if dt else math.nan)
        return out

    def quantile(self, name: str, q: float, window: int = 5) -> list[float]:
        """histogram_quantile(q, sum by (le) (rate(name_bucket[window]))) at every scrape."""
        out = []
        for i in range(len(self.t)):
            now = self.collapse(i, name + "_bucket", "le")
            then = self.collapse(max(0, i - window), name + "_bucket", "le")
            buckets = sorted(
                ((float(le), now[le] - then.get(le, 0.0)) for le in now), key=lambda b: b[0]
            )
            out.append(histogram_quantile(q, buckets))
        return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile: linear interpolation inside the bucket holding the rank."""
    if len(buckets) < 2 or buckets[-1][0] != math.inf or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]  # the rank falls in +Inf: the largest finite bound
    upper, count = buckets[b]
    if b == 0 and upper <= 0:
        return upper
    lower, below = (0.0, 0.0) if b == 0 else buckets[b - 1]
    in_bucket = count - below
    return lower + (upper - lower) * ((rank - below) / in_bucket if in_bucket else 1.0)


async def scrape_loop(base: str, scrapes: Scrapes, t0: float, stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=5) as http:

        async def scrape() -> None:
            at = time.monotonic()
            text = (await http.get("/metrics")).text
            scrapes.t.append(at - t0)
            scrapes.samples.append(parse_metrics(text))

        tick = 0
        while not stop.is_set():
            await scrape()
            tick += 1
            delay = t0 + tick - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, delay))
        await scrape()  # after the load: the totals include its last answers


# ---------------------------------------------------------------- the load


class Client:
    """One WebSocket client that joins the session, keeps its position and reconnects."""

    def __init__(self, load: Load, sub: str | None, role: str = "viewer") -> None:
        self.load = load
        self.sub = sub
        self.token = None if sub is None else load.issue(sub, role)
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = False
        self.epoch: str | None = None
        self.offset = 0
        self.last_text = ""
        self.close_code: int | None = None
        self.feed = False

    async def open(self, resume: bool = False) -> None:
        import websockets

        url = self.load.ws_url + (f"?token={self.token}" if self.token else "")
        try:
            self.ws = await websockets.connect(url, max_size=None, open_timeout=15)
        except (OSError, TimeoutError, websockets.WebSocketException):
            self.load.tally["connect failed"] += 1
            return
        self.reader = asyncio.create_task(self._read())
        join: dict[str, Any] = {"type": "join", "session": self.load.session}
        if resume and self.epoch is not None:
            join["since"] = {"epoch": self.epoch, "offset": self.offset}
        self.ready = True
        await self.send(join)
        if self.feed:
            await self.send({"type": "feed", "on": True})

    async def _read(self) -> None:
        import websockets

        try:
            async for raw in self.ws:
                for message in json.loads(raw):
                    self.load.on_message(self, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.ready = False
            self.close_code = getattr(self.ws, "close_code", None)

    async def send(self, frame: dict[str, Any] | str | bytes) -> bool:
        if not self.ready:
            return False
        data = json.dumps(frame) if isinstance(frame, dict) else frame
        try:
            await self.ws.send(data)
        except Exception:
            self.ready = False
            return False
        return True

    async def close(self) -> None:
        self.ready = False
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)


class Load:
    def __init__(
        self, base: str, secret: str, opts: argparse.Namespace, cpu: CpuMeter | None = None
    ) -> None:
        self.cpu = cpu
        self.base = base
        self.ws_url = base.replace("http://", "ws://") + "/ws"
        self.secret = secret
        self.opts = opts
        self.run_id = secrets.token_hex(3)
        self.creator = f"plot-creator-{self.run_id}"
        self.session = ""
        self.products: list[str] = []
        self.offer = ""
        self.offers_opened = 0
        self.sold_out = asyncio.Event()
        self.acked: deque[int] = deque(maxlen=200)
        self.tally: Counter[str] = Counter()
        self.refs = itertools.count(1)
        self.viewers: list[Client] = []
        self.chatters: list[Client] = []
        self.spammers: list[Client] = []
        self.guests: list[Client] = []
        self.creator_client = Client(self, self.creator, "creator")
        self.pending: set[asyncio.Task[None]] = set()
        self.seen_at_zero: set[str] = set()
        self.failures: list[str] = []
        self.rng = random.Random(8)

    def issue(self, sub: str, role: str = "viewer") -> str:
        from livecart import auth

        return auth.issue(self.secret, sub, role, ttl_s=3600)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.issue(self.creator, 'creator')}"}

    # ------------------------------------------------------------ REST

    async def seed(self, http: Any) -> None:
        h = self.headers
        for title, price in PRODUCTS:
            r = await http.post(
                "/api/products",
                headers=h,
                json={"title": title, "price_cents": price, "stock": 100_000, "category": "home"},
            )
            r.raise_for_status()
            self.products.append(r.json()["id"])
        r = await http.post(
            "/api/sessions", headers=h, json={"title": "Sunday pottery drop", "category": "home"}
        )
        r.raise_for_status()
        self.session = r.json()["id"]
        for pid in self.products:
            r = await http.post(
                f"/api/sessions/{self.session}/products", headers=h, json={"product_id": pid}
            )
            r.raise_for_status()
        r = await http.post(
            f"/api/creators/{self.creator}/blocked-terms",
            headers=h,
            json={"term": BLOCKED_TERM, "action": "block"},
        )
        r.raise_for_status()
        (await http.post(f"/api/sessions/{self.session}/start", headers=h)).raise_for_status()
        await self.open_offer(http)

    async def open_offer(self, http: Any) -> str:
        pid = self.products[self.offers_opened % len(self.products)]
        r = await http.post(
            f"/api/sessions/{self.session}/offers",
            headers=self.headers,
            json={
                "product_id": pid,
                "price_cents": 999,
                "quantity": self.opts.offer_quantity,
                "per_user_limit": 2,
                "duration_s": 600,
            },
        )
        r.raise_for_status()
        self.offers_opened += 1
        self.offer = r.json()["id"]
        self.sold_out.clear()
        return self.offer

    # ------------------------------------------------------------ messages

    def on_message(self, client: Client, m: dict[str, Any]) -> None:
        kind = m.get("type", "?")
        self.tally["received"] += 1
        if kind == "joined":
            client.epoch, client.offset = m["epoch"], m["offset"]
        elif m.get("session") == self.session and isinstance(m.get("offset"), int):
            client.offset = max(client.offset, m["offset"])
        match kind:
            case "ack" if str(m.get("ref", "")).startswith("c") and m.get("offset"):
                self.acked.append(m["offset"])
            case "order":
                self.tally["orders"] += 1
            case "held":
                self.tally["held"] += 1
            case "error":
                code = m.get("code", "?")
                frame = {"c": "chat", "s": "chat", "b": "buy"}.get(
                    str(m.get("ref", ""))[:1], "other"
                )
                self.tally[f"error {frame} {code}"] += 1
                if code == "sold_out" and m.get("ref", "").startswith("b"):
                    self.sold_out.set()
            case "stock" if m.get("remaining") == 0:
                self.seen_at_zero.add(m.get("offer", ""))
                if m.get("offer") == self.offer:
                    self.sold_out.set()

    def ready(self, pool: Iterable[Client]) -> list[Client]:
        return [c for c in pool if c.ready]

    # ------------------------------------------------------------ behaviours

    async def ramp(self, until: float) -> None:
        """Viewers and guests connect over the first part of the run, the creator first."""
        await self.creator_client.open()
        everyone = self.viewers + self.guests
        self.rng.shuffle(everyone)
        span = min(10.0, self.opts.seconds / 6)
        started = time.monotonic()
        opening = []
        for i, c in enumerate(everyone):
            delay = started + span * i / len(everyone) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() >= until:
                break
            opening.append(asyncio.create_task(c.open()))
        await asyncio.gather(*opening)

    async def chatter(self, c: Client, until: float) -> None:
        rng = random.Random(c.sub)
        first = rng.randrange(len(PHRASES))
        for n in itertools.count():
            await asyncio.sleep(rng.uniform(0.9, 1.5))
            if time.monotonic() >= until:
                return
            if not c.ready:
                continue
            roll = rng.random()
            if roll < 0.03 and c.last_text:
                text = c.last_text  # refused as a duplicate
            elif roll < 0.04:
                text = f"cheap {BLOCKED_TERM} giveaway, dm me"  # blocked
            elif roll < 0.05:
                text = "better price at cheap-pots.example.com"  # held: link
            else:
                product = rng.choice(PRODUCTS)[0].split()[-1].lower()
                text = PHRASES[(first + n) % len(PHRASES)].format(p=product)
            c.last_text = text
            ref = f"c{next(self.refs)}"
            await c.send({"type": "chat", "session": self.session, "text": text, "ref": ref})

    async def spammer(self, c: Client, until: float) -> None:
        """Bursts of 8 messages: the first 5 pass (burst), the rest are rate limited."""
        rng = random.Random(c.sub)
        await asyncio.sleep(rng.uniform(2, 8))
        while time.monotonic() < until:
            for i in range(8):
                text = f"{rng.choice(PHRASES).format(p='mug')} {'!' * (i + 1)} {i}"
                ref = f"s{next(self.refs)}"
                await c.send({"type": "chat", "session": self.session, "text": text, "ref": ref})
            await asyncio.sleep(rng.uniform(7, 10))

    async def likes(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(0.1)
            pool = self.ready(self.viewers)
            for c in self.rng.sample(pool, k=min(3, len(pool))):
                count = self.rng.randint(1, 5)
                await c.send({"type": "like", "session": self.session, "count": count})

    async def signals(self, until: float) -> None:
        """Product clicks, add-to-carts and shares: about 5 a second, for the ranking core."""
        names = ("product_click", "product_click", "add_to_cart", "share")
        while time.monotonic() < until:
            await asyncio.sleep(0.2)
            pool = self.ready(self.viewers)
            if pool:
                frame = {
                    "type": "signal",
                    "session": self.session,
                    "name": self.rng.choice(names),
                    "product": self.rng.choice(self.products),
                }
                await self.rng.choice(pool).send(frame)

    async def buys(self, until: float) -> None:
        interval = 1 / self.opts.buys_per_s
        while time.monotonic() < until:
            await asyncio.sleep(interval)
            pool = self.ready(self.viewers)
            if pool:
                c = self.rng.choice(pool)
                frame = {
                    "type": "buy",
                    "session": self.session,
                    "offer": self.offer,
                    "qty": 1,
                    "ref": f"b{next(self.refs)}",
                }
                await c.send(frame)

    async def post(self, http: Any, path: str, body: Any = None) -> int | None:
        """A creator call during the load: the status, or None when it failed outright."""
        try:
            r = await http.post(path, headers=self.headers, json=body)
        except Exception as exc:
            self.failures.append(f"POST {path}: {type(exc).__name__}: {exc}")
            return None
        return int(r.status_code)

    async def offers(self, http: Any, until: float) -> None:
        """A new offer once the current one sells out; every fourth one is ended early."""
        while time.monotonic() < until:
            if self.offers_opened % 4 == 0:
                await asyncio.sleep(3)
                status = await self.post(http, f"/api/offers/{self.offer}/end")
                self.tally[f"offer end {status}"] += 1
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.sold_out.wait(), max(0.1, until - time.monotonic()))
            await asyncio.sleep(self.rng.uniform(1.5, 3))  # buyers keep hitting the old one
            while time.monotonic() < until:
                try:
                    await self.open_offer(http)
                    break
                except Exception as exc:  # an overloaded node may refuse: retry
                    self.failures.append(f"opening an offer: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(1)

    async def bad_frames(self, until: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(0.5)
            pool = self.ready(self.viewers + self.guests)
            if pool:
                await self.rng.choice(pool).send(self.rng.choice(BAD_FRAMES))

    async def churn(self, until: float) -> None:
        """Two viewers a second leave (close 1000) and come back with `since`."""
        talking = {id(c) for c in self.chatters + self.spammers}
        while time.monotonic() < until:
            await asyncio.sleep(1)
            pool = [c for c in self.ready(self.viewers + self.guests) if id(c) not in talking]
            for c in self.rng.sample(pool, k=min(2, len(pool))):
                task = asyncio.create_task(self._reconnect(c, self.rng.uniform(0.5, 2)))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)

    async def _reconnect(self, c: Client, pause: float) -> None:
        await c.close()
        self.tally["reconnects"] += 1
        await asyncio.sleep(pause)
        await c.open(resume=True)

    async def flooder(self, until: float) -> None:
        """Every 12 s a client sends 30 pings at once (closed with 4008), and one connects with
        a forged token (closed with 4001)."""
        for n in itertools.count():
            await asyncio.sleep(12 if n else 6)
            if time.monotonic() >= until:
                return
            c = Client(self, f"plot-flooder-{self.run_id}-{n}")
            await c.open()
            for i in range(30):
                if not await c.send({"type": "ping", "ref": f"p{i}"}):
                    break
            if c.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.reader, 5)
            self.tally[f"flooder closed with {c.close_code}"] += 1
            await c.close()
            forged = Client(self, None)
            forged.token = "not-a-token"
            await forged.open()
            if forged.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(forged.reader, 5)
            self.tally[f"bad token closed with {forged.close_code}"] += 1
            await forged.close()

    async def moderate(self, http: Any, until: float) -> None:
        """The creator deletes a recent message every 6 s and times a spammer out every 20 s."""
        url = f"/api/sessions/{self.session}/moderation"
        for n in itertools.count(1):
            await asyncio.sleep(6)
            if time.monotonic() >= until:
                return
            if self.acked:
                offset = self.acked.pop()
                status = await self.post(http, url, {"action": "delete", "offset": offset})
                self.tally[f"moderation delete {status}"] += 1
            if n % 3 == 0 and self.spammers:
                target = self.spammers[(n // 3) % len(self.spammers)]
                body = {"action": "timeout", "user_id": target.sub, "seconds": 8}
                status = await self.post(http, url, body)
                self.tally[f"moderation timeout {status}"] += 1

    async def run(self) -> Scrapes:
        import httpx

        opts = self.opts
        async with httpx.AsyncClient(base_url=self.base, timeout=15) as http:
            await self.seed(http)
            rid = self.run_id
            self.viewers = [Client(self, f"plot-v{i}-{rid}") for i in range(opts.viewers)]
            self.chatters = self.viewers[: opts.chatters]
            self.spammers = [Client(self, f"plot-spam{i}-{rid}") for i in range(2)]
            self.viewers += self.spammers
            self.guests = [Client(self, None) for _ in range(opts.guests)]
            for c in self.viewers[opts.chatters : opts.chatters + opts.feeds]:
                c.feed = True
            scrapes = Scrapes()
            stop = asyncio.Event()
            t0 = time.monotonic()
            until = t0 + opts.seconds
            scraper = asyncio.create_task(scrape_loop(self.base, scrapes, t0, stop))
            if self.cpu is not None:
                self.cpu.begin()
            ramp_done = asyncio.create_task(self.ramp(until))
            tasks = [
                *(asyncio.create_task(self.chatter(c, until)) for c in self.chatters),
                *(asyncio.create_task(self.spammer(c, until)) for c in self.spammers),
                asyncio.create_task(self.likes(until)),
                asyncio.create_task(self.buys(until)),
                asyncio.create_task(self.signals(until)),
                asyncio.create_task(self.offers(http, until)),
                asyncio.create_task(self.bad_frames(until)),
                asyncio.create_task(self.churn(until)),
                asyncio.create_task(self.flooder(until)),
                asyncio.create_task(self.moderate(http, until)),
            ]
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            if self.cpu is not None:
                self.cpu.end()
            await ramp_done
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    self.failures.append(f"{type(result).__name__}: {result}")
            await asyncio.sleep(0.5)  # answers in flight arrive
            stop.set()
            await scraper
            await asyncio.gather(*self.pending, return_exceptions=True)  # reconnects settle
            everyone = [*self.viewers, *self.guests, self.creator_client]
            await asyncio.gather(*(c.close() for c in everyone))
        return scrapes


# ---------------------------------------------------------------- where the CPU went


class CpuMeter:
    """Cores busy during the load: the whole machine, the node, its embedded PostgreSQL, this
    load generator, and everything else (other work sharing the machine). Linux only."""

    def __init__(self, server_pid: int, data_dir: str) -> None:
        self.server_pid = server_pid
        self.data_dir = data_dir
        self.start: dict[str, float] = {}
        self.result: dict[str, float] = {}

    @staticmethod
    def _proc_seconds(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def _postgres_pids(self) -> list[int]:
        pids: dict[int, int] = {}
        roots = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    pids[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if self.data_dir.encode() in f.read() and int(entry) != self.server_pid:
                        roots.append(int(entry))
        return roots + [pid for pid, parent in pids.items() if parent in roots]

    def _snapshot(self) -> dict[str, float]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        postgres = 0.0
        for pid in self._postgres_pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                postgres += self._proc_seconds(pid)
        return {
            "busy": (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),
            "node": self._proc_seconds(self.server_pid),
            "postgres": postgres,
            "load generator": usage.ru_utime + usage.ru_stime,
            "wall": time.monotonic(),
        }

    def begin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.start = self._snapshot()

    def end(self) -> None:
        if not self.start:
            return
        with contextlib.suppress(OSError, ValueError):
            now = self._snapshot()
            wall = now["wall"] - self.start["wall"]
            cores = {k: (now[k] - self.start[k]) / wall for k in now if k != "wall"}
            ours = cores["node"] + cores["postgres"] + cores["load generator"]
            cores["other processes"] = max(0.0, cores["busy"] - ours)
            self.result = cores

    def describe(self) -> str:
        r = self.result
        if not r:
            return "cpu: not measured"
        return (
            f"cpu during the load: {r['busy']:.2f} of {os.cpu_count()} cores busy; node "
            f"{r['node']:.2f}, its PostgreSQL {r['postgres']:.2f}, load generator "
            f"{r['load generator']:.2f}, other processes {r['other processes']:.2f}"
        )


# ---------------------------------------------------------------- the picture


def machine() -> str:
    python = f"Python {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu_model()}), {python}, {platform.system()}"


def style_axis(ax: Any, title: str, unit: str = "") -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, loc="left", color=TEXT, fontsize=11, fontweight="bold", pad=8)
    ax.tick_params(colors=MUTED, labelsize=8.5, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    if unit:
        ax.set_ylabel(unit, color=MUTED, fontsize=9)
    ax.set_xlabel("seconds into the run", color=MUTED, fontsize=8.5)
    ax.margins(x=0)


def legend(ax: Any, handles: Any = None, labels: Any = None, ncol: int = 4) -> None:
    args = () if handles is None else (handles, labels)
    leg = ax.legend(
        *args,
        loc="upper left",
        ncol=ncol,
        fontsize=8.5,
        frameon=True,
        facecolor=PANEL,
        edgecolor=PANEL,
        framealpha=0.85,
        labelcolor=TEXT,
        handlelength=1.4,
        columnspacing=1.0,
    )
    leg.set_zorder(5)


def colors_for(keys: Iterable[str]) -> dict[str, str]:
    free = itertools.cycle(PALETTE)
    return {k: FIXED_COLORS.get(k) or next(free) for k in keys}


def lines(ax: Any, t: list[float], series: dict[str, list[float]], scale: float = 1.0) -> None:
    colors = colors_for(series)
    for k, values in series.items():
        ax.plot(t, [v * scale for v in values], color=colors[k], linewidth=1.8, label=k or "total")


def headroom(ax: Any, factor: float = 1.35) -> None:
    """Room above the data for the legend."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(0 if lo >= 0 else lo, hi * factor if hi > 0 else 1)


def nonzero(series: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: v for k, v in series.items() if any(x and not math.isnan(x) for x in v)}


def plot(scrapes: Scrapes, out: Path, subtitle: str, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = scrapes.t
    fig, axes = plt.subplots(5, 2, figsize=(15, 17.5), facecolor=BG)
    fig.subplots_adjust(left=0.06, right=0.94, top=0.915, bottom=0.035, hspace=0.42, wspace=0.2)
    fig.suptitle(
        "livecart: one node under scripted load, /metrics scraped every second",
        color=TEXT,
        fontsize=16,
        fontweight="bold",
        y=0.985,
    )
    fig.text(
        0.5, 0.952, subtitle, color=MUTED, fontsize=10.5, ha="center", va="center", linespacing=1.6
    )
    (a_conn, a_close), (a_in, a_out), (a_chat, a_ack), (a_buy, a_order), (a_box, a_node) = axes
    per = f"[{window} s]"

    conn = scrapes.gauge("livecart_connections", "role")
    conn = {k: v for k, v in conn.items() if any(v)}
    colors = colors_for(conn)
    a_conn.stackplot(
        t,
        *[[0 if math.isnan(x) else x for x in v] for v in conn.values()],
        labels=list(conn),
        colors=[colors[k] for k in conn],
        alpha=0.55,
        edgecolor=PANEL,
    )
    style_axis(a_conn, "Open connections by role (stacked)", "connections")
    rooms = scrapes.gauge("livecart_joined_sessions").get("", [math.nan])
    a_conn.text(
        0.99,
        0.95,
        f"joined sessions: {rooms[-1]:.0f}",
        transform=a_conn.transAxes,
        ha="right",
        va="top",
        color=TEXT,
        fontsize=9,
    )
    headroom(a_conn)
    legend(a_conn)

    lines(a_close, t, nonzero(scrapes.rate("livecart_closes_total", "code", window)))
    style_axis(a_close, f"WebSocket closes/s by code {per}", "closes/s")
    headroom(a_close)
    legend(a_close)

    lines(a_in, t, nonzero(scrapes.rate("livecart_frames_in_total", "type", window)))
    style_axis(a_in, f"Frames in/s by type {per}", "frames/s")
    headroom(a_in, 1.45)
    legend(a_in, ncol=4)

    msgs = scrapes.rate("livecart_messages_out_total", None, window).get("", [])
    frames = scrapes.rate("livecart_frames_out_total", None, window).get("", [])
    a_out.plot(t, msgs, color="#73bf69", linewidth=1.8, label="messages/s")
    a_out.plot(t, frames, color="#8ab8ff", linewidth=1.8, label="frames/s")
    style_axis(a_out, f"Messages and frames out/s, messages per frame {per}", "per second")
    headroom(a_out)
    twin = a_out.twinx()
    ratio = [m / f if f else math.nan for m, f in zip(msgs, frames, strict=True)]
    twin.plot(t, ratio, color="#f2cc0c", linewidth=1.6, linestyle="--", label="messages/frame")
    twin.tick_params(colors="#f2cc0c", labelsize=8.5, length=0)
    twin.set_ylabel("messages per frame", color="#f2cc0c", fontsize=9)
    for spine in twin.spines.values():
        spine.set_visible(False)
    headroom(twin)
    h1, l1 = a_out.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    legend(twin, h1 + h2, l1 + l2)

    acks = scrapes.rate("livecart_chat_acks_total", None, window).get("", [])
    a_chat.plot(t, acks, color=FIXED_COLORS["acks"], lw=2.2, label="acks (left)")
    style_axis(a_chat, f"Chat acks/s (left) and refusals/s by code (right) {per}", "acks/s")
    headroom(a_chat, 1.5)
    twin = a_chat.twinx()
    refused = nonzero(scrapes.rate("livecart_chat_refused_total", "code", window))
    lines(twin, t, {f"refused: {k}": v for k, v in refused.items()})
    twin.tick_params(colors=MUTED, labelsize=8.5, length=0)
    twin.set_ylabel("refusals/s", color=MUTED, fontsize=9)
    for spine in twin.spines.values():
        spine.set_visible(False)
    headroom(twin, 1.9)
    h1, l1 = a_chat.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    legend(twin, h1 + h2, [label.removeprefix("refused: ") for label in l1 + l2], ncol=4)

    for q, name in ((0.5, "p50"), (0.99, "p99")):
        values = scrapes.quantile("livecart_chat_ack_seconds", q, window)
        a_ack.plot(t, [v * 1000 for v in values], color=FIXED_COLORS[name], lw=1.8, label=name)
    style_axis(a_ack, f"Chat ack latency p50 / p99 {per}", "ms")
    headroom(a_ack)
    legend(a_ack)

    buys = nonzero(scrapes.rate("livecart_buy_attempts_total", "outcome", window))
    order = ["reserved", "limit_reached", "sold_out", "offer_closed"]
    keys = sorted(buys, key=lambda k: order.index(k) if k in order else len(order))
    colors = colors_for(keys)
    a_buy.stackplot(
        t,
        *[[0 if math.isnan(x) else x for x in buys[k]] for k in keys],
        labels=keys,
        colors=[colors[k] for k in keys],
        alpha=0.6,
        edgecolor=PANEL,
    )
    style_axis(a_buy, f"Buy attempts/s by outcome (stacked) {per}", "attempts/s")
    headroom(a_buy, 1.45)
    sold = scrapes.gauge("livecart_offers_sold_out_total").get("", [])
    for n, i in enumerate(i for i in range(1, len(sold)) if sold[i] > sold[i - 1]):
        label = "offer sold out" if n == 0 else None
        a_buy.axvline(t[i], color="#f2495c", lw=1.1, ls=(0, (4, 3)), alpha=0.9, label=label)
    legend(a_buy, ncol=3)

    for q, name in ((0.5, "p50"), (0.99, "p99")):
        values = scrapes.quantile("livecart_order_seconds", q, window)
        a_order.plot(t, [v * 1000 for v in values], color=FIXED_COLORS[name], lw=1.8, label=name)
    style_axis(a_order, f"Order latency p50 / p99 (buy received to commit) {per}", "ms")
    headroom(a_order)
    legend(a_order)

    for q, name in ((0.5, "p50"), (0.99, "p99")):
        values = scrapes.quantile("livecart_outbox_depth_bytes", q, window)
        a_box.plot(t, values, color=FIXED_COLORS[name], lw=1.8, label=name)
    style_axis(a_box, f"Outbox depth p50 / p99 when a writer takes a batch {per}", "bytes")
    headroom(a_box)
    legend(a_box)

    lag = scrapes.gauge("livecart_event_loop_lag_seconds").get("", [])
    a_node.plot(t, [v * 1000 for v in lag], color="#ff780a", lw=1.8, label="event-loop lag")
    style_axis(a_node, "Event-loop lag and database pool", "lag (ms)")
    headroom(a_node)
    twin = a_node.twinx()
    for name, label, color in (
        ("livecart_db_pool_in_use", "pool in use", "#8ab8ff"),
        ("livecart_db_pool_size", "pool open", "#b877d9"),
    ):
        twin.plot(t, scrapes.gauge(name).get("", []), color=color, lw=1.4, ls="--", label=label)
    pool_max = scrapes.gauge("livecart_db_pool_max").get("", [10])
    twin.set_ylim(0, max(v for v in pool_max if not math.isnan(v)) * 1.35)
    twin.tick_params(colors="#8ab8ff", labelsize=8.5, length=0)
    twin.set_ylabel(f"connections (max {pool_max[-1]:.0f})", color="#8ab8ff", fontsize=9)
    for spine in twin.spines.values():
        spine.set_visible(False)
    h1, l1 = a_node.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    legend(twin, h1 + h2, l1 + l2, ncol=3)

    for ax in axes.flat:
        ax.set_xlim(t[0], t[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, facecolor=BG)
    plt.close(fig)


# ---------------------------------------------------------------- the report


def summary(scrapes: Scrapes, load: Load, server_log: Iterable[str]) -> list[str]:
    warnings: Counter[str] = Counter()
    for line in server_log:
        with contextlib.suppress(ValueError, AttributeError):
            entry = json.loads(line)
            if entry.get("level") in ("warning", "error", "critical"):
                warnings[f"{entry['level']}: {entry.get('msg', '')[:120]}"] += 1
    first, last = scrapes.samples[0], scrapes.samples[-1]
    span = scrapes.t[-1] - scrapes.t[0]

    def total(name: str, by: str | None = None) -> dict[str, float]:
        a = scrapes.collapse(0, name, by)
        b = scrapes.collapse(len(scrapes.t) - 1, name, by)
        return {k: b[k] - a.get(k, 0.0) for k in sorted(b) if b[k] - a.get(k, 0.0)}

    def fmt(d: dict[str, float]) -> str:
        return ", ".join(f"{k or 'total'} {v:,.0f}" for k, v in d.items()) or "none"

    def whole_run(name: str, q: float) -> float:
        now = scrapes.collapse(len(scrapes.t) - 1, name + "_bucket", "le")
        then = scrapes.collapse(0, name + "_bucket", "le")
        return histogram_quantile(
            q, sorted((float(k), v - then.get(k, 0.0)) for k, v in now.items())
        )

    msgs = total("livecart_messages_out_total").get("", 0.0)
    frames = total("livecart_frames_out_total").get("", 0.0)
    t = scrapes.t
    peak = max(sum(scrapes.collapse(i, "livecart_connections").values()) for i in range(len(t)))
    lag = [v for v in scrapes.gauge("livecart_event_loop_lag_seconds").get("", []) if v == v]
    out = [
        f"scrapes: {len(t)} over {span:.1f} s",
        f"peak open connections: {peak:.0f}",
        f"frames in by type: {fmt(total('livecart_frames_in_total', 'type'))}",
        f"messages out: {msgs:,.0f} in {frames:,.0f} frames "
        f"({msgs / frames if frames else math.nan:.2f} messages/frame), "
        f"{msgs / span:,.0f} messages/s, "
        f"{total('livecart_bytes_out_total').get('', 0.0) / span / 1e6:.2f} MB/s",
        f"chat acks: {total('livecart_chat_acks_total').get('', 0.0):,.0f}; ack latency over the run "
        f"p50 {whole_run('livecart_chat_ack_seconds', 0.5) * 1000:.1f} ms, "
        f"p99 {whole_run('livecart_chat_ack_seconds', 0.99) * 1000:.1f} ms",
        f"chat refused by code: {fmt(total('livecart_chat_refused_total', 'code'))}",
        f"buy attempts by outcome: {fmt(total('livecart_buy_attempts_total', 'outcome'))}",
        f"order latency over the run: p50 {whole_run('livecart_order_seconds', 0.5) * 1000:.1f} ms, "
        f"p99 {whole_run('livecart_order_seconds', 0.99) * 1000:.1f} ms",
        f"offers sold out: {total('livecart_offers_sold_out_total').get('', 0.0):.0f} "
        f"(offers opened {load.offers_opened}, offers clients saw at stock 0: "
        f"{len(load.seen_at_zero)})",
        f"outbox depth over the run: p99 {whole_run('livecart_outbox_depth_bytes', 0.99):,.0f} bytes",
        f"closes by code: {fmt(total('livecart_closes_total', 'code'))}",
        f"moderation actions: {fmt(total('livecart_moderation_actions_total', 'action'))}",
        f"event-loop lag: max {max(lag, default=math.nan) * 1000:.1f} ms",
        "client side: " + ", ".join(f"{k} {v:,}" for k, v in sorted(load.tally.items())),
    ]
    out += [f"load task failed: {f}" for f in load.failures]
    out.append(f"server log lines at warning or above: {sum(warnings.values())}")
    out += [f"  {n} x {msg}" for msg, n in warnings.most_common(5)]
    families = registry_families()
    moved = {
        family_of(n, families)
        for sample in scrapes.samples
        for (n, lb), v in sample.items()
        if v != first.get((n, lb), 0.0)
    }
    present = {family_of(n, families) for n, _ in last}
    absent = sorted(families - present)
    still = sorted(families & present - moved)
    out.append("metrics with no series at all: " + (", ".join(absent) or "none"))
    out.append("metrics that did not move: " + (", ".join(still) or "none"))
    return out


def registry_families() -> set[str]:
    from livecart.runtime.metrics import Metrics

    metrics = Metrics()
    metrics.track_pool(lambda: (1, 0, 10, 0))
    metrics.track_rooms(lambda: 0)
    return {family.name for family in metrics.registry.collect()}


def family_of(sample: str, families: set[str]) -> str:
    for suffix in ("", "_total", "_created", "_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and (base := sample.removesuffix(suffix)) in families:
            return base
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--viewers", type=int, default=200, help="signed-in viewer connections")
    parser.add_argument("--guests", type=int, default=20, help="guest connections (no token)")
    parser.add_argument("--chatters", type=int, default=40, help="viewers that chat (~0.8/s)")
    parser.add_argument("--feeds", type=int, default=20, help="viewers subscribed to the feed")
    parser.add_argument("--buys-per-s", type=float, default=15.0, help="buy frames per second")
    parser.add_argument("--offer-quantity", type=int, default=40, help="units per offer")
    parser.add_argument("--window", type=int, default=5, help="scrapes per rate/quantile window")
    parser.add_argument("--database-url", default="", help="PostgreSQL (default: embedded)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    opts = parser.parse_args()
    require()
    if opts.chatters > opts.viewers:
        parser.error("--chatters cannot exceed --viewers")
    secret = secrets.token_urlsafe(32)
    data_dir = tempfile.mkdtemp(prefix="livecart-dashboard-")
    server = Server(opts.database_url, data_dir, secret)
    started = time.monotonic()
    try:
        server.start()
        print(
            f"server: {server.url} ({'embedded PostgreSQL' if not opts.database_url else 'given database'}, ready in {time.monotonic() - started:.1f} s)"
        )
        assert server.proc is not None
        cpu = CpuMeter(server.proc.pid, data_dir)
        load = Load(server.url, secret, opts, cpu)
        scrapes = asyncio.run(load.run())
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    if len(scrapes.t) < 3:
        sys.exit("too few scrapes to plot")
    date = time.strftime("%Y-%m-%d")
    load_desc = (
        f"{opts.viewers} viewers + {opts.guests} guests, {opts.chatters} chatters, "
        f"{opts.buys_per_s:g} buys/s, {opts.seconds:g} s"
    )
    shared = "the load generator runs on the same machine"
    if cpu.result:
        r = cpu.result
        shared += (
            f"; cores used during the load: node {r['node']:.2f}, its PostgreSQL "
            f"{r['postgres']:.2f}, load generator {r['load generator']:.2f}, "
            f"other processes {r['other processes']:.2f}"
        )
    subtitle = f"{machine()} · {date} · {load_desc}\n{shared}"
    plot(scrapes, opts.out, subtitle, opts.window)
    print(f"machine: {machine()}")
    print(f"load: {load_desc}")
    print(cpu.describe())
    for line in summary(scrapes, load, server.output):
        print(line)
    try:
        shown = opts.out.resolve().relative_to(ROOT)
    except ValueError:
        shown = opts.out
    print(f"wrote {shown}")


if __name__ == "__main__":
    main()
