"""Forward decay and the incremental top-k are exact against plain exponential decay."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.ranking.core.decay import ForwardDecay, plain_decay, rescale
from livecart.ranking.core.signals import RankingConfig, Signal, SignalWeights
from livecart.ranking.core.topk import TopK
from livecart.ranking.core.trending import ProductInfo, SessionInfo, TrendingIndex

REL = 1e-9


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0)


def assert_same_top(online: list[tuple[str, float]], offline: dict[str, float], k: int) -> None:
    """Same scores, and a set that no left-out item beats (exact ties may go either way)."""
    positive = {key: v for key, v in offline.items() if v > 0.0}
    assert len(online) == min(k, len(positive))
    for key, value in online:
        assert close(value, positive[key]), (key, value, positive[key])
    values = [v for _, v in online]
    for upper, lower in itertools.pairwise(values):
        assert lower <= upper * (1 + REL)
    if online:
        floor = min(positive[key] for key, _ in online)
        chosen = {key for key, _ in online}
        for key, value in positive.items():
            if key not in chosen:
                assert value <= floor * (1 + REL), (key, value, floor)


def test_value_is_plain_exponential_decay() -> None:
    decay = ForwardDecay(600.0, landmark=1000.0)
    numerator = decay.increment(3.0, 1000.0) + decay.increment(2.0, 1600.0)
    # Seen at t=2200: 3 after two half-lives plus 2 after one.
    assert close(decay.value(numerator, 2200.0), 3 * 0.25 + 2 * 0.5)


def test_move_landmark_preserves_values() -> None:
    decay = ForwardDecay(10.0, landmark=0.0)
    scores = {"a": decay.increment(1.0, 50.0), "b": decay.increment(4.0, 20.0)}
    before = {k: decay.value(v, 60.0) for k, v in scores.items()}
    rescale(scores, decay.move_landmark(55.0))
    assert decay.landmark == 55.0
    for key, value in before.items():
        assert close(decay.value(scores[key], 60.0), value)
    with pytest.raises(ValueError):
        decay.move_landmark(10.0)


def test_reading_far_from_the_landmark_does_not_overflow() -> None:
    decay = ForwardDecay(1.0, landmark=0.0, max_exponent=700.0)
    numerator = decay.increment(1.0, 900.0)  # ≈ 1e271
    # 1,000 half-lives later: exp(λ·(now − L)) is outside the double range, the value is not.
    assert close(decay.value(numerator, 1900.0), 2.0**-1000)
    assert decay.value(numerator, 5000.0) == 0.0
    with pytest.raises(OverflowError):
        decay.factor(5000.0)


def test_needs_move_past_the_exponent_limit() -> None:
    decay = ForwardDecay(600.0, landmark=0.0, max_exponent=300.0)
    limit = 300.0 / decay.rate
    assert not decay.needs_move(limit * 0.99)
    assert decay.needs_move(limit * 1.01)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        ForwardDecay(0.0)
    with pytest.raises(ValueError):
        ForwardDecay(10.0, max_exponent=800.0)


event = st.tuples(
    st.integers(min_value=0, max_value=11),  # item
    st.floats(min_value=0.01, max_value=1000.0),  # weight
    st.floats(min_value=0.0, max_value=400.0),  # time, in half-lives
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(event, min_size=1, max_size=120),
    moves=st.lists(st.integers(min_value=0, max_value=119), max_size=6),
    k=st.integers(min_value=1, max_value=8),
    half_life=st.floats(min_value=0.5, max_value=5000.0),
    max_exponent=st.sampled_from([2.0, 20.0, 300.0]),
    read_after=st.floats(min_value=0.0, max_value=30.0),
)
def test_forward_decay_top_k_equals_offline_recomputation(
    events: list[tuple[int, float, float]],
    moves: list[int],
    k: int,
    half_life: float,
    max_exponent: float,
    read_after: float,
) -> None:
    decay = ForwardDecay(half_life, landmark=0.0, max_exponent=max_exponent)
    scores: dict[str, float] = {}
    top = TopK(k, scores)
    for i in range(12):
        top.admit(f"i{i}")
    history: dict[str, list[tuple[float, float]]] = {}
    latest = 0.0
    for n, (item, weight, when) in enumerate(events):
        t = when * half_life
        latest = max(latest, t)
        if n in moves:
            # A forced move, to the newest time seen so far (older events arrive later too).
            rescale(scores, decay.move_landmark(max(decay.landmark, latest)))
            top.rebuild()
        if decay.needs_move(t):
            rescale(scores, decay.move_landmark(t))
            top.rebuild()
        key = f"i{item}"
        scores[key] = scores.get(key, 0.0) + decay.increment(weight, t)
        top.offer(key, scores[key])
        history.setdefault(key, []).append((t, weight))
    now = latest + read_after * half_life
    offline = {key: plain_decay(evs, now, half_life) for key, evs in history.items()}
    online = [(key, decay.value(n, now)) for key, n in top.top()]
    assert_same_top(online, offline, k)
    for key, numerator in scores.items():
        assert close(decay.value(numerator, now), offline[key])


weights = SignalWeights()
FIXED = {
    "join": weights.join,
    "chat": weights.chat,
    "product_click": weights.product_click,
    "add_to_cart": weights.add_to_cart,
    "share": weights.share,
}
engine_event = st.tuples(
    st.sampled_from(sorted(FIXED)),
    st.integers(min_value=0, max_value=3),  # session (= creator index)
    st.one_of(st.none(), st.integers(min_value=0, max_value=9)),  # product
    # Time in half-lives: past ~433 the landmark must move; past ~1,000 doubles underflow.
    st.floats(min_value=0.0, max_value=900.0),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(engine_event, min_size=1, max_size=150), k=st.integers(1, 6))
def test_trending_index_equals_offline_recomputation(
    events: list[tuple[str, int, int | None, float]], k: int
) -> None:
    half_life = 60.0
    config = RankingConfig(
        half_life_s=half_life, user_item_cap=math.inf, user_host_cap=math.inf, top_k=k
    )
    index = TrendingIndex(config)
    categories = ["a", "b", "c"]
    for i in range(10):
        index.put_product(ProductInfo(f"p{i}", f"cr{i % 4}", categories[i % 3]))
    for i in range(4):
        showcase = [f"p{j}" for j in range(10) if j % 4 == i]
        index.start_session(SessionInfo(f"s{i}", f"cr{i}", categories[i % 3]), showcase)

    product_events: dict[str, list[tuple[float, float]]] = {}
    session_events: dict[str, list[tuple[float, float]]] = {}
    host_events: dict[str, list[tuple[float, float]]] = {}
    latest = 0.0
    for n, (kind, s, item, when) in enumerate(events):
        t = when * half_life
        latest = max(latest, t)
        product = None if item is None else f"p{item}"
        index.ingest(Signal(kind, f"u{n}", t, session=f"s{s}", product=product))  # type: ignore[arg-type]
        w = FIXED[kind]
        if product is not None:
            product_events.setdefault(product, []).append((t, w))
        session_events.setdefault(f"s{s}", []).append((t, w))
        host_events.setdefault(f"cr{s}", []).append((t, w))
    if max(when for *_, when in events) > 300 / math.log(2) * 1.01:
        assert index.landmark_moves > 0
    now = latest + 5 * half_life

    def offline(history: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
        return {key: plain_decay(evs, now, half_life) for key, evs in history.items()}

    products = offline(product_events)
    assert_same_top([(t.id, t.score) for t in index.trending_products(now, limit=k)], products, k)
    for category in categories:
        in_category = {
            key: v for key, v in products.items() if categories[int(key[1:]) % 3] == category
        }
        listed = index.trending_products(now, limit=k, category=category)
        assert_same_top([(t.id, t.score) for t in listed], in_category, k)
    assert_same_top(
        [(t.id, t.score) for t in index.trending_hosts(now, limit=k)], offline(host_events), k
    )
    for key, value in offline(session_events).items():
        assert close(index.session_score(key, now), value)
