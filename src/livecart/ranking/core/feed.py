"""The personal feed: live sessions and products ranked by trend and the viewer's interests,
with exploration slots for little-seen creators and a diversity re-ranking.

score = (1 − a)·trend + a·affinity, where trend is the candidate's decayed trending score
normalised per kind to [0, 1] (log scale, so one runaway item does not flatten the rest),
affinity in [0, 1] comes from the viewer's interest profile and a = affinity_weight × the
profile's confidence (0 without a profile or with personalization off). Every item's `why`
holds the two terms of its score (`why.trend + why.affinity == score`) and, for exploration
slots, the Thompson sample that picked its creator (`why.explore`, 0 elsewhere).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import msgspec

from livecart.ranking.core.creator_score import (
    CreatorScoreConfig,
    CreatorStats,
    conversion_posterior,
)
from livecart.ranking.core.hysteresis import ranking_changed
from livecart.ranking.core.profile import AffinityScorer, InterestProfile, ProfileConfig

FeedKind = Literal["session", "product"]


class Candidate(msgspec.Struct, frozen=True, gc=False):
    """A live session or product that may be shown, with its trending score at read time."""

    kind: FeedKind
    id: str
    creator: str
    category: str
    tags: tuple[str, ...] = ()
    trend: float = 0.0


class Why(msgspec.Struct, frozen=True, gc=False):
    trend: float
    affinity: float
    explore: float


class FeedItem(msgspec.Struct, frozen=True, gc=False):
    kind: FeedKind
    id: str
    score: float
    why: Why


class FeedConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    size: int = 20
    affinity_weight: float = 0.6
    """Share of the score given to affinity for a fully confident profile."""
    explore_every: int = 5
    """Every n-th slot (5th, 10th, ...) explores a little-seen creator; 0 disables."""
    explore_max_impressions: int = 2_000
    """Creators shown fewer times than this are 'little-seen' and may be explored."""
    explore_when_not_personal: bool = True
    """Exploration uses no personal data, so it also runs for opted-out viewers and guests."""
    max_category_run: int = 2
    """At most this many items of one category in a row (unless nothing else is left)."""
    diversity: float = 0.1
    """MMR penalty × the largest similarity to an already placed item."""
    same_creator_similarity: float = 1.0
    same_category_similarity: float = 0.5
    pool_factor: int = 3
    """Only the best size × pool_factor items by score enter the re-ranking."""
    trend_unit: float = 1.0
    """Trend normalisation log1p(v / unit) / log1p(max / unit): one `join` worth is the unit."""

    def __post_init__(self) -> None:
        if self.size < 1 or self.pool_factor < 1 or self.max_category_run < 1:
            raise ValueError("size, pool_factor and max_category_run must be >= 1")
        if self.explore_every < 0 or self.explore_max_impressions < 0:
            raise ValueError("explore_every and explore_max_impressions must be >= 0")
        if not 0.0 <= self.affinity_weight <= 1.0:
            raise ValueError("affinity_weight must be in [0, 1]")
        if self.diversity < 0.0 or self.trend_unit <= 0.0:
            raise ValueError("diversity must be >= 0 and trend_unit > 0")


class _Scored:
    __slots__ = ("affinity", "candidate", "category", "creator", "score", "taken", "trend")

    def __init__(self, candidate: Candidate, trend: float, affinity: float) -> None:
        self.candidate = candidate
        self.category = candidate.category
        self.creator = candidate.creator
        self.trend = trend
        self.affinity = affinity
        self.score = trend + affinity
        self.taken = False


def _normalised_trends(candidates: Sequence[Candidate], unit: float) -> list[float]:
    """log1p(v/unit) / log1p(max/unit) within each kind; sessions and products differ in scale."""
    top: dict[str, float] = {}
    for c in candidates:
        if c.trend > top.get(c.kind, 0.0):
            top[c.kind] = c.trend
    scale = {kind: 1.0 / math.log1p(v / unit) for kind, v in top.items()}
    log1p = math.log1p
    return [log1p(c.trend / unit) * scale[c.kind] if c.trend > 0.0 else 0.0 for c in candidates]


_DEFAULT_PROFILE = ProfileConfig()
_DEFAULT_SCORE = CreatorScoreConfig()


def build_feed(
    candidates: Sequence[Candidate],
    *,
    now: float,
    rng: random.Random,
    profile: InterestProfile | None = None,
    personalization: bool = True,
    exposure: Mapping[str, CreatorStats] | None = None,
    config: FeedConfig | None = None,
    profile_config: ProfileConfig | None = None,
    score_config: CreatorScoreConfig | None = None,
) -> list[FeedItem]:
    """Rank live candidates for one viewer.

    `profile` is ignored when `personalization` is False (trend-only feed). `exposure` maps
    creators to their counts (impressions, viewers, buyers) for the exploration bandit; a
    creator missing from it counts as never shown. `rng` drives the Thompson samples.
    """
    cfg = config or FeedConfig()
    if not candidates:
        return []
    personal = personalization and profile is not None
    scorer = AffinityScorer(profile if personal else None, profile_config or _DEFAULT_PROFILE, now)
    a = cfg.affinity_weight * scorer.confidence
    trends = _normalised_trends(candidates, cfg.trend_unit)
    if a > 0.0:
        scored = [
            _Scored(c, (1.0 - a) * t, a * scorer(c.category, c.tags, c.creator))
            for c, t in zip(candidates, trends, strict=True)
        ]
    else:
        scored = [_Scored(c, t, 0.0) for c, t in zip(candidates, trends, strict=True)]
    # Exact ties (typically items with no trend yet) are broken at random, not by id, so that
    # no item is favoured by its name.
    draw = rng.random
    scored.sort(key=lambda s: (-s.score, -s.trend, draw()))
    size = min(cfg.size, len(scored))

    explore_queue: list[tuple[float, _Scored]] = []
    if cfg.explore_every > 0 and (personal or cfg.explore_when_not_personal):
        explore_queue = _explore_queue(
            scored, exposure or {}, cfg, score_config or _DEFAULT_SCORE, rng
        )

    pool = scored[: size * cfg.pool_factor]
    placed: list[FeedItem] = []
    categories: list[str] = []
    placed_creators: set[str] = set()
    placed_categories: set[str] = set()
    run = cfg.max_category_run
    creator_penalty = cfg.diversity * cfg.same_creator_similarity
    category_penalty = cfg.diversity * cfg.same_category_similarity

    def place(s: _Scored, explore: float) -> None:
        c = s.candidate
        placed.append(
            FeedItem(
                c.kind, c.id, s.score, Why(trend=s.trend, affinity=s.affinity, explore=explore)
            )
        )
        s.taken = True
        categories.append(s.category)
        placed_creators.add(s.creator)
        placed_categories.add(s.category)

    for position in range(size):
        # The one category that may not come next: it already filled the last `run` slots.
        tail = categories[-run:]
        blocked = tail[0] if len(tail) == run and tail.count(tail[0]) == run else None
        if explore_queue and (position + 1) % cfg.explore_every == 0:
            pick = _next_explore(explore_queue, placed_creators, blocked)
            if pick is not None:
                place(pick[1], pick[0])
                continue
        best: _Scored | None = None
        best_value = -math.inf
        fallback: _Scored | None = None
        fallback_value = -math.inf
        for s in pool:
            if s.taken:
                continue
            if s.creator in placed_creators:
                value = s.score - creator_penalty
            elif s.category in placed_categories:
                value = s.score - category_penalty
            else:
                value = s.score
            if s.category == blocked:
                if value > fallback_value:
                    fallback, fallback_value = s, value
            elif value > best_value:
                best, best_value = s, value
        if best is None:
            # Nothing in the pool keeps the category rule: look further down before giving in.
            best = next(
                (s for s in scored[len(pool) :] if not s.taken and s.category != blocked), None
            )
        chosen = best or fallback
        if chosen is None:
            # The pool is exhausted (explore took some of it): continue down the full ranking.
            chosen = next((s for s in scored if not s.taken), None)
            if chosen is None:
                break
        place(chosen, 0.0)
    return placed


def _explore_queue(
    scored: Sequence[_Scored],
    exposure: Mapping[str, CreatorStats],
    cfg: FeedConfig,
    score_config: CreatorScoreConfig,
    rng: random.Random,
) -> list[tuple[float, _Scored]]:
    """Little-seen creators ordered by a Thompson sample of their conversion (best item each)."""
    best_item: dict[str, _Scored] = {}
    for s in scored:
        # `scored` is in score order, so the first item of a creator is its best.
        best_item.setdefault(s.creator, s)
    queue: list[tuple[float, _Scored]] = []
    limit = cfg.explore_max_impressions
    for creator, s in best_item.items():
        stats = exposure.get(creator)
        if stats is not None and stats.impressions >= limit:
            continue
        alpha, beta = conversion_posterior(stats or CreatorStats(creator=creator), score_config)
        queue.append((rng.betavariate(alpha, beta), s))
    # Best sample last, so that slots pop from the end.
    queue.sort(key=lambda pair: (pair[0], pair[1].creator), reverse=True)
    queue.reverse()
    return queue


def _next_explore(
    queue: list[tuple[float, _Scored]], placed_creators: set[str], blocked: str | None
) -> tuple[float, _Scored] | None:
    """The best-sampled creator not yet in the feed whose item keeps the category rule."""
    for i in range(len(queue) - 1, -1, -1):
        sample, s = queue[i]
        if s.creator in placed_creators or s.taken:
            del queue[i]
            continue
        if s.category == blocked:
            continue
        del queue[i]
        return sample, s
    return None


def feed_changed(
    shown: Sequence[FeedItem],
    current: Sequence[FeedItem],
    *,
    top_n: int = 10,
    margin: float = 0.1,
    is_live: Callable[[str, str], bool] | None = None,
) -> bool:
    """Whether `current` should be pushed to a viewer who was last shown `shown`.

    Exploration slots are re-drawn on every computation, so they never cause a push by
    themselves; a shown item that is no longer live (per `is_live(kind, id)`) always does.
    The organic items follow `hysteresis.ranking_changed`.
    """
    shown_top = shown[:top_n]
    current_top = current[:top_n]
    if [(i.kind, i.id) for i in shown_top] == [(i.kind, i.id) for i in current_top]:
        return False
    if is_live is not None and any(not is_live(i.kind, i.id) for i in shown_top):
        return True
    organic_shown = [((i.kind, i.id), i.score) for i in shown_top if i.why.explore == 0.0]
    organic_current = [((i.kind, i.id), i.score) for i in current if i.why.explore == 0.0]
    if not organic_shown:
        return bool(organic_current)
    return ranking_changed(organic_shown, organic_current, top_n=len(organic_shown), margin=margin)


TrendDigest = dict[tuple[str, str], float]


def trend_digest(candidates: Sequence[Candidate], unit: float = 1.0) -> TrendDigest:
    """Each candidate's trend as a feed scores it (normalised per kind), keyed by (kind, id)."""
    trends = _normalised_trends(candidates, unit)
    return {(c.kind, c.id): t for c, t in zip(candidates, trends, strict=True)}


