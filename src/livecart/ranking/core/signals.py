"""Ranking signals, their weights, and the per-user limits that keep one account from
making an item trend."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Literal

import msgspec

SignalKind = Literal[
    "join", "watch", "like", "chat", "product_click", "add_to_cart", "share", "purchase"
]
SIGNAL_KINDS: tuple[SignalKind, ...] = (
    "join",
    "watch",
    "like",
    "chat",
    "product_click",
    "add_to_cart",
    "share",
    "purchase",
)


class Signal(msgspec.Struct, frozen=True, gc=False):
    """One viewer action, as the adapters report it.

    `session` and/or `product` name the targets; a product or session event also counts
    toward its creator as a host. `count` is the number of likes in a `like` frame,
    `minutes` the watch time a `watch` event reports, `value_cents` the order total of a
    `purchase` (integer minor units).
    """

    kind: SignalKind
    user: str
    at: float
    session: str | None = None
    product: str | None = None
    count: int = 1
    minutes: float = 0.0
    value_cents: int = 0


def _check_non_negative(owner: str, values: dict[str, float]) -> None:
    for name, value in values.items():
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value!r}")


class SignalWeights(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Weight of each signal, in score units (one `join` = 1)."""

    join: float = 1.0
    watch_per_minute: float = 0.25
    like: float = 0.1
    chat: float = 0.5
    product_click: float = 1.0
    add_to_cart: float = 3.0
    share: float = 2.0
    purchase: float = 8.0
    """Once per distinct buyer of an item."""
    purchase_value: float = 1.5
    """Times ln(1 + order value in major units) of that buyer's first order: value counts,
    sub-linearly, so one large order does not outweigh many buyers."""

    def __post_init__(self) -> None:
        _check_non_negative("weights", msgspec.structs.asdict(self))


class RankingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything the trending core can be tuned with; the defaults are the documented ones."""

    half_life_s: float = 600.0
    weights: SignalWeights = msgspec.field(default_factory=SignalWeights)
    likes_per_minute: float = 30.0
    """Likes counted per user and session per clock minute; the rest are ignored."""
    user_item_cap: float = 6.0
    """Most decayed weight one user's engagement may hold in one product's score at any moment
    (one viewer's click, add-to-cart and share); inf disables the cap."""
    user_host_cap: float = 10.0
    """The same for one creator; the creator's sessions take the same capped weight, so this
    also caps a user's share of any one session (about a join, half an hour of watching and a
    few likes)."""
    cap_memory_s: float = 3_600.0
    """A user's contribution to an item is forgotten after this long without activity (by then
    it has decayed to 2^(−memory/half-life) of the cap: 1/64 with the defaults)."""
    min_accounts: float = 2.0
    """Trending lists show an item only when its score exceeds what this many accounts could
    give it alone (min_accounts × the cap): one account, or two, never make an item trend."""
    purchase_dedupe_s: float = 86_400.0
    """A purchase counts once per buyer and item within this horizon (up to twice it).
    Purchases are not under the engagement caps: each one is a distinct, paying buyer."""
    top_k: int = 50
    """Length of each maintained top list (global, per category, hosts)."""
    max_exponent: float = 300.0
    """Largest λ(t−L) a numerator increment may carry (doubles overflow near 709)."""
    landmark_period_s: float = 86_400.0
    """The landmark is L = floor(t / P)·P with P = min(this, max_exponent / λ): a function of
    time alone, so every node of a cluster agrees on it without talking to the others."""
    forget_below: float = 1e-6
    """At a landmark move or compaction, items that are not live and score below this are dropped."""

    def __post_init__(self) -> None:
        _check_non_negative(
            "config",
            {
                "likes_per_minute": self.likes_per_minute,
                "min_accounts": self.min_accounts,
                "forget_below": self.forget_below,
            },
        )
        if not (self.half_life_s > 0.0 and math.isfinite(self.half_life_s)):
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s!r}")
        if not (self.user_item_cap > 0.0 and self.user_host_cap > 0.0):
            raise ValueError("user_item_cap and user_host_cap must be > 0 (inf disables them)")
        if not (self.cap_memory_s > 0.0 and math.isfinite(self.cap_memory_s)):
            raise ValueError(f"cap_memory_s must be > 0, got {self.cap_memory_s!r}")
        if not (self.purchase_dedupe_s > 0.0 and math.isfinite(self.purchase_dedupe_s)):
            raise ValueError(f"purchase_dedupe_s must be > 0, got {self.purchase_dedupe_s!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.max_exponent <= 700.0:
            raise ValueError(f"max_exponent must be in (0, 700], got {self.max_exponent!r}")
        if not (self.landmark_period_s > 0.0 and math.isfinite(self.landmark_period_s)):
            raise ValueError(f"landmark_period_s must be > 0, got {self.landmark_period_s!r}")

    @property
    def landmark_period(self) -> float:
        """P: the landmark moves to floor(t / P)·P, which keeps λ(t−L) <= max_exponent."""
        return min(self.landmark_period_s, self.max_exponent * self.half_life_s / math.log(2.0))


class WindowCap:
    """At most `limit` per key in each aligned window [k·window, (k+1)·window).

    The usage map is replaced wholesale when a new window starts: memory follows the keys
    active in one window and no sweep is ever needed. An event stamped in an earlier window
    (late delivery) is charged to the current one.
    """

    __slots__ = ("_gen", "limit", "used", "window")

    def __init__(self, limit: float, window: float) -> None:
        if not (limit > 0.0 and window > 0.0 and math.isfinite(window)):
            raise ValueError("limit and window must be > 0")
        self.limit = limit
        self.window = window
        self._gen = -math.inf
        self.used: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self.used)

    def take(self, key: Hashable, amount: float, t: float) -> float:
        """Grant up to `amount` of what is left of `key`'s allowance; returns the grant."""
        gen = t // self.window
        if gen > self._gen:
            self.used = {}
            self._gen = gen
        used = self.used
        spent = used.get(key, 0.0)
        left = self.limit - spent
        if left <= 0.0:
            return 0.0
        granted = amount if amount < left else left
        used[key] = spent + granted
        return granted


