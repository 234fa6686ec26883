"""Rules of the pure moderation core, each with the clock as a parameter."""

from __future__ import annotations

import re
import time
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from livecart.core.moderation import (
    CLOSE_FLOODING,
    BlockedTerm,
    ChatContext,
    ChatGuards,
    DuplicateFilter,
    FloodDetector,
    FloodPolicy,
    MuteBook,
    MuteStatus,
    RateDecision,
    RateLimiter,
    RatePolicy,
    RoomRules,
    ShieldMode,
    SlowMode,
    TermMatcher,
    apply_shield,
    decide_chat,
    disallowed_domain,
    domain_allowed,
    duplicate_key,
    find_domains,
    first_hit,
    take_token,
)
from livecart.core.normalize import detect_disguises, match_forms, normalize

# --------------------------------------------------------------------------- normalize


def test_fullwidth_and_case_fold_to_plain_latin() -> None:
    assert normalize("ＳＣＡＭ Ａｌｅｒｔ") == "scam alert"
    assert normalize("STRASSE Straße") == "strasse strasse"


@pytest.mark.parametrize(
    "invisible",
    [
        "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\u2061", "\u2062",
        "\u2063", "\u2064", "\ufeff", "\u00ad", "\ufe0f", "\u180e", "\u034f", "\u202e",
        "\u3164", "\U000e0041", "\U000e0100", "\x01",
    ],
)  # fmt: skip
def test_invisible_characters_are_removed(invisible: str) -> None:
    assert normalize(f"sc{invisible}am") == "scam"


def test_combining_marks_are_removed() -> None:
    assert normalize("fáké") == "fake"
    assert normalize("s\u0334c\u0337a\u0336m\u0338") == "scam"
    assert normalize("ï\u0308d\u0301i\u0300o\u0302t\u0303") == "idiot"


def test_whitespace_is_collapsed_and_trimmed() -> None:
    assert normalize("  hello\t\n  world\u00a0\u3000again  ") == "hello world again"


