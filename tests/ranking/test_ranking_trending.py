"""Signals, per-user caps and the trending index."""

from __future__ import annotations

import math

import msgspec
import pytest

from livecart.ranking.core.decay import ForwardDecay
from livecart.ranking.core.signals import (
    DecayedCap,
    RankingConfig,
    Signal,
    SignalWeights,
    WindowCap,
)
from livecart.ranking.core.trending import (
    Delta,
    ProductInfo,
    SessionInfo,
    Trend,
    TrendingIndex,
    TrendingSnapshot,
    snapshot_changed,
    trending_changed,
)

T0 = 1_700_000_000.0


def market(config: RankingConfig | None = None) -> TrendingIndex:
    """Two live sessions (creators A and B) with two products each; C is not live."""
    index = TrendingIndex(config, landmark=T0)
    for pid, creator, category in [
        ("a1", "A", "shoes"),
        ("a2", "A", "bags"),
        ("b1", "B", "shoes"),
        ("b2", "B", "tech"),
        ("c1", "C", "tech"),
    ]:
        index.put_product(ProductInfo(pid, creator, category))
    index.start_session(SessionInfo("sa", "A", "shoes"), ["a1", "a2"])
    index.start_session(SessionInfo("sb", "B", "tech"), ["b1", "b2"])
    return index


def buzz(index: TrendingIndex, t: float, session: str, product: str | None, users: int = 5) -> None:
    """Real traction: several viewers click and add to cart (or join, for a session)."""
    for u in range(users):
        if product is None:
            index.ingest(Signal("join", f"fan{u}", t, session=session))
            index.ingest(Signal("watch", f"fan{u}", t, session=session, minutes=20.0))
        else:
            index.ingest(Signal("product_click", f"fan{u}", t, session=session, product=product))
            index.ingest(Signal("add_to_cart", f"fan{u}", t, session=session, product=product))


def test_a_few_accounts_alone_never_make_an_item_trend() -> None:
    config = RankingConfig()
    for accounts, listed in [(1, False), (2, False), (3, True)]:
        index = market(config)
        for i in range(600):
            for a in range(accounts):
                for kind in ("product_click", "add_to_cart", "share", "chat"):
                    index.ingest(Signal(kind, f"bot{a}", T0 + i, session="sa", product="a1"))
                index.ingest(Signal("like", f"bot{a}", T0 + i, session="sa", count=50))
        now = T0 + 600
        assert bool(index.trending_products(now)) is listed
        assert bool(index.trending_hosts(now)) is listed
        assert bool(index.trending_sessions(now)) is listed
        trend = {c.id: c.trend for c in index.candidates(now)}
        assert (trend["a1"] > 0.0) is listed and (trend["sa"] > 0.0) is listed


def test_one_account_cannot_make_a_product_trend() -> None:
    def run(config: RankingConfig) -> list[str]:
        index = market(config)
        # A bot hammers a2 for ten minutes; 12 real viewers click and buy b1 once each.
        for i in range(6000):
            index.ingest(Signal("add_to_cart", "bot", T0 + i * 0.1, session="sa", product="a2"))
            index.ingest(Signal("share", "bot", T0 + i * 0.1, session="sa", product="a2"))
        for u in range(12):
            t = T0 + 30.0 * u
            index.ingest(Signal("product_click", f"u{u}", t, session="sb", product="b1"))
            index.ingest(Signal("purchase", f"u{u}", t + 5, "sb", "b1", value_cents=2500))
        return [t.id for t in index.trending_products(T0 + 600.0)]

    assert run(RankingConfig())[0] == "b1"
    # The same stream without the cap puts the bot's product first: the cap is what stops it.
    assert run(RankingConfig(user_item_cap=math.inf, user_host_cap=math.inf))[0] == "a2"


def test_one_users_decayed_share_of_an_item_never_exceeds_the_cap() -> None:
    config = RankingConfig(user_item_cap=8.0, user_host_cap=12.0)
    index = market(config)
    for i in range(3000):
        t = T0 + i
        index.ingest(Signal("add_to_cart", "u", t, session="sa", product="a1"))
        assert index.product_score("a1", t) <= 8.0 * (1 + 1e-12)
        assert index.host_score("A", t) <= 12.0 * (1 + 1e-12)
        assert index.session_score("sa", t) <= 12.0 * (1 + 1e-12)
    # Held at the cap: what decays away is topped up again, never more.
    assert index.product_score("a1", T0 + 2999) == pytest.approx(8.0, rel=1e-3)
    # Another user is not affected by the first one's spending.
    assert index.ingest(Signal("add_to_cart", "v", T0 + 3000, "sa", "a1")) == pytest.approx(3.0)
    # After one half-life away the first user has room for half the cap again.
    later = T0 + 2999 + config.half_life_s
    assert index.ingest(Signal("add_to_cart", "u", later, "sa", "a1")) == pytest.approx(3.0)
    assert index.ingest(Signal("share", "u", later, "sa", "a1")) == pytest.approx(1.0, rel=1e-6)


