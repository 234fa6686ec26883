"""Flash sales under contention over real WebSockets, checked against PostgreSQL.

1,000 distinct buyers, each on its own connection from this process, rush one offer of 50
units (per-user limit 2) at the same moment; a large share of them retry the same ref, on a
second connection at the same time, pipelined on the same connection, after their answer,
or over REST. A second test has every buyer try to pass the per-user limit with several refs
in flight at once on several connections plus REST.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg
import httpx
import websockets

from .harness import ServerProcess, headers, token

T = TypeVar("T")

CONNECT_CONCURRENCY = 64
ANSWER_TIMEOUT_S = 20.0
REFUSALS = {"sold_out", "limit_reached"}


# ---------------------------------------------------------------- helpers


class Buyer:
    """One WebSocket connection of one user; every `order`/`error` answer is kept per ref."""

    def __init__(self, user: str, ws: Any) -> None:
        self.user = user
        self.ws = ws
        self.answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.closed = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: ServerProcess, user: str) -> Buyer:
        ws = await websockets.connect(
            f"{server.ws_url}?token={token(user)}",
            max_size=None,
            open_timeout=30,
            ping_interval=None,
            close_timeout=2,
        )
        return cls(user, ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                messages = json.loads(raw)
                assert isinstance(messages, list), f"server frame is not an array: {raw!r}"
                for m in messages:
                    if m.get("type") in ("order", "error") and m.get("ref"):
                        self.answers[m["ref"]].append(m)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            async with self._changed:
                self._changed.notify_all()

    async def send_buy(self, session: str, offer: str, ref: str, qty: int = 1) -> None:
        frame = {"type": "buy", "session": session, "offer": offer, "qty": qty, "ref": ref}
        await self.ws.send(json.dumps(frame))

    async def wait(self, ref: str, count: int = 1, timeout: float = ANSWER_TIMEOUT_S) -> None:
        """Until `count` answers for `ref` arrived on this connection."""

        def ready() -> bool:
            return len(self.answers[ref]) >= count or self.closed

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)
        assert len(self.answers[ref]) >= count, f"{self.user}: connection closed before {ref}"

    async def buy(
        self, session: str, offer: str, ref: str, qty: int = 1, copies: int = 1
    ) -> list[dict[str, Any]]:
        """Send the frame `copies` times back to back; retry answers of `unavailable` with the
        same ref (as the protocol asks). Returns the final answers for these copies."""
        before = len(self.answers[ref])
        for _ in range(copies):
            await self.send_buy(session, offer, ref, qty)
        await self.wait(ref, before + copies)
        for _ in range(10):
            got = self.answers[ref][before:]
            busy = sum(1 for a in got if a.get("code") == "unavailable")
            if not busy:
                return got
            await asyncio.sleep(0.2)
            before = len(self.answers[ref])
            for _ in range(busy):
                await self.send_buy(session, offer, ref, qty)
            await self.wait(ref, before + busy)
        raise AssertionError(f"{self.user}/{ref} stayed unavailable")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(j) for j in jobs))


async def open_buyers(server: ServerProcess, users: list[str]) -> list[Buyer]:
    return await bounded(
        [lambda u=u: Buyer.open(server, u) for u in users],  # type: ignore[misc]
        CONNECT_CONCURRENCY,
    )


async def close_all(buyers: Iterable[Buyer]) -> None:
    await bounded([b.close for b in buyers], CONNECT_CONCURRENCY)


async def flash_offer(
    base: str, creator: str, *, stock: int, quantity: int, per_user_limit: int, duration_s: int
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A live session of `creator` with a product of `stock` units and an open offer on it:
    (session id, product, offer)."""
    h = headers(token(creator, "creator"))
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post(
            "/api/products",
            headers=h,
            json={"title": "Flash kettle", "price_cents": 4900, "stock": stock, "category": "home"},
        )
        assert r.status_code == 201, r.text
        product = r.json()
        r = await http.post("/api/sessions", headers=h, json={"title": "Drop", "category": "home"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        r = await http.post(
            f"/api/sessions/{sid}/products", headers=h, json={"product_id": product["id"]}
        )
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/sessions/{sid}/start", headers=h)
        assert r.status_code == 200, r.text
        r = await http.post(
            f"/api/sessions/{sid}/offers",
            headers=h,
            json={
                "product_id": product["id"],
                "price_cents": 2500,
                "quantity": quantity,
                "per_user_limit": per_user_limit,
                "duration_s": duration_s,
            },
        )
        assert r.status_code == 201, r.text
        return sid, product, r.json()


async def rest_buy(http: httpx.AsyncClient, user: str, offer: str, ref: str, qty: int = 1) -> Any:
    """POST /api/orders as `user`; an `order`/`error` message shaped like the WebSocket's."""
    for _ in range(10):
        r = await http.post(
            "/api/orders",
            headers=headers(token(user)),
            json={"offer_id": offer, "qty": qty, "idempotency_key": ref},
        )
        if r.status_code == 201:
            return {"type": "order", "ref": ref, "order": r.json()}
        code = r.json()["error"]["code"]
        if code != "unavailable":
            return {"type": "error", "ref": ref, "code": code, "status": r.status_code}
        await asyncio.sleep(0.2)
    raise AssertionError(f"{user}/{ref} stayed unavailable over REST")


async def offer_ledger(pool: asyncpg.Pool, offer_id: str) -> dict[str, Any]:
    """The offer's counters and its orders, read in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        offer = await conn.fetchrow(
            "SELECT quantity, remaining, returned, status FROM offers WHERE id = $1", offer_id
        )
        rows = await conn.fetch(
            "SELECT id, user_id, idempotency_key, qty, status, expires_at FROM orders "
            "WHERE offer = $1",
            offer_id,
        )
    by_status: dict[str, int] = defaultdict(int)
    for r in rows:
        by_status[r["status"]] += r["qty"]
    return {
        "quantity": offer["quantity"],
        "remaining": offer["remaining"],
        "returned": offer["returned"],
        "status": offer["status"],
        "reserved": by_status["reserved"],
        "paid": by_status["paid"],
        "orders": {(r["user_id"], r["idempotency_key"]): dict(r) for r in rows},
    }


def assert_invariant(ledger: dict[str, Any]) -> None:
    held = ledger["reserved"] + ledger["paid"]
    assert ledger["remaining"] >= 0, ledger
    assert ledger["remaining"] + held == ledger["quantity"], (
        f"remaining {ledger['remaining']} + reserved {ledger['reserved']} + paid "
        f"{ledger['paid']} != quantity {ledger['quantity']}"
    )


def per_user_units(ledger: dict[str, Any]) -> dict[str, int]:
    units: dict[str, int] = defaultdict(int)
    for (user, _), o in ledger["orders"].items():
        if o["status"] in ("reserved", "paid"):
            units[user] += o["qty"]
    return units


# ---------------------------------------------------------------- tests


async def test_thousand_buyers_on_fifty_units_with_duplicate_retries(
    server: ServerProcess, pool: asyncpg.Pool
) -> None:
    rng = random.Random(20240611)
    run = secrets.token_hex(3)
    sid, _, offer = await flash_offer(
        server.url, f"flash-{run}", stock=200, quantity=50, per_user_limit=2, duration_s=300
    )
    oid = offer["id"]
    users = [f"fs{run}-{i:04d}" for i in range(1000)]
    # Roles (independent draws): a second connection sending the same ref at the same moment,
    # the same ref pipelined twice on one connection, a retry after the answer (on the same
    # connection, or over REST), and greedy buyers who then fire two more refs at once.
    twin = {u for u in users if rng.random() < 0.2}
    pipelined = {u for u in users if rng.random() < 0.1}
    retry_ws = {u for u in users if rng.random() < 0.2}
    retry_rest = {u for u in users if rng.random() < 0.1}
    greedy = {u for u in users if rng.random() < 0.15}

    t0 = time.monotonic()
    buyers = await open_buyers(server, users)
    twins = dict(zip(sorted(twin), await open_buyers(server, sorted(twin)), strict=True))
    connected_s = time.monotonic() - t0

    # Every answer per (user, ref), in arrival order, from every path.
    answers: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    go = asyncio.Event()

    async def shop(b: Buyer, http: httpx.AsyncClient) -> None:
        u = b.user
        await go.wait()
        first: list[Awaitable[list[dict[str, Any]]]] = [
            b.buy(sid, oid, "a", copies=2 if u in pipelined else 1)
        ]
        if u in twin:
            first.append(twins[u].buy(sid, oid, "a"))
        for got in await asyncio.gather(*first):
            answers[(u, "a")] += got
        if u in retry_ws:
            answers[(u, "a")] += await b.buy(sid, oid, "a")
        if u in retry_rest:
            answers[(u, "a")].append(await rest_buy(http, u, oid, "a"))
        if u in greedy:
            # Two more refs at once: on two sockets when the user has two, else pipelined.
            on = {"b": b, "c": twins.get(u, b)}
            before = {r: len(c.answers[r]) for r, c in on.items()}
            for r, c in on.items():
                await c.send_buy(sid, oid, r)
            for r, c in on.items():
                await c.wait(r, before[r] + 1)
                answers[(u, r)] += c.answers[r][before[r] :]

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        tasks = [asyncio.create_task(shop(b, http)) for b in buyers]
        t1 = time.monotonic()
        go.set()
        await asyncio.gather(*tasks)
        sale_s = time.monotonic() - t1
    attempts = sum(len(v) for v in answers.values())
    await close_all([*buyers, *twins.values()])

    ledger = await offer_ledger(pool, oid)
    orders = ledger["orders"]
    # Exactly the 50 units were reserved, and nothing more can be.
    assert ledger["reserved"] == 50 and ledger["paid"] == 0, ledger
    assert ledger["remaining"] == 0
    assert_invariant(ledger)
    assert all(o["qty"] == 1 for o in orders.values())
    assert len(orders) == 50
    # Nobody above the per-user limit.
    units = per_user_units(ledger)
    assert max(units.values()) <= 2, units
    # Every (user, ref) got one outcome on every path: the same order id on each retry, and
    # that order is the one in the database; every refusal is sold_out or limit_reached.
    acknowledged: set[str] = set()
    retried = 0
    for (user, ref), got in answers.items():
        assert got, (user, ref)
        retried += len(got) - 1
        ids = {a["order"]["id"] for a in got if a["type"] == "order"}
        stored = orders.get((user, ref))
        if stored is not None:
            assert ids == {stored["id"]}, (user, ref, got)
            assert all(a["type"] == "order" for a in got), (user, ref, got)
            assert all(a["order"]["qty"] == 1 for a in got)
            acknowledged.add(stored["id"])
        else:
            assert not ids, (user, ref, got)
            codes = {a["code"] for a in got}
            assert codes <= REFUSALS, (user, ref, codes)
            if "limit_reached" in codes:
                assert units[user] == 2, (user, units[user])
    # No order the buyers were not told about.
    assert acknowledged == {o["id"] for o in orders.values()}
    assert retried > 400, retried
    print(
        f"\n1000 buyers: connected in {connected_s:.1f}s, {attempts} answers "
        f"({retried} to retries) in {sale_s:.2f}s; {len(orders)} orders"
    )


async def test_buyers_racing_past_the_per_user_limit(
    server: ServerProcess, pool: asyncpg.Pool
) -> None:
    run = secrets.token_hex(3)
    n_users, limit = 100, 2
    sid, _, offer = await flash_offer(
        server.url, f"limit-{run}", stock=1000, quantity=1000, per_user_limit=limit, duration_s=300
    )
    oid = offer["id"]
    users = [f"pl{run}-{i:03d}" for i in range(n_users)]
    # Three connections per user plus REST; six refs (and a duplicate of r1) all in flight.
    conns = await open_buyers(server, [u for u in users for _ in range(3)])
    by_user = {u: conns[3 * i : 3 * i + 3] for i, u in enumerate(users)}
    plan = {  # connection (or "rest") → [(ref, qty)]
        0: [("r1", 1), ("r2", 2)],
        1: [("r3", 1), ("r4", 3), ("r1", 1)],
        2: [("r5", 1)],
        "rest": [("r6", 1)],
    }
    answers: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    go = asyncio.Event()

    async def on_ws(b: Buyer, frames: list[tuple[str, int]]) -> None:
        start = {ref: len(b.answers[ref]) for ref, _ in frames}
        for ref, qty in frames:
            await b.send_buy(sid, oid, ref, qty)
        for ref, _ in frames:
            await b.wait(ref, start[ref] + 1)
        for ref in start:
            got = b.answers[ref][start[ref] :]
            assert all(a.get("code") != "unavailable" for a in got), got
            answers[(b.user, ref)] += got

    async def on_rest(http: httpx.AsyncClient, user: str, frames: list[tuple[str, int]]) -> None:
        for ref, qty in frames:
            answers[(user, ref)].append(await rest_buy(http, user, oid, ref, qty))

    async def greedy(u: str, http: httpx.AsyncClient) -> None:
        await go.wait()
        jobs = [
            on_rest(http, u, frames) if k == "rest" else on_ws(by_user[u][k], frames)
            for k, frames in plan.items()
        ]
        await asyncio.gather(*jobs)

    t0 = time.monotonic()
    async with httpx.AsyncClient(
        base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=50)
    ) as http:
        tasks = [asyncio.create_task(greedy(u, http)) for u in users]
        go.set()
        await asyncio.gather(*tasks)
    took = time.monotonic() - t0
    await close_all(conns)

    ledger = await offer_ledger(pool, oid)
    assert_invariant(ledger)
    units = per_user_units(ledger)
    # With at least two one-unit refs each, every buyer ends with exactly the limit.
    assert units == dict.fromkeys(users, limit), units
    assert ledger["remaining"] == 1000 - n_users * limit
    for u in users:
        got_units = 0
        for ref in ("r1", "r2", "r3", "r4", "r5", "r6"):
            got = answers[(u, ref)]
            stored = ledger["orders"].get((u, ref))
            if stored is None:
                assert {a["code"] for a in got if a["type"] == "error"} == {"limit_reached"}, got
                assert all(a["type"] == "error" for a in got), got
            else:
                assert {a["order"]["id"] for a in got if a["type"] == "order"} == {stored["id"]}
                assert all(a["type"] == "order" for a in got), got
                got_units += stored["qty"]
        assert got_units == limit, u
        # More than the limit in one order is refused outright.
        assert u not in {k[0] for k, o in ledger["orders"].items() if k[1] == "r4"}
    print(f"\n{n_users} buyers x 7 concurrent attempts over 3 sockets + REST in {took:.2f}s")
