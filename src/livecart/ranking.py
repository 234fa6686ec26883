"""Ranking adapter: feeds viewer events into the pure ranking core, keeps interest profiles in
PostgreSQL, shares trending numerators between nodes through Redis (when configured), and
pushes `trending` and `feed` to the viewers who asked for them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from .auth import Identity
from .core.ranking import (
    SIGNAL_KINDS,
    Candidate,
    CreatorStats,
    Delta,
    FeedItem,
    InterestProfile,
    Landing,
    ProductInfo,
    ProfileBuilder,
    SessionInfo,
    Signal,
    TrendDigest,
    TrendingIndex,
    TrendingSnapshot,
    build_feed,
    creator_score,
    feed_changed,
    snapshot_changed,
    trend_digest,
    trends_moved,
)
from .core.ranking.creator_score import CreatorScore, started_on_time
from .core.ranking.shared import batch_deltas, ledger_period, store_numerators, unsynced
from .core.ranking.signals import SignalKind
from .core.ranking.trending import Scope
from .protocol import Failure, encode, ws_text_frame
from .protocol import frame as protocol_frame
from .store.catalog import upsert_user

if TYPE_CHECKING:
    from .gateway.connection import Connection
    from .node import Node

log = logging.getLogger("livecart.ranking")

TRENDING_EVERY_S = 2.0
"""SPEC §8: `trending` at most every 2 s (and only when the top changed)."""
FEED_EVERY_S = 1.0
"""SPEC §8: `feed` at most once a second per viewer (and only when its top changed)."""
TICK_S = 0.1
"""How often the push loop looks for changes: the delay it adds to a push."""
SYNC_EVERY_S = 0.1
"""Cluster: how often a node sends its increments to Redis and reads the global numerators."""
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
PROFILE_SAVE_EVERY_S = 10.0
"""Changed interest profiles are written at most this often (and at shutdown)."""
PROFILE_SAVE_CHUNK = 500
PROFILE_QUEUE_MAX = 64
"""Events kept per viewer while their stored profile is being read."""
CATALOG_QUEUE_MAX = 10_000
"""Signals kept per session while this node reads whether it is live (cluster: a session
started through another node a moment ago)."""
NOT_LIVE_TTL_S = 5.0
"""A session found not live is not looked up again for this long."""
FORGET_KEEP = 100_000
"""Cluster: "forget this viewer" markers kept in Redis (a node reads new ones every sync)."""
UNSYNCED_MAX = 500_000
"""Cluster: deltas kept while Redis does not answer; older ones are dropped past this."""


_SESSION_SQL = (
    "SELECT s.id, s.creator, s.category, s.tags, s.status, "
    "(SELECT array_agg(product ORDER BY position) FROM session_products sp "
    "WHERE sp.session = s.id) AS showcase FROM sessions s "
)


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

    __slots__ = ("dirty", "minor", "personalization", "profile", "revision")

    def __init__(self, minor: bool, personalization: bool, profile: InterestProfile | None):
        self.minor = minor
        self.personalization = personalization
        self.profile = profile
        self.dirty = False
        # Grows with every change that can alter this viewer's feed (profile, settings).
        self.revision = 0

    @property
    def personal(self) -> bool:
        return self.personalization and not self.minor and self.profile is not None


class _Subscriber:
    """One connection with `feed on`: what it was last shown, and when it was last looked at."""

    __slots__ = ("conn", "generation", "pushed_at", "revision", "shown")

    def __init__(self, conn: Connection, shown: list[FeedItem], now: float) -> None:
        self.conn = conn
        self.shown = shown
        self.pushed_at = now
        self.generation = -1
        self.revision = -1


# (kind, at, session, product, count, minutes): a viewer event waiting for its profile to load.
_ProfileEvent = tuple[SignalKind, float, str, str | None, int, float]


# ---------------------------------------------------------------- cluster: Redis

# One atomic step per node and sync: move the landmark if this batch is the first of a new
# period, apply the increments (the capped ones against the shared per-user ledger), and read
# back the numerators of the node's live items. `SharedStore` in core/ranking/shared.py is the
# same in Python. Every key carries the `{rank}` hash tag: one Redis Cluster slot.
#
# KEYS[1] <prefix>:landmark   the store's landmark, as the decimal string used in key names
# ARGV    prefix, landmark (string), rate λ, key ttl (ms), ledger period (s), forget_below,
#         batch (MessagePack SyncBatch), live members to read (MessagePack [[products],
#         [sessions], [hosts]])
# returns {landmark string, product scores, session scores, host scores}
_SYNC_LUA = r"""
local prefix, landmark_s = ARGV[1], ARGV[2]
local rate, ttl, period = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local forget_below = tonumber(ARGV[6])
local batch = cmsgpack.unpack(ARGV[7])
local read = cmsgpack.unpack(ARGV[8])
local landmark = tonumber(landmark_s)
local current_s = redis.call('GET', KEYS[1])
if (not current_s) or tonumber(current_s) < landmark then
  if current_s then
    -- The first batch of a new period: carry every numerator over, rescaled.
    local factor = math.exp(-rate * (landmark - tonumber(current_s)))
    for _, scope in ipairs({'p', 's', 'h'}) do
      local old = prefix .. ':' .. scope .. ':' .. current_s
      local new = prefix .. ':' .. scope .. ':' .. landmark_s
      if redis.call('EXISTS', old) == 1 then
        redis.call('ZUNIONSTORE', new, 2, new, old, 'WEIGHTS', 1, factor)
        redis.call('ZREMRANGEBYSCORE', new, '-inf', '(' .. forget_below)
      end
    end
  end
  redis.call('SET', KEYS[1], landmark_s)
  current_s = landmark_s
