"""Auctions in a real browser (SPEC §11): the studio creates one with every option; the
watch page bids with a max, hears `outbid`, shows the reserve state and buy-now, counts the
auction down (scheduled, open, ended with its reason) and takes a second chance."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.harness import Client, ServerProcess, live_session, token

from .conftest import Pages, run
from .test_pages import UNLABELLED_JS, rest, watch_url


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node whose reservations last 2 s, so that a winner who does not pay is quick."""
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("auction-web")),
        env={"LIVECART_RESERVATION_TTL_S": "2", "LIVECART_SECOND_CHANCE_TTL_S": "60"},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def shop(server: ServerProcess, creator: str) -> dict[str, Any]:
    s = run(live_session(server.url, creator=creator))
    return {
        "session": s["session"]["id"],
        "product": s["product"]["id"],
        "ctok": token(creator, "creator"),
    }


def auction(server: ServerProcess, s: dict[str, Any], **terms: Any) -> dict[str, Any]:
    body = {"product_id": s["product"], "start_cents": 1000, "duration_s": 120, **terms}
    made: dict[str, Any] = rest(
        server, "POST", f"/api/sessions/{s['session']}/auctions", s["ctok"], body
    )
    return made


async def ws_bid(server: ServerProcess, sub: str, sid: str, auction_id: str, cents: int) -> None:
    c = await Client.connect(server, token(sub))
    try:
        ref = f"bid-{cents}"
        await c.send(
            {
                "type": "bid",
                "session": sid,
                "auction": auction_id,
                "amount_cents": cents,
                "ref": ref,
            }
        )
        await c.expect("ack", ref=ref)
    finally:
        await c.close()


def test_the_studio_creates_an_auction_with_every_option(
    server: ServerProcess, pages: Pages
) -> None:
    s = shop(server, "auction-studio")
    studio = pages.open(f"{server.url}/studio#session={s['session']}&token={s['ctok']}")
    expect(studio.locator("#control-heading")).to_have_text("Morning show")
    expect(studio.locator("#auction-product")).to_contain_text("Ceramic mug")
    expect(studio.locator("#auction-live")).to_contain_text("No auction running")

    form = studio.locator("#auction-form")
    form.get_by_label("Starting bid").fill("10")
    form.get_by_label("Bid steps").select_option("table")
    form.get_by_label("Step table").fill("20:0.50, *:1")
    form.get_by_label("Auction runs for").select_option("120")
    form.get_by_label("Ending").select_option("sudden_death")
    form.get_by_label("Buy-now price").fill("50")
    form.get_by_label("Hidden reserve").fill("25")
    form.get_by_label("Opens in").fill("30")
    form.get_by_role("button", name="Start auction").click()

    row = studio.locator("#auction-live .auction-row")
    expect(row).to_contain_text("Scheduled")
    expect(row).to_contain_text("opens in 0:")
    expect(row).to_contain_text("Reserve not met")
    expect(row).to_contain_text("buy-now $50.00")
    made = rest(server, "GET", f"/api/auctions/{row.get_attribute('data-auction')}", None)
    assert made["start_cents"] == 1000
    assert made["increments"] == [[2000, 50], [None, 100]]
    assert (made["mode"], made["buy_now_cents"], made["status"]) == (
        "sudden_death",
        5000,
        "scheduled",
    )
    assert made["reserve_met"] is False and "reserve_cents" not in made

    # A viewer sees it scheduled, with the opening countdown, and may pre-bid.
    viewer = pages.open(watch_url(server, s["session"], "pre-web", "Pre"))
    card = viewer.locator("#auction")
    expect(card.locator(".auction-status")).to_have_text("Scheduled")
    expect(card.locator(".auction-clock")).to_contain_text(re.compile(r"opens in 0:[0-2]\d"))
    expect(card.get_by_role("button", name="Pre-bid")).to_be_visible()

    # Bad input in the form is refused on the page and nothing is created.
    other = shop(server, "auction-studio2")
    studio2 = pages.open(f"{server.url}/studio#session={other['session']}&token={other['ctok']}")
    form2 = studio2.locator("#auction-form")
    expect(studio2.locator("#auction-product")).to_contain_text("Ceramic mug")
    form2.get_by_label("Bid steps").select_option("table")
    form2.get_by_label("Step table").fill("ten:half")
    form2.get_by_role("button", name="Start auction").click()
    expect(studio2.locator("#auction-form-note")).to_contain_text("a step table like")
    expect(studio2.locator("#auction-live")).to_contain_text("No auction running")
    form2.get_by_label("Bid steps").select_option("fixed")
    form2.get_by_label("Step", exact=True).fill("0.25")
    form2.get_by_label("Starting bid").fill("5")
    form2.get_by_role("button", name="Start auction").click()
    expect(studio2.locator("#auction-live .auction-row")).to_contain_text("Open")
    expect(studio2.locator("#auction-live .auction-row")).to_contain_text("next $5.00")


