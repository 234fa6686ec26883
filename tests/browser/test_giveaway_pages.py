"""Giveaways in a real browser (Chromium) on a real node: the studio starts one, a viewer
enters on the watch page, sees the commitment, the draw, its free order, and checks the draw
in the page (crypto.subtle), which also refuses a tampered one."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.harness import ServerProcess, live_session, token

from .conftest import Pages, run
from .test_pages import rest, watch_url


def test_studio_starts_a_giveaway_and_a_viewer_enters_wins_and_verifies(
    server: ServerProcess, pages: Pages
) -> None:
    s = run(live_session(server.url, creator="gw-studio"))
    sid = s["session"]["id"]
    ctok = token("gw-studio", "creator", name="Gia Host")
    alice = pages.open(watch_url(server, sid, "gw-alice", "Alice"))
    expect(alice.locator("#status-badge")).to_have_text("LIVE")
    expect(alice.locator("#giveaway-box")).to_be_hidden()
    guest = pages.open(f"{server.url}/watch/{sid}")
    expect(guest.locator("#status-badge")).to_have_text("LIVE")
    kid_token = token("gw-kid", "viewer", name="Kid", minor=True)
    kid = pages.open(f"{server.url}/watch/{sid}#token={kid_token}")
    expect(kid.locator("#status-badge")).to_have_text("LIVE")

    studio = pages.open(f"{server.url}/studio#token={ctok}&session={sid}")
    expect(studio.locator("#control-meta .badge")).to_have_text("LIVE")
    expect(studio.locator("#giveaway-product option")).to_contain_text("Ceramic mug")
    studio.get_by_label("Winners").fill("2")
    studio.locator("#giveaway-duration").select_option("10")
    studio.get_by_label("Who may enter").select_option("viewers")
    studio.get_by_role("button", name="Start giveaway").click()
    expect(studio.locator("#giveaway-status")).to_contain_text("running")
    expect(studio.locator("#giveaway-status")).to_contain_text("2 to win")

    # The viewer's page shows it live, with the commitment, and enters.
    box = alice.locator("#giveaway-box")
    expect(box).to_be_visible()
    expect(box).to_contain_text("2 × Ceramic mug")
    commitment = alice.locator("#giveaway-commitment").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", commitment)
    alice.get_by_role("button", name="Enter", exact=True).click()
    expect(alice.locator("#giveaway-enter")).to_have_text("Entered ✓")
    expect(box).to_contain_text("You're in!")
    # A guest is asked to sign in; nothing is entered.
    guest.get_by_role("button", name="Enter", exact=True).click()
    expect(guest.locator("#giveaway-box")).to_contain_text("Sign in to enter.")
    # A minor is refused by the server; the panel says why (and no toast repeats it).
    kid.get_by_role("button", name="Enter", exact=True).click()
    expect(kid.locator("#giveaway-box")).to_contain_text("minors cannot enter")
    expect(kid.locator("#giveaway-enter")).to_have_text("Enter")
    expect(kid.locator("#toasts")).not_to_contain_text("minors")

    # The draw: one entrant for two units, so Alice wins and one unit returns.
    expect(alice.locator("#giveaway-winners")).to_contain_text("gw-alice", timeout=20000)
    expect(box).to_contain_text("You won!")
    seed = alice.locator("#giveaway-seed").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", seed)
    expect(alice.locator("#orders .order")).to_have_count(1)
    expect(alice.locator("#orders .order")).to_contain_text("$0.00")
    expect(studio.locator("#giveaway-status")).to_contain_text("Winners: gw-alice of 1")

    alice.get_by_role("button", name="Verify the draw").click()
    expect(box).to_contain_text("✓ Verified")
    gid = alice.locator("#giveaway-box a", has_text="seed and entrants").get_attribute("href")
    assert gid is not None
    published = rest(server, "GET", gid, None)
    assert published["drawn"] == ["gw-alice"] and published["commitment"] == commitment

    # The same check refuses tampered data (another winner, another seed).
    check = "async (g) => (await import('/static/giveaway.js')).verifyDraw(g)"
    assert alice.evaluate(check, published) == []
    assert alice.evaluate(check, {**published, "drawn": ["mallory"]}) != []
    assert alice.evaluate(check, {**published, "seed": "0" * 64}) != []
