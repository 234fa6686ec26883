"""Screenshots of the three pages during a lively demo show, written to the tests' screenshot folder
(docs/img/ when run by scripts/refresh_screenshots.sh)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from livecart.runtime.demo import CREATOR, Demo
from tests.e2e.harness import SECRET, ServerProcess, token

from .conftest import SCREENSHOTS, Background, Pages
from .test_pages import rest, send_chat, watch_url


def test_screenshots_of_the_watch_page_studio_and_console(
    server: ServerProcess, pages: Pages, background: Background
) -> None:
    # Other tests' shows would crowd the feed in the pictures: an admin ends them.
    admin = token("admin-web", "admin")
    for other in rest(server, "GET", "/api/sessions?status=live&limit=500", None):
        rest(server, "POST", f"/api/sessions/{other['id']}/end", admin)
    demo = Demo(server.url, SECRET, bots=8)
    background.call(demo.seed())
    background.loop.call_soon_threadsafe(demo.start)
    urls = demo.urls()
    sid = demo.session["id"]
    rest(
        server,
        "POST",
        f"/api/creators/{CREATOR}/blocked-terms",
        demo.creator_token,
        {"term": "giveaway", "action": "hold"},
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The studio first, so its chart has collected a while of live samples by the end.
    studio = pages.open(urls["creator"], width=1280, height=900)
    expect(studio.locator("#control-heading")).to_have_text(demo.session["title"])

    viewer = pages.open(urls["viewer"], width=1280, height=820)
    expect(viewer.locator("#pinned .product-title")).to_have_text("Speckled stoneware mug")
    expect(viewer.locator("#chat-list li.msg").nth(7)).to_be_visible(timeout=40000)
    for _ in range(3):
        viewer.get_by_role("button", name="Like this stream").click()
    send_chat(viewer, "Just grabbed one, can't wait!")
    viewer.locator("#pinned").get_by_role("button", name=re.compile("^Buy for")).click()
    expect(viewer.locator("#pinned .order-status")).to_contain_text("Reserved")

    other = pages.open(watch_url(server, sid, "priya-web", "Priya"))
    send_chat(other, "is there a giveaway today?")

    console = pages.open(f"{server.url}/moderate/{sid}#token={demo.creator_token}", width=1280)
    expect(console.locator("#queue li.queue-item", has_text="giveaway")).to_have_count(1)
    expect(console.locator("#chat-list li.msg").nth(5)).to_be_visible()
    console.locator("#chat-list li.msg").nth(2).get_by_role(
        "button", name=re.compile("^Delete message")
    ).click()
    expect(console.locator("#audit li.audit-item")).not_to_have_count(0)

    expect(studio.locator(".tile-chat .tile-value")).not_to_have_text("0", timeout=20000)
    studio.wait_for_timeout(4000)

    viewer.screenshot(path=str(SCREENSHOTS / "watch.png"), full_page=True)
    studio.screenshot(path=str(SCREENSHOTS / "studio.png"), full_page=True)
    console.screenshot(path=str(SCREENSHOTS / "moderate.png"))
    phone = pages.open(urls["viewer"].replace(demo.viewer_token, token("sam-web")), width=375)
    expect(phone.locator("#chat-list li.msg").nth(5)).to_be_visible()
    phone.screenshot(path=str(SCREENSHOTS / "watch-phone.png"), full_page=True)
    for name in ("watch", "studio", "moderate", "watch-phone"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
