"""Blocked terms: the matcher of a list of terms against a message's normalised forms.

Pure: no I/O, no module state. See docs/moderation.md ("Blocked terms").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Literal, NamedTuple

import ahocorasick
import msgspec

from livecart.chat.rules.normalize import MatchForms, conflate, detect_disguises, match_forms

Action = Literal["block", "hold"]


class BlockedTerm(msgspec.Struct, frozen=True):
    """A term as a creator or admin entered it. `*` at either end drops the word boundary
    on that side: `fake*` also matches "fakes" and "faker"."""

    term: str
    action: Action = "block"


class TermHit(msgspec.Struct, frozen=True):
    term: str
    """The term as entered."""
    action: Action
    scope: str
    """Whose list it came from: "global" or the creator's id."""
    matched: str
    """The stretch of the normalised message that matched."""
    disguises: tuple[str, ...] = ()
    """What normalisation undid in the message (look-alike letters, leetspeak …)."""

    @property
    def reason(self) -> str:
        return f'blocked term "{self.term}"'

    @property
    def why(self) -> str:
        owner = "global list" if self.scope == "global" else f"list of {self.scope}"
        text = f'{self.reason} ({self.action}, {owner}) matched "{self.matched}"'
        if self.disguises:
            text += " despite " + ", ".join(self.disguises)
        return text


_NO_BOUNDARY: Final = 0
_LETTER: Final = 1
_DIGIT: Final = 2

# Scripts written without spaces between words: a term there matches anywhere.
_UNSPACED_RANGES: Final = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # Han
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3FFFF),
)


def _edge_kind(ch: str) -> int:
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in _UNSPACED_RANGES):
        return _NO_BOUNDARY
    if ch.isalpha():
        return _LETTER
    if ch.isdigit():
        return _DIGIT
    return _NO_BOUNDARY


def _glued(ch: str, kind: int) -> bool:
    if kind == _LETTER:
        # Spacing vowel signs (Devanagari, Tamil …) are part of a word though not letters.
        return ch.isalpha() or (not ch.isascii() and unicodedata.category(ch) == "Mc")
    return kind == _DIGIT and ch.isdigit()


class _Entry(NamedTuple):
    term: str
    action: Action
    key: str
    left: int
    right: int
    runs: tuple[int, ...]


_RUN: Final = re.compile(r"(.)\1*", re.S)
_TRIPLE: Final = re.compile(r"([^\W\d_])\1\1")


def _squeeze(s: str) -> tuple[str, list[int], list[int]]:
    """Runs of one character collapsed to one: (squeezed, run lengths, run starts)."""
    chars: list[str] = []
    counts: list[int] = []
    starts: list[int] = []
    for m in _RUN.finditer(s):
        chars.append(m.group(1))
        counts.append(m.end() - m.start())
        starts.append(m.start())
    return "".join(chars), counts, starts


def _term_core(term: str) -> tuple[str, bool, bool]:
    """The term without its `*` ends, and whether each end is open."""
    core = term.strip()
    left_open, right_open = core.startswith("*"), core.endswith("*")
    return core.strip("*"), left_open, right_open


def term_problem(term: str) -> str | None:
    """Why `TermMatcher` cannot use `term` (nothing left after normalisation), or None."""
    if not match_forms(_term_core(term)[0]).leet.strip():
        return f"term {term!r} is empty after normalisation"
    return None