@pytest.mark.parametrize(
    ("lookalike", "latin"),
    [
        ("а", "a"), ("е", "e"), ("о", "o"), ("р", "p"), ("с", "c"), ("у", "y"), ("х", "x"),
        ("і", "i"), ("ј", "j"), ("ѕ", "s"), ("к", "k"), ("м", "m"), ("н", "h"), ("т", "t"),
        ("в", "b"), ("А", "a"), ("Н", "h"), ("Т", "t"), ("α", "a"), ("ο", "o"), ("ρ", "p"),
        ("ε", "e"), ("ι", "i"), ("κ", "k"), ("ν", "v"), ("τ", "t"), ("υ", "u"), ("χ", "x"),
        ("Η", "h"), ("Ν", "n"), ("Μ", "m"), ("Ρ", "p"), ("ᴀ", "a"), ("ꜱ", "s"), ("ı", "i"),
    ],
)  # fmt: skip
def test_lookalike_letters_fold_to_latin(lookalike: str, latin: str) -> None:
    assert normalize(f"x{lookalike}x") == f"x{latin}x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sc4m", "scam"),
        ("5cam", "scam"),
        ("f4k3", "fake"),
        ("1d10t", "idiot"),
        ("!d!0t", "idiot"),
        ("id!0t", "idiot"),
        ("@ss", "ass"),
        ("a$$", "ass"),
        ("$cam", "scam"),
        ("ki11", "kiii"),
        ("sh+t", "shtt"),
        ("b00bs", "boobs"),
    ],
)
def test_leetspeak_folds_inside_words(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "$25 for two?",
        "10% off",
        "size 36 or 38?",
        "36cm",
        "10kg",
        "galaxy a55",
        "s23",
        "$25usd",
        "wow!!",
        "+49 30 1234",
        "4/5 stars",
        "@ 8pm",
        "8pm!",
        "7am",
        "1st",
        "3xl",
        "5kg",
    ],
)
def test_numbers_and_punctuation_stay_as_typed(text: str) -> None:
    assert normalize(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s.c.a.m", "scam"),
        ("s c a m", "scam"),
        ("s-c-a-m", "scam"),
        ("s_c_a_m", "scam"),
        ("s * c * a * m", "scam"),
        ("s🔥c🔥a🔥m", "scam"),
        ("is it a s c a m?", "is it ascam?"),
        ("5 c 4 m", "scam"),
    ],
)
def test_letters_written_apart_are_joined(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_joining_keeps_each_letter_a_word_of_its_own() -> None:
    forms = match_forms("is it a s c a m")
    assert forms.plain == "is it ascam"
    assert forms.soft == frozenset({7, 8, 9, 10})


@pytest.mark.parametrize("text", ["a b", "i'm a big fan", "u.s. shipping", "1 2 3 4", "e.g."])
def test_short_or_letterless_runs_are_not_joined(text: str) -> None:
    assert match_forms(text).soft == frozenset()


def test_disguises_are_named() -> None:
    assert detect_disguises("ѕсαm") == ("look-alike letters",)
    assert detect_disguises("ｓｃａｍ") == ("compatibility characters",)
    assert detect_disguises("sc\u200bam") == ("invisible characters",)
    assert detect_disguises("s̈cam") == ("combining marks",)
    assert detect_disguises("s c a m") == ("spaced-out letters",)
    assert detect_disguises("sc4m") == ("leetspeak",)
    assert detect_disguises("plain words") == ()


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_normalize_is_idempotent_and_clean(text: str) -> None:
    n = normalize(text)
    assert normalize(n) == n
    assert n == n.strip()
    assert "  " not in n
    assert not any(unicodedata.category(c) in ("Mn", "Me", "Cf") for c in n)
    forms = match_forms(text)
    assert len(forms.plain) == len(forms.leet)
    assert all(0 < p < len(forms.plain) for p in forms.soft)


# --------------------------------------------------------------------------- terms


@pytest.fixture(scope="module")
def matcher() -> TermMatcher:
    return TermMatcher(
        [
            ("ass", "block"),
            ("scam", "block"),
            ("idiot", "block"),
            ("giveaway", "hold"),
            ("fake*", "hold"),
            ("*coin", "hold"),
            ("buy followers", "block"),
            ("1488", "block"),
            ("骗子", "block"),
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        "class",
        "assistant",
        "passion",
        "bass guitar",
        "scampi",
        "escambia",
        "idiotic",  # only "idiot" is blocked, no wildcard
        "give away",
        "x14889",
        "followers to buy",
    ],
)
def test_terms_match_whole_words_only(matcher: TermMatcher, text: str) -> None:
    assert matcher.match(text) is None


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("you ass", "ass"),
        ("ass!", "ass"),
        ("(scam)", "scam"),
        ("scam1", "scam"),
        ("2scam", "scam"),
        ("IDIOT.", "idiot"),
        ("fakes", "fake*"),
        ("faker", "fake*"),
        ("bitcoin", "*coin"),
        ("buy   followers now", "buy followers"),
        ("code 1488", "1488"),
        ("这是骗子吧", "骗子"),
        ("scaaaaam", "scam"),
        ("asssss", "ass"),
    ],
)
def test_terms_hit(matcher: TermMatcher, text: str, term: str) -> None:
    hit = matcher.match(text)
    assert hit is not None
    assert hit.term == term


def test_stretching_needs_at_least_the_terms_own_letters(matcher: TermMatcher) -> None:
    assert matcher.match("aas aaas") is None


def test_hit_explains_itself(matcher: TermMatcher) -> None:
    hit = matcher.match("what a ѕс4m")
    assert hit is not None
    assert (hit.term, hit.action, hit.scope, hit.matched) == ("scam", "block", "global", "scam")
    assert hit.reason == 'blocked term "scam"'
    assert "look-alike letters" in hit.why
    assert "leetspeak" in hit.why


def test_block_wins_over_hold_in_one_list(matcher: TermMatcher) -> None:
    hit = matcher.match("giveaway scam")
    assert hit is not None
    assert hit.action == "block"
    assert hit.term == "scam"


