"""Trending and feeds in real time: the live candidates and when they moved, each viewer's
feed, and the push rule that decides which subscribers get a new `trending` or `feed`
(SPEC §8)."""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

from ..protocol import encode, ws_text_frame
from ..protocol import frame as protocol_frame
from .catalog_cache import CatalogCache
from .core import (
    Candidate,
    FeedItem,
    Landing,
    TrendDigest,
    TrendingIndex,
    TrendingSnapshot,
    build_feed,
    feed_changed,
    snapshot_changed,
    trend_digest,
    trends_moved,
)
from .exposure import Exposure
from .messages import FeedMsg, TrendingMsg
from .ports import ObservePush, Subscriber
from .profiles import Viewer

TRENDING_EVERY_S = 2.0
"""SPEC §8: `trending` at most every 2 s (and only when the top changed)."""
FEED_EVERY_S = 1.0
"""SPEC §8: `feed` at most once a second per viewer (and only when its top changed)."""
TICK_S = 0.1
"""How often the push loop looks for changes: the delay it adds to a push."""
FEED_BUCKETS = 32
"""Viewers without a profile share one of this many feed computations (exploration draws)."""
FEED_TREND_TOLERANCE = 0.02
"""Feeds are recomputed only once some normalised trend moved by more than this (or the live
set changed, or the viewer's profile did): smaller moves are near-ties no push would carry."""
FEED_SETTLE_S = 0.5
FEED_SETTLE_TOLERANCE = 0.002
"""...and a smaller move (more than this) once this long has passed since the last recompute,
so a move that stopped just short of the tolerance still reaches the push rule (at most
FEED_SETTLE_S later). Uniform decay alone moves normalised trends by about 0.00005 a second."""
FEED_LANDING_MAX_S = 0.3
"""While trends still move by more than FEED_TREND_TOLERANCE from one tick to the next (a
burst landing), feeds wait, at most this long: a feed pushed halfway through a burst would
hold the rest back for FEED_EVERY_S."""
FEED_SLICE = 50
"""Personal feeds computed between two yields to the event loop."""


class Subscription:
    """One connection with `feed on`: what it was last shown, and when it was last looked at."""

    __slots__ = ("conn", "generation", "pushed_at", "revision", "shown")

    def __init__(self, conn: Subscriber, shown: list[FeedItem], now: float) -> None:
        self.conn = conn
        self.shown = shown
        self.pushed_at = now
        self.generation = -1
        self.revision = -1


