"""SIGKILL in the middle of a flash sale, then a restart on the same database.

Shows: every order acknowledged to a client before the kill exists afterwards with its id and
quantity (and a payment confirmed before the kill stays paid); a retried buy with the same
ref returns the order that was committed, acknowledged or not; `remaining + reserved + paid
= quantity` holds for both offers throughout; and every reservation, acknowledged or not,
expires after its TTL and gives its units back: to the offer while it is open, to the
product's stock once it has ended. Nothing holds stock past its expiry.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from .harness import ServerProcess, headers, token
from .test_flash_sale import Buyer, assert_invariant, bounded, close_all, offer_ledger, open_buyers

TTL_S = 3
ENV = {"LIVECART_RESERVATION_TTL_S": str(TTL_S)}
STOCK = 400
QTY_OPEN, QTY_SHORT = 150, 150  # offer A stays open, offer B ends a few seconds in
LIMIT = 2
N_BUYERS = 300
ATTEMPTS_EACH = 3
KILL_AFTER_ACKS = 60
CONFIRMED = 4
SWEEP_GRACE_S = 1.5  # the sweeper runs every 0.5 s


async def _setup(base: str, creator: str) -> tuple[str, str, dict[str, str]]:
    h = headers(token(creator, "creator"))
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        product = (
            await http.post(
                "/api/products",
                headers=h,
                json={"title": "Lamp", "price_cents": 3000, "stock": STOCK, "category": "home"},
            )
        ).json()
        sid = (
            await http.post("/api/sessions", headers=h, json={"title": "Crash", "category": "home"})
        ).json()["id"]
        r = await http.post(
            f"/api/sessions/{sid}/products", headers=h, json={"product_id": product["id"]}
        )
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/sessions/{sid}/start", headers=h)
        assert r.status_code == 200, r.text
    return sid, product["id"], h


async def _open_offer(
    base: str, sid: str, pid: str, h: dict[str, str], quantity: int, duration_s: int
) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post(
            f"/api/sessions/{sid}/offers",
            headers=h,
            json={
                "product_id": pid,
                "price_cents": 1000,
                "quantity": quantity,
                "per_user_limit": LIMIT,
                "duration_s": duration_s,
            },
        )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _stock(pool: asyncpg.Pool, pid: str) -> int:
    return int(await pool.fetchval("SELECT stock FROM products WHERE id = $1", pid))


async def test_sigkill_mid_sale_loses_no_acknowledged_order_and_leaks_no_stock(
    database_url: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    rng = random.Random(7)
    run = secrets.token_hex(3)
    data_dir = str(tmp_path / "node")
    first = ServerProcess(database_url, data_dir, env=ENV).start()
    second: ServerProcess | None = None
    try:
        sid, pid, h = await _setup(first.url, f"crash-{run}")
        users = [f"cr{run}-{i:03d}" for i in range(N_BUYERS)]
        buyers = await open_buyers(first, users)
        offer_a = await _open_offer(first.url, sid, pid, h, QTY_OPEN, 120)
        offer_b = await _open_offer(first.url, sid, pid, h, QTY_SHORT, 5)
        offers = (offer_a, offer_b)

        # What each buyer sent: (user, ref) → (offer, qty). Buys are spread over 3 s and
        # pipelined, so many are in flight, or committed but unanswered, at the kill.
        sent: dict[tuple[str, str], tuple[str, int]] = {}

        async def shop(b: Buyer) -> None:
            for i in range(ATTEMPTS_EACH):
                await asyncio.sleep(rng.uniform(0, 1.0))
                if (b.user, f"x{i}") in sent:
                    continue  # an early buyer's first ref is taken
                ref, offer, qty = f"x{i}", rng.choice(offers), rng.choice((1, 1, 2))
                sent[(b.user, ref)] = (offer, qty)
                try:
                    await b.send_buy(sid, offer, ref, qty)
                except Exception:
                    return  # the server is gone

        def acked() -> dict[tuple[str, str], dict[str, Any]]:
            out = {}
            for b in buyers:
                for ref, got in b.answers.items():
                    for a in got:
                        if a["type"] == "order":
                            out[(b.user, ref)] = a["order"]
            return out

        # A few early orders are paid for before the rush: paid units never come back.
        admin = headers(token(f"admin-{run}", "admin"))
        confirmed: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
            for i, b in enumerate(buyers[:CONFIRMED]):
                offer = offers[i % 2]
                sent[(b.user, "x0")] = (offer, 1)
                got = await b.buy(sid, offer, "x0")
                assert got[0]["type"] == "order", got
                r = await http.post(f"/api/orders/{got[0]['order']['id']}/confirm", headers=admin)
                assert r.status_code == 200 and r.json()["status"] == "paid", r.text
                confirmed[r.json()["id"]] = offer

        # The rush; SIGKILL once enough of it is acknowledged.
        shoppers = [asyncio.create_task(shop(b)) for b in buyers]
        t_go = time.monotonic()
        while len(acked()) < CONFIRMED + KILL_AFTER_ACKS:
            assert time.monotonic() < t_go + 20, f"only {len(acked())} orders acknowledged"
            await asyncio.sleep(0.002)
        # SIGKILL, mid-sale: no drain, no goodbye.
        assert first.proc is not None
        first.proc.kill()
        killed_at = time.monotonic()
        acked_at_kill = len(acked())
        first.proc.wait(10)
        for task in shoppers:
            task.cancel()  # later buys would only meet a dead socket
        await asyncio.gather(*shoppers, return_exceptions=True)
        await close_all(buyers)  # also collects answers that were already on the wire
        acknowledged = acked()
        by_user = {b.user: b for b in buyers}
        refused = {
            (u, ref)
            for u, b in by_user.items()
            for ref, got in b.answers.items()
            if any(a["type"] == "error" for a in got)
        }
        unanswered = set(sent) - set(acknowledged) - refused

        second = ServerProcess(database_url, data_dir, env=ENV).start()
        restart_s = time.monotonic() - killed_at
        ready_at = time.time()

        # 1. Every acknowledged order exists with its id, user, ref, offer and quantity; the
        #    confirmed ones are still paid. Read from PostgreSQL and over REST.
        ledgers = {o: await offer_ledger(pool, o) for o in offers}
        stored = {k: v for o in offers for k, v in ledgers[o]["orders"].items()}
        for (user, ref), order in acknowledged.items():
            row = stored.get((user, ref))
            assert row is not None, f"acknowledged order {order['id']} of {user}/{ref} is lost"
            assert row["id"] == order["id"] and row["qty"] == order["qty"]
            assert sent[(user, ref)] == (order["offer"], order["qty"])
            assert row["status"] in ("reserved", "paid", "expired"), row
        for order_id in confirmed:
            assert any(r["id"] == order_id and r["status"] == "paid" for r in stored.values())

        async def via_rest(http: httpx.AsyncClient, key: tuple[str, str]) -> None:
            r = await http.get(
                f"/api/orders/{acknowledged[key]['id']}", headers=headers(token(key[0]))
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["id"], body["qty"]) == (acknowledged[key]["id"], acknowledged[key]["qty"])

        async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
            await bounded([lambda k=k: via_rest(http, k) for k in acknowledged], 32)  # type: ignore[misc]

        # 2. The invariant and the per-user limit hold for both offers after the crash.
        for o in offers:
            assert_invariant(ledgers[o])
            per_user: dict[str, int] = defaultdict(int)
            for (user, _), row in ledgers[o]["orders"].items():
                if row["status"] in ("reserved", "paid"):
                    per_user[user] += row["qty"]
            assert max(per_user.values(), default=0) <= LIMIT
        phantoms = {k for k, row in stored.items() if k not in acknowledged}
        assert phantoms <= unanswered, "an order exists for a buy that was refused"

        # 3. Buyers retry what went unanswered, with the same refs: a committed buy comes
        #    back as that very order (whatever its status by now), never as a second one.
        back = {u: b for u, b in zip(users, await open_buyers(second, users), strict=True)}
        retries = sorted(unanswered) + sorted(acknowledged)[:20]

        async def retry(key: tuple[str, str]) -> None:
            user, ref = key
            offer, qty = sent[key]
            got = await back[user].buy(sid, offer, ref, qty)
            assert len(got) == 1, got
            answer = got[0]
            if key in stored:
                assert answer["type"] == "order", (key, answer)
                assert answer["order"]["id"] == stored[key]["id"], (key, answer)
            elif answer["type"] == "error":
                assert answer["code"] in ("sold_out", "limit_reached", "offer_closed"), answer

        await bounded([lambda k=k: retry(k) for k in retries], 64)  # type: ignore[misc]
        await close_all(back.values())

        # 4. Every reservation expires after its TTL and gives its units back; none holds
        #    stock past `expires_at` (beyond the sweeper's interval) while the node is up.
        deadline = time.monotonic() + 30
        while True:
            now = time.time()
            views = {o: await offer_ledger(pool, o) for o in offers}
            for o in offers:
                assert_invariant(views[o])
                if now > ready_at + SWEEP_GRACE_S:
                    for row in views[o]["orders"].values():
                        if row["status"] == "reserved":
                            late = now - row["expires_at"].timestamp()
                            assert late < SWEEP_GRACE_S, f"{row['id']} held stock {late:.1f}s late"
            settled = all(v["reserved"] == 0 for v in views.values())
            if settled and views[offer_b]["status"] == "ended":
                break
            assert time.monotonic() < deadline, {
                o: (v["reserved"], v["status"]) for o, v in views.items()
            }
            await asyncio.sleep(0.2)

        paid = {o: views[o]["paid"] for o in offers}
        assert paid[offer_a] + paid[offer_b] == sum(
            stored[k]["qty"] for k in stored if stored[k]["id"] in confirmed
        )
        # The open offer has every unpaid unit back; the ended one gave them to the product.
        assert views[offer_a]["status"] == "open"
        assert views[offer_a]["remaining"] == QTY_OPEN - paid[offer_a]
        assert views[offer_b]["remaining"] == QTY_SHORT - paid[offer_b]
        assert views[offer_b]["returned"] == QTY_SHORT - paid[offer_b]
        assert await _stock(pool, pid) == STOCK - QTY_OPEN - paid[offer_b]
        expired = sum(
            1 for v in views.values() for r in v["orders"].values() if r["status"] == "expired"
        )
        print(
            f"\nkilled {killed_at - t_go:.2f}s into the sale at {acked_at_kill} acknowledged orders ({len(acknowledged)} in the end; "
            f"{len(sent)} buys sent, "
            f"{len(unanswered)} unanswered, {len(phantoms)} committed but unacknowledged); "
            f"restarted in {restart_s:.1f}s; {expired} orders expired, {len(confirmed)} paid"
        )
    finally:
        first.kill()
        if second is not None:
            second.kill()