def test_hold_when_only_hold_terms(matcher: TermMatcher) -> None:
    hit = matcher.match("giveaway today")
    assert hit is not None
    assert hit.action == "hold"


def test_same_term_twice_block_wins() -> None:
    m = TermMatcher([BlockedTerm("spam", "hold"), BlockedTerm("SP4M", "block")])
    hit = m.match("spam")
    assert hit is not None
    assert hit.action == "block"
    assert len(m) == 2


def test_scopes_combine_block_anywhere_wins() -> None:
    global_terms = TermMatcher([("giveaway", "hold")])
    creator_terms = TermMatcher([("refund", "block"), ("dm me", "hold")], scope="creator-1")
    hit = first_hit("giveaway refund", [global_terms, creator_terms])
    assert hit is not None
    assert (hit.term, hit.scope) == ("refund", "creator-1")
    hold = first_hit("giveaway dm me", [global_terms, creator_terms])
    assert hold is not None
    assert (hold.term, hold.scope) == ("giveaway", "global")
    assert first_hit("hello", [global_terms, None, creator_terms]) is None


@pytest.mark.parametrize("bad", [("x", "delete"), ("   ", "block"), ("*", "hold")])
def test_bad_terms_are_refused(bad: tuple[str, str]) -> None:
    with pytest.raises(ValueError):
        TermMatcher([bad])


def test_empty_matcher_matches_nothing() -> None:
    assert TermMatcher([]).match("anything at all") is None


_WORD = st.text(alphabet="abcdefghijkmnopqrstuvwxyz", min_size=2, max_size=8)


@settings(max_examples=150, deadline=None)
@given(term=_WORD, before=st.lists(_WORD, max_size=3), after=st.lists(_WORD, max_size=3))
def test_a_term_standing_alone_is_always_found(
    term: str, before: list[str], after: list[str]
) -> None:
    hit = TermMatcher([(term, "block")]).match(" ".join([*before, term, *after]) + "!")
    assert hit is not None


@settings(max_examples=150, deadline=None)
@given(term=_WORD, head=_WORD, tail=_WORD)
def test_a_term_inside_a_longer_word_is_never_found(term: str, head: str, tail: str) -> None:
    assume(re.search(r"(.)\1\1", head + term + tail) is None)  # "aaaaaa" is "aa" stretched
    assert TermMatcher([(term, "block")]).match(f"» {head}{term}{tail}?") is None


def test_ten_thousand_terms_stay_fast() -> None:
    words = [
        f"zq{i:05d}x".translate(str.maketrans("0123456789", "bcdfghjkmn")) for i in range(10_000)
    ]
    m = TermMatcher([(w, "block") for w in words] + [("scam", "block")])
    messages = ["is this still available in size 38?", "love it 😍 how much for two"] * 500
    started = time.perf_counter()
    assert not any(m.match(x) for x in messages)
    assert time.perf_counter() - started < 2.0
    assert m.match("total scam") is not None
    assert m.match(f"hey {words[7777]}") is not None


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("text", "domains"),
    [
        ("go to https://Example.com/x?y=1", ["example.com"]),
        ("http://user:pw@evil.io:8080/a", ["evil.io"]),
        ("see www.shop.example.co.uk/path", ["www.shop.example.co.uk"]),
        ("buy at cheap-bags.xyz now", ["cheap-bags.xyz"]),
        ("t.me/joinchat", ["t.me"]),
        ("mail me@inbox.net", ["inbox.net"]),
        ("example[.]com and shop(.)io", ["example.com", "shop.io"]),
        ("visit ebay dot com", ["ebay.com"]),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", ["example.com"]),
        ("a.com a.com https://a.com", ["a.com"]),
    ],
)
def test_find_domains(text: str, domains: list[str]) -> None:
    assert find_domains(text) == domains


@pytest.mark.parametrize(
    "text",
    ["costs 3.99 now", "e.g. the red one", "thanks.me too", "polka dot dress", "v1.2 update"],
)
def test_no_domains_in_ordinary_text(text: str) -> None:
    assert find_domains(text) == []


