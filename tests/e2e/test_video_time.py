"""Video time end to end (SPEC §12), over real sockets: viewers 0, 3 and 8 s behind get the
pin and the offer when their picture shows them, in offset order; personal answers are not
delayed; an offer that closed at wall T still takes the buy of a viewer whose video is before
T, and refuses a viewer whose video is past it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from .harness import Client, ServerProcess, live_session, open_offer, token

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