def test_purchases_count_once_per_buyer_outside_the_engagement_cap() -> None:
    index = market(RankingConfig(user_item_cap=1.0, user_host_cap=1.0))
    index.ingest(Signal("add_to_cart", "u", T0, session="sa", product="a1"))
    bought = index.ingest(Signal("purchase", "u", T0 + 1, "sa", "a1", value_cents=999))
    weights = SignalWeights()
    assert bought == pytest.approx(weights.purchase + weights.purchase_value * math.log1p(9.99))
    assert index.ingest(Signal("purchase", "u", T0 + 2, "sa", "a1", value_cents=999)) == 0.0


def test_session_and_host_share_of_one_user_is_capped() -> None:
    index = market(RankingConfig(user_host_cap=10.0))
    for i in range(200):
        index.ingest(Signal("chat", "spammer", T0 + i, session="sa"))
    assert index.session_score("sa", T0 + 200) <= 10.0
    assert index.host_score("A", T0 + 200) <= 10.0
    assert index.session_score("sa", T0 + 200) > 5.0


def test_likes_are_capped_per_user_per_minute() -> None:
    config = RankingConfig(likes_per_minute=30.0, user_host_cap=math.inf)
    index = market(config)
    for i in range(20):
        index.ingest(Signal("like", "u", T0 + i, session="sa", count=50))
    like = config.weights.like
    # 1,000 likes sent within a minute, 30 counted (scores barely decay within 20 s).
    assert index.session_score("sa", T0 + 20) == pytest.approx(30 * like, rel=0.03)
    assert index.ingest(Signal("like", "u", T0 + 60, session="sa", count=5)) == 5 * like


def test_purchase_counts_once_per_distinct_buyer_plus_value() -> None:
    weights = SignalWeights()
    index = market(RankingConfig(user_item_cap=math.inf, user_host_cap=math.inf))
    value_term = weights.purchase_value * math.log1p(25.0)
    first = index.ingest(Signal("purchase", "u", T0, "sa", "a1", value_cents=2500))
    again = index.ingest(Signal("purchase", "u", T0 + 1, "sa", "a1", value_cents=2500))
    other = index.ingest(Signal("purchase", "v", T0 + 2, "sa", "a1", value_cents=2500))
    elsewhere = index.ingest(Signal("purchase", "u", T0 + 3, "sa", "a2", value_cents=2500))
    assert first == pytest.approx(weights.purchase + value_term)
    assert again == 0.0
    assert other == pytest.approx(first) and elsewhere == pytest.approx(first)


def test_product_event_counts_toward_session_and_creator() -> None:
    index = market()
    index.ingest(Signal("product_click", "u", T0, session="sb", product="b2"))
    w = SignalWeights().product_click
    assert index.product_score("b2", T0) == pytest.approx(w)
    assert index.session_score("sb", T0) == pytest.approx(w)
    assert index.host_score("B", T0) == pytest.approx(w)
    # Without a session the creator still gets it through the product.
    index.ingest(Signal("product_click", "v", T0, product="a1"))
    assert index.host_score("A", T0) == pytest.approx(w)
    assert index.session_score("sa", T0) == 0.0


def test_only_live_items_trend_and_ending_a_session_removes_them() -> None:
    index = market()
    buzz(index, T0, "sc", "c1")  # C is not live
    buzz(index, T0, "sa", "a1", users=6)
    buzz(index, T0, "sb", "b2", users=7)
    buzz(index, T0, "sa", None)
    now = T0 + 1
    assert {t.id for t in index.trending_products(now)} == {"a1", "b2"}
    assert [t.id for t in index.trending_hosts(now)] == ["A", "B"]
    assert [t.id for t in index.trending_products(now, category="tech")] == ["b2"]
    assert index.trending_products(now, category="toys") == []
    before = index.version
    index.end_session("sa")
    assert [t.id for t in index.trending_products(now)] == ["b2"]
    assert [t.id for t in index.trending_hosts(now)] == ["B"]
    assert not index.is_live("session", "sa") and index.is_live("product", "b2")
    assert index.version != before
    assert {c.id for c in index.candidates(now)} == {"sb", "b1", "b2"}
    # Back on stage, the product's decayed score is still there.
    index.start_session(SessionInfo("sa2", "A", "shoes"), ["a1"])
    assert "a1" in [t.id for t in index.trending_products(now)]


def test_product_shown_in_two_sessions_stays_live_until_both_end() -> None:
    index = market()
    index.start_session(SessionInfo("sb2", "B", "shoes"), ["b1"])
    index.end_session("sb")
    assert index.is_live("product", "b1") and not index.is_live("product", "b2")
    assert index.is_live("host", "B")
    index.end_session("sb2")
    assert not index.is_live("product", "b1") and not index.is_live("host", "B")


