"""What this node counts per creator for exploration and the creator score: feed impressions,
viewers who joined, watch time and clicks."""

from __future__ import annotations

from collections.abc import Callable

from .core import CreatorStats, FeedItem

TICK_S = 0.1
"""Impressions handed to the exploration bandit are rebuilt at most this often."""


class Exposure:
    def __init__(self, creator_of: Callable[[FeedItem], str | None]) -> None:
        self._creator_of = creator_of
        self.counts: dict[str, dict[str, int]] = {}
        self._cache: dict[str, CreatorStats] = {}
        self._at = -1.0

    def shown(self, items: list[FeedItem], times: int = 1) -> None:
        """Count the impressions of a feed that was served."""
        for item in items:
            creator = self._creator_of(item)
            if creator:
                counts = self.counts.setdefault(creator, {"impressions": 0})
                counts["impressions"] += times

    def count_viewer(
        self, creator: str, *, seconds: float = 0.0, joined: bool = False, clicks: int = 0
    ) -> None:
        counts = self.counts.setdefault(creator, {"impressions": 0})
        if joined:
            counts["viewers"] = counts.get("viewers", 0) + 1
        if seconds:
            counts["viewer_seconds"] = counts.get("viewer_seconds", 0) + int(seconds)
        if clicks:
            counts["clicks"] = counts.get("clicks", 0) + clicks

    def stats(self, now: float) -> dict[str, CreatorStats]:
        """Impressions per creator for the exploration bandit, rebuilt at most once a tick."""
        if now - self._at >= TICK_S or now < self._at:
            self._cache = {
                c: CreatorStats(creator=c, impressions=v.get("impressions", 0))
                for c, v in self.counts.items()
            }
            self._at = now
        return self._cache
