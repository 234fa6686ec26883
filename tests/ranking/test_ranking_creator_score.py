"""Creator scores: every component shown, smoothed, and summing to the total."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecart.ranking.core.creator_score import (
    CreatorScore,
    CreatorScoreConfig,
    CreatorStats,
    conversion_posterior,
    creator_score,
    started_on_time,
)

COMPONENTS = ["conversion", "engagement", "punctuality", "fulfilment", "moderation"]


def by_name(score: CreatorScore) -> dict[str, float]:
    return {c.name: c.value for c in score.components}


def test_components_are_computed_as_documented() -> None:
    stats = CreatorStats(
        creator="A",
        viewers=950,
        buyers=48,
        viewer_minutes=4970.0,
        engagements=2470,
        sessions_scheduled=6,
        sessions_on_time=5,
        orders_reserved=90,
        orders_paid=81,
        messages=980,
        messages_flagged=29,
    )
    score = creator_score(stats)
    values = by_name(score)
    assert [c.name for c in score.components] == COMPONENTS
    # conversion: (48 + 1) / (950 + 50) = 0.049, scaled by the 0.10 target.
    assert values["conversion"] == pytest.approx(0.49)
    # engagement: r = (2470 + 0.5·30) / (4970 + 30) = 0.497; r / (r + 1).
    assert values["engagement"] == pytest.approx(0.497 / 1.497)
    assert values["punctuality"] == pytest.approx((5 + 4) / (6 + 5))
    assert values["fulfilment"] == pytest.approx((81 + 9) / (90 + 10))
    assert values["moderation"] == pytest.approx(1 - (29 + 1) / (980 + 20))
    weights = CreatorScoreConfig().weights()
    assert score.total == pytest.approx(sum(weights[k] * v for k, v in values.items()))
    conversion = score.components[0]
    assert conversion.inputs == {"buyers": 48.0, "viewers": 950.0}
    assert conversion.estimate == pytest.approx(0.049)
    assert conversion.contribution == pytest.approx(conversion.value * conversion.weight)


def test_small_samples_are_pulled_to_the_prior() -> None:
    lucky = by_name(creator_score(CreatorStats(creator="A", viewers=1, buyers=1)))
    assert lucky["conversion"] < 0.5  # one sale to one viewer is not a 100 % conversion
    empty = creator_score(CreatorStats(creator="N"))
    assert by_name(empty)["conversion"] == pytest.approx(0.02 / 0.10)
    big = by_name(creator_score(CreatorStats(creator="B", viewers=10_000, buyers=1_500)))
    assert big["conversion"] == pytest.approx(1.0)


def test_the_score_serialises_with_every_weight_and_input() -> None:
    score = creator_score(CreatorStats(creator="A", viewers=10, buyers=2, messages=5))
    data = msgspec.json.decode(msgspec.json.encode(score))
    assert data["creator"] == "A"
    assert [c["name"] for c in data["components"]] == COMPONENTS
    for c in data["components"]:
        assert set(c) == {
            "name",
            "value",
            "weight",
            "contribution",
            "estimate",
            "inputs",
            "prior",
            "formula",
        }
    assert math.isclose(sum(c["contribution"] for c in data["components"]), data["total"])
    assert math.isclose(sum(c["weight"] for c in data["components"]), 1.0)


counts = st.integers(min_value=-5, max_value=10_000)


@given(
    viewers=counts,
    buyers=counts,
    minutes=st.floats(min_value=-1.0, max_value=1e7, allow_nan=False),
    engagements=counts,
    scheduled=counts,
    on_time=counts,
    reserved=counts,
    paid=counts,
    messages=counts,
    flagged=counts,
)
def test_every_value_stays_in_range_whatever_the_counts(
    viewers: int,
    buyers: int,
    minutes: float,
    engagements: int,
    scheduled: int,
    on_time: int,
    reserved: int,
    paid: int,
    messages: int,
    flagged: int,
) -> None:
    score = creator_score(
        CreatorStats(
            creator="X",
            viewers=viewers,
            buyers=buyers,
            viewer_minutes=minutes,
            engagements=engagements,
            sessions_scheduled=scheduled,
            sessions_on_time=on_time,
            orders_reserved=reserved,
            orders_paid=paid,
            messages=messages,
            messages_flagged=flagged,
        )
    )
    assert 0.0 <= score.total <= 1.0
    for c in score.components:
        assert 0.0 <= c.value <= 1.0


def test_better_behaviour_scores_higher() -> None:
    base = CreatorStats(creator="A", viewers=500, buyers=10, orders_reserved=20, orders_paid=10)
    better = msgspec.structs.replace(base, buyers=40, orders_paid=20)
    assert creator_score(better).total > creator_score(base).total
    noisy = msgspec.structs.replace(base, messages=100, messages_flagged=60)
    assert creator_score(noisy).total < creator_score(base).total


def test_weights_must_sum_to_one_and_punctuality_rule() -> None:
    with pytest.raises(ValueError):
        CreatorScoreConfig(conversion_weight=0.9)
    assert started_on_time(1000.0, 1200.0)
    assert not started_on_time(1000.0, 1400.0)
    alpha, beta = conversion_posterior(CreatorStats(creator="A", viewers=100, buyers=5))
    assert (alpha, beta) == pytest.approx((6.0, 144.0))