def test_deltas_mirror_the_numerators_across_landmark_moves() -> None:
    config = RankingConfig(half_life_s=10.0, max_exponent=5.0)
    index = market(config)
    mirror: dict[tuple[str, str], float] = {}
    landmark = index.decay.landmark
    for i in range(400):
        deltas: list[Delta] = []
        index.ingest(
            Signal("product_click", f"u{i}", T0 + i * 0.5, session="sa", product="a1"), deltas
        )
        if index.decay.landmark != landmark:
            # What a Redis mirror does: ZUNIONSTORE with WEIGHTS exp(−λ(L′−L)).
            factor = math.exp(-index.decay.rate * (index.decay.landmark - landmark))
            mirror = {k: v * factor for k, v in mirror.items()}
            landmark = index.decay.landmark
        for d in deltas:
            mirror[(d.scope, d.member)] = mirror.get((d.scope, d.member), 0.0) + d.increment
    assert index.landmark_moves >= 2
    now = T0 + 200.0
    decay = ForwardDecay(10.0, landmark=landmark)
    assert decay.value(mirror[("product", "a1")], now) == pytest.approx(
        index.product_score("a1", now), rel=1e-9
    )
    assert decay.value(mirror[("host", "A")], now) == pytest.approx(
        index.host_score("A", now), rel=1e-9
    )


def test_compaction_forgets_only_stale_items_that_are_not_live() -> None:
    index = market(RankingConfig(half_life_s=10.0))
    index.ingest(Signal("product_click", "u", T0, product="c1"))
    index.ingest(Signal("product_click", "u", T0, session="sa", product="a1"))
    assert index.compact(T0 + 1) == 0
    assert index.compact(T0 + 1000) == 2  # c1 and its non-live creator C
    assert index.product_score("c1", T0 + 1000) == 0.0
    assert index.product_score("a1", T0 + 1000) > 0.0


def test_bad_times_and_unknown_targets_are_ignored() -> None:
    index = market()
    assert index.ingest(Signal("join", "u", math.nan, session="sa")) == 0.0
    assert index.ingest(Signal("join", "u", T0, session="nope")) == 0.0
    assert index.ingest(Signal("watch", "u", T0, session="sa", minutes=-5)) == 0.0
    assert index.trending_hosts(T0) == []
    with pytest.raises(KeyError):
        index.show_product("sa", "unknown")


def test_snapshot_serialises_and_trending_hysteresis() -> None:
    index = market()
    buzz(index, T0, "sa", "a1", users=8)
    snap = index.snapshot(T0)
    assert snap.hosts[0].id == "A"
    assert msgspec.json.decode(msgspec.json.encode(snap))["products"][0]["id"] == "a1"
    assert snapshot_changed(None, snap)
    assert not snapshot_changed(snap, snap)
    shown = [Trend("x", 10.0), Trend("y", 9.9)]
    assert not trending_changed(shown, [Trend("y", 10.0), Trend("x", 9.95)], top_n=2)
    assert trending_changed(shown, [Trend("y", 12.0), Trend("x", 10.0)], top_n=2)
    assert snapshot_changed(snap, TrendingSnapshot(snap.version + 1, snap.products, []))
    assert snapshot_changed(snap, TrendingSnapshot(snap.version + 1, [], snap.hosts))


def test_decayed_cap_forgets_idle_keys_and_follows_landmark_moves() -> None:
    cap = DecayedCap(memory=100.0)
    assert cap.take("k", 5.0, 8.0, 10.0) == 5.0
    assert cap.take("k", 5.0, 8.0, 20.0) == 3.0
    assert cap.take("k", 5.0, 8.0, 150.0) == 0.0  # still remembered (previous generation)
    cap.rescale(0.5)  # the owner moved its landmark: the 8 used is now 4
    assert cap.take("k", 5.0, 8.0, 160.0) == 4.0
    assert cap.take("j", 1.0, 8.0, 160.0) == 1.0
    assert cap.take("k", 5.0, 8.0, 399.0) == 5.0  # idle for a whole generation: forgotten
    assert len(cap) == 1


def test_window_cap_drops_old_windows_wholesale() -> None:
    cap = WindowCap(5.0, 60.0)
    assert cap.take("k", 4.0, 0.0) == 4.0
    assert cap.take("k", 4.0, 30.0) == 1.0
    assert cap.take("j", 1.0, 30.0) == 1.0
    assert len(cap) == 2
    assert cap.take("k", 4.0, 61.0) == 4.0
    assert len(cap) == 1
    assert cap.take("k", 4.0, 10.0) == 1.0  # a late event is charged to the current window


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        RankingConfig(half_life_s=0.0)
    with pytest.raises(ValueError):
        RankingConfig(user_item_cap=0.0)
    with pytest.raises(ValueError):
        RankingConfig(user_host_cap=-1.0)
    with pytest.raises(ValueError):
        SignalWeights(like=-1.0)
    cfg = msgspec.convert({"half_life_s": 300, "weights": {"like": 0.2}}, RankingConfig)
    assert cfg.weights.like == 0.2 and cfg.half_life_s == 300.0
