"""The matching form of text (`chat.rules.normalize`): what blocked terms are matched against."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.chat.rules.normalize import detect_disguises, match_forms, normalize

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
