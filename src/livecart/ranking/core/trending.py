"""Trending products (global and per category), sessions and hosts by forward-decayed score.

`TrendingIndex` is the whole trending state of one node: a catalog of what is live, one
numerator per product, session and creator against a shared landmark, and incrementally
maintained top-k lists. Adapters call `start_session`/`end_session`/`show_product` as the
catalog changes, `ingest` for every signal, and read `snapshot`/`candidates`.

It stays one module past ~500 lines: `TrendingIndex` is one state whose catalog, numerators
and top-k lists change together under one landmark; the Structs above it are its vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec

from livecart.ranking.core.decay import ForwardDecay
from livecart.ranking.core.feed import Candidate
from livecart.ranking.core.hysteresis import ranking_changed
from livecart.ranking.core.signals import RankingConfig, Signal, SignalPolicy, noise_floor
from livecart.ranking.core.topk import TopK

Scope = Literal["product", "session", "host"]


class ProductInfo(msgspec.Struct, frozen=True):
    id: str
    creator: str
    category: str
    tags: tuple[str, ...] = ()


class SessionInfo(msgspec.Struct, frozen=True):
    id: str
    creator: str
    category: str
    tags: tuple[str, ...] = ()


class Trend(msgspec.Struct, frozen=True, gc=False):
    id: str
    score: float


class TrendingSnapshot(msgspec.Struct, frozen=True):
    version: int
    products: list[Trend]
    hosts: list[Trend]


class Delta(msgspec.Struct, frozen=True, gc=False):
    """One numerator increment against `landmark`, for a shared store (a Redis mirror applies
    `ZINCRBY <scope key for landmark> increment member`).

    An increment under a per-user cap names the `user` and the `budget` it is charged to (the
    product, or the creator for a host and its sessions, which share one budget) with the cap
    in score units, so a store shared by several nodes can keep the cap across all of them.
    """

    scope: Scope
    member: str
    increment: float
    landmark: float = 0.0
    at: float = 0.0
    user: str | None = None
    """None when the increment is under no per-user cap (purchases: distinct buyers)."""
    budget: str = ""
    cap: float = math.inf


class TrendingIndex:
    """Forward-decayed trending state; pure (time comes from signals and `now` arguments)."""

    def __init__(self, config: RankingConfig | None = None, *, landmark: float = 0.0) -> None:
        self.config = config or RankingConfig()
        c = self.config
        self.decay = ForwardDecay(c.half_life_s, landmark=landmark, max_exponent=c.max_exponent)
        self.landmark_period = c.landmark_period
        self._next_landmark = self.landmark_for(landmark) + self.landmark_period
        self.policy = SignalPolicy(c)
        self._item_cap = c.user_item_cap
        self._host_cap = c.user_host_cap
        # Decayed scores at or below these could come from min_accounts accounts alone.
        self.product_floor = noise_floor(c.min_accounts, c.user_item_cap)
        self.host_floor = noise_floor(c.min_accounts, c.user_host_cap)
        self.landmark_moves = 0
        self._products: dict[str, ProductInfo] = {}
        self._sessions: dict[str, SessionInfo] = {}
        self._showcase: dict[str, list[str]] = {}
        self._live_products: dict[str, int] = {}
        self._live_hosts: dict[str, int] = {}
        self._product_scores: dict[str, float] = {}
        self._session_scores: dict[str, float] = {}
        self._host_scores: dict[str, float] = {}
        self._product_top = TopK(c.top_k, self._product_scores)
        self._category_tops: dict[str, TopK] = {}
        self._host_top = TopK(c.top_k, self._host_scores)

    # -- catalog -----------------------------------------------------------------------

    def put_product(self, info: ProductInfo) -> None:
        """Add or update a product's metadata (a live product changing category moves lists)."""
        old = self._products.get(info.id)
        self._products[info.id] = info
        if old is not None and old.category != info.category and info.id in self._live_products:
            self._category_top(old.category).expel(info.id)
            self._category_top(info.category).admit(info.id)

    def drop_product(self, product_id: str) -> None:
        """Forget a product that is not live (deleted or archived); live products stay."""
        if product_id in self._live_products:
            return
        self._products.pop(product_id, None)
        self._product_scores.pop(product_id, None)

    def start_session(self, info: SessionInfo, products: Iterable[str] = ()) -> None:
        """A session went live; its creator becomes a live host, its showcase live products."""
        if info.id in self._sessions:
            self._sessions[info.id] = info
        else:
            self._sessions[info.id] = info
            self._showcase[info.id] = []
            self._session_scores.setdefault(info.id, 0.0)
            count = self._live_hosts.get(info.creator, 0)
            self._live_hosts[info.creator] = count + 1
            if count == 0:
                self._host_top.admit(info.creator)
        for product in products:
            self.show_product(info.id, product)

    def show_product(self, session_id: str, product_id: str) -> None:
        """Add a product to a live session's showcase (it becomes a candidate)."""
        showcase = self._showcase.get(session_id)
        if showcase is None:
            raise KeyError(f"session {session_id!r} is not live")
        info = self._products.get(product_id)
        if info is None:
            raise KeyError(f"unknown product {product_id!r}: put_product first")
        if product_id in showcase:
            return
        showcase.append(product_id)
        count = self._live_products.get(product_id, 0)
        self._live_products[product_id] = count + 1
        if count == 0:
            self._product_top.admit(product_id)
            self._category_top(info.category).admit(product_id)

    def end_session(self, session_id: str) -> None:
        """The session ended: it, and products and hosts live only through it, leave every list."""
        info = self._sessions.pop(session_id, None)
        if info is None:
            return
        self._session_scores.pop(session_id, None)
        for product_id in self._showcase.pop(session_id, []):
            count = self._live_products[product_id] - 1
            if count:
                self._live_products[product_id] = count
                continue
            del self._live_products[product_id]
            self._product_top.expel(product_id)
            self._category_top(self._products[product_id].category).expel(product_id)
        count = self._live_hosts[info.creator] - 1
        if count:
            self._live_hosts[info.creator] = count
        else:
            del self._live_hosts[info.creator]
            self._host_top.expel(info.creator)

    def is_live(self, kind: str, item: str) -> bool:
        if kind == "session":
            return item in self._sessions
        if kind == "product":
            return item in self._live_products
        if kind == "host":
            return item in self._live_hosts
        return False

    def _category_top(self, category: str) -> TopK:
        top = self._category_tops.get(category)
        if top is None:
            top = self._category_tops[category] = TopK(self.config.top_k, self._product_scores)
        return top

    # -- events ------------------------------------------------------------------------

    def landmark_for(self, t: float) -> float:
        """floor(t / P)·P: the landmark for events at `t`, the same on every node."""
        period = self.landmark_period
        return math.floor(t / period) * period

    def ingest(self, signal: Signal, deltas: list[Delta] | None = None) -> float:
        """Count one signal; returns the weight its main target (product, else session) got.

        With `deltas`, every numerator increment is also appended there for mirroring, against
        the landmark it was computed with. The landmark only moves when time crosses a period
        boundary (`landmark_for`); a mirror then multiplies what it holds by exp(−λ(L′−L)).
        """
        t = signal.at
        if not math.isfinite(t):
            return 0.0
        policy = self.policy
        base = policy.weigh(signal)
        if base <= 0.0:
            return 0.0
        decay = self.decay
        if t >= self._next_landmark:
            self.move_landmark(self.landmark_for(t))
        landmark = decay.landmark
        factor = math.exp(decay.rate * (t - landmark))
        user = signal.user

        product_id = signal.product
        product = None if product_id is None else self._products.get(product_id)
        session_id = signal.session
        session = None if session_id is None else self._sessions.get(session_id)
        if session is not None:
            creator: str = session.creator
        elif product is not None:
            creator = product.creator
        else:
            return 0.0
        # Paying buyers are counted once each (see SignalPolicy); engagement is capped per user.
        capped = signal.kind != "purchase"
        capped_user = user if capped else None
        # One budget per (user, creator) serves the host and its sessions: a session's share
        # from a user is a subset of the host's share, so both stay under the same cap.
        inc_host = base * factor
        host_cap = policy.host_cap
        if capped and host_cap is not None:
            inc_host = host_cap.take((user, creator), inc_host, self._host_cap * factor, t)
        applied = 0.0

        if product is not None and product_id is not None:
            inc = base * factor
            product_cap = policy.product_cap
            if capped and product_cap is not None:
                inc = product_cap.take((user, product_id), inc, self._item_cap * factor, t)
            if inc > 0.0:
                applied = inc / factor
                scores = self._product_scores
                numerator = scores.get(product_id, 0.0) + inc
                scores[product_id] = numerator
                if product_id in self._live_products:
                    top = self._product_top
                    if numerator > top.floor:
                        top.offer(product_id, numerator)
                    top = self._category_tops[product.category]
                    if numerator > top.floor:
                        top.offer(product_id, numerator)
                if deltas is not None:
                    deltas.append(
                        Delta(
                            "product",
                            product_id,
                            inc,
                            landmark,
                            t,
                            capped_user,
                            product_id,
                            self._item_cap,
                        )
                    )

        if inc_host <= 0.0:
            return applied
        if session is not None and session_id is not None:
            if product is None:
                applied = inc_host / factor
            self._session_scores[session_id] += inc_host
            if deltas is not None:
                deltas.append(
                    Delta(
                        "session",
                        session_id,
                        inc_host,
                        landmark,
                        t,
                        capped_user,
                        creator,
                        self._host_cap,
                    )
                )
        scores = self._host_scores
        numerator = scores.get(creator, 0.0) + inc_host
        scores[creator] = numerator
        if creator in self._live_hosts:
            top = self._host_top
            if numerator > top.floor:
                top.offer(creator, numerator)
        if deltas is not None:
            deltas.append(
                Delta("host", creator, inc_host, landmark, t, capped_user, creator, self._host_cap)
            )
        return applied

    def move_landmark(self, landmark: float) -> None:
        """Rescale every numerator to a new landmark (automatic in `ingest`; once a period)."""
        factor = self.decay.move_landmark(landmark)
        self._next_landmark = self.landmark_for(landmark) + self.landmark_period
        self.landmark_moves += 1
        for scores in (self._product_scores, self._session_scores, self._host_scores):
            for key, numerator in scores.items():
                scores[key] = numerator * factor
        for cap in (self.policy.product_cap, self.policy.host_cap):
            if cap is not None:
                cap.rescale(factor)
        self._forget(self.config.forget_below * self.decay.factor(landmark))
        for top in (self._product_top, self._host_top, *self._category_tops.values()):
            top.rebuild()

    def live_members(self) -> tuple[list[str], list[str], list[str]]:
        """The live products, sessions and hosts: what a node reads back from a shared store."""
        return list(self._live_products), list(self._sessions), list(self._live_hosts)

    def absorb(self, landmark: float, numerators: Mapping[Scope, Mapping[str, float]]) -> None:
        """Take these members' numerators from a store shared by several nodes.

        The values replace this index's own (they already hold what this node sent, plus what
        every other node did). A store ahead of this index moves its landmark first; values
        against an older landmark are converted. Numerators normally only grow between two
        reads; when one shrank (the store lost data, a shared cap refused what this node had
        granted) the lists are rebuilt.
        """
        decay = self.decay
        if landmark > decay.landmark:
            self.move_landmark(landmark)
        convert = 1.0
        if landmark < decay.landmark:
            convert = math.exp(-decay.rate * (decay.landmark - landmark))
        shrank = False
        for scope, values in numerators.items():
            scores = self._scores_of(scope)
            for member, value in values.items():
                numerator = value * convert
                old = scores.get(member, 0.0)
                if numerator == old:
                    continue
                scores[member] = numerator
                if numerator < old:
                    shrank = True
                elif not shrank:
                    self._offer(scope, member, numerator)
        if shrank:
            for top in (self._product_top, self._host_top, *self._category_tops.values()):
                top.rebuild()

    def _scores_of(self, scope: Scope) -> dict[str, float]:
        if scope == "product":
            return self._product_scores
        if scope == "session":
            return self._session_scores
        return self._host_scores

    def _offer(self, scope: Scope, member: str, numerator: float) -> None:
        if scope == "product":
            if member in self._live_products:
                self._product_top.offer(member, numerator)
                self._category_tops[self._products[member].category].offer(member, numerator)
        elif scope == "host" and member in self._live_hosts:
            self._host_top.offer(member, numerator)

    def compact(self, now: float) -> int:
        """Drop items that are not live and whose score fell below `forget_below`; returns how many.

        Optional housekeeping for memory (the landmark move does it too); scores are unaffected.
        """
        if now >= self._next_landmark:
            before = len(self._product_scores) + len(self._host_scores)
            self.move_landmark(self.landmark_for(now))
            return before - len(self._product_scores) - len(self._host_scores)
        return self._forget(self.config.forget_below * self.decay.factor(now))

    def _forget(self, below_numerator: float) -> int:
        dropped = 0
        for scores, live in (
            (self._product_scores, self._live_products),
            (self._host_scores, self._live_hosts),
        ):
            stale = [k for k, v in scores.items() if v < below_numerator and k not in live]
            for key in stale:
                del scores[key]
            dropped += len(stale)
        return dropped

    # -- reads -------------------------------------------------------------------------

    def product_score(self, product_id: str, now: float) -> float:
        return self.decay.value(self._product_scores.get(product_id, 0.0), now)

    def session_score(self, session_id: str, now: float) -> float:
        return self.decay.value(self._session_scores.get(session_id, 0.0), now)

    def host_score(self, creator: str, now: float) -> float:
        return self.decay.value(self._host_scores.get(creator, 0.0), now)

    @property
    def version(self) -> int:
        """Changes whenever the global product top-k or the host top-k changes order."""
        return self._product_top.version + self._host_top.version

    def trending_products(
        self, now: float, limit: int = 10, category: str | None = None
    ) -> list[Trend]:
        """Live products with the highest decayed score above the noise floor (at most top_k)."""
        if category is None:
            top = self._product_top
        else:
            found = self._category_tops.get(category)
            if found is None:
                return []
            top = found
        return self._read(top, now, limit, self.product_floor)

    def trending_hosts(self, now: float, limit: int = 10) -> list[Trend]:
        """Live creators with the highest decayed host score above the noise floor."""
        return self._read(self._host_top, now, limit, self.host_floor)

    def trending_sessions(self, now: float, limit: int = 10) -> list[Trend]:
        """Live sessions by decayed score (sorted on read: there are few live sessions)."""
        best = sorted(self._session_scores.items(), key=lambda kv: -kv[1])
        out: list[Trend] = []
        for key, numerator in best[: max(limit, 0)]:
            value = self.decay.value(numerator, now)
            if value <= self.host_floor:
                break
            out.append(Trend(key, value))
        return out

    def snapshot(self, now: float, limit: int = 10) -> TrendingSnapshot:
        return TrendingSnapshot(
            version=self.version,
            products=self.trending_products(now, limit),
            hosts=self.trending_hosts(now, limit),
        )

    def _read(self, top: TopK, now: float, limit: int, floor: float) -> list[Trend]:
        value = self.decay.value
        out: list[Trend] = []
        for key, numerator in top.top(max(limit, 0)):
            score = value(numerator, now)
            if score <= floor:
                break  # the list is in score order: the rest is below the floor too
            out.append(Trend(key, score))
        return out

    def candidates(self, now: float) -> list[Candidate]:
        """Every live session and product with its trend: the decayed score in excess of the
        noise floor, so what one or two accounts alone produce gives no trend at all."""
        value = self.decay.value
        session_floor = self.host_floor
        product_floor = self.product_floor
        out = [
            Candidate(
                "session",
                s.id,
                s.creator,
                s.category,
                s.tags,
                max(0.0, value(self._session_scores.get(s.id, 0.0), now) - session_floor),
            )
            for s in self._sessions.values()
        ]
        for product_id in self._live_products:
            p = self._products[product_id]
            out.append(
                Candidate(
                    "product",
                    p.id,
                    p.creator,
                    p.category,
                    p.tags,
                    max(0.0, value(self._product_scores.get(p.id, 0.0), now) - product_floor),
                )
            )
        return out


def trending_changed(
    shown: Sequence[Trend], current: Sequence[Trend], *, top_n: int = 10, margin: float = 0.1
) -> bool:
    """Whether a trending list differs enough from the one last pushed (see `hysteresis`)."""
    return ranking_changed(
        [(t.id, t.score) for t in shown],
        [(t.id, t.score) for t in current],
        top_n=top_n,
        margin=margin,
    )


def snapshot_changed(
    shown: TrendingSnapshot | None,
    current: TrendingSnapshot,
    *,
    top_n: int = 10,
    margin: float = 0.1,
) -> bool:
    """Push `trending` when either the product or the host top changed significantly.

    The version is not a shortcut: an item can also leave a list by decaying below the floor.
    """
    if shown is None:
        return True
    return trending_changed(
        shown.products, current.products, top_n=top_n, margin=margin
    ) or trending_changed(shown.hosts, current.hosts, top_n=top_n, margin=margin)
