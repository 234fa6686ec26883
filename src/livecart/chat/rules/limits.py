"""Per-node chat limiters: token-bucket rate limit, flood detector, duplicate window and
slow mode, each over a bounded map of recent keys.

Pure: no I/O, no asyncio, no module state. Every time is a parameter `now` in seconds; each
limiter bounds its own memory.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

import msgspec

_EPSILON: Final = 1e-9  # float noise: a client that waits exactly retry_after_ms must pass
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


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
