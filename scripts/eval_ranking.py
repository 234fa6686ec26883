#!/usr/bin/env python3
"""Offline evaluation of the ranking core on a simulated live-shopping market.

The market has a hidden ground truth: creators with a latent quality, products with a
latent appeal and a category, viewers with latent interests over categories. Sessions
start and end on a schedule, flash deals make a product briefly very appealing, a bot
account spams one weak product, and new creators arrive during the run. Simulated viewers
open their feed, look down it (position bias), click, watch, like, chat and buy with
probabilities driven by the hidden truth (appeal × interest × quality), and every action
is fed back into the rankers: the viewers act on what each ranker shows them.

Every ranker runs on the same market with the same seed:
  random        live items in random order
  recent        newest sessions (and their products) first
  popular       all-time popularity: the signal weights summed with no decay and no caps
  popular+cap   the same with the per-user caps (an extra, fairer baseline)
  trending      the non-personal forward-decayed trend (livecart's trending lists)
  feed          livecart's personal feed (trend + affinity, exploration, diversity)

Usage: python scripts/eval_ranking.py [--seed N] [--viewers N] [--hours H]
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from livecart.ranking.core import (
    Candidate,
    CreatorStats,
    FeedConfig,
    InterestProfile,
    ProductInfo,
    ProfileBuilder,
    RankingConfig,
    SessionInfo,
    Signal,
    SignalWeights,
    TrendingIndex,
    build_feed,
)

T0 = 1_700_000_000.0
SHOWN = 10  # items a viewer sees (and the cut of HR@10 / NDCG@10)
DISCOUNT = [1.0 / math.log2(i + 2) for i in range(SHOWN)]
HALF_LIFE_MIN = RankingConfig().half_life_s / 60.0


# -- the hidden market ---------------------------------------------------------------------


@dataclass
class Creator:
    id: str
    category: str
    quality: float
    arrives: int  # minute; 0 for the creators present from the start
    new: bool


@dataclass
class Product:
    id: str
    creator: str
    category: str
    tags: tuple[str, ...]
    appeal: float
    price_cents: int


@dataclass
class Session:
    id: str
    creator: str
    category: str
    tags: tuple[str, ...]
    start: int
    end: int
    products: list[str]


@dataclass
class Viewer:
    id: str
    interest: dict[str, float]  # category -> [0, 1], 1 for the favourite
    minor: bool
    personalization: bool


@dataclass
class Flash:
    product: str
    session: str
    start: int
    end: int
    boost: float
    fans: list[Viewer] = field(default_factory=list)


@dataclass
class Market:
    categories: list[str]
    creators: dict[str, Creator]
    products: dict[str, Product]
    sessions: list[Session]
    flashes: list[Flash]
    viewers: list[Viewer]
    bot_product: str
    minutes: int


def make_market(seed: int, n_viewers: int, hours: float) -> Market:
    rng = random.Random(seed)
    minutes = int(hours * 60)
    categories = [f"cat{i}" for i in range(10)]
    tags_of = {c: [f"{c}-t{j}" for j in range(4)] for c in categories}
    creators: dict[str, Creator] = {}
    for i in range(50):
        creators[f"cr{i}"] = Creator(
            f"cr{i}", rng.choice(categories), rng.lognormvariate(0.0, 0.35), 0, False
        )
    for i in range(10):
        # New creators arrive between the first and the last hour.
        arrives = rng.randrange(60, max(61, minutes - 60))
        creators[f"new{i}"] = Creator(
            f"new{i}", rng.choice(categories), rng.lognormvariate(0.0, 0.35), arrives, True
        )
    products: dict[str, Product] = {}
    for c in creators.values():
        for j in range(6):
            category = c.category if rng.random() < 0.75 else rng.choice(categories)
            products[f"{c.id}-p{j}"] = Product(
                f"{c.id}-p{j}",
                c.id,
                category,
                tuple(rng.sample(tags_of[category], 2)),
                rng.lognormvariate(-0.2, 0.6),
                int(100 * math.exp(rng.uniform(math.log(5), math.log(150)))),
            )
    # The bot's target: a dud of an established creator, that no viewer really wants.
    bot_creator = creators["cr0"]
    bot_product = min(
        (p for p in products.values() if p.creator == bot_creator.id), key=lambda p: p.appeal
    ).id
    products[bot_product].appeal = 0.02

    sessions: list[Session] = []
    for c in creators.values():
        t = c.arrives if c.new else rng.randrange(0, 120)
        n = 0
        while t < minutes:
            # The bot's creator streams almost all the time, so the bot always has a target.
            length = rng.randrange(40, 100) if c.id != bot_creator.id else minutes
            own = [p for p in products.values() if p.creator == c.id]
            showcase = [p.id for p in rng.sample(own, 4)]
            if c.id == bot_creator.id and bot_product not in showcase:
                showcase[0] = bot_product
            sessions.append(
                Session(
                    f"{c.id}-s{n}",
                    c.id,
                    c.category,
                    tuple(rng.sample(tags_of[c.category], 2)),
                    t,
                    min(minutes, t + length),
                    showcase,
                )
            )
            n += 1
            t += length + rng.randrange(30, 150)

    flashes: list[Flash] = []
    for start in range(30, minutes - 20, 15):
        live = [s for s in sessions if s.start <= start < s.end - 15 and s.creator != "cr0"]
        if live:
            s = rng.choice(live)
            flashes.append(Flash(rng.choice(s.products), s.id, start, start + 15, 5.0))

    viewers = []
    for i in range(n_viewers):
        raw = [rng.gammavariate(0.3, 1.0) + 1e-9 for _ in categories]
        top = max(raw)
        viewers.append(
            Viewer(
                f"v{i}",
                {c: r / top for c, r in zip(categories, raw, strict=True)},
                minor=rng.random() < 0.05,
                personalization=rng.random() >= 0.10,
            )
        )
    for f in flashes:
        category = products[f.product].category
        fans = [v for v in viewers if v.interest[category] >= 0.5]
        f.fans = rng.sample(fans, min(25, len(fans)))
    return Market(categories, creators, products, sessions, flashes, viewers, bot_product, minutes)


# -- rankers ---------------------------------------------------------------------------------

POLICIES = ["random", "recent", "popular", "popular+cap", "trending", "feed"]
PLAIN = FeedConfig(size=SHOWN, explore_every=0, diversity=0.0, max_category_run=10**6)


def uncapped_weight(s: Signal, w: SignalWeights) -> float:
    """The signal weights with no cap, no like limit, no buyer dedupe: naive popularity."""
    if s.kind == "like":
        return w.like * s.count
    if s.kind == "watch":
        return w.watch_per_minute * s.minutes
    if s.kind == "purchase":
        return w.purchase + w.purchase_value * math.log1p(s.value_cents / 100)
    fixed: dict[str, float] = {
        "join": w.join,
        "chat": w.chat,
        "product_click": w.product_click,
        "add_to_cart": w.add_to_cart,
        "share": w.share,
    }
    return fixed[s.kind]


@dataclass
class Metrics:
    gmv_cents: int = 0
    purchases: int = 0
    requests: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    impressions: int = 0
    new_impressions: int = 0
    spike_minutes: list[float] = field(default_factory=list)
    spikes_missed: int = 0
    spikes_skipped: int = 0
    bot_best_board_rank: int | None = None
    bot_best_feed_rank: int | None = None


class Run:
    """One ranker on one copy of the market."""

    def __init__(
        self, market: Market, policy: str, seed: int, feed_config: FeedConfig | None = None
    ) -> None:
        self.m = market
        self.feed_config = feed_config or FeedConfig()
        self.policy = policy
        self.rng = random.Random(seed * 1_000 + 7)
        self.feed_rng = random.Random(seed * 1_000 + 11)
        self.weights = SignalWeights()
        self.index = TrendingIndex(landmark=T0)
        # All-time with caps: forward decay with a half-life far beyond the run.
        self.alltime_capped = TrendingIndex(RankingConfig(half_life_s=1e12), landmark=T0)
        self.popularity: dict[tuple[str, str], float] = {}
        self.builder = ProfileBuilder()
        self.profiles: dict[str, InterestProfile] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self.viewers_of: dict[str, set[str]] = {}
        self.buyers_of: dict[str, set[str]] = {}
        self.bought: set[tuple[str, str]] = set()
        self.watching: dict[str, tuple[str, int]] = {}
        self.live: dict[str, Session] = {}
        self.session_of_product: dict[str, str] = {}
        self.flash: dict[str, Flash] = {}
        self.pinned: dict[str, str] = {}
        self.metrics = Metrics()
        self.truth: dict[str, float] = {}
        self.truth_products: list[tuple[tuple[str, str], str, float]] = []
        self.truth_sessions: list[tuple[tuple[str, str], str, float, list[tuple[str, float]]]] = []
        for p in market.products.values():
            info = ProductInfo(p.id, p.creator, p.category, p.tags)
            self.index.put_product(info)
            self.alltime_capped.put_product(info)

    # events -----------------------------------------------------------------------------

    def emit(self, s: Signal, viewer: Viewer | None) -> None:
        # Each run feeds only the state its ranker reads (the trending index always: candidates).
        self.index.ingest(s)
        if self.policy == "popular+cap":
            self.alltime_capped.ingest(s)
        elif self.policy == "popular":
            w = uncapped_weight(s, self.weights)
            if s.product is not None:
                key = ("product", s.product)
                self.popularity[key] = self.popularity.get(key, 0.0) + w
            if s.session is not None:
                key = ("session", s.session)
                self.popularity[key] = self.popularity.get(key, 0.0) + w
        if viewer is None or self.policy != "feed":
            return
        if s.product is not None:
            p = self.m.products[s.product]
            category, tags, creator = p.category, p.tags, p.creator
        elif s.session is not None and s.session in self.live:
            session = self.live[s.session]
            category, tags, creator = session.category, session.tags, session.creator
        else:
            return
        profile = self.builder.record(
            self.profiles.get(viewer.id),
            user=viewer.id,
            minor=viewer.minor,
            personalization=viewer.personalization,
            kind=s.kind,
            now=s.at,
            category=category,
            tags=tags,
            creator=creator,
            count=s.count,
            minutes=s.minutes,
        )
        if profile is not None:
            self.profiles[viewer.id] = profile
        if s.kind == "join":
            self.viewers_of.setdefault(creator, set()).add(viewer.id)
        elif s.kind == "purchase":
            self.buyers_of.setdefault(creator, set()).add(viewer.id)

    # the hidden truth ---------------------------------------------------------------------

    def refresh_truth(self, minute: int) -> None:
        """Hidden appeal × quality (× a running flash deal) of every live product, this minute."""
        base: dict[str, float] = {}
        for session in self.live.values():
            quality = self.m.creators[session.creator].quality
            for pid in session.products:
                p = self.m.products[pid]
                flash = self.flash.get(pid)
                boost = (
                    flash.boost if flash is not None and flash.start <= minute < flash.end else 1.0
                )
                base[pid] = p.appeal * quality * boost
        self.truth = base
        products = self.m.products
        self.truth_products = [
            (("product", pid), products[pid].category, truth) for pid, truth in base.items()
        ]
        self.truth_sessions = [
            (
                ("session", s.id),
                s.category,
                self.m.creators[s.creator].quality,
                [(products[pid].category, base[pid]) for pid in s.products],
            )
            for s in self.live.values()
        ]

    def utility(self, viewer: Viewer, product_id: str, minute: int) -> float:
        return viewer.interest[self.m.products[product_id].category] * self.truth[product_id]

    def session_utility(self, viewer: Viewer, session: Session, minute: int) -> float:
        interest = viewer.interest
        products = self.m.products
        truth = self.truth
        best = max(interest[products[pid].category] * truth[pid] for pid in session.products)
        quality = self.m.creators[session.creator].quality
        return 0.5 * interest[session.category] * quality + 0.5 * best

    def consider_product(
        self, viewer: Viewer, product_id: str, session_id: str, t: float, minute: int, clicked: bool
    ) -> None:
        """A viewer looks at a product (clicked in the feed, or pinned in a watched session)."""
        u = self.utility(viewer, product_id, minute)
        rng = self.rng
        if not clicked and rng.random() >= min(0.6, 0.15 * u):
            return
        self.emit(
            Signal("product_click", viewer.id, t, session=session_id, product=product_id), viewer
        )
        if rng.random() >= min(0.8, 0.3 * u):
            return
        self.emit(
            Signal("add_to_cart", viewer.id, t + 1, session=session_id, product=product_id), viewer
        )
        if rng.random() >= 0.6 or (viewer.id, product_id) in self.bought or viewer.minor:
            return
        self.bought.add((viewer.id, product_id))
        price = self.m.products[product_id].price_cents
        self.emit(
            Signal(
                "purchase",
                viewer.id,
                t + 2,
                session=session_id,
                product=product_id,
                value_cents=price,
            ),
            viewer,
        )
        self.metrics.gmv_cents += price
        self.metrics.purchases += 1

    def watch(self, viewer: Viewer, session: Session, t: float, minute: int) -> None:
        u = self.session_utility(viewer, session, minute)
        self.emit(Signal("join", viewer.id, t, session=session.id), viewer)
        stay = 1 + int(self.rng.expovariate(1.0 / (2.0 + 10.0 * min(u, 2.0))))
        self.watching[viewer.id] = (session.id, minute + stay)

    # rankers -------------------------------------------------------------------------------

    def exposure(self) -> dict[str, CreatorStats]:
        return {
            c: CreatorStats(
                creator=c,
                impressions=self.stats.get(c, {}).get("impressions", 0),
                viewers=len(self.viewers_of.get(c, ())),
                buyers=len(self.buyers_of.get(c, ())),
            )
            for c in self.m.creators
        }

    def shown(
        self,
        viewer: Viewer,
        now: float,
        candidates: list[Candidate],
        exposure: dict[str, CreatorStats],
    ) -> list[tuple[str, str]]:
        policy = self.policy
        if policy == "random":
            picks = self.feed_rng.sample(candidates, min(SHOWN, len(candidates)))
            return [(c.kind, c.id) for c in picks]
        if policy == "recent":
            start = {s.id: s.start for s in self.live.values()}

            def started(c: Candidate) -> int:
                return start[c.id if c.kind == "session" else self.session_of_product[c.id]]

            ordered = sorted(candidates, key=lambda c: (-started(c), c.kind != "session", c.id))
            return [(c.kind, c.id) for c in ordered[:SHOWN]]
        if policy in ("popular", "popular+cap", "trending"):
            feed = build_feed(candidates, now=now, rng=self.feed_rng, config=PLAIN)
            return [(i.kind, i.id) for i in feed[:SHOWN]]
        feed = build_feed(
            candidates,
            now=now,
            rng=self.feed_rng,
            profile=self.profiles.get(viewer.id),
            personalization=viewer.personalization and not viewer.minor,
            exposure=exposure,
            config=self.feed_config,
        )
        return [(i.kind, i.id) for i in feed[:SHOWN]]

    def board(self, now: float) -> list[str]:
        """The run's global product ranking (for spike and bot metrics); empty if it has none."""
        if self.policy in ("trending", "feed"):
            return [t.id for t in self.index.trending_products(now, limit=50)]
        if self.policy == "popular+cap":
            return [t.id for t in self.alltime_capped.trending_products(now, limit=50)]
        if self.policy == "popular":
            live = [p for p in self.session_of_product]
            return sorted(live, key=lambda p: -self.popularity.get(("product", p), 0.0))[:50]
        return []

    def candidates(self, now: float) -> list[Candidate]:
        live = self.index.candidates(now)
        if self.policy == "popular":
            return [
                Candidate(
                    c.kind,
                    c.id,
                    c.creator,
                    c.category,
                    c.tags,
                    self.popularity.get((c.kind, c.id), 0.0),
                )
                for c in live
            ]
        if self.policy == "popular+cap":
            score = self.alltime_capped
            return [
                Candidate(
                    c.kind,
                    c.id,
                    c.creator,
                    c.category,
                    c.tags,
                    score.product_score(c.id, now)
                    if c.kind == "product"
                    else score.session_score(c.id, now),
                )
                for c in live
            ]
        return live

    # the loop ------------------------------------------------------------------------------

    def run(self, active_share: float) -> Metrics:
        m = self.m
        rng = self.rng
        starts: dict[int, list[Session]] = {}
        ends: dict[int, list[Session]] = {}
        for s in m.sessions:
            starts.setdefault(s.start, []).append(s)
            ends.setdefault(s.end, []).append(s)
        flash_at: dict[int, list[Flash]] = {}
        for f in m.flashes:
            flash_at.setdefault(f.start, []).append(f)
        pending: list[tuple[Flash, float]] = []  # spikes not yet in the top 10
        metrics = self.metrics
        new_creators = {c.id for c in m.creators.values() if c.new}

        for minute in range(m.minutes):
            now = T0 + 60.0 * minute
            for s in ends.get(minute, []):
                self.index.end_session(s.id)
                self.alltime_capped.end_session(s.id)
                self.live.pop(s.id, None)
                for pid in s.products:
                    if self.session_of_product.get(pid) == s.id:
                        del self.session_of_product[pid]
            for s in starts.get(minute, []):
                if s.end <= minute:
                    continue
                info = SessionInfo(s.id, s.creator, s.category, s.tags)
                self.index.start_session(info, s.products)
                self.alltime_capped.start_session(info, s.products)
                self.live[s.id] = s
                for pid in s.products:
                    self.session_of_product[pid] = s.id
            board = self.board(now)
            top10 = set(board[:10])
            for f in flash_at.get(minute, []):
                if f.session not in self.live:
                    continue
                self.flash[f.product] = f
                self.pinned[f.session] = f.product
                # The deal is announced to the creator's followers: fans join, whatever the ranker.
                for viewer in f.fans:
                    if viewer.id not in self.watching:
                        self.watching[viewer.id] = (f.session, minute + 1 + rng.randrange(5, 15))
                        self.emit(
                            Signal("join", viewer.id, now + rng.uniform(0, 120), session=f.session),
                            viewer,
                        )
                if not board:
                    continue
                if f.product in top10:
                    metrics.spikes_skipped += 1
                else:
                    pending.append((f, now))
            still: list[tuple[Flash, float]] = []
            for f, started in pending:
                if f.product in top10:
                    metrics.spike_minutes.append((now - started) / 60.0)
                elif minute >= f.end + 30 or self.session_of_product.get(f.product) != f.session:
                    metrics.spikes_missed += 1
                else:
                    still.append((f, started))
            pending = still
            self.refresh_truth(minute)
            if board and m.bot_product in board:
                rank = board.index(m.bot_product) + 1
                best = metrics.bot_best_board_rank
                metrics.bot_best_board_rank = rank if best is None else min(best, rank)

            # The bot: hundreds of actions a minute on its product while it is live.
            bot_session = self.session_of_product.get(m.bot_product)
            if bot_session is not None:
                for k in range(30):
                    t = now + 2.0 * k
                    self.emit(Signal("like", "bot", t, session=bot_session, count=50), None)
                    self.emit(Signal("product_click", "bot", t, bot_session, m.bot_product), None)
                    self.emit(Signal("add_to_cart", "bot", t, bot_session, m.bot_product), None)
                    self.emit(Signal("share", "bot", t, bot_session, m.bot_product), None)
                    self.emit(Signal("chat", "bot", t, session=bot_session), None)

            # Viewers in a session: watch time, likes, chat, and the pinned product.
            for vid, (sid, until) in list(self.watching.items()):
                session = self.live.get(sid)
                if session is None or minute >= until:
                    del self.watching[vid]
                    continue
                viewer = m.viewers[int(vid[1:])]
                t = now + rng.uniform(0, 50)
                self.emit(Signal("watch", vid, t, session=sid, minutes=1.0), viewer)
                if rng.random() < 0.3:
                    self.emit(Signal("like", vid, t, session=sid, count=rng.randint(1, 10)), viewer)
                if rng.random() < 0.1:
                    self.emit(Signal("chat", vid, t, session=sid), viewer)
                flash = self.flash.get(self.pinned.get(sid, ""))
                if flash is not None and flash.start <= minute < flash.end:
                    pinned = flash.product
                else:
                    pinned = rng.choice(session.products)
                self.consider_product(viewer, pinned, sid, t + 1, minute, clicked=False)

            candidates = self.candidates(now)
            if not candidates:
                continue
            by_key: dict[tuple[str, str], Candidate] = {(c.kind, c.id): c for c in candidates}
            exposure = self.exposure() if self.policy == "feed" else {}
            n_active = sum(1 for _ in range(len(m.viewers)) if rng.random() < active_share)
            for _ in range(n_active):
                viewer = m.viewers[rng.randrange(len(m.viewers))]
                if viewer.id in self.watching:
                    continue
                t = now + rng.uniform(0, 55)
                shown = self.shown(viewer, t, candidates, exposure)
                self.score_request(viewer, shown)
                for kind, item in shown:
                    creator = by_key[(kind, item)].creator
                    counts = self.stats.setdefault(creator, {})
                    counts["impressions"] = counts.get("impressions", 0) + 1
                    metrics.impressions += 1
                    if creator in new_creators:
                        metrics.new_impressions += 1
                for position, (_kind, item) in enumerate(shown):
                    if item == m.bot_product:
                        best = metrics.bot_best_feed_rank
                        metrics.bot_best_feed_rank = (
                            position + 1 if best is None else min(best, position + 1)
                        )
                # Cascade: look down the list, click at most one item.
                for position, (kind, item) in enumerate(shown):
                    if rng.random() >= 0.9**position:
                        break
                    if kind == "product":
                        u = self.utility(viewer, item, minute)
                        if rng.random() < min(0.9, 0.05 + 0.3 * u):
                            sid = self.session_of_product[item]
                            self.consider_product(viewer, item, sid, t, minute, clicked=True)
                            self.watch(viewer, self.live[sid], t + 3, minute)
                            break
                    else:
                        session = self.live[item]
                        u = self.session_utility(viewer, session, minute)
                        if rng.random() < min(0.9, 0.05 + 0.3 * u):
                            self.watch(viewer, session, t, minute)
                            break
        metrics.spikes_missed += len(pending)
        return metrics

    def score_request(self, viewer: Viewer, shown: list[tuple[str, str]]) -> None:
        """HR@10 and NDCG@10 of what was shown, against the hidden utilities of every live item."""
        interest = viewer.interest
        gains: dict[tuple[str, str], float] = {
            key: interest[category] * truth for key, category, truth in self.truth_products
        }
        for key, category, quality, products in self.truth_sessions:
            best_product = max(interest[c] * truth for c, truth in products)
            gains[key] = 0.5 * interest[category] * quality + 0.5 * best_product
        best = max(gains, key=gains.__getitem__)
        ideal = heapq.nlargest(SHOWN, gains.values())
        idcg = sum(g * DISCOUNT[i] for i, g in enumerate(ideal))
        dcg = sum(gains[key] * DISCOUNT[i] for i, key in enumerate(shown))
        metrics = self.metrics
        metrics.requests += 1
        metrics.hits += best in shown
        metrics.ndcg_sum += dcg / idcg if idcg > 0 else 0.0


