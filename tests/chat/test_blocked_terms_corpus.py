"""Blocked-term corpus: disguised spellings that must be caught, and innocent shopping chat
that must pass, against one realistic block list."""

from __future__ import annotations

import pytest

from livecart.chat.rules.terms import TermMatcher

BLOCKED = [
    "ass", "scam", "fake", "idiot", "cunt", "sex", "cock", "anal", "hell", "tit", "cum",
    "boob", "shit", "kill yourself",
]  # fmt: skip


@pytest.fixture(scope="module")
def matcher() -> TermMatcher:
    return TermMatcher([(term, "block") for term in BLOCKED])


# (message, the term it hides, the disguise)
DISGUISED = [
    ("ｓｃａｍ", "scam", "fullwidth"),
    ("this is a ＦＡＫＥ", "fake", "fullwidth"),
    ("ｉｄｉｏｔ!", "idiot", "fullwidth"),
    ("𝐬𝐜𝐚𝐦", "scam", "mathematical bold"),
    ("𝓯𝓪𝓴𝓮 bag", "fake", "mathematical script"),
    ("ⓢⓒⓐⓜ", "scam", "circled letters"),
    ("🇸🇨🇦🇲", "scam", "regional indicators"),
    ("sc\u200bam", "scam", "zero-width space"),
    ("f\u200ca\u200dke", "fake", "zero-width joiners"),
    ("id\u2060iot", "idiot", "word joiner"),
    ("a\ufeffss", "ass", "byte order mark"),
    ("sc\u00adam", "scam", "soft hyphen"),
    ("s\u034fc\u034fa\u034fm", "scam", "grapheme joiner"),
    ("fáké", "fake", "accents"),
    ("s\u0334c\u0337a\u0336m\u0338", "scam", "zalgo overlays"),
    ("ï\u0308d\u0301ï\u0300ö\u0302t\u0303", "idiot", "stacked marks"),
    ("SCAM", "scam", "upper case"),
    ("ScAm ALERT", "scam", "mixed case"),
    ("what an IdIoT", "idiot", "mixed case"),
    ("total\t\tscam\n", "scam", "whitespace"),
    ("ѕсаm", "scam", "Cyrillic"),
    ("fаkе", "fake", "Cyrillic"),
    ("іdіоt", "idiot", "Cyrillic"),
    ("ЅСАМ", "scam", "Cyrillic capitals"),
    ("аss", "ass", "Cyrillic a"),
    ("ѕсαm", "scam", "Cyrillic and Greek"),
    ("fαkε", "fake", "Greek"),
    ("ΙDΙΟΤ", "idiot", "Greek capitals"),
    ("ΑSS", "ass", "Greek capital alpha"),
    ("ꜱᴄᴀᴍ", "scam", "small capitals"),
    ("5c4m", "scam", "leetspeak"),
    ("sc4m", "scam", "leetspeak"),
    ("$cam", "scam", "leetspeak"),
    ("f4k3", "fake", "leetspeak"),
    ("fak3!", "fake", "leetspeak"),
    ("1d10t", "idiot", "leetspeak"),
    ("!d!0t", "idiot", "leetspeak"),
    ("@ss", "ass", "leetspeak"),
    ("a$$", "ass", "leetspeak"),
    ("4ss", "ass", "leetspeak"),
    ("sh1t", "shit", "leetspeak"),
    ("b00b", "boob", "leetspeak"),
    ("k1ll y0urself", "kill yourself", "leetspeak phrase"),
    ("s.c.a.m", "scam", "dots"),
    ("s c a m", "scam", "spaces"),
    ("s-c-a-m", "scam", "dashes"),
    ("s_c_a_m", "scam", "underscores"),
    ("f . a . k . e", "fake", "spaced dots"),
    ("i d i o t", "idiot", "spaces"),
    ("is it a s c a m?", "scam", "spaces after a one-letter word"),
    ("s🔥c🔥a🔥m", "scam", "emoji separators"),
    ("s*c*a*m", "scam", "asterisks"),
    ("ｓ.с.4.ｍ", "scam", "fullwidth, Cyrillic, leetspeak, dots"),
    ("Ｆ４ＫＥ", "fake", "fullwidth leetspeak"),
    ("і d 1 о t", "idiot", "Cyrillic, leetspeak, spaces"),
    ("S\u200bC\u0301A\u200bM", "scam", "zero-width and marks"),
    ("scaaaaam", "scam", "stretched"),
    ("fakeeeee", "fake", "stretched"),
    ("SCAM?!", "scam", "punctuation"),
    ("scam1", "scam", "digit suffix"),
]


@pytest.mark.parametrize(("text", "term", "disguise"), DISGUISED, ids=[d[2] for d in DISGUISED])
def test_disguised_terms_are_caught(
    matcher: TermMatcher, text: str, term: str, disguise: str
) -> None:
    hit = matcher.match(text)
    assert hit is not None, f"{disguise}: {text!r} slipped through"
    assert hit.term == term
    assert hit.action == "block"


INNOCENT = [
    "Is this class still available?",
    "My assistant will order for me",
    "Do you ship to Scunthorpe?",
    "$25 for two?",
    "$455 for the set?",
    "10% off today",
    "size 36 or 38?",
    "Is the Galaxy A55 in stock?",
    "Order #717 shipped?",
    "Is the 8008 model waterproof?",
    "passionate about this brand",
    "Sussex or Essex delivery?",
    "cocktail dress in red please",
    "thanks for the analysis of the fabric",
    "hello everyone!",
    "shell buttons or plastic?",
    "is the title correct?",
    "petite sizes?",
    "the bass on these speakers is great",
    "massive discount!",
    "glass or plastic bottle?",
    "shipping to Escambia county?",
    "scampi recipe after the show?",
    "cucumber scent or lavender",
    "cumin and pepper set",
    "Hancock street pickup?",
    "Hitchcock poster still there?",
    "I'm at class 3 tonight",
    "pass the link please",
    "Das Kleid ist klasse",
    "C'est une robe classique",
    "¿Tienen talla 38? gracias",
    "Сколько стоит доставка?",
    "これはいくらですか？",
    "多少钱？",
    "😍🔥🔥 love it",
    "❤️❤️❤️",
    "live at 8pm, 7am replay",
    "3xl or 4xl?",
    "5kg bag, 1st batch",
    "titanium or steel? still deciding",
    "a b c sizes?",
    "is the shiitake kit back?",
    "is the buckle brass or gold plated?",
    "analog or digital strap?",
    "assorted colours available?",
    "Cumberland delivery possible?",
]


@pytest.mark.parametrize("text", INNOCENT)
def test_innocent_chat_passes(matcher: TermMatcher, text: str) -> None:
    assert matcher.match(text) is None


_NAIVE_FOLD = str.maketrans("0134578$@", "oieastbsa")


def _naive_hit(text: str) -> bool:
    """Substring search after folding every digit and symbol: the filter that flags them."""
    folded = text.lower().translate(_NAIVE_FOLD)
    return any(term in folded for term in BLOCKED)


def test_corpus_sizes() -> None:
    assert len(DISGUISED) >= 40
    assert len(INNOCENT) >= 30
    assert len(BLOCKED) >= 4


def test_most_innocent_messages_are_real_traps() -> None:
    traps = [text for text in INNOCENT if _naive_hit(text)]
    assert len(traps) >= 30, [text for text in INNOCENT if text not in traps]