def test_allow_list_covers_subdomains_only() -> None:
    allowed = ["example.com"]
    assert domain_allowed("example.com", allowed)
    assert domain_allowed("shop.example.com", allowed)
    assert not domain_allowed("notexample.com", allowed)
    assert not domain_allowed("example.com.evil.io", allowed)
    assert not domain_allowed("еxample.com", allowed)  # Cyrillic е


def test_links_pass_only_when_every_domain_is_allowed() -> None:
    allowed = {"example.com", "livecart.shop"}
    assert disallowed_domain("see https://shop.example.com and livecart.shop/x", allowed) is None
    assert disallowed_domain("example.com or evil.io", allowed) == "evil.io"
    assert disallowed_domain("no links here", allowed) is None


# --------------------------------------------------------------------------- rate limit


def test_rate_limiter_burst_then_refill() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=1.0, burst=5))
    assert all(limiter.check("u", 0.0).allowed for _ in range(5))
    assert limiter.check("u", 0.0) == RateDecision(False, 1000)
    assert limiter.check("u", 0.5) == RateDecision(False, 500)
    assert limiter.check("u", 1.0).allowed
    assert not limiter.check("u", 1.0).allowed
    assert limiter.check("other", 1.0).allowed


def test_rate_limiter_refills_up_to_burst_only() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=1.0, burst=5))
    limiter.check("u", 0.0)
    assert sum(limiter.check("u", 1000.0).allowed for _ in range(10)) == 5


def test_waiting_retry_after_is_enough() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=2.0, burst=1))
    assert limiter.check("u", 10.0).allowed
    refused = limiter.check("u", 10.1)
    assert not refused.allowed
    assert refused.retry_after_ms == 400
    assert limiter.check("u", 10.1 + refused.retry_after_ms / 1000).allowed


def test_clock_going_backwards_mints_no_tokens() -> None:
    level, decision = take_token(0.0, 100.0, 50.0, RatePolicy())
    assert not decision.allowed
    assert level == 0.0


def test_rate_limiter_memory_is_bounded() -> None:
    limiter: RateLimiter[int] = RateLimiter(RatePolicy(), max_keys=10)
    for user in range(100):
        limiter.check(user, 0.0)
    assert len(limiter) == 10
    limiter.check(999, 5.0)  # every other bucket is full again by now, so forgotten
    assert len(limiter) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=80))
def test_rate_limiter_never_allows_more_than_burst_plus_refill(times: list[float]) -> None:
    policy = RatePolicy(rate_per_s=1.0, burst=5)
    limiter: RateLimiter[str] = RateLimiter(policy)
    times.sort()
    allowed = sum(limiter.check("u", t).allowed for t in times)
    assert allowed <= policy.burst + policy.rate_per_s * (times[-1] - times[0]) + 1e-9


# --------------------------------------------------------------------------- flooding


def test_flood_detector_trips_past_the_limit_within_the_window() -> None:
    flood: FloodDetector[str] = FloodDetector(FloodPolicy(max_frames=20, window_s=2.0))
    assert not any(flood.hit("c", i * 0.05) for i in range(20))
    assert flood.hit("c", 1.0)
    assert not flood.hit("other", 1.0)


def test_steady_traffic_is_not_flooding() -> None:
    flood: FloodDetector[str] = FloodDetector(FloodPolicy(max_frames=20, window_s=2.0))
    assert not any(flood.hit("c", i * 0.11) for i in range(200))


def test_flood_memory_is_bounded() -> None:
    flood: FloodDetector[int] = FloodDetector(FloodPolicy(), max_keys=5)
    for conn in range(50):
        flood.hit(conn, 0.0)
    assert len(flood) == 5
    flood.hit(1000, 10.0)
    assert len(flood) == 1


# --------------------------------------------------------------------------- duplicates


