"""Trending shared by several nodes: deterministic landmarks, batches of deltas, the shared
store's semantics (`SharedStore`, what the Redis script does), and `absorb`."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.ranking.core.decay import plain_decay
from livecart.ranking.core.feed import Candidate, trend_digest, trends_moved
from livecart.ranking.core.shared import (
    SharedStore,
    batch_deltas,
    store_numerators,
    unsynced,
)
from livecart.ranking.core.signals import RankingConfig, Signal, SignalWeights
from livecart.ranking.core.trending import Delta, ProductInfo, Scope, SessionInfo, TrendingIndex

REL = 1e-9
HALF_LIFE = 60.0
LIVE: dict[Scope, list[str]] = {
    "product": [f"p{i}" for i in range(6)],
    "session": ["s0", "s1", "s2"],
    "host": ["cr0", "cr1", "cr2"],
}


def node(config: RankingConfig, landmark: float = 0.0) -> TrendingIndex:
    index = TrendingIndex(config, landmark=landmark)
    for i in range(6):
        index.put_product(ProductInfo(f"p{i}", f"cr{i % 3}", "ab"[i % 2]))
    for s in range(3):
        index.start_session(
            SessionInfo(f"s{s}", f"cr{s}", "a"), [f"p{i}" for i in range(6) if i % 3 == s]
        )
    return index


def sync(index: TrendingIndex, store: SharedStore, deltas: list[Delta]) -> None:
    """What the node's adapter does: send the batch, absorb the store's live numerators."""
    landmark = store.apply(batch_deltas(deltas, index.decay.rate)) if deltas else store.landmark
    if landmark is None:
        return
    values = {scope: store.read(scope, members) for scope, members in LIVE.items()}
    index.absorb(landmark, store_numerators(LIVE, values, {}))


def test_the_landmark_is_a_function_of_time_alone() -> None:
    config = RankingConfig(half_life_s=HALF_LIFE, landmark_period_s=600.0)
    early, late = node(config, landmark=0.0), node(config, landmark=1234.5)
    assert early.landmark_period == late.landmark_period == 600.0
    for index in (early, late):
        index.ingest(Signal("join", "u", 3_000.0, session="s0"))
    assert early.decay.landmark == late.decay.landmark == 3_000.0
    late.ingest(Signal("join", "u", 3_599.0, session="s0"))
    assert late.decay.landmark == 3_000.0  # within the period: no move
    late.ingest(Signal("join", "u", 3_600.0, session="s0"))
    assert late.decay.landmark == 3_600.0
    # A short half-life bounds the period: λ·P never exceeds max_exponent.
    assert RankingConfig(half_life_s=1.0, max_exponent=30.0).landmark_period == (
        30.0 / math.log(2.0)
    )


def test_deltas_carry_their_landmark_and_the_cap_they_are_under() -> None:
    index = node(RankingConfig(half_life_s=HALF_LIFE, landmark_period_s=600.0))
    deltas: list[Delta] = []
    index.ingest(Signal("add_to_cart", "u1", 700.0, session="s0", product="p0"), deltas)
    index.ingest(Signal("purchase", "u2", 700.0, session="s0", product="p0"), deltas)
    by = {(d.scope, d.user): d for d in deltas}
    cart = by[("product", "u1")]
    assert cart.landmark == 600.0 and cart.at == 700.0
    assert cart.budget == "p0" and cart.cap == 6.0
    assert math.isclose(cart.increment, 3.0 * math.exp(index.decay.rate * 100.0), rel_tol=REL)
    assert by[("session", "u1")].budget == by[("host", "u1")].budget == "cr0"
    assert by[("session", "u1")].cap == by[("host", "u1")].cap == 10.0
    assert ("product", None) in by  # purchases are under no per-user cap


node_event = st.tuples(
    st.integers(0, 2),  # which node receives it
    st.sampled_from(["join", "product_click", "add_to_cart", "share"]),
    st.integers(0, 2),  # session
    st.one_of(st.none(), st.integers(0, 1)),  # one of the session's two products
    st.floats(min_value=0.0, max_value=40.0),  # gap in seconds
)


@settings(max_examples=120, deadline=None)
@given(events=st.lists(node_event, min_size=1, max_size=120), sync_every=st.integers(1, 9))
def test_three_nodes_sharing_a_store_equal_an_offline_recomputation(
    events: list[tuple[int, str, int, int | None, float]], sync_every: int
) -> None:
    # Short periods so the landmark moves several times; caps off to compare with plain sums.
    config = RankingConfig(
        half_life_s=HALF_LIFE,
        landmark_period_s=200.0,
        user_item_cap=math.inf,
        user_host_cap=math.inf,
    )
    nodes = [node(config) for _ in range(3)]
    store = SharedStore(nodes[0].decay.rate, config.cap_memory_s)
    pending: list[list[Delta]] = [[], [], []]
    weights = SignalWeights()
    history: dict[tuple[str, str], list[tuple[float, float]]] = {}
    t = 10_000.0
    for n, (where, kind, s, p, gap) in enumerate(events):
        t += gap
        product = None if p is None else f"p{s + 3 * p}"
        nodes[where].ingest(
            Signal(kind, f"u{n}", t, session=f"s{s}", product=product),  # type: ignore[arg-type]
            pending[where],
        )
        w = float(getattr(weights, kind))
        for key in [("session", f"s{s}"), ("host", f"cr{s}")] + (
            [("product", product)] if product else []
        ):
            history.setdefault(key, []).append((t, w))
        if n % sync_every == 0:
            sync(nodes[where], store, pending[where])
            pending[where] = []
    for i in range(3):
        sync(nodes[i], store, pending[i])
    for i in range(3):  # one more round: each node now reads what the others sent last
        sync(nodes[i], store, [])
    now = t + 30.0
    for index in nodes:  # every node reads the same global scores
        for (scope, member), evs in history.items():
            expected = plain_decay(evs, now, HALF_LIFE)
            got = {
                "product": index.product_score,
                "session": index.session_score,
                "host": index.host_score,
            }[scope](member, now)
            assert math.isclose(got, expected, rel_tol=REL), (scope, member, got, expected)
    # The same lists everywhere (exact ties may be listed in either order).
    tops = [
        sorted((-round(t.score, 9), t.id) for t in index.trending_products(now, 10))
        for index in nodes
    ]
    assert tops[0] == tops[1] == tops[2]


def test_one_account_on_every_node_is_capped_once() -> None:
    config = RankingConfig(half_life_s=HALF_LIFE)
    nodes = [node(config, landmark=0.0) for _ in range(3)]
    store = SharedStore(nodes[0].decay.rate, config.cap_memory_s)
    for i, index in enumerate(nodes):
        deltas: list[Delta] = []
        for _ in range(3):  # 9 each: the node's own cap lets 6 through
            index.ingest(
                Signal("add_to_cart", "bot", 100.0 + i, session="s0", product="p0"), deltas
            )
        sync(index, store, deltas)
    sync(nodes[0], store, [])
    now = 103.0
    # Without the shared ledger: 3 nodes × 6 = 18; with it, the account's share stays at 6.
    assert nodes[0].product_score("p0", now) <= 6.0 * (1 + REL)
    assert nodes[0].host_score("cr0", now) <= 10.0 * (1 + REL)
    assert nodes[0].session_score("s0", now) <= nodes[0].host_score("cr0", now) * (1 + REL)
    assert nodes[0].trending_products(now) == []  # at most the noise floor
    # What has decayed may be topped up again, never more.
    deltas = []
    nodes[1].ingest(
        Signal("share", "bot", 100.0 + 4 * HALF_LIFE, session="s0", product="p0"), deltas
    )
    sync(nodes[1], store, deltas)
    assert nodes[1].product_score("p0", 100.0 + 4 * HALF_LIFE) <= 6.0 * (1 + REL)


def test_the_ledger_forgets_a_user_idle_for_a_whole_memory_period() -> None:
    store = SharedStore(math.log(2.0) / HALF_LIFE, ledger_period=100.0)
    assert store.take("k", 5.0, 8.0, 10.0) == 1.0
    assert math.isclose(store.take("k", 5.0, 8.0, 10.0), 3.0 / 5.0)
    # Two half-lives later the 8 used have decayed to 2: 5 more fit, then 1 of 5.
    assert math.isclose(store.take("k", 5.0, 8.0, 130.0), 1.0, rel_tol=REL)
    assert math.isclose(store.take("k", 5.0, 8.0, 130.0), 1.0 / 5.0, rel_tol=REL)
    assert store.take("j", 1.0, 8.0, 150.0) == 1.0
    assert store.take("k", 5.0, 8.0, 399.0) == 1.0  # idle for a whole generation: forgotten
    assert set(store.ledgers) <= {2, 3}


def test_batches_group_per_budget_and_convert_old_landmarks() -> None:
    rate = math.log(2.0) / HALF_LIFE
    deltas = [
        Delta("product", "p0", 2.0, 0.0, 10.0, "u", "p0", 6.0),
        Delta("product", "p0", 1.0, 60.0, 70.0, "u", "p0", 6.0),
        Delta("host", "cr0", 4.0, 60.0, 70.0, "u", "cr0", 10.0),
        Delta("session", "s0", 4.0, 60.0, 70.0, "u", "cr0", 10.0),
        Delta("product", "p1", 8.0, 60.0, 70.0, None, "p1", math.inf),
    ]
    batch = batch_deltas(deltas, rate)
    assert batch.landmark == 60.0
    ((field, product, inc, weight, cap, at),) = batch.products
    assert (field, product, cap, at) == ("p|p0|u", "p0", 6.0, 70.0)
    assert math.isclose(inc, 2.0 * 0.5 + 1.0, rel_tol=REL)  # one half-life older landmark
    assert math.isclose(weight, inc * math.exp(-rate * 10.0), rel_tol=REL)
    assert batch.hosts == [("h|cr0|u", "cr0", 4.0, batch.hosts[0][3], 10.0, 70.0, [("s0", 4.0)])]
    assert batch.free == [("p", "p1", 8.0)]
    assert unsynced(deltas, 60.0, rate)["product"]["p0"] == inc


def test_absorb_takes_the_store_values_and_keeps_the_lists_exact() -> None:
    index = node(RankingConfig(half_life_s=HALF_LIFE, top_k=3), landmark=0.0)
    values = {"p0": 500.0, "p1": 400.0, "p2": 300.0, "p3": 200.0, "p4": 100.0, "p5": 50.0}
    index.absorb(0.0, {"product": values, "host": {"cr0": 900.0}})
    assert [t.id for t in index.trending_products(0.0)] == ["p0", "p1", "p2"]
    assert [t.id for t in index.trending_products(0.0, category="b")] == ["p1", "p3", "p5"]
    index.absorb(0.0, {"product": {"p5": 600.0}})  # growth: offered
    assert [t.id for t in index.trending_products(0.0)] == ["p5", "p0", "p1"]
    index.absorb(0.0, {"product": {"p5": 1.0}})  # a shrink (store lost data): rebuilt
    assert [t.id for t in index.trending_products(0.0)] == ["p0", "p1", "p2"]
    # A store on a newer landmark moves this index's landmark (values keep their meaning).
    index.absorb(HALF_LIFE, {"product": {"p0": 1000.0}})
    assert index.decay.landmark == HALF_LIFE
    assert math.isclose(index.product_score("p1", HALF_LIFE), 400.0 * 0.5, rel_tol=REL)
    assert math.isclose(index.product_score("p0", HALF_LIFE), 1000.0, rel_tol=REL)
    assert [t.id for t in index.trending_hosts(HALF_LIFE)] == ["cr0"]


def test_feeds_are_stale_only_when_a_trend_moved_enough() -> None:
    def cands(a: float, b: float) -> list[Candidate]:
        return [
            Candidate("product", "a", "c", "x", (), a),
            Candidate("product", "b", "c", "x", (), b),
        ]

    base = trend_digest(cands(100.0, 50.0))
    assert not trends_moved(base, trend_digest(cands(100.0, 50.5)), 0.02)
    assert trends_moved(base, trend_digest(cands(100.0, 70.0)), 0.02)
    assert trends_moved(base, trend_digest(cands(100.0, 50.0)[:1]), 0.02)
