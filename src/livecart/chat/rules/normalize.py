"""Matching form of chat text: the disguises people use to slip past word filters, undone.

`normalize` is the one canonical form (duplicate detection, term storage). `match_forms`
returns what the term matcher needs: the same text with and without leetspeak folding,
plus the positions where letters that were written apart ("s c a m") were joined.
Every step keeps a character-for-character correspondence after whitespace collapsing,
so positions found in one form are valid in the others.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import msgspec

__all__ = [
    "LEET_MAP",
    "MatchForms",
    "conflate",
    "detect_disguises",
    "link_form",
    "match_forms",
    "normalize",
]

_MARK_OR_FORMAT: Final = frozenset({"Mn", "Me", "Cf"})

# Capitals whose lower-case forms stop looking Latin (Greek Η→η, Ν→ν, Μ→μ), so they fold first.
_UPPER_LOOKALIKES: Final = {
    # Cyrillic
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q",
    "Ԝ": "W", "Һ": "H", "Ү": "Y", "Ӏ": "I",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip

_LOWER_LOOKALIKES: Final = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
    "і": "i", "ј": "j", "ѕ": "s", "к": "k", "м": "m", "н": "h", "т": "t", "п": "n",
    "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ѡ": "w", "ү": "y", "ӏ": "i",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    # Latin letters NFD does not decompose, IPA and small capitals
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ø": "o", "đ": "d", "ħ": "h",
    "ł": "l", "ŧ": "t", "ƀ": "b", "ɨ": "i", "ʉ": "u", "æ": "ae", "œ": "oe",
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
}  # fmt: skip

# Digits and symbols read as letters inside words; 2, 6 and 9 are too ambiguous to fold.
LEET_MAP: Final = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "$": "s", "@": "a", "€": "e", "!": "i", "|": "i", "+": "t",
}  # fmt: skip
_LEET_DIGITS: Final = frozenset("0123456789")
_STICKY_SYMBOLS: Final = frozenset("$@€")  # never sentence punctuation, so they fold on any side
_LEADING_SYMBOLS: Final = frozenset("!|+")  # read as letters only when a letter follows
_SYMBOLS: Final = _STICKY_SYMBOLS | _LEADING_SYMBOLS

_INVISIBLE_EXTRA: Final = "\u115f\u1160\u3164\uffa0"  # Hangul fillers render as nothing


def _build_upper_table() -> dict[int, str]:
    return {ord(k): v for k, v in _UPPER_LOOKALIKES.items()}


def _build_fold_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for cp in range(0x80, 0x10000):
        if unicodedata.category(chr(cp)) in _MARK_OR_FORMAT:
            table[cp] = None
    for cp in [
        *range(0x00, 0x09),
        *range(0x0E, 0x1C),
        0x7F,
        *range(0x80, 0x85),
        *range(0x86, 0xA0),
    ]:
        table[cp] = None
    for ch in _INVISIBLE_EXTRA:
        table[ord(ch)] = None
    table[0x2800] = " "  # braille blank is used as an invisible space
    table.update(_build_lookalike_table())
    return table


def _build_lookalike_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {ord(k): v for k, v in _LOWER_LOOKALIKES.items()}
    for i in range(26):
        letter = chr(ord("a") + i)
        table[0x1F1E6 + i] = letter  # regional indicators
        table[0x1F150 + i] = letter  # negative circled
        table[0x1F170 + i] = letter  # negative squared
    return table


_UPPER_TABLE: Final = _build_upper_table()
_FOLD_TABLE: Final = _build_fold_table()
_LOOKALIKE_TABLE: Final = _build_lookalike_table()
_ASCII_CONTROL: Final = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")

_ITEM_CHARS: Final = "$@!|+€"
_SEP: Final = r"[\s.\-_*·•~/\\=^\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff]+"
_ITEM: Final = r"(?:[^\W_]|[$@!|+€])"
_LONE_ITEM: Final = rf"(?<![^\W_])(?<![$@!|+€]){_ITEM}(?![^\W_])(?![$@!|+€])"
# Three or more single characters in a row, each standing alone: "s c a m", "s.c.a.m".
_SPACED: Final = re.compile(rf"{_LONE_ITEM}(?:{_SEP}{_LONE_ITEM}){{2,}}")
_LEET_TOKEN: Final = re.compile(r"(?<![^ ])[^ ]*[0-9$@!|+€][^ ]*")  # anchored: linear time
# A number with a unit, ordinal or time of day is not leetspeak: 8pm, 1st, 3xl, 5kg.
_QUANTITY: Final = re.compile(
    r"\W*\d+(?:st|nd|rd|th|am|pm|h|hr|hrs|min|s|d|w|y|yr|yrs|k|x|xs|xl|xxl|xxxl|g|kg|mg|lb|lbs"
    r"|oz|mm|cm|m|km|ml|l|pc|pcs|gb|tb|mb|p|fps|hz|v|mah)\W*"
)


class MatchForms(msgspec.Struct, frozen=True):
    """One message in the forms the term matcher reads; both texts have the same length."""

    plain: str
    """Normalised, letters written apart joined, digits and symbols as typed."""
    leet: str
    """`plain` with leetspeak folded inside words; this is `normalize(text)`."""
    soft: frozenset[int]
    """Positions that were separate words before joining (each counts as a word boundary)."""


def _fold_unicode(text: str) -> str:
    s = unicodedata.normalize("NFKC", text)
    s = s.translate(_UPPER_TABLE).casefold()
    s = unicodedata.normalize("NFD", s).translate(_FOLD_TABLE)
    if s and max(s) > "\uffff":
        s = "".join(c for c in s if c <= "\uffff" or unicodedata.category(c) not in _MARK_OR_FORMAT)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    return s


def _fold_case_and_script(text: str) -> str:
    if text.isascii():
        s = text.lower()
        if _ASCII_CONTROL.search(s):
            s = _ASCII_CONTROL.sub("", s)
        return s
    return _fold_unicode(text)


def _join_spaced(s: str) -> tuple[str, frozenset[int]]:
    if _SPACED.search(s) is None:
        return s, frozenset()
    out: list[str] = []
    soft: set[int] = set()
    size = 0
    last = 0
    for m in _SPACED.finditer(s):
        items = [c for c in m.group() if c.isalnum() or c in _ITEM_CHARS]
        if sum(c.isalpha() for c in items) < 2:
            continue
        head = s[last : m.start()]
        out.append(head)
        size += len(head)
        soft.update(range(size + 1, size + len(items)))
        out.append("".join(items))
        size += len(items)
        last = m.end()
    out.append(s[last:])
    return "".join(out), frozenset(soft)


def _fold_leet_token(m: re.Match[str]) -> str:
    tok = m.group()
    if not any(c.isalpha() for c in tok) or _QUANTITY.fullmatch(tok):
        return tok
    chars = list(tok)
    n = len(chars)
    letter = [c.isalpha() for c in chars]
    run_at: dict[int, int] = {}  # position of a digit → start of its run
    run_end: dict[int, int] = {}  # start of a digit run → its end
    i = 0
    while i < n:
        if chars[i] in _LEET_DIGITS:
            j = i
            while j < n and chars[j] in _LEET_DIGITS:
                j += 1
            run_at.update(dict.fromkeys(range(i, j), i))
            run_end[i] = j
            i = j
        else:
            i += 1

    def is_letter(k: int) -> bool:
        return 0 <= k < n and letter[k]

    def try_fold(k: int) -> list[int]:
        """Fold what the rules allow at position k; returns the positions that became letters."""
        c = chars[k]
        if k in run_at:
            start = run_at[k]
            end = run_end[start]
            left, right = is_letter(start - 1), is_letter(end)
            # Interior runs fold (1d10t), so does a single digit at a word's edge and a run
            # trailing two letters (ki11); edge runs that look like quantities or model
            # numbers stay digits: 36cm, 10kg, Galaxy A55, S23.
            if (left and (right or end - start == 1 or is_letter(start - 2))) or (
                right and end - start == 1
            ):
                for p in range(start, end):
                    del run_at[p]
                    if chars[p] in LEET_MAP:
                        chars[p] = LEET_MAP[chars[p]]
                        letter[p] = True
                return [p for p in range(start, end) if letter[p]]
            return []
        if (c in _LEADING_SYMBOLS and is_letter(k + 1)) or (
            c in _STICKY_SYMBOLS and (is_letter(k - 1) or is_letter(k + 1))
        ):
            chars[k] = LEET_MAP[c]
            letter[k] = True
            return [k]
        return []

    # Folding is monotone (a folded character only ever adds a letter next to its
    # neighbours), so a worklist reaches the fixpoint in linear time: idempotent and cheap.
    pending = [*run_end, *(k for k in range(n) if chars[k] in _SYMBOLS)]
    while pending:
        k = pending.pop()
        if letter[k] or (k not in run_at and chars[k] not in _SYMBOLS):
            continue
        for p in try_fold(k):
            pending.extend(q for q in (p - 1, p + 1, p + 2) if 0 <= q < n and not letter[q])
    return "".join(chars)


def _fold_leet(s: str) -> str:
    return _LEET_TOKEN.sub(_fold_leet_token, s)


def match_forms(text: str) -> MatchForms:
    """The forms of `text` that `TermMatcher` reads (see `MatchForms`)."""
    s = " ".join(_fold_case_and_script(text).split())
    plain, soft = _join_spaced(s)
    return MatchForms(plain=plain, leet=_fold_leet(plain), soft=soft)


def normalize(text: str) -> str:
    """Canonical matching form: NFKC, case folded, invisibles and marks removed, look-alike
    letters folded to Latin, whitespace collapsed, spaced-out letters joined, leetspeak
    folded inside words. Idempotent."""
    return match_forms(text).leet


def conflate(s: str) -> str:
    """Merge l into i, as 1, ! and | stand for either; applied to terms and text alike."""
    return s.replace("l", "i")


def link_form(text: str) -> str:
    """Text for link detection: compatibility forms and case folded, invisibles removed,
    but look-alike letters kept so a homograph domain never passes as an allowed one."""
    s = unicodedata.normalize("NFKC", text).casefold()
    s = "".join(c for c in s if unicodedata.category(c) != "Cf")
    return s.replace("。", ".").replace("｡", ".")


def detect_disguises(text: str) -> tuple[str, ...]:
    """Names of the disguises `normalize` undid in `text`, for moderators reading a hit."""
    found: list[str] = []
    nfkc = unicodedata.normalize("NFKC", text)
    if nfkc != text:
        found.append("compatibility characters")
    if any(unicodedata.category(c) == "Cf" or c in _INVISIBLE_EXTRA or c == "\u2800" for c in nfkc):
        found.append("invisible characters")
    decomposed = unicodedata.normalize("NFD", nfkc.translate(_UPPER_TABLE).casefold())
    if any(unicodedata.category(c) in ("Mn", "Me") for c in decomposed):
        found.append("combining marks")
    if nfkc.translate(_UPPER_TABLE) != nfkc or decomposed.translate(_LOOKALIKE_TABLE) != decomposed:
        found.append("look-alike letters")
    forms = match_forms(text)
    if forms.soft:
        found.append("spaced-out letters")
    if forms.leet != forms.plain:
        found.append("leetspeak")
    return tuple(found)