def test_duplicate_within_window_then_expires() -> None:
    dups: DuplicateFilter[str] = DuplicateFilter(30.0)
    dups.record("u", normalize("Is this real leather?"), 0.0)
    assert dups.seen("u", normalize("is this REAL leather??"), 29.9)
    assert not dups.seen("u", normalize("is this real leather?"), 30.0)
    assert not dups.seen("v", normalize("is this real leather?"), 1.0)
    assert not dups.seen("u", normalize("is this real suede?"), 1.0)


def test_duplicate_key_ignores_punctuation_but_not_emoji_only_text() -> None:
    assert duplicate_key(normalize("great!!!")) == duplicate_key(normalize("great"))
    assert duplicate_key(normalize("❤️")) != duplicate_key(normalize("🔥"))


def test_duplicate_memory_is_bounded_per_user_and_overall() -> None:
    dups: DuplicateFilter[int] = DuplicateFilter(30.0, per_key=3, max_keys=4)
    for i in range(4):
        dups.record(1, f"text {i}", 0.0)
    assert not dups.seen(1, "text 0", 1.0)
    assert dups.seen(1, "text 3", 1.0)
    for user in range(10):
        dups.record(user, "hi", 1.0)
    assert len(dups) == 4


# --------------------------------------------------------------------------- slow mode


def test_slow_mode_one_message_per_interval() -> None:
    slow: SlowMode[str] = SlowMode()
    assert slow.retry_after_ms("u", 10, 0.0) == 0
    slow.record("u", 0.0)
    assert slow.retry_after_ms("u", 10, 3.0) == 7000
    assert slow.retry_after_ms("u", 10, 10.0) == 0
    assert slow.retry_after_ms("u", 0, 3.0) == 0
    assert slow.retry_after_ms("u", 5, 3.0) == 2000  # shortened live


def test_slow_mode_caps_at_max_seconds() -> None:
    slow: SlowMode[str] = SlowMode(max_seconds=60)
    slow.record("u", 0.0)
    assert slow.retry_after_ms("u", 10_000, 30.0) == 30_000


# --------------------------------------------------------------------------- mutes


def test_timeout_expires_then_allowed() -> None:
    mutes = MuteBook()
    mutes.timeout("creator", "u", until=600.0)
    assert mutes.status("creator", "u", 0.0) == MuteStatus("muted", 600.0)
    assert mutes.status("creator", "u", 599.9) == MuteStatus("muted", 600.0)
    assert mutes.status("creator", "u", 600.0) is None


def test_ban_outranks_timeout_and_unban_clears_both() -> None:
    mutes = MuteBook()
    mutes.timeout("creator", "u", until=600.0)
    mutes.ban("creator", "u")
    assert mutes.status("creator", "u", 0.0) == MuteStatus("banned")
    assert mutes.unban("creator", "u")
    assert mutes.status("creator", "u", 0.0) is None
    assert not mutes.unban("creator", "u")


def test_mutes_are_scoped_to_the_creator() -> None:
    mutes = MuteBook()
    mutes.ban("creator-a", "u")
    assert mutes.status("creator-b", "u", 0.0) is None


def test_new_timeout_replaces_the_old_one() -> None:
    mutes = MuteBook()
    mutes.timeout("c", "u", until=600.0)
    mutes.timeout("c", "u", until=10.0)
    assert mutes.status("c", "u", 20.0) is None


def test_sweep_forgets_expired_timeouts() -> None:
    mutes = MuteBook()
    mutes.timeout("c", "u", until=10.0)
    mutes.timeout("c", "v", until=100.0)
    mutes.sweep(50.0)
    assert mutes.status("c", "v", 50.0) is not None
    assert mutes.status("c", "u", 5.0) is None  # forgotten, not resurrected


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
    from livecart.core.moderation import DuplicateFilter

    f: DuplicateFilter[str] = DuplicateFilter(30.0)
    f.record("u", "hello there", 0.0)
    assert f.seen("u", "hello there", 1.0)
    f.forget("u", "hello there")
    assert not f.seen("u", "hello there", 1.0)
    f.forget("nobody", "x")  # unknown keys are fine
