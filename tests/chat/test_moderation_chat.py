"""Shield mode and the decision on one chat message (`chat.rules.chat`)."""

from __future__ import annotations

import pytest

from livecart.chat.rules.chat import (
    CLOSE_FLOODING,
    ChatContext,
    ChatGuards,
    RoomRules,
    ShieldMode,
    apply_shield,
    decide_chat,
)
from livecart.chat.rules.limits import (
    DuplicateFilter,
)
from livecart.chat.rules.terms import (
    TermMatcher,
)

# --------------------------------------------------------------------------- shield


def test_apply_shield_only_tightens() -> None:
    shield = ShieldMode(slow_seconds=30, links=False, new_account_minutes=10)
    rules = apply_shield(RoomRules(slow_seconds=60, shield=shield))
    assert (rules.slow_seconds, rules.hold_all_links, rules.hold_new_accounts_s) == (60, True, 600)
    rules = apply_shield(RoomRules(slow_seconds=5, shield=shield))
    assert rules.slow_seconds == 30
    assert apply_shield(RoomRules(slow_seconds=5)) == RoomRules(slow_seconds=5)


# --------------------------------------------------------------------------- decide_chat

GLOBAL = TermMatcher([("scam", "block"), ("giveaway", "hold")])
CREATOR = TermMatcher([("refund", "block")], scope="creator")


def ctx(text: str, **kw: object) -> ChatContext:
    fields: dict[str, object] = {
        "user": "u1",
        "role": "viewer",
        "creator": "creator",
        "session": "s1",
        "text": text,
        "first_seen": 0.0,
        "global_terms": GLOBAL,
        "creator_terms": CREATOR,
    }
    fields.update(kw)
    return ChatContext(**fields)  # type: ignore[arg-type]


def test_clean_message_is_accepted_with_its_normal_form() -> None:
    decision = decide_chat(ctx("Is this  REAL leather?"), ChatGuards(), 100.0)
    assert decision.verdict == "accept"
    assert decision.normalized == "is this real leather?"


def test_flooding_closes_even_a_muted_user() -> None:
    guards = ChatGuards()
    guards.mutes.ban("creator", "u1")
    answers = [decide_chat(ctx(f"m{i}"), guards, 100 + i * 0.01) for i in range(21)]
    assert {a.code for a in answers[:20]} == {"banned"}
    assert (answers[20].verdict, answers[20].close_code) == ("close", CLOSE_FLOODING)


def test_ban_and_timeout_answers() -> None:
    guards = ChatGuards()
    guards.mutes.timeout("creator", "u1", until=160.0)
    muted = decide_chat(ctx("hi"), guards, 100.0)
    assert (muted.verdict, muted.code, muted.until) == ("reject", "muted", 160.0)
    assert decide_chat(ctx("hi"), guards, 160.0).verdict == "accept"
    guards.mutes.ban("creator", "u1")
    banned = decide_chat(ctx("hi again"), guards, 170.0)
    assert (banned.code, banned.until) == ("banned", None)
    other_creator = ctx("hi from elsewhere", creator="someone-else")
    assert decide_chat(other_creator, guards, 171.0).verdict == "accept"


def test_mute_comes_before_the_rate_limit() -> None:
    guards = ChatGuards()
    for i in range(5):
        decide_chat(ctx(f"m{i}"), guards, 100.0)
    guards.mutes.timeout("creator", "u1", until=200.0)
    assert decide_chat(ctx("m6"), guards, 100.0).code == "muted"


def test_rate_limit_comes_before_slow_mode() -> None:
    guards = ChatGuards()
    rules = RoomRules(slow_seconds=0)
    for i in range(5):
        assert decide_chat(ctx(f"m{i}", rules=rules), guards, 100.0).verdict == "accept"
    limited = decide_chat(ctx("m5", rules=RoomRules(slow_seconds=30)), guards, 100.0)
    assert (limited.code, limited.retry_after_ms) == ("rate_limited", 1000)


def test_slow_mode_comes_before_duplicate() -> None:
    guards = ChatGuards()
    rules = RoomRules(slow_seconds=10)
    assert decide_chat(ctx("same", rules=rules), guards, 100.0).verdict == "accept"
    slowed = decide_chat(ctx("same", rules=rules), guards, 103.0)
    assert (slowed.code, slowed.retry_after_ms) == ("slow_mode", 7000)
    assert decide_chat(ctx("same", rules=rules), guards, 111.0).code == "duplicate"


def test_duplicate_window_runs_from_the_last_copy_that_went_through() -> None:
    guards = ChatGuards()
    assert decide_chat(ctx("hello!"), guards, 100.0).verdict == "accept"
    assert decide_chat(ctx("HELLO"), guards, 120.0).code == "duplicate"
    assert decide_chat(ctx("hello"), guards, 130.0).verdict == "accept"


def test_duplicate_comes_before_terms() -> None:
    guards = ChatGuards()
    assert decide_chat(ctx("giveaway?"), guards, 100.0).verdict == "hold"
    assert decide_chat(ctx("giveaway?"), guards, 102.0).code == "duplicate"


