"""The incremental top-k agrees with a full sort, and its version tracks changes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.ranking.core.topk import TopK

op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 15), st.floats(0.001, 100.0)),
    st.tuples(st.just("admit"), st.integers(0, 15), st.just(0.0)),
    st.tuples(st.just("expel"), st.integers(0, 15), st.just(0.0)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=200), k=st.integers(1, 6))
def test_incremental_top_k_matches_sorting_everything(
    ops: list[tuple[str, int, float]], k: int
) -> None:
    scores: dict[str, float] = {}
    top = TopK(k, scores)
    for kind, item, weight in ops:
        key = f"i{item}"
        if kind == "add":
            scores[key] = scores.get(key, 0.0) + weight
            if key in top.members:
                top.offer(key, scores[key])
        elif kind == "admit":
            top.admit(key)
        else:
            top.expel(key)
        expected = sorted(
            (scores.get(m, 0.0) for m in top.members if scores.get(m, 0.0) > 0.0), reverse=True
        )[:k]
        assert [v for _, v in top.top()] == expected
        assert all(key in top.members for key in top.ids())


def test_version_changes_only_when_the_order_changes() -> None:
    scores: dict[str, float] = {}
    top = TopK(2, scores)
    for key in "abc":
        top.admit(key)
    v0 = top.version

    def add(key: str, amount: float) -> None:
        scores[key] = scores.get(key, 0.0) + amount
        top.offer(key, scores[key])

    add("a", 5.0)
    add("b", 3.0)
    assert top.ids() == ["a", "b"]
    v1 = top.version
    assert v1 > v0
    add("a", 1.0)  # a grows, order unchanged
    assert top.version == v1
    add("c", 1.0)  # below the floor: not in, nothing changes
    assert top.version == v1 and top.ids() == ["a", "b"]
    add("c", 3.0)  # 4 > 3: c replaces b
    assert top.ids() == ["a", "c"] and top.version > v1
    v2 = top.version
    add("c", 10.0)  # c overtakes a
    assert top.ids() == ["c", "a"] and top.version > v2


def test_expel_refills_from_the_eligible_items() -> None:
    scores = {"a": 5.0, "b": 4.0, "c": 3.0}
    top = TopK(2, scores)
    for key in "abc":
        top.admit(key)
    assert top.ids() == ["a", "b"]
    top.expel("a")
    assert top.ids() == ["b", "c"]
    top.expel("c")
    top.expel("b")
    assert top.ids() == [] and top.floor == 0.0
    top.admit("a")
    assert top.ids() == ["a"]