end
redis.call('PEXPIRE', KEYS[1], ttl)
local current = tonumber(current_s)
local scale = 1
if landmark < current then scale = math.exp(-rate * (current - landmark)) end

-- Per-user caps. Each ledger field occurs once in a batch: one HMGET and one HSET per
-- generation. An entry is a numerator against the start of its generation.
local groups, kinds, gens, by_gen = {}, {}, {}, {}
for _, e in ipairs(batch.products) do groups[#groups + 1] = e; kinds[#groups] = 'p' end
for _, e in ipairs(batch.hosts) do groups[#groups + 1] = e; kinds[#groups] = 'h' end
for i, e in ipairs(groups) do
  local gen = math.floor(e[6] / period)
  gens[i] = gen
  local list = by_gen[gen]
  if not list then list = {}; by_gen[gen] = list end
  list[#list + 1] = i
end
local function ledger(gen) return prefix .. ':cap:' .. string.format('%d', gen) end
local function read_fields(key, idx)
  local out = {}
  for first = 1, #idx, 500 do
    local fields = {}
    for j = first, math.min(first + 499, #idx) do fields[#fields + 1] = groups[idx[j]][1] end
    local part = redis.call('HMGET', key, unpack(fields))
    for j = 1, #part do out[first + j - 1] = part[j] end
  end
  return out
end
local stored = {}
local carry = math.exp(-rate * period)
for gen, idx in pairs(by_gen) do
  local found = read_fields(ledger(gen), idx)
  local missing = {}
  for j, i in ipairs(idx) do
    if found[j] then stored[i] = tonumber(found[j]) else missing[#missing + 1] = i end
  end
  if #missing > 0 then
    local older = read_fields(ledger(gen - 1), missing)
    for j, i in ipairs(missing) do
      if older[j] then stored[i] = tonumber(older[j]) * carry end
    end
  end
end

local sums = {p = {}, s = {}, h = {}}
local function add(scope, member, inc)
  if inc > 0 then
    local t = sums[scope]
    t[member] = (t[member] or 0) + inc
  end
end
for _, e in ipairs(batch.free) do add(e[1], e[2], e[3]) end
for gen, idx in pairs(by_gen) do
  local base = gen * period
  local values = {}
  for _, i in ipairs(idx) do
    local e = groups[i]
    local weight, cap = e[4], e[5]
    local numerator = stored[i] or 0
    local grow = math.exp(rate * (e[6] - base))
    local left = cap - numerator / grow
    local grant = 0
    if left > 0 then grant = math.min(weight, left) end
    values[#values + 1] = e[1]
    values[#values + 1] = numerator + grant * grow
    local share = 0
    if weight > 0 then share = grant / weight end
    add(kinds[i], e[2], e[3] * share)
    if kinds[i] == 'h' then
      for _, s in ipairs(e[7]) do add('s', s[1], s[2] * share) end
    end
  end
  local key = ledger(gen)
  for first = 1, #values, 1000 do
    redis.call('HSET', key, unpack(values, first, math.min(first + 999, #values)))
  end
  redis.call('PEXPIRE', key, math.floor(2 * period * 1000))
end
for scope, members in pairs(sums) do
  local key = prefix .. ':' .. scope .. ':' .. current_s
  local touched = false
  for member, inc in pairs(members) do
    redis.call('ZINCRBY', key, inc * scale, member)
    touched = true
  end
  if touched then redis.call('PEXPIRE', key, ttl) end
end

local out = {current_s}
for i, scope in ipairs({'p', 's', 'h'}) do
  local key = prefix .. ':' .. scope .. ':' .. current_s
  local members = read[i]
  local scores = {}
  -- unpack() is limited by the Lua stack: read in slices
  for first = 1, #members, 1000 do
    local part = redis.call('ZMSCORE', key, unpack(members, first, math.min(first + 999, #members)))
    for j = 1, #part do scores[first + j - 1] = part[j] end
  end
  out[i + 1] = scores
end
return out
"""

# Viewers whose cached state every node must drop: scored by a sequence number (not a clock,
# so nodes with skewed clocks never miss one); the newest FORGET_KEEP markers are kept.
_FORGET_LUA = r"""
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
return seq
"""

_msgpack = msgspec.msgpack.Encoder()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SharedTrending:
    """The Redis side of cluster-wide trending (docs/ranking.md, "Cluster")."""

    def __init__(self, url: str, index: TrendingIndex, *, prefix: str = "lc:{rank}") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)
        self._script = self._redis.register_script(_SYNC_LUA)
        self._forget = self._redis.register_script(_FORGET_LUA)
        self.prefix = prefix
        self.index = index
        c = index.config
        self._rate = index.decay.rate
        # A landmark's sorted sets outlive their period by one more: the next landmark's first
        # batch carries them over, whenever it comes.
        self._ttl_ms = int(2 * index.landmark_period * 1000)
        self._ledger_period = ledger_period(c.cap_memory_s, index.landmark_period)
        self._forget_below = c.forget_below

    async def close(self) -> None:
        await self._redis.aclose()

    async def catalog_changed(self) -> None:
        await self._redis.incr(f"{self.prefix}:catalog")

    async def forget_viewer(self, user: str) -> None:
        """Tell every node to drop what it caches of this viewer (erasure, settings)."""
        keys = [f"{self.prefix}:forgotten", f"{self.prefix}:forgotten_seq"]
        await self._forget(keys=keys, args=[user, FORGET_KEEP])

    async def forgotten(self, since: float) -> list[tuple[str, float]]:
        """Viewers forgotten after marker `since` (from an earlier answer), in order."""
        rows: list[Any] = await self._redis.zrangebyscore(
            f"{self.prefix}:forgotten", f"({since!r}", "+inf", withscores=True
        )
        return [(_text(user), float(at)) for user, at in rows]

    async def sync(
        self,
        deltas: list[Delta],
        live: tuple[list[str], list[str], list[str]],
        forgotten_since: float | None = None,
    ) -> tuple[float, dict[Scope, list[float | None]], int, list[tuple[str, float]]]:
        """Send `deltas`, read the store's numerators of `live` (products, sessions, hosts):
        returns the store's landmark, the numerators per scope, the catalog version, and the
        viewers forgotten after `forgotten_since`."""
        batch = batch_deltas(deltas, self._rate)
        landmark = batch.landmark if deltas else self.index.decay.landmark
        batch.landmark = landmark
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._script(
                keys=[f"{self.prefix}:landmark"],
                args=[
                    self.prefix,
                    repr(landmark),
                    repr(self._rate),
                    self._ttl_ms,
                    repr(self._ledger_period),
                    repr(self._forget_below),
                    _msgpack.encode(batch),
                    _msgpack.encode(live),
                ],
                client=pipe,
            )
            pipe.get(f"{self.prefix}:catalog")
            if forgotten_since is not None:
                pipe.zrangebyscore(
                    f"{self.prefix}:forgotten", f"({forgotten_since!r}", "+inf", withscores=True
                )
            (store_landmark, *scores), version, *forgot = await pipe.execute()
        scopes: tuple[Scope, ...] = ("product", "session", "host")
        values: dict[Scope, list[float | None]] = {
            scope: [None if v is None else float(v) for v in part]
            for scope, part in zip(scopes, scores, strict=True)
        }
        forgotten = [(_text(u), float(t)) for u, t in forgot[0]] if forgot else []
        return float(store_landmark), values, int(version or 0), forgotten


# ---------------------------------------------------------------- the service


class RankingService:
    def __init__(self, node: Node, *, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.pool: asyncpg.Pool = node.pool
        self._clock = clock
        self.index = TrendingIndex()
        now = clock()
        self.index.move_landmark(self.index.landmark_for(now))
        self.builder = ProfileBuilder()
        self._viewers: dict[str, _Viewer] = {}
        # Events of viewers whose stored profile is being read; one reader task per viewer.
        self._queued: dict[str, list[_ProfileEvent]] = {}
        self._products: dict[str, ProductInfo] = {}
        # Signals for sessions this node does not know yet, and sessions known not to be live.
        self._catalog_wait: dict[str, list[Signal]] = {}
        self._not_live: dict[str, float] = {}
        self._session_creator: dict[str, str] = {}
        self._exposure: dict[str, dict[str, int]] = {}
        self._exposure_cache: dict[str, CreatorStats] = {}
        self._exposure_at = -1.0
        self._subs: dict[Connection, _Subscriber] = {}
        self._trending_sent: TrendingSnapshot | None = None
        self._trending_at = 0.0
        self._feed_version = 0
        # Feeds are recomputed only when something they show may have changed: `generation`
        # grows when the live candidates or their normalised trends moved (see trends_moved).
        self._generation = 0
        self._generation_at = 0.0
        self._digest: TrendDigest | None = None
        self._landing = Landing(FEED_TREND_TOLERANCE, FEED_LANDING_MAX_S)
        self._candidates: list[Candidate] = []
        self._candidates_at = -1.0
        self._catalog_changed = True
        # Feeds of viewers without a profile: one per (bucket), for a generation and minute.
        self._shared_feeds: dict[int, tuple[int, int, list[FeedItem]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        # When the oldest event not yet reflected in a trending push arrived.
        self._unpushed_since: float | None = None
        self._counters = {k: node.metrics.ranking_events.labels(k) for k in SIGNAL_KINDS}
        # Counted here, added to the Prometheus counters once a tick (cheaper per signal).
        self._counts = dict.fromkeys(SIGNAL_KINDS, 0)
        # Cluster: increments not yet sent to Redis, and the catalog version last seen there.
        url = node.settings.redis_url
        self.shared = SharedTrending(url, self.index) if url else None
        self._unsynced: list[Delta] | None = [] if self.shared is not None else None
        self._catalog_version = -1
        self._forgotten_at = 0.0  # the last "forget" marker seen (caches start empty)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._load_live_sessions()
        self._tasks = [
            asyncio.create_task(self._push_loop(), name="ranking-push"),
            asyncio.create_task(self._save_loop(), name="ranking-profiles"),
        ]
        if self.shared is not None:
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="ranking-sync"))

    async def stop(self) -> None:
        self._flush_counts()
        for task in self._tasks:
            task.cancel()
        for task in list(self._background):
            task.cancel()
        if self.shared is not None:
            try:
                await asyncio.wait_for(self._sync_once(), 2.0)
            except Exception as exc:
                log.warning("last ranking sync failed: %s", exc)
            await self.shared.close()
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
        row = await self.pool.fetchrow(_SESSION_SQL + "WHERE s.id = $1", session_id)
        if row is None:
            return
        await self._apply_session(row)
        if self.shared is not None:
            # Every other node reloads the live catalog when this version moves.
            try:
                await self.shared.catalog_changed()
            except Exception as exc:
                log.warning("could not announce a catalog change: %s", exc)

    async def _apply_session(self, row: Any) -> None:
        self._session_creator[row["id"]] = row["creator"]
        self._catalog_changed = True
        if row["status"] != "live":
            self.index.end_session(row["id"])
            self._not_live[row["id"]] = self._clock()
            return
        self._not_live.pop(row["id"], None)
        products = [p for p in (row["showcase"] or []) if await self._product(p) is not None]
        info = SessionInfo(row["id"], row["creator"], row["category"], tuple(row["tags"]))
        self.index.start_session(info, products)

    async def _load_live_sessions(self) -> None:
        """Every live session from PostgreSQL; sessions live here but no longer there end."""
        rows = await self.pool.fetch(_SESSION_SQL + "WHERE s.status = 'live'")
        live = {row["id"] for row in rows}
        _, sessions, _ = self.index.live_members()
        for session_id in sessions:
            if session_id not in live:
                self.index.end_session(session_id)
                self._catalog_changed = True
        for row in rows:
            await self._apply_session(row)

    # ------------------------------------------------------------ signals

    def record(
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
        """One viewer event: into the trending index, and into the viewer's own profile.

        Never waits on the hot path: a viewer whose stored profile is not loaded yet (or a
        product not in the catalog cache) is handled by a background task.
        """
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
        if self.index.is_live("session", session_id) or not self._hold(signal, now):
            self.index.ingest(signal, self._unsynced)
        self._counts[kind] += 1
        if self._unpushed_since is None:
            self._unpushed_since = now
        event: _ProfileEvent = (kind, now, session_id, product_id, count, minutes)
        queued = self._queued.get(who.sub)
        if queued is not None:
            if len(queued) < PROFILE_QUEUE_MAX:
                queued.append(event)
            return
        viewer = self._viewers.get(who.sub)
        if viewer is None or (product_id is not None and product_id not in self._products):
            self._queued[who.sub] = [event]
            self._spawn(self._profile_later(who))
            return
        self._profile_event(who.sub, viewer, event)

    def _hold(self, signal: Signal, now: float) -> bool:
        """Keep a signal for a session this node does not know as live while the session is
        read from PostgreSQL (in a cluster it may have started through another node a moment
        ago); False when it is known not to be live (the signal is counted as it is)."""
        session_id = signal.session
        assert session_id is not None
        checked = self._not_live.get(session_id)
        if checked is not None and now - checked < NOT_LIVE_TTL_S:
            return False
        waiting = self._catalog_wait.get(session_id)
        if waiting is None:
            if len(self._not_live) > 10_000:
                self._not_live = {
                    k: v for k, v in self._not_live.items() if now - v < NOT_LIVE_TTL_S
                }
            waiting = self._catalog_wait[session_id] = []
            self._spawn(self._learn_session(session_id))
        if len(waiting) < CATALOG_QUEUE_MAX:
            waiting.append(signal)
        return True

    async def _learn_session(self, session_id: str) -> None:
        try:
            row = await self.pool.fetchrow(_SESSION_SQL + "WHERE s.id = $1", session_id)
            if row is not None:
                await self._apply_session(row)
            else:
                self._not_live[session_id] = self._clock()
        except Exception as exc:
            log.warning("could not read session %s: %s", session_id, exc)
        finally:
            for signal in self._catalog_wait.pop(session_id, []):
                self.index.ingest(signal, self._unsynced)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _profile_later(self, who: Identity) -> None:
        """Read what a viewer event needs from PostgreSQL, then fold the queued events in."""
        try:
            viewer = await self._viewer(who)
            while True:
                events = self._queued.get(who.sub)
                if not events:
                    break
                event = events[0]
                product_id = event[3]
                if product_id is not None and product_id not in self._products:
                    await self._product(product_id)
                events.pop(0)
                self._profile_event(who.sub, viewer, event)
        except Exception as exc:
            log.warning("profile update dropped: %s", exc, extra={"user": who.sub})
        finally:
            self._queued.pop(who.sub, None)

    def _profile_event(self, user: str, viewer: _Viewer, event: _ProfileEvent) -> None:
        kind, now, session_id, product_id, count, minutes = event
        product = self._products.get(product_id) if product_id else None
        room = self.node.hub.rooms.get(session_id)
        category = product.category if product else (room.category if room else None)
        tags = product.tags if product else tuple(room.tags if room else ())
        creator = product.creator if product else (room.creator if room else None)
        profile = self.builder.record(
            viewer.profile,
            user=user,
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
            viewer.revision += 1

    async def _viewer(self, who: Identity) -> _Viewer:
        viewer = self._viewers.get(who.sub)
        if viewer is not None:
            return viewer
        row = await self.pool.fetchrow(
            "SELECT u.minor, u.settings, p.profile FROM users u "
            "LEFT JOIN interest_profiles p ON p.user_id = u.id WHERE u.id = $1",
            who.sub,
        )
        viewer = self._viewers.get(who.sub)  # read meanwhile by another task
        if viewer is not None:
            return viewer
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

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(PROFILE_SAVE_EVERY_S)
            try:
                await self._save_profiles()
            except Exception:
                log.exception("saving interest profiles failed")

    async def _save_profiles(self, users: list[str] | None = None) -> None:
        """Write changed profiles (all, or these users'), a chunk per statement."""
        if self.shared is not None:
            # Never write back a profile erased (or opted out) through another node.
            try:
                self._forget_viewers(await self.shared.forgotten(self._forgotten_at))
            except Exception as exc:
                log.warning("could not read forgotten viewers from Redis: %s", exc)
        if users is None:
            dirty = [(u, v) for u, v in self._viewers.items() if v.dirty]
        else:
            dirty = [(u, v) for u in users if (v := self._viewers.get(u)) is not None and v.dirty]
        rows = []
        for user, viewer in dirty:
            viewer.dirty = False
            if viewer.profile is not None:
                rows.append((user, viewer.profile.to_dict()))
        for i in range(0, len(rows), PROFILE_SAVE_CHUNK):
            try:
                await self.pool.executemany(
                    "INSERT INTO interest_profiles (user_id, profile) VALUES ($1, $2) "
                    "ON CONFLICT (user_id) DO UPDATE SET profile = $2, updated_at = now()",
                    rows[i : i + PROFILE_SAVE_CHUNK],
                )
            except Exception:
                for user, _ in rows[i:]:  # written with the next save
                    if (unsaved := self._viewers.get(user)) is not None:
                        unsaved.dirty = True
                raise

    # ------------------------------------------------------------ privacy

    async def set_personalization(self, who: Identity, on: bool) -> None:
        await upsert_user(self.pool, who.sub, who.name, who.role, who.minor)
        await self.pool.execute(
            "UPDATE users SET settings = settings || jsonb_build_object('personalization', $2::bool) "
            "WHERE id = $1",
            who.sub,
            on,
        )
        await self._announce_forget(who.sub)  # other nodes read the new setting
        viewer = await self._viewer(who)
        viewer.personalization = on
        viewer.revision += 1

    async def erase_profile(self, who: Identity) -> bool:
        """Erase the profile from PostgreSQL and from every node's memory."""
        # Before the delete, so no node writes its copy back; after it, so none keeps a copy
        # read in between.
        await self._announce_forget(who.sub)
        self._queued.pop(who.sub, None)
        viewer = self._viewers.get(who.sub)
        if viewer is not None:
            viewer.profile = None
            viewer.dirty = False
            viewer.revision += 1
        result: str = await self.pool.execute(
            "DELETE FROM interest_profiles WHERE user_id = $1", who.sub
        )
        await self._announce_forget(who.sub)
        return not result.endswith(" 0")

    async def export(self, who: Identity) -> dict[str, Any]:
        await self._save_profiles([who.sub])
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

    async def feed(self, who: Identity) -> list[FeedItem]:
        """A viewer's feed (GET /api/feed; the push loop uses the same computation)."""
        viewer = None if who.is_guest else await self._viewer(who)
        now = self._clock()
        return self._feed_for(who.sub, viewer, now, self._fresh_candidates(now))

    def _fresh_candidates(self, now: float) -> list[Candidate]:
        """The live candidates, recomputed at most once a tick; moves `generation` when the
        feeds computed from the previous ones may be stale."""
        if now - self._candidates_at < TICK_S and not self._catalog_changed:
            return self._candidates
        candidates = self.index.candidates(now)
        digest = trend_digest(candidates)
        self._landing.look(digest, now)
        if (
            self._digest is None
            or self._catalog_changed
            or trends_moved(self._digest, digest, FEED_TREND_TOLERANCE)
            # Settle: a smaller move that came after the last recompute may still tip a push.
            or (
                now - self._generation_at >= FEED_SETTLE_S
                and trends_moved(self._digest, digest, FEED_SETTLE_TOLERANCE)
            )
        ):
            self._generation += 1
            self._generation_at = now
            self._digest = digest
            self._catalog_changed = False
        self._candidates = candidates
        self._candidates_at = now
        return candidates

    def _feed_for(
        self, sub: str, viewer: _Viewer | None, now: float, candidates: list[Candidate]
    ) -> list[FeedItem]:
        minute = int(now // 60)
        exposure = self._exposure_stats(now)
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
        if cached is not None and cached[0] == self._generation and cached[1] == minute:
            return cached[2]
        items = build_feed(
            candidates,
            now=now,
            rng=random.Random(f"shared{bucket}:{minute}"),
            profile=None,
            personalization=False,
            exposure=exposure,
        )
        self._shared_feeds[bucket] = (self._generation, minute, items)
        return items

    def shown(self, items: list[FeedItem], times: int = 1) -> None:
        """Count the impressions of a feed that was served (exposure for exploration)."""
        for item in items:
            creator = self._creator_of(item)
            if creator:
                counts = self._exposure.setdefault(creator, {"impressions": 0})
                counts["impressions"] += times

    def _creator_of(self, item: FeedItem) -> str | None:
        if item.kind == "session":
            return self._session_creator.get(item.id)
        info = self._products.get(item.id)
        return info.creator if info else None

    def _exposure_stats(self, now: float) -> dict[str, CreatorStats]:
        """Impressions per creator for the exploration bandit, rebuilt at most once a tick."""
        if now - self._exposure_at >= TICK_S or now < self._exposure_at:
            self._exposure_cache = {
                c: CreatorStats(creator=c, impressions=v.get("impressions", 0))
                for c, v in self._exposure.items()
            }
            self._exposure_at = now
        return self._exposure_cache

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

    def unsubscribe(self, conn: Connection) -> None:
        conn.feed_on = False
        self._subs.pop(conn, None)

    async def subscribe(self, conn: Connection, on: bool) -> None:
        if not on:
            self.unsubscribe(conn)
            return
        conn.feed_on = True
        viewer = None if conn.identity.is_guest else await self._viewer(conn.identity)
        now = self._clock()
        conn.send(self._trending_frame(self.index.snapshot(now)))
        items = self._feed_for(conn.identity.sub, viewer, now, self._fresh_candidates(now))
        sub = self._subs[conn] = _Subscriber(conn, items, now)
        sub.generation = self._generation
        sub.revision = viewer.revision if viewer is not None else 0
        self._feed_version += 1
        self.shown(items)
        conn.send(encode(FeedMsg(self._feed_version, items)))

    def _trending_frame(self, snapshot: TrendingSnapshot) -> bytes:
        return encode(
            TrendingMsg(
                products=[self._describe_product(t.id, t.score) for t in snapshot.products],
                hosts=[{"id": t.id, "score": t.score} for t in snapshot.hosts],
            )
        )

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self._flush_counts()
                await self.push_once()
            except Exception:
                log.exception("ranking push failed")

    def _flush_counts(self) -> None:
        for kind, n in self._counts.items():
            if n:
                self._counters[kind].inc(n)
                self._counts[kind] = 0

    async def push_once(self) -> None:
        now = self._clock()
        if not self._subs:
            return
        if now - self._trending_at >= TRENDING_EVERY_S:
            self._push_trending(now)
        self._fresh_candidates(now)
        if self._landing.waiting(now):
            return  # a burst is landing: push once it has
        due = [
            s
            for s in self._subs.values()
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
        if self._unpushed_since is not None:
            self.node.metrics.push_seconds.observe(now - self._unpushed_since)
            self._unpushed_since = None
        # One frame, framed once, written to every subscriber's socket.
        payload = protocol_frame([self._trending_frame(snapshot)])
        framed = ws_text_frame(payload)
        for sub in self._subs.values():
            if not sub.conn.closed and sub.conn.feed_on:
                sub.conn.write_shared(payload, framed)

    async def _push_feeds(self, now: float, due: list[_Subscriber]) -> None:
        candidates = self._fresh_candidates(now)
        generation = self._generation
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
            current = self._feed_for(conn.identity.sub, viewer, now, candidates)
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
            self.shown(items, times)

    # ------------------------------------------------------------ cluster

    def _forget_viewers(self, forgotten: list[tuple[str, float]]) -> None:
        """Drop the cached state of viewers another node changed (read again when needed)."""
        for user, at in forgotten:
            self._viewers.pop(user, None)
            self._queued.pop(user, None)
            self._forgotten_at = max(self._forgotten_at, at)

    async def _announce_forget(self, user: str) -> None:
        if self.shared is None:
            return
        try:
            await self.shared.forget_viewer(user)
        except Exception as exc:
            # Other nodes could keep (and write back) their copy: refuse rather than half-do.
            log.warning("could not announce a profile change to the cluster: %s", exc)
            raise Failure("unavailable", "the cluster cannot be told right now; retry") from None

    async def _sync_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            try:
                await self._sync_once()
                if failing:
                    log.info("ranking sync with Redis is back")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("ranking sync with Redis failed (retrying): %s", exc)
                failing = True

    async def _sync_once(self) -> None:
        """Send this node's increments to Redis; take the cluster's numerators of live items."""
        assert self.shared is not None and self._unsynced is not None
        batch, self._unsynced = self._unsynced, []
        live = self.index.live_members()
        try:
            landmark, values, version, forgotten = await self.shared.sync(
                batch, live, self._forgotten_at
            )
        except BaseException:
            # Sent again with the next sync (a batch the script applied before the connection
            # broke is counted twice: at least once, never lost while this node runs).
            self._unsynced = (batch + self._unsynced)[-UNSYNCED_MAX:]
            raise
        index = self.index
        # Increments made while the sync was in flight are not in the store's values yet.
        pending = unsynced(self._unsynced, landmark, index.decay.rate)
        members: dict[Scope, list[str]] = {"product": live[0], "session": live[1], "host": live[2]}
        index.absorb(landmark, store_numerators(members, values, pending))
        self._forget_viewers(forgotten)
        if version != self._catalog_version:
            # A node changed the live catalog (a session started, ended, or showed a product).
            await self._load_live_sessions()
            self._catalog_version = version