class DecayedCap:
    """Keeps each key's *decayed* contribution at or below a cap, in forward-decay numerators.

    The owner passes increments and the cap already multiplied by exp(λ(t−L)) of its own
    landmark, so the check is two additions and a comparison; on a landmark move the owner
    calls `rescale`. Keys idle for a whole `memory` period are dropped with their generation.
    """

    __slots__ = ("_cur", "_gen", "_prev", "memory")

    def __init__(self, memory: float) -> None:
        if not (memory > 0.0 and math.isfinite(memory)):
            raise ValueError("memory must be > 0")
        self.memory = memory
        self._gen = -math.inf
        self._cur: dict[Hashable, float] = {}
        self._prev: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._cur) + len(self._prev)

    def take(self, key: Hashable, increment: float, cap: float, t: float) -> float:
        """Grant up to `increment` so that the key's total stays <= `cap`; returns the grant."""
        gen = t // self.memory
        if gen > self._gen:
            self._prev = self._cur if gen == self._gen + 1 else {}
            self._cur = {}
            self._gen = gen
        cur = self._cur
        used = cur.get(key)
        if used is None:
            used = self._prev.pop(key, 0.0)
        left = cap - used
        if left <= 0.0:
            cur[key] = used
            return 0.0
        granted = increment if increment < left else left
        cur[key] = used + granted
        return granted

    def rescale(self, factor: float) -> None:
        for entries in (self._cur, self._prev):
            for key, used in entries.items():
                entries[key] = used * factor


class DistinctOnce:
    """Remembers keys for between one and two horizons; `first` is True once per key."""

    __slots__ = ("_cur", "_gen", "_prev", "horizon")

    def __init__(self, horizon: float) -> None:
        self.horizon = horizon
        self._gen = -math.inf
        self._cur: set[Hashable] = set()
        self._prev: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._cur) + len(self._prev)

    def first(self, key: Hashable, t: float) -> bool:
        gen = t // self.horizon
        if gen > self._gen:
            self._prev = self._cur if gen == self._gen + 1 else set()
            self._cur = set()
            self._gen = gen
        if key in self._cur or key in self._prev:
            return False
        self._cur.add(key)
        return True


def noise_floor(min_accounts: float, cap: float) -> float:
    """The score one to `min_accounts` capped accounts could reach alone (0 when uncapped)."""
    return min_accounts * cap if math.isfinite(cap) else 0.0


class SignalPolicy:
    """Turns a signal into a base weight (like limit, distinct buyers) and caps it per user.

    Stateful but pure: time comes from the signals, nothing is read from a clock.
    """

    __slots__ = ("_buyers", "_fixed", "_likes", "config", "host_cap", "product_cap", "weights")

    def __init__(self, config: RankingConfig) -> None:
        self.config = config
        w = self.weights = config.weights
        # Kinds whose weight does not depend on the event: one dict lookup on the hot path.
        self._fixed: dict[str, float] = {
            "join": w.join,
            "chat": w.chat,
            "product_click": w.product_click,
            "add_to_cart": w.add_to_cart,
            "share": w.share,
        }
        self._likes = (
            WindowCap(config.likes_per_minute, 60.0) if config.likes_per_minute > 0 else None
        )
        self._buyers = DistinctOnce(config.purchase_dedupe_s)
        self.product_cap = (
            None if math.isinf(config.user_item_cap) else DecayedCap(config.cap_memory_s)
        )
        self.host_cap = (
            None if math.isinf(config.user_host_cap) else DecayedCap(config.cap_memory_s)
        )

    def weigh(self, signal: Signal) -> float:
        """The signal's weight before the per-user caps; 0 when it does not count."""
        fixed = self._fixed.get(signal.kind)
        if fixed is not None:
            return fixed
        kind = signal.kind
        w = self.weights
        if kind == "like":
            if self._likes is None or signal.count <= 0:
                return 0.0
            counted = self._likes.take(
                (signal.user, signal.session), float(signal.count), signal.at
            )
            return w.like * counted
        if kind == "watch":
            minutes = signal.minutes
            return w.watch_per_minute * minutes if 0.0 < minutes < 1e6 else 0.0
        if kind == "purchase":
            if signal.product is None or not self._buyers.first(
                (signal.user, signal.product), signal.at
            ):
                return 0.0
            return w.purchase + w.purchase_value * math.log1p(max(signal.value_cents, 0) / 100.0)
        return 0.0
