"""Incremental top-k over a shared map of grow-only numerators.

Forward-decay numerators only grow (a landmark move scales all of them alike), so an item
can only climb: an increment either leaves the top-k untouched (the common case, one float
comparison against the floor), or moves one item up a few places. Nothing is sorted on a
read; only removing an item that sits in the top-k triggers a rebuild from the eligible set.
"""

from __future__ import annotations

import heapq


class TopK:
    """The k eligible keys with the largest numerators, in order, with a change version.

    `scores` is shared with the owner, which writes the new numerator before calling
    `offer`. `version` increases whenever the ordered list of keys changes.
    """

    __slots__ = ("_ids", "_pos", "floor", "k", "members", "scores", "version")

    def __init__(self, k: int, scores: dict[str, float]) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.scores = scores
        # A dict, not a set: its insertion order makes rebuilds deterministic.
        self.members: dict[str, None] = {}
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        # Numerator to beat to enter; zero while there is room (a key needs some activity).
        self.floor = 0.0
        self.version = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    def ids(self) -> list[str]:
        """The current top keys, best first."""
        return list(self._ids)

    def top(self, n: int | None = None) -> list[tuple[str, float]]:
        """(key, numerator) pairs, best first."""
        scores = self.scores
        ids = self._ids if n is None else self._ids[:n]
        return [(key, scores[key]) for key in ids]

    def offer(self, key: str, numerator: float) -> None:
        """Tell the top-k that an eligible key's numerator grew to `numerator`."""
        if numerator <= self.floor:
            return
        ids = self._ids
        pos_of = self._pos
        scores = self.scores
        pos = pos_of.get(key)
        changed = False
        if pos is None:
            if len(ids) < self.k:
                ids.append(key)
            else:
                del pos_of[ids[-1]]
                ids[-1] = key
            pos = len(ids) - 1
            changed = True
        # Climb past every key with a smaller numerator; equal numerators keep the older key first.
        while pos > 0:
            above = ids[pos - 1]
            if scores[above] >= numerator:
                break
            ids[pos] = above
            pos_of[above] = pos
            pos -= 1
            changed = True
        ids[pos] = key
        pos_of[key] = pos
        if changed:
            self.version += 1
        if len(ids) >= self.k:
            self.floor = scores[ids[-1]]

    def admit(self, key: str) -> None:
        """Make a key eligible (e.g. its session went live) and rank its current numerator."""
        if key in self.members:
            return
        self.members[key] = None
        self.offer(key, self.scores.get(key, 0.0))

    def expel(self, key: str) -> None:
        """Make a key ineligible (e.g. its session ended); refill from the eligible keys."""
        if key not in self.members:
            return
        del self.members[key]
        if key in self._pos:
            self.rebuild()

    def rebuild(self) -> None:
        """Recompute the order from every eligible key: O(n log k), only on removal or rescale."""
        scores = self.scores
        ranked = heapq.nlargest(
            self.k,
            (key for key in self.members if scores.get(key, 0.0) > 0.0),
            key=lambda key: scores.get(key, 0.0),
        )
        if ranked != self._ids:
            self.version += 1
        self._ids = ranked
        self._pos = {key: i for i, key in enumerate(ranked)}
        self.floor = scores[ranked[-1]] if len(ranked) >= self.k else 0.0
