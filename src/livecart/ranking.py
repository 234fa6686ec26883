"""Ranking adapter: feeds viewer events into the pure ranking core, keeps interest profiles in
PostgreSQL, and pushes `trending` and `feed` to the viewers who asked for them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from .auth import Identity
from .core.ranking import (
    Candidate,
    CreatorStats,
    FeedItem,
    InterestProfile,
    ProductInfo,
    ProfileBuilder,
    SessionInfo,
    Signal,
    TrendingIndex,
    TrendingSnapshot,
    build_feed,
    creator_score,
    feed_changed,
    snapshot_changed,
)
from .core.ranking.creator_score import CreatorScore, started_on_time
from .core.ranking.signals import SignalKind
from .protocol import encode
from .store.catalog import upsert_user

if TYPE_CHECKING:
    from .gateway.connection import Connection
    from .node import Node

log = logging.getLogger("livecart.ranking")

TRENDING_EVERY_S = 2.0
FEED_EVERY_S = 1.0


class TrendingMsg(msgspec.Struct, tag="trending", tag_field="type"):
    products: list[dict[str, Any]]
    hosts: list[dict[str, Any]]


class FeedMsg(msgspec.Struct, tag="feed", tag_field="type"):
    version: int
    items: list[FeedItem]


class SettingsPatch(msgspec.Struct, forbid_unknown_fields=True):
    personalization: bool


class _Viewer:
    """What the service knows about one signed-in viewer on this node."""

    __slots__ = ("dirty", "minor", "personalization", "profile")

    def __init__(self, minor: bool, personalization: bool, profile: InterestProfile | None):
        self.minor = minor
        self.personalization = personalization
        self.profile = profile
        self.dirty = False


class RankingService:
    def __init__(self, node: Node, *, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.pool: asyncpg.Pool = node.pool
        self._clock = clock
        self.index = TrendingIndex(landmark=clock())
        self.builder = ProfileBuilder()
        self._viewers: dict[str, _Viewer] = {}
        self._products: dict[str, ProductInfo] = {}
        self._session_creator: dict[str, str] = {}
        self._exposure: dict[str, dict[str, int]] = {}
        self._feeds: dict[Connection, tuple[float, list[FeedItem]]] = {}
        self._trending_sent: TrendingSnapshot | None = None
        self._trending_at = 0.0
        self._feed_version = 0
        self._task: asyncio.Task[None] | None = None
        # When the oldest event not yet reflected in a trending push arrived.
        self._unpushed_since: float | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for row in await self.pool.fetch("SELECT id FROM sessions WHERE status = 'live'"):
            await self.session_changed(row["id"])
        self._task = asyncio.create_task(self._push_loop(), name="ranking-push")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._save_profiles()

    # ------------------------------------------------------------ catalog

    async def _product(self, product_id: str) -> ProductInfo | None:
        info = self._products.get(product_id)
        if info is None:
            row = await self.pool.fetchrow(
                "SELECT id, creator, category, tags FROM products WHERE id = $1", product_id
            )
            if row is None:
                return None
            info = ProductInfo(row["id"], row["creator"], row["category"], tuple(row["tags"]))
            self._products[product_id] = info
            self.index.put_product(info)
        return info

    async def session_changed(self, session_id: str) -> None:
        """Bring the index in line with a session that started, ended or changed showcase."""
        row = await self.pool.fetchrow(
            "SELECT s.id, s.creator, s.category, s.tags, s.status, "
            "(SELECT array_agg(product ORDER BY position) FROM session_products sp "
            "WHERE sp.session = s.id) AS showcase FROM sessions s WHERE s.id = $1",
            session_id,
        )
        if row is None:
            return
        self._session_creator[session_id] = row["creator"]
        if row["status"] != "live":
            self.index.end_session(session_id)
            return
        products = [p for p in (row["showcase"] or []) if await self._product(p) is not None]
        info = SessionInfo(row["id"], row["creator"], row["category"], tuple(row["tags"]))
        self.index.start_session(info, products)

    # ------------------------------------------------------------ signals

    async def record(
        self,
        who: Identity,
        kind: SignalKind,
        session_id: str,
        *,
        product_id: str | None = None,
        count: int = 1,
        minutes: float = 0.0,
        value_cents: int = 0,
    ) -> None:
        """One viewer event: into the trending index, and into the viewer's own profile."""
        if who.is_guest:
            return
        now = self._clock()
        signal = Signal(
            kind,
            who.sub,
            now,
            session=session_id,
            product=product_id,
            count=count,
            minutes=minutes,
            value_cents=value_cents,
        )
        self.index.ingest(signal)
        self.node.metrics.ranking_events.labels(kind).inc()
        if self._unpushed_since is None:
            self._unpushed_since = now
        viewer = await self._viewer(who)
        product = await self._product(product_id) if product_id else None
        room = self.node.hub.rooms.get(session_id)
        category = product.category if product else (room.category if room else None)
        tags = product.tags if product else tuple(room.tags if room else ())
        creator = product.creator if product else (room.creator if room else None)
        profile = self.builder.record(
            viewer.profile,
            user=who.sub,
            minor=viewer.minor,
            personalization=viewer.personalization,
            kind=kind,
            now=now,
            category=category or None,
            tags=tags,
            creator=creator,
            count=count,
            minutes=minutes,
        )
        if profile is not None:
            viewer.profile = profile
            viewer.dirty = True

    async def _viewer(self, who: Identity) -> _Viewer:
        viewer = self._viewers.get(who.sub)
        if viewer is None:
            row = await self.pool.fetchrow(
                "SELECT u.minor, u.settings, p.profile FROM users u "
                "LEFT JOIN interest_profiles p ON p.user_id = u.id WHERE u.id = $1",
                who.sub,
            )
            personalization = True
            profile = None
            if row is not None:
                personalization = bool(row["settings"].get("personalization", True))
                if row["profile"] is not None and not who.minor:
                    try:
                        profile = InterestProfile.from_dict(row["profile"])
                    except ValueError:
                        log.warning(
                            "discarding an unreadable interest profile", extra={"user": who.sub}
                        )
            viewer = self._viewers[who.sub] = _Viewer(who.minor, personalization, profile)
        return viewer

    async def _save_profiles(self) -> None:
        dirty = [(u, v) for u, v in self._viewers.items() if v.dirty and v.profile is not None]
        for _, viewer in dirty:
            viewer.dirty = False
        if dirty:
            await self.pool.executemany(
                "INSERT INTO interest_profiles (user_id, profile) VALUES ($1, $2) "
                "ON CONFLICT (user_id) DO UPDATE SET profile = $2, updated_at = now()",
                [(u, v.profile.to_dict()) for u, v in dirty if v.profile is not None],
            )

    # ------------------------------------------------------------ privacy

    async def set_personalization(self, who: Identity, on: bool) -> None:
        await upsert_user(self.pool, who.sub, who.name, who.role, who.minor)
        await self.pool.execute(
            "UPDATE users SET settings = settings || jsonb_build_object('personalization', $2::bool) "
            "WHERE id = $1",
            who.sub,
            on,
        )
        viewer = await self._viewer(who)
        viewer.personalization = on

    async def erase_profile(self, who: Identity) -> bool:
        viewer = self._viewers.get(who.sub)
        if viewer is not None:
            viewer.profile = None
            viewer.dirty = False
        result: str = await self.pool.execute(
            "DELETE FROM interest_profiles WHERE user_id = $1", who.sub
        )
        return not result.endswith(" 0")

    async def export(self, who: Identity) -> dict[str, Any]:
        await self._save_profiles()
        now = self._clock()
        user = await self.pool.fetchrow(
            "SELECT id, name, role, minor, settings, first_seen, last_seen FROM users WHERE id = $1",
            who.sub,
        )
        profile_row = await self.pool.fetchrow(
            "SELECT profile, updated_at FROM interest_profiles WHERE user_id = $1", who.sub
        )
        profile = None
        if profile_row is not None:
            p = InterestProfile.from_dict(profile_row["profile"])
            profile = {"stored": profile_row["profile"], "decayed_now": p.describe(now)}
        orders = [
            msgspec.to_builtins(o) for o in await self.node.commerce.list_orders(who, limit=1000)
        ]
        chat = await self.pool.fetch(
            'SELECT session, "offset", text, state, at FROM room_events '
            "WHERE author = $1 AND type = 'chat' ORDER BY at",
            who.sub,
        )
        return {
            "user": None
            if user is None
            else {
                **dict(user),
                "first_seen": user["first_seen"].isoformat(),
                "last_seen": user["last_seen"].isoformat(),
            },
            "profile": profile,
            "orders": orders,
            "chat": [{**dict(r), "at": r["at"].isoformat()} for r in chat],
        }

    # ------------------------------------------------------------ reads

    def trending(
        self, kind: str = "both", category: str | None = None, limit: int = 10
    ) -> dict[str, Any]:
        now = self._clock()
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
        info = self._products.get(product_id)
        return {
            "id": product_id,
            "score": score,
            "creator": info.creator if info else None,
            "category": info.category if info else None,
        }

    async def feed(
        self,
        who: Identity,
        *,
        candidates: list[Candidate] | None = None,
        exposure: dict[str, CreatorStats] | None = None,
    ) -> list[FeedItem]:
        """A viewer's feed; a push pass computes candidates and exposure once for everyone."""
        now = self._clock()
        profile = None
        personalization = False
        if not who.is_guest:
            viewer = await self._viewer(who)
            personalization = viewer.personalization and not viewer.minor
            profile = viewer.profile if personalization else None
        # Exploration draws are stable for a viewer within a minute, so pushes do not flap.
        rng = random.Random(f"{who.sub}:{int(now // 60)}")
        items = build_feed(
            self.index.candidates(now) if candidates is None else candidates,
            now=now,
            rng=rng,
            profile=profile,
            personalization=personalization,
            exposure=self._exposure_stats() if exposure is None else exposure,
        )
        return items

    def shown(self, items: list[FeedItem]) -> None:
        """Count the impressions of a feed that was served (exposure for exploration)."""
        for item in items:
            creator = self._creator_of(item)
            if creator:
                counts = self._exposure.setdefault(creator, {"impressions": 0})
                counts["impressions"] += 1

    def _creator_of(self, item: FeedItem) -> str | None:
        if item.kind == "session":
            return self._session_creator.get(item.id)
        info = self._products.get(item.id)
        return info.creator if info else None

    def _exposure_stats(self) -> dict[str, CreatorStats]:
        return {
            c: CreatorStats(creator=c, impressions=v.get("impressions", 0))
            for c, v in self._exposure.items()
        }

    async def creator_score(self, creator: str) -> CreatorScore:
        row = await self.pool.fetchrow(
            """
            SELECT
              (SELECT count(DISTINCT author) FROM room_events e JOIN sessions s ON s.id = e.session
                 WHERE s.creator = $1 AND e.type = 'chat') AS chatters,
              (SELECT count(*) FROM room_events e JOIN sessions s ON s.id = e.session
                 WHERE s.creator = $1 AND e.type = 'chat') AS messages,
              (SELECT count(*) FROM room_events e JOIN sessions s ON s.id = e.session
                 WHERE s.creator = $1 AND e.type = 'chat' AND e.state = 'removed') AS removed,
              (SELECT count(*) FROM held_messages h JOIN sessions s ON s.id = h.session
                 WHERE s.creator = $1) AS held,
              (SELECT count(DISTINCT o.user_id) FROM orders o JOIN offers f ON f.id = o.offer
                 JOIN sessions s ON s.id = f.session WHERE s.creator = $1
                 AND o.status IN ('reserved', 'paid')) AS buyers,
              (SELECT count(*) FROM orders o JOIN offers f ON f.id = o.offer
                 JOIN sessions s ON s.id = f.session WHERE s.creator = $1
                 AND o.status IN ('paid', 'cancelled', 'expired')) AS settled,
              (SELECT count(*) FROM orders o JOIN offers f ON f.id = o.offer
                 JOIN sessions s ON s.id = f.session WHERE s.creator = $1
                 AND o.status = 'paid') AS paid,
              (SELECT coalesce(sum(like_total), 0) FROM sessions WHERE creator = $1) AS likes
            """,
            creator,
        )
        sessions = await self.pool.fetch(
            "SELECT scheduled_at, started_at FROM sessions WHERE creator = $1 "
            "AND scheduled_at IS NOT NULL AND started_at IS NOT NULL",
            creator,
        )
        on_time = sum(
            started_on_time(r["scheduled_at"].timestamp(), r["started_at"].timestamp())
            for r in sessions
        )
        counts = self._exposure.get(creator, {})
        viewers = max(counts.get("viewers", 0), int(row["chatters"]), int(row["buyers"]))
        stats = CreatorStats(
            creator=creator,
            impressions=counts.get("impressions", 0),
            viewers=viewers,
            buyers=int(row["buyers"]),
            viewer_minutes=float(counts.get("viewer_seconds", 0)) / 60.0,
            engagements=int(row["messages"]) + int(row["likes"]) + counts.get("clicks", 0),
            sessions_scheduled=len(sessions),
            sessions_on_time=int(on_time),
            orders_reserved=int(row["settled"]),
            orders_paid=int(row["paid"]),
            messages=int(row["messages"]) + int(row["held"]),
            messages_flagged=int(row["removed"]) + int(row["held"]),
        )
        return creator_score(stats)

    def count_viewer(
        self, creator: str, *, seconds: float = 0.0, joined: bool = False, clicks: int = 0
    ) -> None:
        counts = self._exposure.setdefault(creator, {"impressions": 0})
        if joined:
            counts["viewers"] = counts.get("viewers", 0) + 1
        if seconds:
            counts["viewer_seconds"] = counts.get("viewer_seconds", 0) + int(seconds)
        if clicks:
            counts["clicks"] = counts.get("clicks", 0) + clicks

    # ------------------------------------------------------------ real time

    async def subscribe(self, conn: Connection, on: bool) -> None:
        conn.feed_on = on
        if not on:
            self._feeds.pop(conn, None)
            return
        snapshot = self.index.snapshot(self._clock())
        conn.send(encode(self._trending_msg(snapshot)))
        items = await self.feed(conn.identity)
        self._feeds[conn] = (self._clock(), items)
        self._feed_version += 1
        self.shown(items)
        conn.send(encode(FeedMsg(self._feed_version, items)))

    def forget(self, conn: Connection) -> None:
        self._feeds.pop(conn, None)

    def _trending_msg(self, snapshot: TrendingSnapshot) -> TrendingMsg:
        return TrendingMsg(
            products=[self._describe_product(t.id, t.score) for t in snapshot.products],
            hosts=[{"id": t.id, "score": t.score} for t in snapshot.hosts],
        )

    async def _push_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.25)
            ticks += 1
            try:
                await self.push_once()
                if ticks % 8 == 0:
                    await self._save_profiles()
            except Exception:
                log.exception("ranking push failed")

    async def push_once(self) -> None:
        now = self._clock()
        subscribers = [c for c in self._feeds if not c.closed and c.feed_on]
        if not subscribers:
            return
        if now - self._trending_at >= TRENDING_EVERY_S:
            snapshot = self.index.snapshot(now)
            if snapshot_changed(self._trending_sent, snapshot):
                self._trending_sent = snapshot
                self._trending_at = now
                if self._unpushed_since is not None:
                    self.node.metrics.push_seconds.observe(now - self._unpushed_since)
                    self._unpushed_since = None
                message = encode(self._trending_msg(snapshot))
                for conn in subscribers:
                    conn.send(message)
        due = [c for c in subscribers if now - self._feeds[c][0] >= FEED_EVERY_S]
        if not due:
            return
        candidates = self.index.candidates(now)
        exposure = self._exposure_stats()
        for conn in due:
            _, shown = self._feeds[conn]
            current = await self.feed(conn.identity, candidates=candidates, exposure=exposure)
            if feed_changed(shown, current, is_live=self.index.is_live):
                self._feed_version += 1
                self._feeds[conn] = (now, current)
                self.shown(current)
                conn.send(encode(FeedMsg(self._feed_version, current)))
            else:
                self._feeds[conn] = (now, shown)  # checked: next look in a second