class Feeds:
    def __init__(
        self,
        index: TrendingIndex,
        catalog: CatalogCache,
        exposure: Exposure,
        viewers: dict[str, Viewer],
        *,
        observe_push: ObservePush,
    ) -> None:
        self.index = index
        self._catalog = catalog
        self._exposure = exposure
        self._viewers = viewers
        self._observe_push = observe_push
        self.subs: dict[Subscriber, Subscription] = {}
        self._trending_sent: TrendingSnapshot | None = None
        self._trending_at = 0.0
        self._feed_version = 0
        # Feeds are recomputed only when something they show may have changed: `generation`
        # grows when the live candidates or their normalised trends moved (see trends_moved).
        self.generation = 0
        self._generation_at = 0.0
        self._digest: TrendDigest | None = None
        self._landing = Landing(FEED_TREND_TOLERANCE, FEED_LANDING_MAX_S)
        self._candidates: list[Candidate] = []
        self._candidates_at = -1.0
        # Feeds of viewers without a profile: one per (bucket), for a generation and minute.
        self._shared_feeds: dict[int, tuple[int, int, list[FeedItem]]] = {}
        # When the oldest event not yet reflected in a trending push arrived.
        self.unpushed_since: float | None = None

    # ------------------------------------------------------------ computing

    def fresh_candidates(self, now: float) -> list[Candidate]:
        """The live candidates, recomputed at most once a tick; moves `generation` when the
        feeds computed from the previous ones may be stale."""
        catalog = self._catalog
        if now - self._candidates_at < TICK_S and not catalog.changed:
            return self._candidates
        candidates = self.index.candidates(now)
        digest = trend_digest(candidates)
        self._landing.look(digest, now)
        if (
            self._digest is None
            or catalog.changed
            or trends_moved(self._digest, digest, FEED_TREND_TOLERANCE)
            # Settle: a smaller move that came after the last recompute may still tip a push.
            or (
                now - self._generation_at >= FEED_SETTLE_S
                and trends_moved(self._digest, digest, FEED_SETTLE_TOLERANCE)
            )
        ):
            self.generation += 1
            self._generation_at = now
            self._digest = digest
            catalog.changed = False
        self._candidates = candidates
        self._candidates_at = now
        return candidates

    def feed_for(
        self, sub: str, viewer: Viewer | None, now: float, candidates: list[Candidate]
    ) -> list[FeedItem]:
        minute = int(now // 60)
        exposure = self._exposure.stats(now)
        if viewer is not None and viewer.personal:
            # Exploration draws are stable for a viewer within a minute, so pushes do not flap.
            return build_feed(
                candidates,
                now=now,
                rng=random.Random(f"{sub}:{minute}"),
                profile=viewer.profile,
                personalization=True,
                exposure=exposure,
            )
        # Without a profile a feed depends on the viewer only through its random draws
        # (exploration, ties): viewers share one of FEED_BUCKETS computations.
        bucket = zlib.crc32(sub.encode()) % FEED_BUCKETS
        cached = self._shared_feeds.get(bucket)
        if cached is not None and cached[0] == self.generation and cached[1] == minute:
            return cached[2]
        items = build_feed(
            candidates,
            now=now,
            rng=random.Random(f"shared{bucket}:{minute}"),
            profile=None,
            personalization=False,
            exposure=exposure,
        )
        self._shared_feeds[bucket] = (self.generation, minute, items)
        return items

    def trending(self, now: float, kind: str, category: str | None, limit: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if kind in ("both", "products"):
            out["products"] = [
                self._describe_product(t.id, t.score)
                for t in self.index.trending_products(now, limit, category)
            ]
        if kind in ("both", "hosts"):
            out["hosts"] = [
                {"id": t.id, "score": t.score} for t in self.index.trending_hosts(now, limit)
            ]
        return out

    def _describe_product(self, product_id: str, score: float) -> dict[str, Any]:
        info = self._catalog.products.get(product_id)
        return {
            "id": product_id,
            "score": score,
            "creator": info.creator if info else None,
            "category": info.category if info else None,
        }

    def _trending_frame(self, snapshot: TrendingSnapshot) -> bytes:
        return encode(
            TrendingMsg(
                products=[self._describe_product(t.id, t.score) for t in snapshot.products],
                hosts=[{"id": t.id, "score": t.score} for t in snapshot.hosts],
            )
        )

    # ------------------------------------------------------------ subscribers

    def unsubscribe(self, conn: Subscriber) -> None:
        conn.feed_on = False
        self.subs.pop(conn, None)

    def subscribe(self, conn: Subscriber, viewer: Viewer | None, now: float) -> None:
        """`feed on`: the current trending and feed at once, then pushes as they change."""
        conn.send(self._trending_frame(self.index.snapshot(now)))
        items = self.feed_for(conn.identity.sub, viewer, now, self.fresh_candidates(now))
        sub = self.subs[conn] = Subscription(conn, items, now)
        sub.generation = self.generation
        sub.revision = viewer.revision if viewer is not None else 0
        self._feed_version += 1
        self._exposure.shown(items)
        conn.send(encode(FeedMsg(self._feed_version, items)))

    async def push_once(self, now: float) -> None:
        if not self.subs:
            return
        if now - self._trending_at >= TRENDING_EVERY_S:
            self._push_trending(now)
        self.fresh_candidates(now)
        if self._landing.waiting(now):
            return  # a burst is landing: push once it has
        due = [
            s
            for s in self.subs.values()
            if now - s.pushed_at >= FEED_EVERY_S and not s.conn.closed and s.conn.feed_on
        ]
        if due:
            await self._push_feeds(now, due)

    def _push_trending(self, now: float) -> None:
        # Compared on 20 so that an item just below the cut is compared by score.
        current = self.index.snapshot(now, 20)
        if not snapshot_changed(self._trending_sent, current, top_n=10):
            return
        snapshot = TrendingSnapshot(current.version, current.products[:10], current.hosts[:10])
        self._trending_sent = snapshot
        self._trending_at = now
        if self.unpushed_since is not None:
            self._observe_push(now - self.unpushed_since)
            self.unpushed_since = None
        # One frame, framed once, written to every subscriber's socket.
        payload = protocol_frame([self._trending_frame(snapshot)])
        framed = ws_text_frame(payload)
        for sub in self.subs.values():
            if not sub.conn.closed and sub.conn.feed_on:
                sub.conn.write_shared(payload, framed)

    async def _push_feeds(self, now: float, due: list[Subscription]) -> None:
        candidates = self.fresh_candidates(now)
        generation = self.generation
        self._feed_version += 1
        version = self._feed_version
        changed: dict[tuple[int, int], bool] = {}
        frames: dict[int, tuple[bytes, bytes]] = {}
        pushed: dict[int, tuple[list[FeedItem], int]] = {}
        computed = 0
        for sub in due:
            conn = sub.conn
            viewer = None if conn.identity.is_guest else self._viewers.get(conn.identity.sub)
            revision = viewer.revision if viewer is not None else 0
            if sub.generation == generation and sub.revision == revision:
                continue  # nothing this viewer is shown has moved since it was last looked at
            personal = viewer is not None and viewer.personal
            current = self.feed_for(conn.identity.sub, viewer, now, candidates)
            sub.generation, sub.revision = generation, revision
            key = (id(sub.shown), id(current))
            push = changed.get(key)
            if push is None:
                push = changed[key] = feed_changed(sub.shown, current, is_live=self.index.is_live)
            if push and not conn.closed and conn.feed_on:
                shared = frames.get(id(current))
                if shared is None:
                    payload = protocol_frame([encode(FeedMsg(version, current))])
                    shared = frames[id(current)] = (payload, ws_text_frame(payload))
                conn.write_shared(*shared)
                sub.shown, sub.pushed_at = current, now
                items, times = pushed.get(id(current), (current, 0))
                pushed[id(current)] = (items, times + 1)
            if personal:
                computed += 1
                if computed % FEED_SLICE == 0:
                    await asyncio.sleep(0)  # let frames in while many personal feeds are built
        for items, times in pushed.values():
            self._exposure.shown(items, times)