def trends_moved(
    before: Mapping[tuple[str, str], float], after: TrendDigest, tolerance: float
) -> bool:
    """Whether feeds computed from `before` may be stale: the live candidates differ, or one
    normalised trend moved by more than `tolerance` (a feed's trend term is in [0, 1]).

    A feed recomputed after a smaller move could only differ by near-ties, which the push rule
    (`feed_changed`, 10 % margin) holds back anyway; so adapters skip recomputing it.
    """
    if before.keys() != after.keys():
        return True
    return any(abs(value - before[key]) > tolerance for key, value in after.items())


class Landing:
    """Whether a burst is still landing: trends moved by more than `tolerance` from one look
    to the next. A feed pushed in the middle of a burst shows it half-counted, often below the
    push margin, and the per-viewer rate limit then holds the whole picture back; so feeds
    wait while trends keep moving, but never longer than `max_wait_s`."""

    def __init__(self, tolerance: float, max_wait_s: float) -> None:
        self.tolerance = tolerance
        self.max_wait_s = max_wait_s
        self._last: TrendDigest | None = None
        self._moving_since: float | None = None

    def look(self, digest: TrendDigest, now: float) -> None:
        """Record the trends as they are at `now` (once per look, e.g. every 100 ms)."""
        if self._last is not None and trends_moved(self._last, digest, self.tolerance):
            if self._moving_since is None:
                self._moving_since = now
        else:
            self._moving_since = None
        self._last = digest

    def waiting(self, now: float) -> bool:
        since = self._moving_since
        return since is not None and now - since < self.max_wait_s