def test_the_watch_page_bids_with_a_max_hears_outbid_and_buys_now(
    server: ServerProcess, pages: Pages
) -> None:
    s = shop(server, "auction-watch")
    auction(server, s, min_increment_cents=100, buy_now_cents=5000, reserve_cents=3000)
    alice = pages.open(watch_url(server, s["session"], "alice-auc", "Alice"))
    bob = pages.open(watch_url(server, s["session"], "bob-auc", "Bob"))
    for page in (alice, bob):
        card = page.locator("#auction")
        expect(card.locator(".auction-status")).to_have_text("Open")
        expect(card.locator(".auction-product")).to_have_text("Ceramic mug")
        expect(card.locator(".reserve")).to_have_text("Reserve not met")
        expect(card.locator(".auction-clock")).to_contain_text(re.compile(r"ends in [12]:\d\d"))
        expect(card.get_by_role("button", name="Buy now for $50.00")).to_be_visible()

    # Alice bids $10 with a max of $25: she leads at $10, her max shown to her alone.
    a = alice.locator("#auction")
    a.get_by_label("Your bid").fill("10")
    a.get_by_label("Max bid").fill("25")
    a.get_by_role("button", name="Bid", exact=True).click()
    expect(a.locator(".auction-notice")).to_have_text("✓ You lead at $10.00 · your max $25.00")
    expect(a.locator(".my-max")).to_contain_text("Your max: $25.00")
    expect(a.locator(".leading")).to_have_text("You lead")
    b = bob.locator("#auction")
    expect(b.locator(".auction-price strong")).to_have_text("$10.00")
    expect(bob.locator("body")).not_to_contain_text("$25.00")

    # Bob's $20 is met by Alice's max at $21; his $30 passes it: Alice hears `outbid`.
    b.get_by_label("Your bid").fill("20")
    b.get_by_role("button", name="Bid", exact=True).click()
    expect(b.locator(".auction-notice")).to_contain_text("the price is now $21.00")
    b.get_by_label("Your bid").fill("30")
    b.get_by_role("button", name="Bid", exact=True).click()
    expect(b.locator(".auction-notice")).to_have_text("✓ You lead at $30.00")
    expect(a.locator(".auction-notice")).to_have_text("You were outbid — the price is now $30.00")
    for card in (a, b):
        expect(card.locator(".reserve")).to_have_text("Reserve met")
        expect(card.locator(".auction-price strong")).to_have_text("$30.00")

    # A bid under the minimum is refused with the minimum; nothing changes.
    a.get_by_label("Your bid").fill("30.50")
    a.get_by_role("button", name="Bid", exact=True).click()
    expect(a.locator(".auction-notice")).to_have_text("Your bid is too low — the minimum is $31.00")
    expect(a.locator(".auction-price strong")).to_have_text("$30.00")

    # Alice takes it with buy-now: the auction ends for everyone, with its reason.
    a.get_by_role("button", name="Buy now for $50.00").click()
    expect(a.locator(".auction-notice")).to_contain_text("Reserved 1 × $50.00")
    expect(alice.locator("#orders .order")).to_contain_text("$50.00")
    for card in (a, b):
        expect(card.locator(".auction-status")).to_have_text("Ended — bought with buy-now")
        expect(card.get_by_role("button", name=re.compile("^Buy now"))).to_have_count(0)
    expect(a.locator(".auction-result")).to_have_text("You won at $50.00")
    expect(b.locator(".auction-result")).to_have_text("Won by @alice-auc at $50.00")


def test_the_runner_up_takes_a_second_chance_on_the_watch_page(
    server: ServerProcess, pages: Pages
) -> None:
    s = shop(server, "auction-chance")
    made = auction(server, s, min_increment_cents=100, duration_s=6, mode="sudden_death")
    carol = pages.open(watch_url(server, s["session"], "carol-auc", "Carol"))
    card = carol.locator("#auction")
    expect(card.locator(".auction-status")).to_have_text("Open")
    card.get_by_label("Your bid").fill("10")
    card.get_by_role("button", name="Bid", exact=True).click()
    expect(card.locator(".auction-notice")).to_have_text("✓ You lead at $10.00")
    run(ws_bid(server, "dave-auc", s["session"], made["id"], 1100))
    expect(card.locator(".auction-notice")).to_have_text(
        "You were outbid — the price is now $11.00"
    )
    expect(card.locator(".auction-status")).to_have_text("Ended — time is up", timeout=45000)
    expect(card.locator(".auction-result")).to_have_text("Won by @dave-auc at $11.00")

    # Dave does not pay within the 2 s reservation: Carol is offered the lot at her bid.
    prompt = carol.locator("#second-chance")
    expect(prompt).to_be_visible(timeout=45000)
    expect(prompt).to_contain_text("It is yours for your bid of $10.00")
    expect(prompt.locator(".chance-clock")).to_contain_text(re.compile(r"expires in 0:[0-5]\d"))

    # A page opened again finds the open offer over REST.
    carol.reload()
    expect(prompt).to_contain_text("It is yours for your bid of $10.00")
    prompt.get_by_role("button", name="Accept the second chance for $10.00").click()
    expect(prompt).to_contain_text("Reserved 1 × $10.00 — order")
    expect(carol.locator("#orders .order")).to_contain_text("$10.00")
    orders = rest(server, "GET", "/api/me/orders", token("carol-auc"))
    assert [(o["unit_cents"], o["status"]) for o in orders] == [(1000, "reserved")]
    prompt.get_by_role("button", name="Close").click()
    expect(prompt).to_be_hidden()


def test_the_auction_parts_fit_a_phone_and_label_every_control(
    server: ServerProcess, pages: Pages
) -> None:
    s = shop(server, "auction-phone")
    auction(server, s, buy_now_cents=5000, reserve_cents=3000)
    urls = {
        "watch": (
            watch_url(server, s["session"], "phone-auc", "Phone"),
            "#auction .auction-status",
        ),
        "studio": (
            f"{server.url}/studio#session={s['session']}&token={s['ctok']}",
            "#auction-live .auction-status",
        ),
    }
    for width in (375, 1280):
        for name, (url, ready) in urls.items():
            page = pages.open(url, width=width, height=800)
            expect(page.locator(ready)).to_have_text("Open")
            if name == "studio":
                page.locator("#auction-form").get_by_label("Bid steps").select_option("table")
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            )
            assert overflow <= width, f"{name} at {width}px is {overflow}px wide"
            assert page.evaluate(UNLABELLED_JS) == [], f"{name}: unlabelled controls"
