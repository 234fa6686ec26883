"""Video time end to end (SPEC §12), over real sockets: viewers 0, 3 and 8 s behind get the
pin and the offer when their picture shows them, in offset order; personal answers are not
delayed; an offer that closed at wall T still takes the buy of a viewer whose video is before
T, and refuses a viewer whose video is past it; a bid that says when its viewer pressed gets
its trip over a slow link back (the trip allowance)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import websockets

from tests.client.proxy import Proxy

from .harness import Client, ServerProcess, live_session, open_auction, open_offer, token

TOLERANCE_S = 0.75  # bucket rounding (125 ms) + fan-out tick + a loaded shared machine


class Viewer:
    """A client that notes when each room event reached it."""

    def __init__(self, client: Client, delay_s: float) -> None:
        self.client = client
        self.delay_s = delay_s
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.personal: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            await self.client._read(60)
            now = time.monotonic()
            for m in self.client.inbox:
                if "offset" in m and m.get("type") != "joined":
                    self.seen.append((now, m))
                else:
                    self.personal.append((now, m))
            self.client.inbox.clear()

    def first(self, kind: str) -> tuple[float, dict[str, Any]]:
        found = [(t, m) for t, m in self.seen if m["type"] == kind]
        assert found, (kind, self.delay_s, [m["type"] for _, m in self.seen], self.personal)
        return found[0]

    async def answer(self, ref: str, timeout: float = 5.0) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.personal:
                if m.get("ref") == ref:
                    return t, m
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer to {ref}: {self.personal[-5:]}")


async def test_viewers_at_0_3_and_8_seconds(server: ServerProcess) -> None:
    s = await live_session(server.url, creator="vt-seller")
    sid, pid = s["session"]["id"], s["product"]["id"]
    clients = {}
    for name, delay in (("zero", 0), ("three", 3), ("eight", 8)):
        c = await Client.connect(server, token(f"vt-{name}"))
        hello = await c.expect("hello")
        assert hello["limits"]["max_viewer_delay_ms"] == 15_000
        await c.send({"type": "join", "session": sid})
        joined = await c.expect("joined")
        assert joined["delay_ms"] == 0
        clients[name] = (c, delay)

    # Bad reports change nothing: negative, over the maximum, a session not joined.
    c3 = clients["three"][0]
    for i, bad in enumerate(({"ms": -1}, {"ms": 15_001}, {"ms": 10, "session": "nope"})):
        await c3.send({"type": "delay", "session": sid, **bad})
        await c3.send({"type": "ping", "ref": f"p{i}"})
        err = await c3.expect("error")
        assert err["code"] == ("not_found" if "session" in bad else "bad_frame"), err
        await c3.expect("pong", ref=f"p{i}")

    for c, delay in clients.values():
        if delay:
            await c.send({"type": "delay", "session": sid, "ms": delay * 1000})
    # A new viewer's delay climbs at 1 s per s: 8 s later all three are at their delay.
    await asyncio.sleep(8.3)
    eight = clients["eight"][0]
    await eight.send({"type": "join", "session": sid})  # joined carries the delay in force
    assert (await eight.expect("joined"))["delay_ms"] == 8000

    viewers = {name: Viewer(c, d) for name, (c, d) in clients.items()}
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            pinned_at = time.monotonic()
            r = await http.post(
                f"/api/sessions/{sid}/pin", headers=s["headers"], json={"product_id": pid}
            )
            assert r.status_code == 200, r.text
            offer = await open_offer(
                server.url, s, price_cents=700, quantity=5, per_user_limit=2, duration_s=2
            )
            opened_at = time.monotonic()
        close_at = opened_at + 2  # wall T, as this client sees it (the REST answer came later)

        await asyncio.sleep(close_at + 1 - time.monotonic())  # T+1: the 0 s viewer buys
        zero = viewers["zero"]
        await zero.client.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "z1"}
        )
        sent = time.monotonic()
        answered, refusal = await zero.answer("z1")
        assert refusal["type"] == "error" and refusal["code"] == "offer_closed", refusal
        assert answered - sent < 1.0

        await asyncio.sleep(close_at + 5 - time.monotonic())  # T+5: video T-3 at 8 s behind
        late = viewers["eight"]
        await late.client.send(
            {"type": "buy", "session": sid, "offer": offer["id"], "qty": 1, "ref": "e1"}
        )
        sent = time.monotonic()
        answered, order = await late.answer("e1")
        assert order["type"] == "order", order
        assert order["order"]["status"] == "reserved"
        assert answered - sent < 1.0, "personal answers are never delayed"

        await asyncio.sleep(sent + 8 + TOLERANCE_S - time.monotonic())  # all saw the sale
        for name, v in viewers.items():
            t_pin, _ = v.first("pinned")
            t_offer, shown = v.first("offer")
            assert shown["id"] == offer["id"]
            assert abs((t_pin - pinned_at) - v.delay_s) < TOLERANCE_S, (name, t_pin - pinned_at)
            assert abs((t_offer - opened_at) - v.delay_s) < TOLERANCE_S, (name, t_offer - opened_at)
            sold_at, _ = v.first("sold")
            assert abs((sold_at - sent) - v.delay_s) < TOLERANCE_S, (name, sold_at - sent)
            offsets = [m["offset"] for _, m in v.seen]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (name, offsets)
    finally:
        for v in viewers.values():
            v.task.cancel()
        for c, _ in clients.values():
            await c.close()


async def test_a_bid_sent_just_before_the_end_in_its_picture_over_a_slow_link_is_taken(
    server: ServerProcess,
) -> None:
    """Two bidders 2 s behind, each on a link that takes 400 ms to carry a frame up, bid
    150 ms before the end as their pictures show it: by arrival minus delay both bids are
    250 ms late. The one that says when its viewer pressed (`video_at`) is taken (the trip is
    within the allowance, 1 s by default); the one that does not is refused."""
    s = await live_session(server.url, creator="vt-auctioneer")
    sid = s["session"]["id"]
    proxy = await Proxy(server.port).start()
    proxy.up_delay_s = 0.4
    bidders: dict[str, Client] = {}
    try:
        for name in ("says", "silent"):
            ws = await websockets.connect(f"{proxy.ws_url}?token={token(f'vt-b-{name}')}")
            c = bidders[name] = Client(ws)
            hello = await c.expect("hello")
            assert hello["limits"]["trip_allowance_ms"] == 1_000
            await c.send({"type": "join", "session": sid})
            await c.expect("joined")
            await c.send({"type": "delay", "session": sid, "ms": 2_000})
        await asyncio.sleep(2.6)  # the delays in force climb to 2 s
        auction = await open_auction(
            server.url, s, start_cents=1000, min_increment_cents=10, duration_s=2, mode="sudden_death"
        )
        # Each sees the auction 2 s late; in its picture it ends at `ends_at`.
        ends = datetime.fromisoformat(auction["ends_at"]).timestamp()
        shown = await bidders["says"].expect("auction", timeout=5)
        assert shown["id"] == auction["id"]
        await asyncio.sleep(ends + 2.0 - 0.15 - time.time())  # video time: 150 ms before the end
        pressed = round((time.time() - 2.0) * 1000)
        assert pressed < ends * 1000
        bid = {"type": "bid", "session": sid, "auction": auction["id"], "amount_cents": 1000}
        await bidders["says"].send({**bid, "ref": "s1", "video_at": pressed})
        await bidders["silent"].send({**bid, "amount_cents": 1010, "ref": "q1"})
        taken = await bidders["says"].expect(("ack", "error"), ref="s1", timeout=5)
        refused = await bidders["silent"].expect(("ack", "error"), ref="q1", timeout=5)
        assert taken["type"] == "ack" and taken["leading"], taken
        assert refused["type"] == "error" and refused["code"] == "auction_closed", refused
        # Settled `max_viewer_delay_ms` + the allowance after the end: the bid that came in
        # its viewer's time wins.
        async with httpx.AsyncClient(base_url=server.url) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                body = (await http.get(f"/api/auctions/{auction['id']}")).json()
                if body["status"] == "ended":
                    break
                await asyncio.sleep(0.5)
        assert body["status"] == "ended" and body["leader"] == "vt-b-says", body
        assert time.time() >= ends + 15 + 1, "settled after the delay maximum plus the allowance"
    finally:
        for c in bidders.values():
            await c.close()
        await proxy.close()
