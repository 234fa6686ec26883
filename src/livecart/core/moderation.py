"""Chat moderation rules: blocked terms, links, rate limits, flooding, duplicates, slow mode,
mutes, the held-message queue, shield mode, and the one function that decides a chat message.

Pure: no I/O, no asyncio, no module state. Every time is a parameter `now` in seconds.
The stateful pieces (limiters, mute book, queue) are plain in-memory objects that an adapter
owns per node and feeds from the database or Redis; they bound their own memory.
See docs/moderation.md for the semantics chosen where the specification is silent.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Final, Generic, Literal, NamedTuple, TypeVar

import ahocorasick
import msgspec

from livecart.core.normalize import (
    MatchForms,
    conflate,
    detect_disguises,
    link_form,
    match_forms,
    normalize,
)

__all__ = [
    "CLOSE_FLOODING",
    "DEFAULT_SHIELD",
    "Action",
    "BlockedTerm",
    "ChatCandidate",
    "ChatContext",
    "ChatDecision",
    "ChatErrorCode",
    "ChatGuards",
    "ClaimResult",
    "DuplicateFilter",
    "FloodDetector",
    "FloodPolicy",
    "HeldItem",
    "HeldQueue",
    "MatchForms",
    "MuteBook",
    "MuteStatus",
    "QueueResult",
    "RateDecision",
    "RateLimiter",
    "RatePolicy",
    "Role",
    "RoomRules",
    "ShieldMode",
    "SlowMode",
    "TermHit",
    "TermMatcher",
    "apply_shield",
    "decide_chat",
    "disallowed_domain",
    "domain_allowed",
    "duplicate_digest",
    "duplicate_key",
    "find_domains",
    "first_hit",
    "item_id",
    "limit_chat",
    "match_forms",
    "normalize",
    "screen_chat",
    "take_token",
]

Action = Literal["block", "hold"]
Role = Literal["viewer", "creator", "moderator", "admin"]
ChatErrorCode = Literal[
    "muted", "banned", "rate_limited", "slow_mode", "duplicate", "blocked", "held"
]
Verdict = Literal["accept", "reject", "hold", "close"]

CLOSE_FLOODING: Final = 4008
_EPSILON: Final = 1e-9  # float noise: a client that waits exactly retry_after_ms must pass
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


# --------------------------------------------------------------------------- blocked terms


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


def domain_form(domain: str) -> str:
    """An allowed domain as links are matched against it (see `link_form`); empty when
    nothing is left of it."""
    return link_form(domain).strip().strip(".")


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


# --------------------------------------------------------------------------- links

_COMMON_TLDS: Final = frozenset((
    "com", "net", "org", "info", "biz", "xyz", "top", "shop", "store", "online", "site",
    "website", "live", "link", "click", "club", "app", "dev", "io", "co", "ly", "gl", "gg",
    "tv", "cc", "ws", "su", "ru", "uk", "de", "fr", "es", "nl", "pl", "se", "ch", "cz", "ca",
    "au", "br", "cn", "jp", "kr", "vn", "tr", "mx", "ar", "id", "ua", "eu", "asia", "tk", "ml",
    "ga", "cf", "gq", "pw", "icu", "buzz", "vip", "win", "bid", "loan", "work", "fun", "space",
    "tech", "today", "sale", "deals", "рф", "xn--p1ai",
))  # fmt: skip
# Country codes that are also everyday words count only with a path ("x.me/abc").
_WORDLIKE_TLDS: Final = frozenset((
    "me", "to", "in", "it", "is", "us", "so", "at", "be", "no", "my", "am", "do", "go", "an",
    "as", "by", "hi", "ok", "or", "pe", "ai", "im",
))  # fmt: skip
_DEOBFUSCATE: Final = re.compile(
    r"(?<=[^\W_])\s*(?:\[\s*(?:\.|dot)\s*\]|\(\s*(?:\.|dot)\s*\)|\{\s*(?:\.|dot)\s*\}|\s+dot\s+)\s*(?=[^\W_])"
)
_URL: Final = re.compile(r"(?<![\w.])https?://([^\s/?#<>\"'\\]+)")
_WWW: Final = re.compile(r"(?<![\w.-])(www\.[^\s/?#<>\"'\\:]+)")
_BARE: Final = re.compile(
    r"(?<![\w.-])((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,24}|xn--[a-z0-9-]{2,20}))"
    r"(?![\w-])(/)?"
)


def _host(authority: str) -> str:
    host = authority.rsplit("@", 1)[-1]
    if not host.startswith("["):
        host = host.split(":", 1)[0]
    return host.strip(".")


def find_domains(text: str) -> list[str]:
    """Domains linked in `text`, lower-case, in order, without repeats: http(s) URLs,
    `www.` names, and bare names with a known top-level domain (`shop.example.com/x`,
    `example.com`), also when written `example[.]com` or `example dot com`."""
    s = _DEOBFUSCATE.sub(".", link_form(text))
    found: list[str] = []
    for rx in (_URL, _WWW):
        for m in rx.finditer(s):
            found.append(_host(m.group(1)))
        s = rx.sub(" ", s)
    for m in _BARE.finditer(s):
        tld = m.group(2)
        if tld in _COMMON_TLDS or (tld in _WORDLIKE_TLDS and m.group(3)):
            found.append(m.group(1).strip("."))
    return [d for d in dict.fromkeys(found) if d]


def domain_allowed(domain: str, allowed: Iterable[str]) -> bool:
    """True when `domain` is an allowed domain or a subdomain of one."""
    domain = domain.lower().strip(".")
    for base in allowed:
        base = base.lower().strip(".")
        if base and (domain == base or domain.endswith("." + base)):
            return True
    return False


def disallowed_domain(text: str, allowed: Iterable[str]) -> str | None:
    """The first linked domain not allowed, or None when every link is allowed."""
    allowed = tuple(allowed)
    for domain in find_domains(text):
        if not domain_allowed(domain, allowed):
            return domain
    return None


# --------------------------------------------------------------------------- bounded maps


class _RecentMap(Generic[K, V]):
    """Entries in order of last write; an entry untouched for `horizon_s` is dropped, and so
    is the oldest one past `max_keys`."""

    def __init__(self, max_keys: int, horizon_s: float) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_keys
        self._horizon = horizon_s

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        return None if item is None else item[1]

    def touched(self, key: K) -> float | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, now: float) -> None:
        self._items[key] = (now, value)
        self._items.move_to_end(key)
        self.sweep(now)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def sweep(self, now: float) -> None:
        items = self._items
        while items:
            key, (stamp, _) = next(iter(items.items()))
            if len(items) > self._max or stamp + self._horizon <= now:
                del items[key]
            else:
                break

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- rate limit


class RatePolicy(msgspec.Struct, frozen=True):
    rate_per_s: float = 1.0
    burst: int = 5


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_ms: int = 0


def take_token(
    tokens: float, stamp: float, now: float, policy: RatePolicy
) -> tuple[float, RateDecision]:
    """One token-bucket step: the bucket held `tokens` at `stamp`; returns its new level at
    `now` and whether a message may pass. A refused attempt takes nothing."""
    elapsed = max(0.0, now - stamp)
    level = min(float(policy.burst), tokens + elapsed * policy.rate_per_s)
    if level >= 1.0 - _EPSILON:
        return max(0.0, level - 1.0), RateDecision(True)
    wait_ms = math.ceil((1.0 - level) / policy.rate_per_s * 1000.0 - _EPSILON)
    return level, RateDecision(False, max(1, wait_ms))


class RateLimiter(Generic[K]):
    """Token bucket per key. A bucket left alone until full again is forgotten, as it would
    behave exactly like a new one; past `max_keys` the longest-idle bucket is dropped."""

    def __init__(self, policy: RatePolicy = RatePolicy(), *, max_keys: int = 100_000) -> None:
        self.policy = policy
        self._buckets: _RecentMap[K, float] = _RecentMap(max_keys, policy.burst / policy.rate_per_s)

    def check(self, key: K, now: float) -> RateDecision:
        tokens = self._buckets.get(key)
        stamp = self._buckets.touched(key)
        if tokens is None or stamp is None:
            tokens, stamp = float(self.policy.burst), now
        level, decision = take_token(tokens, stamp, now, self.policy)
        self._buckets.put(key, level, max(now, stamp))
        return decision

    def __len__(self) -> int:
        return len(self._buckets)


class FloodPolicy(msgspec.Struct, frozen=True):
    max_frames: int = 20
    window_s: float = 2.0


class FloodDetector(Generic[K]):
    """Counts attempts per key (every frame, refused or not); more than `max_frames` within
    `window_s` seconds means the connection is flooding and must be closed with 4008."""

    def __init__(self, policy: FloodPolicy = FloodPolicy(), *, max_keys: int = 100_000) -> None:
        self.policy = policy
        self._seen: _RecentMap[K, deque[float]] = _RecentMap(max_keys, policy.window_s)

    def hit(self, key: K, now: float) -> bool:
        times = self._seen.get(key)
        if times is None:
            times = deque(maxlen=self.policy.max_frames + 1)
        times.append(now)
        self._seen.put(key, times, now)
        return len(times) > self.policy.max_frames and now - times[0] < self.policy.window_s

    def forget(self, key: K) -> None:
        self._seen.pop(key)

    def __len__(self) -> int:
        return len(self._seen)


# --------------------------------------------------------------------------- duplicates

_NOT_WORDY: Final = re.compile(r"[^\w\s]|_")


def duplicate_key(normalized: str) -> str:
    """What two messages must share to be duplicates: the normalised text without
    punctuation and symbols ("great!!" repeats "great"); emoji-only text is kept whole."""
    stripped = " ".join(_NOT_WORDY.sub("", normalized).split())
    return stripped or normalized


class DuplicateFilter(Generic[K]):
    """Same normalised text from the same key within `window_s` seconds of the last copy
    that went through. Keeps at most `per_key` recent texts per key, as hashes."""

    def __init__(
        self, window_s: float = 30.0, *, per_key: int = 16, max_keys: int = 100_000
    ) -> None:
        self.window_s = window_s
        self._per_key = per_key
        self._seen: _RecentMap[K, OrderedDict[int, float]] = _RecentMap(max_keys, window_s)

    def seen(self, key: K, normalized: str, now: float) -> bool:
        texts = self._seen.get(key)
        if texts is None:
            return False
        at = texts.get(hash(duplicate_key(normalized)))
        return at is not None and now - at < self.window_s

    def record(self, key: K, normalized: str, now: float) -> None:
        texts = self._seen.get(key) or OrderedDict()
        digest = hash(duplicate_key(normalized))
        texts[digest] = now
        texts.move_to_end(digest)
        while len(texts) > self._per_key:
            texts.popitem(last=False)
        self._seen.put(key, texts, now)

    def forget(self, key: K, normalized: str) -> None:
        """Drop a recorded text (its message was accepted but could not be published)."""
        texts = self._seen.get(key)
        if texts is not None:
            texts.pop(hash(duplicate_key(normalized)), None)

    def __len__(self) -> int:
        return len(self._seen)


# --------------------------------------------------------------------------- slow mode


class SlowMode(Generic[K]):
    """At most one message per key per N seconds, N given per check (rooms change it live).
    Remembers a key for at most `max_seconds`, the longest slow mode it honours."""

    def __init__(self, *, max_seconds: float = 3600.0, max_keys: int = 100_000) -> None:
        self.max_seconds = max_seconds
        self._last: _RecentMap[K, float] = _RecentMap(max_keys, max_seconds)

    def retry_after_ms(self, key: K, seconds: float, now: float) -> int:
        """0 when a message may go now, else how long to wait."""
        seconds = min(seconds, self.max_seconds)
        last = self._last.get(key)
        if seconds <= 0 or last is None or now - last >= seconds:
            return 0
        return max(1, math.ceil((last + seconds - now) * 1000.0))

    def record(self, key: K, now: float) -> None:
        self._last.put(key, now, now)

    def __len__(self) -> int:
        return len(self._last)


# --------------------------------------------------------------------------- mutes


class MuteStatus(msgspec.Struct, frozen=True):
    kind: Literal["muted", "banned"]
    until: float | None = None
    """End of a timeout; None for a ban."""


class MuteBook:
    """Timeouts and bans, scoped to a creator (they cover all of that creator's sessions).
    A ban outranks a timeout; `unban` lifts both; a new timeout replaces the previous one."""

    def __init__(self) -> None:
        self._timeouts: dict[tuple[str, str], float] = {}
        self._bans: set[tuple[str, str]] = set()

    def timeout(self, creator: str, user: str, until: float) -> None:
        self._timeouts[(creator, user)] = until

    def ban(self, creator: str, user: str) -> None:
        self._bans.add((creator, user))

    def unban(self, creator: str, user: str) -> bool:
        """Lift ban and timeout; True when there was something to lift."""
        had_ban = (creator, user) in self._bans
        self._bans.discard((creator, user))
        return self._timeouts.pop((creator, user), None) is not None or had_ban

    def status(self, creator: str, user: str, now: float) -> MuteStatus | None:
        if (creator, user) in self._bans:
            return MuteStatus("banned")
        until = self._timeouts.get((creator, user))
        if until is None:
            return None
        if until <= now:
            del self._timeouts[(creator, user)]
            return None
        return MuteStatus("muted", until)

    def sweep(self, now: float) -> None:
        """Forget expired timeouts."""
        for key in [k for k, until in self._timeouts.items() if until <= now]:
            del self._timeouts[key]


# --------------------------------------------------------------------------- held queue

ItemKind = Literal["held", "reported"]
QueueStatus = Literal[
    "held", "reported", "claimed", "approved", "rejected", "already_decided", "claimed_by_other",
    "not_found",
]  # fmt: skip


class HeldItem(msgspec.Struct, frozen=True):
    """A message waiting for a moderator: held by a rule, or visible but reported."""

    id: str
    session: str
    offset: int
    author: str
    text: str
    kind: ItemKind
    reasons: tuple[str, ...]
    created_at: float
    reporters: frozenset[str] = frozenset()
    claimed_by: str | None = None
    claim_until: float = 0.0
    decision: Literal["approved", "rejected"] | None = None
    decided_by: str | None = None
    decided_at: float | None = None

    @property
    def reports(self) -> int:
        return len(self.reporters)

    def claimant(self, now: float) -> str | None:
        return self.claimed_by if self.claim_until > now else None


class QueueResult(msgspec.Struct, frozen=True):
    ok: bool
    status: QueueStatus
    message: str
    item: HeldItem | None = None


ClaimResult = QueueResult


def item_id(session: str, offset: int) -> str:
    return f"{session}:{offset}"


class HeldQueue:
    """Held and reported messages. A moderator may `claim` an item (a lease of `lease_s`
    seconds) so that two do not work on it at once; `approve` and `reject` succeed exactly
    once, later calls answer `already_decided` with who decided and how. Reports on one
    message collapse into one item counting distinct reporters. Decided items are kept for
    `keep_decided_s` seconds, for the "already decided" answers, then dropped by `sweep`."""

    def __init__(self, *, lease_s: float = 60.0, keep_decided_s: float = 3600.0) -> None:
        self.lease_s = lease_s
        self.keep_decided_s = keep_decided_s
        self._items: dict[str, HeldItem] = {}

    def get(self, id: str) -> HeldItem | None:
        return self._items.get(id)

    def hold(
        self, session: str, offset: int, author: str, text: str, reasons: Sequence[str],
        now: float,
    ) -> HeldItem:  # fmt: skip
        key = item_id(session, offset)
        item = self._items.get(key)
        if item is None:
            item = HeldItem(key, session, offset, author, text, "held", tuple(reasons), now)
        else:
            item = msgspec.structs.replace(item, kind="held", reasons=_merge(item.reasons, reasons))
        self._items[key] = item
        return item

    def report(
        self, session: str, offset: int, author: str, text: str, reporter: str, reason: str,
        now: float,
    ) -> QueueResult:  # fmt: skip
        """Add a report; the same reporter counts once, an author's own report not at all.
        A report on a decided item is counted but does not reopen it."""
        key = item_id(session, offset)
        item = self._items.get(key)
        label = f"reported: {reason.strip() or 'no reason given'}"
        if item is None:
            item = HeldItem(key, session, offset, author, text, "reported", (), now)
        if reporter != author and reporter not in item.reporters:
            item = msgspec.structs.replace(
                item, reporters=item.reporters | {reporter}, reasons=_merge(item.reasons, [label])
            )
        self._items[key] = item
        return QueueResult(True, item.kind, f"{item.reports} report(s)", item)

    def claim(self, id: str, moderator: str, now: float) -> QueueResult:
        item = self._items.get(id)
        if item is None:
            return QueueResult(False, "not_found", "no such item")
        if item.decision is not None:
            return _already(item)
        holder = item.claimant(now)
        if holder is not None and holder != moderator:
            return QueueResult(
                False, "claimed_by_other", f"claimed by {holder} until {item.claim_until:.0f}", item
            )
        item = msgspec.structs.replace(item, claimed_by=moderator, claim_until=now + self.lease_s)
        self._items[id] = item
        return QueueResult(True, "claimed", f"claimed until {item.claim_until:.0f}", item)

    def approve(self, id: str, moderator: str, now: float) -> QueueResult:
        """Held: publish it. Reported: dismiss the reports, the message stays."""
        return self._decide(id, moderator, now, "approved")

    def reject(self, id: str, moderator: str, now: float) -> QueueResult:
        """Held: it stays hidden for good. Reported: the message is to be deleted."""
        return self._decide(id, moderator, now, "rejected")

    def _decide(
        self, id: str, moderator: str, now: float, decision: Literal["approved", "rejected"]
    ) -> QueueResult:
        item = self._items.get(id)
        if item is None:
            return QueueResult(False, "not_found", "no such item")
        if item.decision is not None:
            return _already(item)
        holder = item.claimant(now)
        if holder is not None and holder != moderator:
            return QueueResult(
                False, "claimed_by_other", f"claimed by {holder} until {item.claim_until:.0f}", item
            )
        item = msgspec.structs.replace(
            item, decision=decision, decided_by=moderator, decided_at=now, claim_until=0.0
        )
        self._items[id] = item
        return QueueResult(True, decision, f"{decision} by {moderator}", item)

    def pending(self, now: float, session: str | None = None) -> list[HeldItem]:
        """Undecided items, most reported first, then oldest first."""
        items = [
            i for i in self._items.values()
            if i.decision is None and (session is None or i.session == session)
        ]  # fmt: skip
        return sorted(items, key=lambda i: (-i.reports, i.created_at))

    def sweep(self, now: float) -> None:
        for key in [
            k for k, i in self._items.items()
            if i.decided_at is not None and i.decided_at + self.keep_decided_s <= now
        ]:  # fmt: skip
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


def _merge(old: Sequence[str], new: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*old, *new]))


def _already(item: HeldItem) -> QueueResult:
    return QueueResult(
        False, "already_decided", f"already {item.decision} by {item.decided_by}", item
    )


# --------------------------------------------------------------------------- shield mode


class ShieldMode(msgspec.Struct, frozen=True):
    """One-click lockdown for raids."""

    slow_seconds: int = 30
    links: bool = False
    """False: every link is held, allow-listed or not."""
    new_account_minutes: int = 60
    """Hold messages from accounts first seen less than this long ago."""


DEFAULT_SHIELD: Final = ShieldMode()


class RoomRules(msgspec.Struct, frozen=True):
    """A room's moderation settings as in force for one message."""

    slow_seconds: float = 0.0
    allowed_domains: frozenset[str] = frozenset()
    hold_all_links: bool = False
    hold_new_accounts_s: float = 0.0
    shield: ShieldMode | None = None


def apply_shield(rules: RoomRules) -> RoomRules:
    """The rules with shield mode folded in; shield only ever tightens a setting."""
    shield = rules.shield
    if shield is None:
        return rules
    return msgspec.structs.replace(
        rules,
        slow_seconds=max(rules.slow_seconds, float(shield.slow_seconds)),
        hold_all_links=rules.hold_all_links or not shield.links,
        hold_new_accounts_s=max(rules.hold_new_accounts_s, shield.new_account_minutes * 60.0),
        shield=None,
    )


# --------------------------------------------------------------------------- the decision


class ChatContext(msgspec.Struct, frozen=True):
    """One chat message and everything the decision needs to know about it."""

    user: str
    role: Role
    creator: str
    """The session creator's id: scope of mutes, bans and the creator's blocked terms."""
    session: str
    text: str
    channel_moderator: bool = False
    """Appointed moderator of this creator."""
    connection: str = ""
    """Flood accounting key; the user when empty."""
    first_seen: float | None = None
    """When the platform first saw this account; None counts as brand new."""
    rules: RoomRules = RoomRules()
    global_terms: TermMatcher | None = None
    creator_terms: TermMatcher | None = None

    @property
    def privileged(self) -> bool:
        """The session's creator, its channel moderators, platform moderators, admins."""
        return (
            self.role in ("moderator", "admin")
            or self.channel_moderator
            or (self.role == "creator" and self.user == self.creator)
        )


class ChatDecision(msgspec.Struct, frozen=True):
    verdict: Verdict
    code: ChatErrorCode | None = None
    retry_after_ms: int | None = None
    until: float | None = None
    reasons: tuple[str, ...] = ()
    hit: TermHit | None = None
    close_code: int | None = None
    normalized: str = ""


class ChatGuards:
    """The per-node state `decide_chat` reads and updates."""

    def __init__(
        self,
        *,
        rate: RatePolicy = RatePolicy(),
        flood: FloodPolicy = FloodPolicy(),
        duplicate_window_s: float = 30.0,
        max_keys: int = 100_000,
    ) -> None:
        self.rate: RateLimiter[str] = RateLimiter(rate, max_keys=max_keys)
        self.flood: FloodDetector[str] = FloodDetector(flood, max_keys=max_keys)
        self.duplicates: DuplicateFilter[str] = DuplicateFilter(
            duplicate_window_s, max_keys=max_keys
        )
        self.slow: SlowMode[tuple[str, str]] = SlowMode(max_keys=max_keys)
        self.mutes = MuteBook()


class ChatCandidate(msgspec.Struct, frozen=True):
    """A message past flooding, mutes and this node's rate limit, its content already judged
    (steps 6–8 of `decide_chat`). Left are the per-user limits of steps 4–5, slow mode and
    the duplicate window: `limit_chat` runs them on this node's state, a cluster runs the
    same checks on state shared in Redis. Their refusals come before `outcome`."""

    user: str
    session: str
    normalized: str
    """The message's matching form; its `duplicate_digest` names it in the duplicate window."""
    slow_seconds: float
    """Slow mode in force for this message (shield folded in, capped); 0 when off."""
    exempt: bool
    """Privileged: no slow mode, no duplicate check."""
    outcome: ChatDecision
    """What the message gets when slow mode and the duplicate window let it through:
    accept, hold, or the `blocked` refusal."""

    @property
    def charges(self) -> bool:
        """Going through (accepted or held) starts the slow-mode interval and the duplicate
        window; a blocked message charges neither."""
        return not self.exempt and self.outcome.verdict in ("accept", "hold")


def duplicate_digest(normalized: str) -> str:
    """A stable name (the same in every process) for the duplicate window's entry."""
    return hashlib.blake2b(duplicate_key(normalized).encode(), digest_size=10).hexdigest()


def decide_chat(ctx: ChatContext, guards: ChatGuards, now: float) -> ChatDecision:
    """Decide one chat message. Order, first match wins:

    1. flooding (every attempt counts, even a muted user's) → close 4008
    2. ban, then timeout → `banned` / `muted` with `until`
    3. rate limit (the attempt takes a token) → `rate_limited` with retry_after_ms
    4. slow mode → `slow_mode` with retry_after_ms
    5. duplicate of the user's text within the window → `duplicate`
    6. blocked term with action block (global or creator list) → `blocked`
    7. hold: term with action hold, link to a domain not allowed (any link in shield
       mode), account new during shield mode → `held` with every reason
    8. accept

    Privileged users (see `ChatContext.privileged`) skip 2 and 4–7; flooding and the
    rate limit protect the service and apply to everyone. Slow mode and the duplicate
    window are charged only by messages that are accepted or held, slow mode only while
    it is on.

    This is `screen_chat` followed by `limit_chat`; a cluster puts its shared checks of
    steps 3–5 between the two instead of `limit_chat`.
    """
    screened = screen_chat(ctx, guards, now)
    if isinstance(screened, ChatDecision):
        return screened
    return limit_chat(screened, guards, now)


def screen_chat(ctx: ChatContext, guards: ChatGuards, now: float) -> ChatDecision | ChatCandidate:
    """Steps 1–3 on this node's state (a refusal is final), then the content verdict of
    steps 6–8, which reads no state. Charges only the flood counter and the rate limit."""
    flood_key = ctx.connection or ctx.user
    if guards.flood.hit(flood_key, now):
        return ChatDecision("close", close_code=CLOSE_FLOODING)
    privileged = ctx.privileged
    if not privileged:
        mute = guards.mutes.status(ctx.creator, ctx.user, now)
        if mute is not None:
            return ChatDecision("reject", code=mute.kind, until=mute.until)
    allowance = guards.rate.check(ctx.user, now)
    if not allowance.allowed:
        return ChatDecision("reject", code="rate_limited", retry_after_ms=allowance.retry_after_ms)
    forms = match_forms(ctx.text)
    normalized = forms.leet
    if privileged:
        return ChatCandidate(
            ctx.user,
            ctx.session,
            normalized,
            0.0,
            True,
            ChatDecision("accept", normalized=normalized),
        )
    rules = apply_shield(ctx.rules)
    slow_seconds = max(0.0, min(rules.slow_seconds, guards.slow.max_seconds))
    hit = first_hit(forms, (ctx.global_terms, ctx.creator_terms), original=ctx.text)
    if hit is not None and hit.action == "block":
        outcome = ChatDecision(
            "reject", code="blocked", reasons=(hit.reason,), hit=hit, normalized=normalized
        )
    elif reasons := _hold_reasons(ctx, rules, hit, now):
        outcome = ChatDecision("hold", code="held", reasons=reasons, hit=hit, normalized=normalized)
    else:
        outcome = ChatDecision("accept", normalized=normalized)
    return ChatCandidate(ctx.user, ctx.session, normalized, slow_seconds, False, outcome)


def limit_chat(candidate: ChatCandidate, guards: ChatGuards, now: float) -> ChatDecision:
    """Steps 4–5 on this node's state: slow mode, then the duplicate window. Only a message
    that goes through charges them; a refused one changes nothing."""
    c = candidate
    if c.exempt:
        return c.outcome
    slow_key = (c.session, c.user)
    wait_ms = guards.slow.retry_after_ms(slow_key, c.slow_seconds, now)
    if wait_ms:
        return ChatDecision("reject", code="slow_mode", retry_after_ms=wait_ms)
    if guards.duplicates.seen(c.user, c.normalized, now):
        return ChatDecision("reject", code="duplicate", normalized=c.normalized)
    if c.charges:
        if c.slow_seconds > 0:
            guards.slow.record(slow_key, now)
        guards.duplicates.record(c.user, c.normalized, now)
    return c.outcome


def _hold_reasons(
    ctx: ChatContext, rules: RoomRules, hit: TermHit | None, now: float
) -> tuple[str, ...]:
    reasons: list[str] = []
    if hit is not None:
        reasons.append(hit.reason)
    domains = find_domains(ctx.text)
    if rules.hold_all_links and domains:
        reasons.append(f"link to {domains[0]} (links are off)")
    else:
        bad = next((d for d in domains if not domain_allowed(d, rules.allowed_domains)), None)
        if bad is not None:
            reasons.append(f"link to {bad}")
    if rules.hold_new_accounts_s > 0 and (
        ctx.first_seen is None or now - ctx.first_seen < rules.hold_new_accounts_s
    ):
        reasons.append(
            "new account during shield mode" if ctx.rules.shield is not None else "new account"
        )
    return tuple(reasons)