# -- report ------------------------------------------------------------------------------------


def fmt_rank(rank: int | None) -> str:
    return "never" if rank is None else str(rank)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--viewers", type=int, default=3000)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument(
        "--active", type=float, default=0.05, help="share of viewers opening the feed each minute"
    )
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--feed", default="{}", help='FeedConfig overrides as JSON, e.g. {"explore_every": 0}'
    )
    args = parser.parse_args(argv)
    feed_config = msgspec.convert(msgspec.json.decode(args.feed), FeedConfig)
    market = make_market(args.seed, args.viewers, args.hours)
    print(
        f"market: seed {args.seed}, {len(market.viewers)} viewers, {len(market.creators)} creators "
        f"({sum(c.new for c in market.creators.values())} arriving), {len(market.products)} products, "
        f"{len(market.sessions)} sessions, {len(market.flashes)} flash deals, {market.minutes} min, "
        f"half-life {HALF_LIFE_MIN:g} min"
    )
    results: dict[str, Metrics] = {}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for policy in args.policies.split(","):
        started = time.perf_counter()
        results[policy] = Run(market, policy, args.seed, feed_config).run(args.active)
        print(f"  ran {policy:<12} in {time.perf_counter() - started:5.1f} s", file=sys.stderr)

    base = results.get("popular")
    header = (
        f"{'ranker':<12} {'GMV $':>10} {'×popular':>9} {'buys':>6} {'HR@10':>6} {'NDCG@10':>8} "
        f"{'spike→top10 (half-lives)':>26} {'new-creator share':>18} {'bot best rank':>16}"
    )
    print(header)
    print("-" * len(header))
    for policy, r in results.items():
        ratio = f"{r.gmv_cents / base.gmv_cents:.2f}" if base and base.gmv_cents else "-"
        if r.spike_minutes or r.spikes_missed:
            hl = [x / HALF_LIFE_MIN for x in r.spike_minutes]
            within = sum(1 for x in hl if x <= 1.0)
            total = len(hl) + r.spikes_missed
            spike = (
                f"med {statistics.median(hl) if hl else math.inf:.2f} max {max(hl, default=math.inf):.2f} "
                f"{within}/{total}"
            )
        else:
            spike = "n/a (no ranking)"
        bot = (
            f"{fmt_rank(r.bot_best_board_rank)}/{fmt_rank(r.bot_best_feed_rank)}"
            if policy not in ("random", "recent")
            else f"-/{fmt_rank(r.bot_best_feed_rank)}"
        )
        print(
            f"{policy:<12} {r.gmv_cents / 100:>10,.0f} {ratio:>9} {r.purchases:>6} "
            f"{r.hits / max(r.requests, 1):>6.3f} {r.ndcg_sum / max(r.requests, 1):>8.3f} "
            f"{spike:>26} {r.new_impressions / max(r.impressions, 1):>17.1%} {bot:>16}"
        )
    print(
        f"\n{len(results)} rankers in {time.perf_counter() - wall0:.0f} s "
        f"({time.process_time() - cpu0:.0f} s CPU)."
        " spike: a flash deal's product reaching the run's global top 10 (median, max, and how many"
        " of the deals did within one half-life); bot best rank: global list / any feed shown."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