class TermMatcher:
    """Blocked terms of one scope in an Aho-Corasick automaton: one scan per text form,
    whatever the number of terms.

    Terms are normalised like messages. A hit counts only at a word boundary: a term that
    starts (ends) with a letter must not be preceded (followed) by a letter, one that starts
    (ends) with a digit not by a digit; letters that were written apart are separate words.
    The text is scanned in its leetspeak-folded form, and in its plain form when that
    differs (so "scam1" is caught as "scam" followed by a digit), and, when it has a letter
    repeated three times, with repeated letters squeezed ("scaaam"). `block` wins over `hold`.
    Immutable: build a new matcher when the list changes.
    """

    def __init__(
        self, terms: Iterable[BlockedTerm | tuple[str, str]], *, scope: str = "global"
    ) -> None:
        self.scope = scope
        self._entries: list[_Entry] = []
        self._auto = ahocorasick.Automaton()
        self._squeezed = ahocorasick.Automaton()
        by_key: dict[str, list[int]] = {}
        by_squeezed: dict[str, list[int]] = {}
        count = 0
        for item in terms:
            term, given = (item.term, item.action) if isinstance(item, BlockedTerm) else item
            if given not in ("block", "hold"):
                raise ValueError(f"unknown action {given!r} for term {term!r}")
            action: Action = "block" if given == "block" else "hold"
            core, left_open, right_open = _term_core(term)
            forms = match_forms(core)
            if not forms.leet.strip():
                raise ValueError(f"term {term!r} is empty after normalisation")
            count += 1
            for key in dict.fromkeys((conflate(forms.leet), conflate(forms.plain))):
                left = _NO_BOUNDARY if left_open else _edge_kind(key[0])
                right = _NO_BOUNDARY if right_open else _edge_kind(key[-1])
                squeezed, runs, _ = _squeeze(key)
                index = len(self._entries)
                self._entries.append(_Entry(term, action, key, left, right, tuple(runs)))
                by_key.setdefault(key, []).append(index)
                by_squeezed.setdefault(squeezed, []).append(index)
        for key, indices in by_key.items():
            self._auto.add_word(key, tuple(indices))
        for key, indices in by_squeezed.items():
            self._squeezed.add_word(key, tuple(indices))
        self._size = count
        if self._entries:
            self._auto.make_automaton()
            self._squeezed.make_automaton()

    def __len__(self) -> int:
        return self._size

    def match(self, text: str) -> TermHit | None:
        """The strongest hit in `text`, or None."""
        return self.match_forms(match_forms(text), original=text)

    def match_forms(self, forms: MatchForms, *, original: str = "") -> TermHit | None:
        """Like `match` on already normalised forms (normalise once, check every scope)."""
        best: _Entry | None = None
        best_at = (0, 0)
        for entry, start, end in self._hits(forms):
            if entry.action == "block":
                return self._hit(entry, forms, start, end, original)
            if best is None:
                best, best_at = entry, (start, end)
        return None if best is None else self._hit(best, forms, *best_at, original)

    def _hit(
        self, entry: _Entry, forms: MatchForms, start: int, end: int, original: str
    ) -> TermHit:
        return TermHit(
            term=entry.term,
            action=entry.action,
            scope=self.scope,
            matched=forms.leet[start:end],
            disguises=detect_disguises(original) if original else (),
        )

    def _hits(self, forms: MatchForms) -> Iterator[tuple[_Entry, int, int]]:
        if not self._entries:
            return
        leet = conflate(forms.leet)
        yield from self._scan(leet, forms.soft)
        if forms.plain != forms.leet:
            yield from self._scan(conflate(forms.plain), forms.soft)
        if _TRIPLE.search(forms.leet) is not None:
            yield from self._scan_squeezed(leet, forms.soft)

    def _scan(self, text: str, soft: frozenset[int]) -> Iterator[tuple[_Entry, int, int]]:
        entries = self._entries
        for last, indices in self._auto.iter(text):
            end = last + 1
            for index in indices:
                entry = entries[index]
                start = end - len(entry.key)
                if _bounded(text, start, end, entry, soft):
                    yield entry, start, end

    def _scan_squeezed(self, text: str, soft: frozenset[int]) -> Iterator[tuple[_Entry, int, int]]:
        squeezed, counts, starts = _squeeze(text)
        entries = self._entries
        for last, indices in self._squeezed.iter(squeezed):
            for index in indices:
                entry = entries[index]
                first = last + 1 - len(entry.runs)
                if any(counts[first + k] < n for k, n in enumerate(entry.runs)):
                    continue
                start = starts[first]
                end = starts[last] + counts[last]
                if _bounded(text, start, end, entry, soft):
                    yield entry, start, end


def _bounded(text: str, start: int, end: int, entry: _Entry, soft: frozenset[int]) -> bool:
    if entry.left and start > 0 and start not in soft and _glued(text[start - 1], entry.left):
        return False
    return not (
        entry.right and end < len(text) and end not in soft and _glued(text[end], entry.right)
    )


def first_hit(
    text: str | MatchForms, matchers: Sequence[TermMatcher | None], *, original: str = ""
) -> TermHit | None:
    """The strongest hit over several scopes (global, creator): a `block` anywhere wins,
    otherwise the first `hold` in the order given."""
    if isinstance(text, str):
        original = original or text
        forms = match_forms(text)
    else:
        forms = text
    held: TermHit | None = None
    for matcher in matchers:
        if matcher is None:
            continue
        hit = matcher.match_forms(forms, original=original)
        if hit is not None and hit.action == "block":
            return hit
        held = held or hit
    return held
