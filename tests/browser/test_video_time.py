"""The watch page in video time (SPEC §12): with `?delay=ms` it reports its delay, so the
offer appears when its picture shows it, its countdown runs on the picture's time, and its
buy says when its viewer pressed (`video_at`, docs/commerce.md "Trip allowance")."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from playwright.sync_api import expect

from tests.e2e.harness import ServerProcess, live_session, token

from .conftest import Pages, run
from .test_pages import rest

DELAY_S = 4


def seconds_left(text: str) -> int:
    m = re.search(r"(\d+):(\d\d)", text)
    assert m, text
    return int(m.group(1)) * 60 + int(m.group(2))


def sent_frames(page: Any) -> list[dict[str, Any]]:
    """What the page sends on its WebSockets from now on (it reloads to catch its socket)."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        ws.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", on_socket)
    page.reload()
    return frames


def test_a_delayed_viewer_sees_the_offer_late_and_counts_down_in_its_own_time(
    server: ServerProcess, pages: Pages
) -> None:
    s = run(live_session(server.url, creator="vt-web-shop"))
    sid, pid = s["session"]["id"], s["product"]["id"]
    ctok = token("vt-web-shop", "creator")
    rest(server, "POST", f"/api/sessions/{sid}/pin", ctok, {"product_id": pid})
    fast = pages.open(f"{server.url}/watch/{sid}#token={token('vt-fast', 'viewer')}")
    slow = pages.open(
        f"{server.url}/watch/{sid}?delay={DELAY_S * 1000}#token={token('vt-slow', 'viewer')}"
    )
    sent = {"fast": sent_frames(fast), "slow": sent_frames(slow)}
    for page in (fast, slow):
        expect(page.locator("#status-badge")).to_have_text("LIVE")
        expect(page.locator("#pinned .product-title")).to_have_text("Ceramic mug")
    time.sleep(DELAY_S + 0.5)  # the slow page's delay in force climbs at 1 s per s

    opened = time.monotonic()
    body = {
        "product_id": pid,
        "price_cents": 1200,
        "quantity": 3,
        "per_user_limit": 2,
        "duration_s": 120,
    }
    rest(server, "POST", f"/api/sessions/{sid}/offers", ctok, body)
    expect(fast.locator("#pinned .countdown")).to_be_visible(timeout=3000)
    assert slow.locator("#pinned .countdown").count() == 0, "not in the slow picture yet"
    expect(slow.locator("#pinned .countdown")).to_be_visible(timeout=(DELAY_S + 4) * 1000)
    late = time.monotonic() - opened
    assert DELAY_S - 1.5 < late < DELAY_S + 3, late

    # At the same moment, the slow picture has DELAY_S more seconds left.
    fast_left = seconds_left(fast.locator("#pinned .countdown").inner_text())
    slow_left = seconds_left(slow.locator("#pinned .countdown").inner_text())
    assert DELAY_S - 2 <= slow_left - fast_left <= DELAY_S + 2, (fast_left, slow_left)

    # Each buys: the slow page's buy carries the time of its picture, the fast one's none.
    for name, page in (("fast", fast), ("slow", slow)):
        pressed_ms = time.time() * 1000
        page.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
        expect(page.locator("#pinned .order-status")).to_contain_text("Reserved 1 ×")
        buys = [f for f in sent[name] if f.get("type") == "buy"]
        assert len(buys) == 1, sent[name]
        if name == "fast":
            assert "video_at" not in buys[0], buys[0]
        else:
            behind = pressed_ms - buys[0]["video_at"]
            assert DELAY_S * 1000 - 1500 < behind < DELAY_S * 1000 + 1500, buys[0]
    assert not pages.unexpected()
