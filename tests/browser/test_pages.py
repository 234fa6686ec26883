"""The watch page, the studio and the moderation console in a real browser, on a real node."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.e2e.harness import ServerProcess, headers, live_session, token

from .conftest import Pages, run

# Every control must have an accessible name: its own text, aria-label, aria-labelledby, a
# <label for>, a wrapping <label>, or a title. Returns the controls that have none.
UNLABELLED_JS = """
() => {
  const named = (el) => {
    if ((el.getAttribute('aria-label') || '').trim()) return true;
    const by = el.getAttribute('aria-labelledby');
    if (by && by.split(/\\s+/).some((id) => (document.getElementById(id)?.textContent || '').trim())) return true;
    if (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) return true;
    if (el.closest('label')) return true;
    if ((el.getAttribute('title') || '').trim()) return true;
    if (el.tagName === 'BUTTON' && el.textContent.trim()) return true;
    if (el.tagName === 'INPUT' && ['submit', 'button'].includes(el.type) && el.value) return true;
    return false;
  };
  return [...document.querySelectorAll('button, input, select, textarea')]
    .filter((el) => el.type !== 'hidden' && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}
"""


def rest(server: ServerProcess, method: str, path: str, tok: str | None, body: Any = None) -> Any:
    with httpx.Client(base_url=server.url, timeout=15) as http:
        r = http.request(method, path, headers=headers(tok) if tok else {}, json=body)
    assert r.status_code < 300, f"{method} {path} {body!r} -> {r.status_code} {r.text}"
    return r.json()


def live_shop(server: ServerProcess, creator: str, quantity: int = 3) -> dict[str, Any]:
    """A live session (harness), its product pinned and a flash offer open on it."""
    s = run(live_session(server.url, creator=creator))
    sid, pid = s["session"]["id"], s["product"]["id"]
    ctok = token(creator, "creator")
    rest(server, "POST", f"/api/sessions/{sid}/pin", ctok, {"product_id": pid})
    offer = rest(
        server,
        "POST",
        f"/api/sessions/{sid}/offers",
        ctok,
        {
            "product_id": pid,
            "price_cents": 1200,
            "quantity": quantity,
            "per_user_limit": 2,
            "duration_s": 600,
        },
    )
    return {"session": sid, "product": pid, "offer": offer, "creator": creator, "ctok": ctok}


def watch_url(server: ServerProcess, session: str, sub: str, name: str | None = None) -> str:
    return f"{server.url}/watch/{session}#token={token(sub, 'viewer', name=name or sub)}"


def moderate_url(server: ServerProcess, session: str, tok: str) -> str:
    return f"{server.url}/moderate/{session}#token={tok}"


def send_chat(page: Any, text: str) -> Any:
    page.get_by_role("textbox", name="Chat message").fill(text)
    page.get_by_role("textbox", name="Chat message").press("Enter")
    return page.locator("#chat-list li.msg", has_text=text)


def test_viewer_buys_the_pinned_product_and_another_viewer_sees_the_stock(
    server: ServerProcess, pages: Pages
) -> None:
    shop = live_shop(server, "web-shop", quantity=3)
    alice = pages.open(watch_url(server, shop["session"], "alice-web", "Alice"))
    bob = pages.open(watch_url(server, shop["session"], "bob-web", "Bob"))
    for page in (alice, bob):
        expect(page.locator("#status-badge")).to_have_text("LIVE")
        expect(page.locator("#pinned .product-title")).to_have_text("Ceramic mug")
        expect(page.locator("#pinned .price strong")).to_have_text("$12.00")
        expect(page.locator("#pinned .stock-left")).to_have_text("3 left")
    # The token left the address bar and stayed in the browser.
    assert "token=" not in alice.url

    alice.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
    status = alice.locator("#pinned .order-status")
    expect(status).to_contain_text("Reserved 1 × $12.00")
    expect(status).to_contain_text(re.compile(r"order \S+"))
    expect(alice.locator("#orders .order")).to_have_count(1)
    expect(alice.locator("#orders .order")).to_contain_text("Ceramic mug")
    # The second viewer's page follows the stock live.
    expect(bob.locator("#pinned .stock-left")).to_have_text("2 left")
    orders = rest(server, "GET", "/api/me/orders", token("alice-web"))
    items = orders if isinstance(orders, list) else orders.get("orders") or orders.get("items")
    assert [o["status"] for o in items] == ["reserved"]
    assert items[0]["id"] in status.inner_text()

    # Bob takes the last two: both pages show the sold-out state.
    bob.locator("#pinned select.qty").select_option("2")
    bob.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
    expect(bob.locator("#pinned .order-status")).to_contain_text("Reserved 2 ×")
    for page in (alice, bob):
        expect(page.locator("#pinned .stock-left")).to_have_text("Sold out")
        expect(page.locator("#pinned button.buy")).to_be_disabled()
        expect(page.locator("#pinned button.buy")).to_have_text("Sold out")


def test_chat_is_acknowledged_and_a_deleted_message_disappears_for_viewers(
    server: ServerProcess, pages: Pages
) -> None:
    shop = live_shop(server, "web-chat")
    sid = shop["session"]
    carol = pages.open(watch_url(server, sid, "carol-web", "Carol"))
    dave = pages.open(watch_url(server, sid, "dave-web", "Dave"))
    mod = pages.open(moderate_url(server, sid, token("mod-web", "moderator", name="Mo")))
    expect(carol.locator("#status-badge")).to_have_text("LIVE")
    expect(mod.locator("#session-title")).to_have_text("Morning show")

    mine = send_chat(carol, "hello from the browser")
    expect(mine).to_have_class(re.compile(r"\bmine\b"))
    expect(mine.locator(".msg-state")).to_have_text("✓")
    expect(mine).to_have_attribute("data-offset", re.compile(r"^\d+$"))
    expect(mine).to_have_count(1)
    send_chat(carol, "a second message")
    for page in (dave, mod):
        expect(page.locator("#chat-list li.msg", has_text="hello from the browser")).to_have_count(
            1
        )

    mod.locator("#chat-list li.msg", has_text="hello from the browser").get_by_role(
        "button", name="Delete message from Carol"
    ).click()
    for page in (carol, dave, mod):
        expect(page.locator("#chat-list li.msg", has_text="hello from the browser")).to_have_count(
            0
        )
        expect(page.locator("#chat-list li.msg", has_text="a second message")).to_have_count(1)
    # Gone from replay as well: a tombstone without text.
    timeline = rest(server, "GET", f"/api/sessions/{sid}/timeline", None)
    assert all(e.get("text") != "hello from the browser" for e in timeline["events"])

    # A fresh page load (history from the snapshot) does not show it either.
    erin = pages.open(watch_url(server, sid, "erin-web"))
    expect(erin.locator("#chat-list li.msg", has_text="a second message")).to_have_count(1)
    expect(erin.locator("#chat-list li.msg", has_text="hello from the browser")).to_have_count(0)


def test_a_held_message_waits_in_the_queue_and_appears_after_approval(
    server: ServerProcess, pages: Pages
) -> None:
    shop = live_shop(server, "web-held")
    sid = shop["session"]
    rest(
        server,
        "POST",
        "/api/creators/web-held/blocked-terms",
        shop["ctok"],
        {"term": "gizmo", "action": "hold"},
    )
    author = pages.open(watch_url(server, sid, "fay-web", "Fay"))
    other = pages.open(watch_url(server, sid, "gus-web", "Gus"))
    mod = pages.open(moderate_url(server, sid, token("mod-held", "moderator", name="Mo")))
    expect(author.locator("#status-badge")).to_have_text("LIVE")
    expect(other.locator("#status-badge")).to_have_text("LIVE")

    held = send_chat(author, "does the gizmo come in blue?")
    expect(held).to_have_class(re.compile(r"\bheld\b"))
    expect(held.locator(".msg-state")).to_have_text("held for review")
    expect(author.locator("#chat-notice")).to_contain_text("waiting for a moderator")

    item = mod.locator("#queue li.queue-item", has_text="does the gizmo come in blue?")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Held")
    expect(item).to_contain_text("Fay")
    expect(item.locator(".reasons")).to_contain_text("gizmo")
    expect(other.locator("#chat-list li.msg", has_text="gizmo")).to_have_count(0)
    expect(mod.locator("#chat-list li.msg", has_text="gizmo")).to_have_count(0)

    item.get_by_role("button", name=re.compile("^Claim")).click()
    expect(item).to_contain_text("claimed by you")
    item.get_by_role("button", name=re.compile("^Approve")).click()
    expect(mod.locator("#queue li.queue-item")).to_have_count(0)
    for page in (other, mod):
        expect(
            page.locator("#chat-list li.msg", has_text="does the gizmo come in blue?")
        ).to_have_count(1)
    mine = author.locator("#chat-list li.msg", has_text="does the gizmo come in blue?")
    expect(mine).to_have_count(1)
    expect(mine).not_to_have_class(re.compile(r"\bheld\b"))
    expect(mine.locator(".msg-state")).to_have_text("✓")


def test_the_watch_page_resumes_after_the_server_restarts(
    database_url: str, tmp_path: Any, pages: Pages
) -> None:
    data_dir = str(tmp_path / "node")
    first = ServerProcess(database_url, data_dir).start()
    second: ServerProcess | None = None
    try:
        shop = live_shop(first, "web-restart")
        sid = shop["session"]
        viewer = pages.open(watch_url(first, sid, "hal-web", "Hal"))
        expect(viewer.locator("#status-badge")).to_have_text("LIVE")
        before = send_chat(viewer, "said before the restart")
        expect(before.locator(".msg-state")).to_have_text("✓")

        # While the node is down the browser logs failed connection attempts: expected.
        pages.allow(r"WebSocket connection to .* failed|ERR_CONNECTION_REFUSED")
        assert first.terminate() == 0
        banner = viewer.locator("#banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Offline")
        expect(viewer.get_by_role("button", name=re.compile("^Buy for"))).to_have_count(1)

        second = ServerProcess(database_url, data_dir).start(port=first.port)
        expect(banner).to_be_hidden(timeout=30000)
        other = pages.open(watch_url(second, sid, "ida-web", "Ida"))
        expect(
            other.locator("#chat-list li.msg", has_text="said before the restart")
        ).to_have_count(1)
        send_chat(other, "said after the restart")
        expect(
            viewer.locator("#chat-list li.msg", has_text="said after the restart")
        ).to_have_count(1)
        expect(
            viewer.locator("#chat-list li.msg", has_text="said before the restart")
        ).to_have_count(1)
        # The resumed page still sells: the order goes through the new node.
        viewer.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
        expect(viewer.locator("#pinned .order-status")).to_contain_text("Reserved 1 ×")
        expect(other.locator("#pinned .stock-left")).to_have_text("2 left")
    finally:
        for srv in (first, second):
            if srv is not None:
                srv.kill()


def test_the_studio_runs_a_show_end_to_end(server: ServerProcess, pages: Pages) -> None:
    ctok = token("studio-web", "creator", name="Sam Studio")
    studio = pages.open(f"{server.url}/studio#token={ctok}")
    expect(studio.locator("#studio-title")).to_have_text("Sam Studio's studio")

    studio.locator("#product-create summary").click()
    form = studio.locator("#product-form")
    form.get_by_label("Title").fill("Glazed bowl")
    form.get_by_label("Price").fill("32.50")
    form.get_by_label("Stock").fill("40")
    form.get_by_label("Category").fill("home")
    form.get_by_role("button", name="Create product").click()
    expect(studio.locator("#products .product-row", has_text="Glazed bowl")).to_contain_text(
        "$32.50 · 40 in stock"
    )

    studio.locator("#session-create summary").click()
    studio.locator("#session-form").get_by_label("Title").fill("Bowl night")
    studio.get_by_role("button", name="Create session").click()
    expect(studio.locator("#control-heading")).to_have_text("Bowl night")
    expect(studio.locator("#control-meta .badge")).to_have_text("SCHEDULED")

    studio.get_by_role("button", name="Add Glazed bowl to the showcase").click()
    expect(studio.locator("#showcase .showcase-item", has_text="Glazed bowl")).to_have_count(1)
    studio.get_by_role("button", name="Pin Glazed bowl").click()
    expect(studio.locator("#showcase .showcase-item.pinned")).to_contain_text("Pinned")
    studio.get_by_role("button", name="Go live").click()
    expect(studio.locator("#control-meta .badge")).to_have_text("LIVE")

    studio.get_by_label("Deal price").fill("25")
    studio.get_by_label("Quantity").fill("5")
    studio.get_by_role("button", name="Open flash offer").click()
    offer = studio.locator("#offers li.offer")
    expect(offer).to_contain_text("Glazed bowl")
    expect(offer).to_contain_text("$25.00")
    expect(offer).to_contain_text("5 / 5 left")

    sid = (
        studio.locator("#control-meta a", has_text="Watch page")
        .get_attribute("href")
        .split("/")[-1]
    )
    viewer = pages.open(watch_url(server, sid, "jo-web", "Jo"))
    viewer.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
    expect(viewer.locator("#pinned .order-status")).to_contain_text("Reserved 1 × $25.00")
    send_chat(viewer, "love the bowls")
    expect(offer).to_contain_text("4 / 5 left")
    expect(studio.locator(".tile-orders .tile-value")).to_have_text("1")
    expect(studio.locator(".tile-revenue .tile-value")).to_have_text("$25.00")
    expect(studio.locator(".tile-chat .tile-value")).to_have_text("1")
    expect(studio.locator("#chart svg[role=img]")).to_be_visible()
    expect(studio.locator("#score-body table tbody tr")).not_to_have_count(0)

    offer.get_by_role("button", name="End this offer").click()
    expect(studio.locator("#offers li.offer")).to_have_count(0)
    end = studio.get_by_role("button", name="End session")
    end.click()
    studio.get_by_role("button", name="Click again to end").click()
    expect(studio.locator("#control-meta .badge")).to_have_text("ENDED")
    expect(viewer.locator("#status-badge")).to_have_text("ENDED")


def test_pages_fit_a_phone_and_label_every_control(server: ServerProcess, pages: Pages) -> None:
    shop = live_shop(server, "web-layout")
    sid = shop["session"]
    urls = {
        "watch": watch_url(server, sid, "kim-web", "Kim"),
        "studio": f"{server.url}/studio#session={sid}&token={shop['ctok']}",
        "moderate": moderate_url(server, sid, shop["ctok"]),
    }
    ready = {
        "watch": ("#pinned .product-title", "Ceramic mug"),
        "studio": ("#control-heading", "Morning show"),
        "moderate": ("#session-title", "Morning show"),
    }
    for width in (375, 1280):
        for name, url in urls.items():
            page = pages.open(url, width=width, height=800)
            selector, text = ready[name]
            expect(page.locator(selector)).to_have_text(text)
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            )
            assert overflow <= width, f"{name} at {width}px is {overflow}px wide"
            assert page.evaluate(UNLABELLED_JS) == [], f"{name}: unlabelled controls"
