"""Selling in a show (SPEC §13) in a real browser: the studio sets a claim word, a viewer
claims by typing it, another joins the waitlist and is served when the claim is cancelled,
and the viewer's bundle closes when the show ends."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.harness import ServerProcess, token

from .conftest import Pages
from .test_pages import rest, send_chat, watch_url


def test_claim_word_waitlist_and_bundle(server: ServerProcess, pages: Pages) -> None:
    ctok = token("sell-web", "creator", name="Sal Seller")
    studio = pages.open(f"{server.url}/studio#token={ctok}")
    studio.locator("#product-create summary").click()
    form = studio.locator("#product-form")
    form.get_by_label("Title").fill("Teapot")
    form.get_by_label("Price").fill("30")
    form.get_by_label("Stock").fill("10")
    form.get_by_role("button", name="Create product").click()
    studio.locator("#session-create summary").click()
    studio.locator("#session-form").get_by_label("Title").fill("Tea time")
    studio.get_by_role("button", name="Create session").click()
    studio.get_by_role("button", name="Add Teapot to the showcase").click()
    studio.get_by_role("button", name="Pin Teapot").click()
    studio.get_by_role("button", name="Go live").click()
    expect(studio.locator("#control-meta .badge")).to_have_text("LIVE")

    studio.get_by_label("Deal price").fill("25")
    studio.get_by_label("Quantity").fill("1")
    studio.get_by_label("Claim word").fill("MINE")
    studio.get_by_role("button", name="Open flash offer").click()
    offer = studio.locator("#offers li.offer")
    expect(offer).to_contain_text("claim word “MINE”")
    sid = (
        studio.locator("#control-meta a", has_text="Watch page")
        .get_attribute("href")
        .split("/")[-1]
    )

    alice = pages.open(watch_url(server, sid, "sell-alice", "Alice"))
    bob = pages.open(watch_url(server, sid, "sell-bob", "Bob"))
    carol = pages.open(watch_url(server, sid, "sell-carol", "Carol"))
    for page in (alice, bob, carol):
        expect(page.locator("#pinned .claim-hint")).to_have_text("Type MINE in chat to claim one")

    # Alice claims by typing the word (in her own spelling); the message shows in chat.
    send_chat(alice, "mine")
    expect(alice.locator("#pinned .order-status")).to_contain_text("Reserved 1 × $25.00")
    expect(bob.locator("#chat-list li.msg", has_text="mine")).to_have_count(1)
    expect(bob.locator("#pinned .stock-left")).to_have_text("Sold out")
    expect(bob.locator("#pinned .claim-hint")).to_have_count(0)

    # Bob waits, then Carol; Alice's order is cancelled; the unit goes to Bob, first in line,
    # and Carol's page moves her up without a reload (the pushed `waitlist_place`).
    bob.locator("#pinned").get_by_role("button", name="Join waitlist").click()
    expect(bob.locator("#pinned .order-status")).to_have_text("You are #1 on the waitlist")
    carol.locator("#pinned").get_by_role("button", name="Join waitlist").click()
    expect(carol.locator("#pinned .order-status")).to_have_text("You are #2 on the waitlist")
    (order,) = rest(server, "GET", "/api/me/orders", token("sell-alice"))
    rest(server, "POST", f"/api/orders/{order['id']}/cancel", ctok)
    expect(bob.locator("#pinned .order-status")).to_contain_text("Reserved 1 × $25.00")
    expect(carol.locator("#pinned .order-status")).to_have_text("You are #1 on the waitlist")
    expect(bob.locator("#bundle")).to_have_text(
        re.compile(r"Your bundle: 1 order · \$25\.00 · open until the show ends")
    )

    studio.get_by_role("button", name="End session").click()
    studio.get_by_role("button", name="Click again to end").click()
    expect(bob.locator("#status-badge")).to_have_text("ENDED")
    expect(bob.locator("#bundle")).to_contain_text("closed — ships together", timeout=20000)
