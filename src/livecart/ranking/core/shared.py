"""Trending shared by the nodes of a cluster: batches of numerator increments for one store.

Every node keeps its own `TrendingIndex` and collects the `Delta`s its signals produce. Every
fraction of a second it sends them as one `SyncBatch` to a store all nodes share (a Redis
script in livecart) and takes back the store's numerators of its live items (`absorb`).

The store applies a batch in one atomic step:

- the landmark is a function of time (`TrendingIndex.landmark_for`), so nodes agree on it
  without talking; the first batch of a new period moves the store's landmark: every
  numerator is carried over times exp(−λ(L′−L)), and increments of a node still on the old
  landmark are converted the same way;
- increments under a per-user cap are granted against a ledger of each user's *decayed*
  contribution per budget (a product, or a creator for a host and its sessions), shared by
  every node: one account stays under the cap however many nodes it talks to. The ledger
  keeps one forward-decay numerator per entry against the start of its generation (periods
  of `ledger_period` seconds), carried into the next generation when touched there, and
  forgets a user idle on a budget for a whole generation, as `DecayedCap` does.

`SharedStore` is that step in Python: the reference the store's script is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from livecart.ranking.core.trending import Delta, Scope

SCOPE_KEYS: dict[Scope, str] = {"product": "p", "session": "s", "host": "h"}
"""The short name of each scope in the store (one sorted set each)."""


class SyncBatch(msgspec.Struct):
    """One node's increments since its last sync, against `landmark`, grouped per budget.

    free      (scope key, member, increment): under no per-user cap
    products  (ledger field, product, increment, weight, cap, at): `weight` is the increment's
              decayed value at `at` (the group's latest signal) and `cap` the user's cap, both
              in score units; the store grants a share of the increment
    hosts     (ledger field, creator, increment, weight, cap, at, [(session, increment)]): one
              budget for a host and its sessions; the sessions get the host's granted share

    The ledger field names the user's entry: `p|<product>|<user>` or `h|<creator>|<user>`.
    """

    landmark: float
    free: list[tuple[str, str, float]] = msgspec.field(default_factory=list)
    products: list[tuple[str, str, float, float, float, float]] = msgspec.field(
        default_factory=list
    )
    hosts: list[tuple[str, str, float, float, float, float, list[tuple[str, float]]]] = (
        msgspec.field(default_factory=list)
    )

    def __len__(self) -> int:
        return len(self.free) + len(self.products) + len(self.hosts)


class _Group:
    __slots__ = ("at", "cap", "increment", "sessions")

    def __init__(self, cap: float) -> None:
        self.increment = 0.0
        self.at = -math.inf
        self.cap = cap
        self.sessions: dict[str, float] = {}


def batch_deltas(deltas: Sequence[Delta], rate: float) -> SyncBatch:
    """Sum a node's deltas per member (and per user and budget where capped).

    Deltas against an older landmark than the newest among them are converted to it.
    """
    if not deltas:
        return SyncBatch(landmark=0.0)
    landmark = max(d.landmark for d in deltas)
    free: dict[tuple[str, str], float] = {}
    products: dict[tuple[str, str], _Group] = {}
    hosts: dict[tuple[str, str], _Group] = {}
    exp = math.exp
    for d in deltas:
        inc = d.increment
        if d.landmark != landmark:
            inc *= exp(-rate * (landmark - d.landmark))
        scope = d.scope
        user = d.user
        if user is None or d.cap == math.inf:
            key = (SCOPE_KEYS[scope], d.member)
            free[key] = free.get(key, 0.0) + inc
            continue
        groups = products if scope == "product" else hosts
        group = groups.get((user, d.budget))
        if group is None:
            group = groups[(user, d.budget)] = _Group(d.cap)
        if d.at > group.at:
            group.at = d.at
        if scope == "session":
            sessions = group.sessions
            sessions[d.member] = sessions.get(d.member, 0.0) + inc
        else:
            group.increment += inc

    def weight(group: _Group) -> float:
        return group.increment * math.exp(-rate * (group.at - landmark))

    return SyncBatch(
        landmark=landmark,
        free=[(scope, member, inc) for (scope, member), inc in free.items()],
        products=[
            (f"p|{budget}|{user}", budget, g.increment, weight(g), g.cap, g.at)
            for (user, budget), g in products.items()
        ],
        hosts=[
            (
                f"h|{budget}|{user}",
                budget,
                g.increment,
                weight(g),
                g.cap,
                g.at,
                list(g.sessions.items()),
            )
            for (user, budget), g in hosts.items()
        ],
    )


def unsynced(
    deltas: Iterable[Delta], landmark: float, rate: float
) -> dict[Scope, dict[str, float]]:
    """Per scope and member, the increments a node holds that the store has not seen yet,
    against `landmark` (added to the store's values when a node absorbs them)."""
    out: dict[Scope, dict[str, float]] = {"product": {}, "session": {}, "host": {}}
    for d in deltas:
        inc = d.increment
        if d.landmark != landmark:
            inc *= math.exp(-rate * (landmark - d.landmark))
        scores = out[d.scope]
        scores[d.member] = scores.get(d.member, 0.0) + inc
    return out


class SharedStore:
    """The shared store's semantics in plain Python (the Redis script does the same)."""

    def __init__(self, rate: float, ledger_period: float, forget_below: float = 0.0) -> None:
        self.rate = rate
        self.period = ledger_period
        self.forget_below = forget_below
        self.landmark: float | None = None
        self.scores: dict[str, dict[str, float]] = {"p": {}, "s": {}, "h": {}}
        self.ledgers: dict[int, dict[str, float]] = {}

    def apply(self, batch: SyncBatch) -> float:
        """Apply one node's batch; returns the store's landmark afterwards."""
        rate = self.rate
        if self.landmark is None or batch.landmark > self.landmark:
            if self.landmark is not None:
                factor = math.exp(-rate * (batch.landmark - self.landmark))
                for scores in self.scores.values():
                    for member in list(scores):
                        scores[member] *= factor
                        if scores[member] < self.forget_below:
                            del scores[member]
            self.landmark = batch.landmark
        scale = 1.0
        if batch.landmark < self.landmark:
            scale = math.exp(-rate * (self.landmark - batch.landmark))

        def add(scope: str, member: str, inc: float) -> None:
            if inc > 0.0:
                scores = self.scores[scope]
                scores[member] = scores.get(member, 0.0) + inc * scale

        for scope, member, inc in batch.free:
            add(scope, member, inc)
        for field, product, inc, weight, cap, at in batch.products:
            add("p", product, inc * self.take(field, weight, cap, at))
        for field, creator, inc, weight, cap, at, sessions in batch.hosts:
            share = self.take(field, weight, cap, at)
            add("h", creator, inc * share)
            for session, session_inc in sessions:
                add("s", session, session_inc * share)
        return self.landmark

    def take(self, field: str, weight: float, cap: float, at: float) -> float:
        """The share of `weight` (decayed value at `at`) granted under `cap`, charged to the
        field's ledger entry: a numerator against the start of the generation of `at`."""
        gen = math.floor(at / self.period)
        current = self.ledgers.setdefault(gen, {})
        numerator = current.get(field)
        if numerator is None:
            older = self.ledgers.get(gen - 1, {}).get(field)
            numerator = 0.0 if older is None else older * math.exp(-self.rate * self.period)
        grow = math.exp(self.rate * (at - gen * self.period))
        left = cap - numerator / grow
        grant = min(weight, left) if left > 0.0 else 0.0
        current[field] = numerator + grant * grow
        for old in [g for g in self.ledgers if g < gen - 1]:
            del self.ledgers[old]
        return grant / weight if weight > 0.0 else 0.0

    def read(self, scope: Scope, members: Sequence[str]) -> list[float | None]:
        scores = self.scores[SCOPE_KEYS[scope]]
        return [scores.get(m) for m in members]


def ledger_period(cap_memory_s: float, landmark_period: float) -> float:
    """Generations of the shared ledger: `cap_memory_s`, shortened (for very short half-lives)
    so that numerators within one generation stay far from overflowing."""
    return min(cap_memory_s, landmark_period)


def store_numerators(
    members: Mapping[Scope, Sequence[str]],
    values: Mapping[Scope, Sequence[float | None]],
    pending: Mapping[Scope, Mapping[str, float]],
) -> dict[Scope, dict[str, float]]:
    """What a node absorbs: the store's value of each live member plus its own unsynced part."""
    out: dict[Scope, dict[str, float]] = {}
    for scope, names in members.items():
        mine = pending.get(scope, {})
        out[scope] = {
            name: (value or 0.0) + mine.get(name, 0.0)
            for name, value in zip(names, values[scope], strict=True)
        }
    return out
