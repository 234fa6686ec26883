"""Blocked terms and their matcher (`chat.rules.terms`)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from livecart.chat.rules.terms import (
    BlockedTerm,
    TermMatcher,
    first_hit,
)

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