def test_blocked_terms_global_and_creator() -> None:
    guards = ChatGuards()
    blocked = decide_chat(ctx("total s.c.4.m"), guards, 100.0)
    assert (blocked.verdict, blocked.code) == ("reject", "blocked")
    assert blocked.reasons == ('blocked term "scam"',)
    assert blocked.hit is not None
    assert "spaced-out letters" in blocked.hit.why
    assert decide_chat(ctx("I want a REFUND"), guards, 101.0).code == "blocked"


def test_block_beats_every_hold_reason() -> None:
    decision = decide_chat(ctx("giveaway scam at evil.io", first_seen=None), ChatGuards(), 100.0)
    assert decision.code == "blocked"


def test_hold_collects_every_reason() -> None:
    shield = ShieldMode(slow_seconds=0, links=True, new_account_minutes=10)
    text = "giveaway at https://evil.io/x"
    decision = decide_chat(
        ctx(text, first_seen=95.0, rules=RoomRules(shield=shield)), ChatGuards(), 100.0
    )
    assert (decision.verdict, decision.code) == ("hold", "held")
    assert decision.reasons == (
        'blocked term "giveaway"',
        "link to evil.io",
        "new account during shield mode",
    )


def test_links_pass_only_when_allowed() -> None:
    rules = RoomRules(allowed_domains=frozenset({"livecart.shop"}))
    guards = ChatGuards()
    ok = decide_chat(ctx("see https://eu.livecart.shop/p/1", rules=rules), guards, 100.0)
    assert ok.verdict == "accept"
    held = decide_chat(ctx("or bags.xyz", rules=rules), guards, 101.0)
    assert (held.verdict, held.reasons) == ("hold", ("link to bags.xyz",))


def test_shield_mode_holds_new_accounts_and_every_link() -> None:
    shield = ShieldMode(slow_seconds=30, links=False, new_account_minutes=10)
    rules = RoomRules(allowed_domains=frozenset({"livecart.shop"}), shield=shield)
    guards = ChatGuards()
    new = decide_chat(ctx("hi all", user="new", first_seen=1000.0, rules=rules), guards, 1300.0)
    assert new.reasons == ("new account during shield mode",)
    unknown = decide_chat(
        ctx("hi all", user="unknown", first_seen=None, rules=rules), guards, 1300.0
    )
    assert unknown.verdict == "hold"
    old = decide_chat(ctx("hi all", user="old", first_seen=0.0, rules=rules), guards, 1300.0)
    assert old.verdict == "accept"
    link = decide_chat(ctx("livecart.shop/p/1", user="old2", rules=rules), guards, 1300.0)
    assert link.reasons == ("link to livecart.shop (links are off)",)
    slowed = decide_chat(ctx("again", user="old", first_seen=0.0, rules=rules), guards, 1310.0)
    assert (slowed.code, slowed.retry_after_ms) == ("slow_mode", 20_000)


def test_rejected_messages_do_not_start_slow_mode() -> None:
    guards = ChatGuards()
    rules = RoomRules(slow_seconds=30)
    assert decide_chat(ctx("scam", rules=rules), guards, 100.0).code == "blocked"
    assert decide_chat(ctx("sorry", rules=rules), guards, 101.0).verdict == "accept"


@pytest.mark.parametrize(
    "who",
    [
        {"role": "moderator"},
        {"role": "admin"},
        {"role": "viewer", "channel_moderator": True},
        {"role": "creator", "user": "creator"},
    ],
)
def test_privileged_users_skip_content_rules_but_not_the_rate_limit(who: dict[str, object]) -> None:
    guards = ChatGuards()
    user = str(who.get("user", "u1"))
    guards.mutes.ban("creator", user)
    rules = RoomRules(slow_seconds=60, shield=ShieldMode())
    for i in range(5):
        decision = decide_chat(ctx("scam giveaway evil.io", rules=rules, **who), guards, 100.0 + i)
        assert decision.verdict == "accept"
    limited = [decide_chat(ctx(f"x{i}", rules=rules, **who), guards, 105.0) for i in range(6)]
    assert [d.verdict for d in limited[:4]] == ["accept"] * 4
    assert limited[-1].code == "rate_limited"


def test_another_creators_role_gives_no_privilege_here() -> None:
    decision = decide_chat(ctx("scam", role="creator", user="other-creator"), ChatGuards(), 1.0)
    assert decision.code == "blocked"


def test_a_forgotten_text_is_no_longer_a_duplicate() -> None:
    from livecart.chat.rules.limits import DuplicateFilter

    f: DuplicateFilter[str] = DuplicateFilter(30.0)
    f.record("u", "hello there", 0.0)
    assert f.seen("u", "hello there", 1.0)
    f.forget("u", "hello there")
    assert not f.seen("u", "hello there", 1.0)
    f.forget("nobody", "x")  # unknown keys are fine
