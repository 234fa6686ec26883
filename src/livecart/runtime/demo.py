"""`livecart demo`: seed a creator, products and a live session through the public REST API,
then run bot viewers that chat, like, click and buy at a human pace over the WebSocket.

Everything goes through the same HTTP and WebSocket API a real client uses, so a demo that
comes up is also a smoke test of the API. `on_ready(bots)` returns the callback the CLI awaits
once the server listens; it seeds, prints the three URLs and leaves the bots running as
background tasks of the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec

from livecart_client import LivecartClient, LivecartError, Room, messages

from .. import auth

log = logging.getLogger("livecart.demo")

CREATOR = "demo-creator"
VIEWER = "demo-viewer"
MODERATOR = "demo-mod"
TOKEN_TTL_S = 7 * 86400

PRODUCTS: list[dict[str, Any]] = [
    {
        "title": "Speckled stoneware mug",
        "price_cents": 2400,
        "currency": "USD",
        "stock": 120,
        "category": "home",
        "tags": ["ceramics", "handmade", "coffee"],
    },
    {
        "title": "Pour-over coffee kit",
        "price_cents": 5900,
        "currency": "USD",
        "stock": 60,
        "category": "home",
        "tags": ["coffee", "gift"],
    },
    {
        "title": "Linen tea towels (set of 3)",
        "price_cents": 3200,
        "currency": "USD",
        "stock": 80,
        "category": "home",
        "tags": ["linen", "kitchen"],
    },
    {
        "title": "Walnut serving board",
        "price_cents": 7800,
        "currency": "USD",
        "stock": 40,
        "category": "home",
        "tags": ["wood", "handmade", "gift"],
    },
]

NAMES = [
    "Ava", "Noah", "Mia", "Leo", "Zoe", "Kai", "Ivy", "Eli", "Ruby", "Theo", "Nina", "Omar",
    "Lena", "Jude", "Maya", "Finn", "Sara", "Ezra", "Chloe", "Arlo", "Yuki", "Ravi", "Inès",
    "Luca", "Amara", "Milo", "Freya", "Hugo", "Aisha", "Otto",
]  # fmt: skip

GREETINGS = [
    "hi everyone 👋", "hello from Lisbon!", "just joined, what did I miss?", "hey hey",
    "first time here 😊", "good evening!", "hi from Toronto", "made it in time 🙌",
]  # fmt: skip

CHAT = [
    "is the {p} dishwasher safe?", "how big is the {p}?", "can you show the {p} up close?",
    "just ordered the {p} 🎉", "the {p} looks amazing", "what colours does the {p} come in?",
    "does the {p} make a good gift?", "I have the {p}, quality is great", "{p} restock soon please!",
    "that price 🔥🔥", "do you ship to Canada?", "how long is the deal open?", "love this stream",
    "👏👏👏", "can you show the back?", "what's it made of?", "is there a bundle deal?",
    "my sister would love this", "sold! 🛒", "how heavy is it?", "what's the return policy?",
    "ordered two, one for my mum", "this is my favourite show", "the lighting is so nice today",
    "is it microwave safe?", "any discount codes?", "omg want", "can I pick a colour?",
    "how long does shipping take?", "beautiful craftsmanship", "what size is that?", "😍😍",
]  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


def _request(base: str, method: str, path: str, token: str | None, body: Any) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"accept": "application/json"}
    if data is not None:
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        code, message = f"http_{exc.code}", exc.reason
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            err = json.loads(raw)["error"]
            code, message = err["code"], err["message"]
        raise ApiError(exc.code, code, str(message)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(0, "unavailable", str(exc)) from None
    return json.loads(raw) if raw else None


async def call(
    base: str, method: str, path: str, token: str | None = None, body: Any = None
) -> Any:
    """One REST call (urllib in a worker thread, so the server's loop keeps serving)."""
    return await asyncio.to_thread(_request, base, method, path, token, body)


@dataclass
class RoomView:
    """What one bot knows about the session, kept from its room's snapshot and events."""

    offers: dict[str, dict[str, Any]] = field(default_factory=dict)
    pinned: dict[str, Any] | None = None
    status: str = ""
    changed: float = field(default_factory=time.monotonic)

    def follow(self, room: Room) -> None:
        """Keep this view current from `room`: its snapshot now and after a resync, then its
        events (the client delivers each once, in order, across reconnects)."""
        self.snapshot(room)
        room.on("resync", lambda _joined: self.snapshot(room))
        room.on("*", self.apply)

    def snapshot(self, room: Room) -> None:
        state = room.state
        if state is None:
            return
        self.status = state.status
        self.pinned = state.pinned
        self.offers = {o["id"]: dict(o) for o in state.offers if "id" in o}
        self.changed = time.monotonic()

    def apply(self, m: Any) -> None:
        if isinstance(m, messages.OfferEvent):
            if m.status == "open":
                self.offers[m.id] = msgspec.structs.asdict(m)
            else:
                self.offers.pop(m.id, None)
            self.changed = time.monotonic()
        elif isinstance(m, messages.OfferEnded):
            self.offers.pop(m.offer, None)
            self.changed = time.monotonic()
        elif isinstance(m, messages.Stock) and m.offer in self.offers:
            self.offers[m.offer]["remaining"] = m.remaining
            self.changed = time.monotonic()
        elif isinstance(m, messages.Pinned):
            self.pinned = m.product
        elif isinstance(m, messages.StatusEvent):
            self.status = m.status

    def buyable(self) -> list[dict[str, Any]]:
        return [o for o in self.offers.values() if int(o.get("remaining") or 0) > 0]


class Demo:
    def __init__(self, base_url: str, secret: str, bots: int) -> None:
        self.base = base_url.rstrip("/")
        self.ws_url = self.base.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        self.secret = secret
        self.bots = max(0, bots)
        self.creator_token = auth.issue(
            secret, CREATOR, "creator", name="Demo Creator", ttl_s=TOKEN_TTL_S
        )
        self.viewer_token = auth.issue(secret, VIEWER, "viewer", name="You", ttl_s=TOKEN_TTL_S)
        self.moderator_token = auth.issue(
            secret, MODERATOR, "moderator", name="Demo Moderator", ttl_s=TOKEN_TTL_S
        )
        self.session: dict[str, Any] = {}
        self.products: list[dict[str, Any]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.warned: dict[str, float] = {}

    # ------------------------------------------------------------ seeding

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        return await call(self.base, method, path, self.creator_token, body)

    async def seed(self) -> None:
        # Earlier demo runs on the same data dir leave a live session and products: end the
        # session, and reuse the products (restocked) rather than duplicating them.
        existing: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(ApiError):
            for s in await self.api("GET", "/api/sessions?limit=500") or []:
                if s.get("creator") != CREATOR:
                    continue
                if s.get("status") == "live":
                    with contextlib.suppress(ApiError):
                        await self.api("POST", f"/api/sessions/{quote(s['id'])}/end")
                for pid in s.get("showcase") or []:
                    with contextlib.suppress(ApiError):
                        p = await self.api("GET", f"/api/products/{quote(pid)}")
                        existing.setdefault(p["title"], p)
        self.products = []
        for spec in PRODUCTS:
            old = existing.get(spec["title"])
            if old is None:
                self.products.append(await self.api("POST", "/api/products", spec))
            else:
                restock = {"stock": max(int(old["stock"]), spec["stock"])}
                self.products.append(
                    await self.api("PATCH", f"/api/products/{quote(old['id'])}", restock)
                )
        session = await self.api(
            "POST",
            "/api/sessions",
            {
                "title": "Slow mornings: ceramics & coffee gear",
                "category": "home",
                "tags": ["ceramics", "coffee", "handmade"],
            },
        )
        sid = quote(session["id"])
        for p in self.products:
            await self.api("POST", f"/api/sessions/{sid}/products", {"product_id": p["id"]})
        await self.api("POST", f"/api/sessions/{sid}/start")
        self.session = await self.api(
            "POST", f"/api/sessions/{sid}/pin", {"product_id": self.products[0]["id"]}
        )
        try:
            await self.open_offer(self.products[0])
        except ApiError as exc:
            self.warn("offer", f"could not open the first flash offer: {exc}")

    async def open_offer(self, product: dict[str, Any]) -> dict[str, Any]:
        """Pins `product` and opens a flash offer on it, topping up its stock when low."""
        sid = quote(self.session["id"])
        current = await self.api("GET", f"/api/products/{quote(product['id'])}")
        if int(current.get("stock") or 0) < 10:
            current = await self.api(
                "PATCH", f"/api/products/{quote(product['id'])}", {"stock": 100}
            )
        if self.session.get("pinned_product") != product["id"]:
            self.session = await self.api(
                "POST", f"/api/sessions/{sid}/pin", {"product_id": product["id"]}
            )
        quantity = min(int(current["stock"]), random.randint(12, 25))
        offer: dict[str, Any] = await self.api(
            "POST",
            f"/api/sessions/{sid}/offers",
            {
                "product_id": product["id"],
                "price_cents": deal_price(int(product["price_cents"])),
                "quantity": quantity,
                "per_user_limit": 2,
                "duration_s": random.randint(120, 240),
            },
        )
        return offer

    def urls(self) -> dict[str, str]:
        sid = quote(self.session["id"])
        return {
            "viewer": f"{self.base}/watch/{sid}#token={self.viewer_token}",
            "creator": f"{self.base}/studio#session={sid}&token={self.creator_token}",
            "moderator": f"{self.base}/moderate/{sid}#token={self.moderator_token}",
        }

    def warn(self, key: str, message: str) -> None:
        """Logs a problem at most once a minute per kind, so a missing endpoint is not spam."""
        now = time.monotonic()
        if now - self.warned.get(key, -1e9) >= 60:
            self.warned[key] = now
            log.warning("demo: %s", message)

    # ------------------------------------------------------------ background tasks

    def start(self) -> None:
        self.spawn(self.keep_offer_open(), "demo-offers")
        for i in range(1, self.bots + 1):
            self.spawn(self.bot(i), f"demo-bot-{i}")

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connection(
        self,
        token: str,
        view: RoomView,
        act: Callable[[Room, RoomView], Awaitable[None]],
        label: str,
    ) -> None:
        """One client of the session (livecart_client: it reconnects, resumes with `since`
        and retries purchases by itself): joins, keeps `view` current and runs `act`. Only
        a client that cannot start (the node not up yet) or was closed starts over."""
        backoff = 1.0
        while True:
            client = LivecartClient(self.ws_url, token=token, reconnect_max_s=30.0)
            try:
                await client.connect()
                room = await client.join(self.session["id"])
                backoff = 1.0
                view.follow(room)
                await act(room, view)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("%s: client stopped: %s", label, exc)
            finally:
                await client.close()
            await asyncio.sleep(backoff + random.random())
            backoff = min(backoff * 2, 30.0)

    async def bot(self, i: int) -> None:
        name = f"{NAMES[(i - 1) % len(NAMES)]}{'' if i <= len(NAMES) else f' {i}'}"
        token = auth.issue(self.secret, f"bot-{i}", "viewer", name=name, ttl_s=TOKEN_TTL_S)
        # Arrive over the first few seconds rather than all at once.
        await asyncio.sleep(random.uniform(0, min(8.0, 0.25 * self.bots)))
        await self.connection(token, RoomView(), lambda room, view: self.behave(room, view), name)

    async def behave(self, room: Room, view: RoomView) -> None:
        await asyncio.sleep(random.uniform(0.5, 3.0))
        if random.random() < 0.7:
            await self.chat(room, random.choice(GREETINGS))
        while True:
            await asyncio.sleep(random.uniform(5.0, 16.0))
            roll = random.random()
            product = self.pick_product(view)
            if roll < 0.4:
                text = random.choice(CHAT).format(p=short(product["title"]) if product else "mug")
                await self.chat(room, text)
            elif roll < 0.7:
                await room.like(random.randint(1, 6))
            elif roll < 0.9:
                if product is not None:
                    name = random.choice(("product_click", "product_click", "share"))
                    await room.signal(name, product["id"])
            else:
                offers = view.buyable()
                if offers:
                    with contextlib.suppress(LivecartError):  # sold out, limit reached …
                        await room.buy(random.choice(offers)["id"], 1)

    async def chat(self, room: Room, text: str) -> None:
        with contextlib.suppress(LivecartError):  # rate limited, slow mode …
            await room.chat(text)

    def pick_product(self, view: RoomView) -> dict[str, Any] | None:
        if view.pinned and random.random() < 0.6:
            return view.pinned
        return random.choice(self.products) if self.products else None

    async def keep_offer_open(self) -> None:
        """The creator's side: whenever no flash offer has stock left, open the next one (on
        the next product, pinned), so the demo stays lively."""
        view = RoomView()

        async def watch(room: Room, v: RoomView) -> None:
            turn = 1
            while True:
                await asyncio.sleep(3.0)
                if v.status and v.status != "live":
                    continue
                for o in list(v.offers.values()):
                    if int(o.get("remaining") or 0) <= 0:
                        with contextlib.suppress(ApiError):
                            await self.api("POST", f"/api/offers/{quote(o['id'])}/end")
                        v.offers.pop(o["id"], None)
                if v.buyable() or time.monotonic() - v.changed < 4.0:
                    continue
                product = self.products[turn % len(self.products)]
                turn += 1
                try:
                    offer = await self.open_offer(product)
                    v.offers[offer["id"]] = offer
                    v.changed = time.monotonic()
                except ApiError as exc:
                    self.warn("offer", f"could not open a flash offer: {exc}")
                    await asyncio.sleep(20.0)

        await self.connection(self.creator_token, view, watch, "offers")


def deal_price(list_cents: int) -> int:
    """About a quarter off, ending in 99 (2400 → 1799)."""
    cut = int(list_cents * random.choice((0.7, 0.75, 0.8))) // 100 * 100 - 1
    return cut if cut > 0 else max(1, list_cents // 2)


NICKNAMES = {
    "Speckled stoneware mug": "mug",
    "Pour-over coffee kit": "coffee kit",
    "Linen tea towels (set of 3)": "tea towels",
    "Walnut serving board": "board",
}


def short(title: str) -> str:
    """How chat names a product: `Speckled stoneware mug` → `mug`."""
    if title in NICKNAMES:
        return NICKNAMES[title]
    words = [w for w in title.replace("(", " ").replace(")", " ").split() if w.isalpha()]
    return (words[-1] if words else title).lower()


def on_ready(bots: int = 30) -> Callable[[str, Any], Awaitable[None]]:
    """The CLI awaits the returned callback once the server listens (see `cli.cmd_demo`)."""

    async def ready(base_url: str, app: Any) -> None:
        base = base_url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")
        demo = Demo(base, app.state.node.jwt_secret, bots)
        try:
            await demo.seed()
        except ApiError as exc:
            print(f"livecart demo: seeding failed: {exc}", flush=True)
            raise SystemExit(1) from None
        app.state.demo = demo  # keeps the tasks referenced for the server's lifetime
        urls = demo.urls()
        print(
            f'\nlivecart demo: "{demo.session["title"]}" is live with {demo.bots} bot viewers.\n'
            f"  viewer     {urls['viewer']}\n"
            f"  creator    {urls['creator']}\n"
            f"  moderator  {urls['moderator']}\n"
            "Open a link in a browser (the token in it signs you in). Ctrl+C stops the demo.\n",
            flush=True,
        )
        demo.start()

    return ready
