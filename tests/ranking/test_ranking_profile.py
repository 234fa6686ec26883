"""Interest profiles: consent rules, decay, bounded size, storage form and erasure."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.ranking.core.decay import plain_decay
from livecart.ranking.core.profile import (
    InterestProfile,
    ProfileBuilder,
    ProfileConfig,
    ProfileRefused,
    may_profile,
)

DAY = 86_400.0


def test_minors_and_opted_out_viewers_are_never_profiled() -> None:
    builder = ProfileBuilder()
    assert may_profile(minor=False, personalization=True)
    for minor, personalization in [(True, True), (False, False), (True, False)]:
        assert not may_profile(minor=minor, personalization=personalization)
        with pytest.raises(ProfileRefused):
            builder.create("u", minor=minor, personalization=personalization, now=0.0)
        created = builder.record(
            None,
            user="u",
            minor=minor,
            personalization=personalization,
            kind="purchase",
            now=0.0,
            category="shoes",
        )
        assert created is None


def test_opting_out_stops_updates_of_an_existing_profile() -> None:
    builder = ProfileBuilder()
    profile = builder.record(
        None, user="u", minor=False, personalization=True, kind="join", now=0.0, category="a"
    )
    assert profile is not None and profile.categories
    before = profile.to_dict()
    after = builder.record(
        profile, user="u", minor=False, personalization=False, kind="join", now=1.0, category="b"
    )
    assert after is None
    assert profile.to_dict() == before


def test_profile_of_another_user_is_refused() -> None:
    builder = ProfileBuilder()
    profile = builder.create("u", minor=False, personalization=True, now=0.0)
    with pytest.raises(ValueError):
        builder.record(profile, user="v", minor=False, personalization=True, kind="join", now=0.0)


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["join", "chat", "product_click", "add_to_cart", "purchase"]),
            st.sampled_from(["a", "b", "c"]),
            st.floats(0.0, 200.0),  # days
        ),
        min_size=1,
        max_size=60,
    )
)
def test_affinities_are_exactly_decayed(events: list[tuple[str, str, float]]) -> None:
    config = ProfileConfig(half_life_s=DAY, max_exponent=10.0)  # small: forces landmark moves
    builder = ProfileBuilder(config)
    profile = None
    history: dict[str, list[tuple[float, float]]] = {}
    for kind, category, day in sorted(events, key=lambda e: e[2]):
        t = day * DAY
        profile = builder.record(
            profile,
            user="u",
            minor=False,
            personalization=True,
            kind=kind,  # type: ignore[arg-type]
            now=t,
            category=category,
        )
        history.setdefault(category, []).append((t, builder.weight(kind)))  # type: ignore[arg-type]
    assert profile is not None
    now = max(day for *_, day in events) * DAY + DAY
    described = profile.describe(now)["categories"]
    for category, evs in history.items():
        assert math.isclose(described[category], plain_decay(evs, now, DAY), rel_tol=1e-9)


def test_size_is_bounded_to_the_strongest_entries() -> None:
    config = ProfileConfig(half_life_s=DAY, max_categories=3, max_tags=4, max_creators=2)
    builder = ProfileBuilder(config)
    profile = None
    strength: dict[str, float] = {}
    for i in range(20):
        # Interest i is fresh on day i; a weak old one (c0, one event) must not survive.
        for _ in range(3 if i else 1):
            profile = builder.record(
                profile,
                user="u",
                minor=False,
                personalization=True,
                kind="join",
                now=i * DAY,
                category=f"c{i}",
                tags=[f"t{i}", f"x{i}"],
                creator=f"cr{i}",
            )
        assert profile is not None
        assert len(profile.categories) <= 3 and len(profile.tags) <= 4
        assert len(profile.creators) <= 2
        strength[f"c{i}"] = (3 if i else 1) * 2.0 ** (i - 19)
    assert profile is not None
    strongest = sorted(strength, key=lambda c: -strength[c])[:3]
    assert sorted(profile.categories) == sorted(strongest) == ["c17", "c18", "c19"]
    assert set(profile.creators) == {"cr18", "cr19"}
    assert set(profile.tags) == {"t18", "x18", "t19", "x19"}


def test_round_trip_through_json_and_validation() -> None:
    builder = ProfileBuilder()
    profile = builder.record(
        None,
        user="u",
        minor=False,
        personalization=True,
        kind="purchase",
        now=100.0,
        category="shoes",
        tags=["red", "sale"],
        creator="A",
    )
    assert profile is not None
    stored = msgspec.json.encode(profile.to_dict())  # what goes into a JSONB column
    loaded = InterestProfile.from_dict(msgspec.json.decode(stored))
    assert loaded == profile
    bad = profile.to_dict() | {"categories": {"shoes": -1.0}}
    with pytest.raises(ValueError):
        InterestProfile.from_dict(bad)
    with pytest.raises(ValueError):
        InterestProfile.from_dict({"user": "u"})


def test_erase_forgets_everything() -> None:
    builder = ProfileBuilder()
    profile = builder.record(
        None,
        user="u",
        minor=False,
        personalization=True,
        kind="join",
        now=0.0,
        category="a",
        tags=["t"],
        creator="A",
    )
    assert profile is not None and not profile.is_empty()
    profile.erase()
    assert profile.is_empty() and profile.events == 0
    scorer = builder.scorer(profile, 0.0)
    assert scorer.confidence == 0.0 and scorer("a", ["t"], "A") == 0.0


def test_affinity_prefers_what_the_viewer_engaged_with() -> None:
    builder = ProfileBuilder()
    profile = None
    for _ in range(5):
        profile = builder.record(
            profile,
            user="u",
            minor=False,
            personalization=True,
            kind="purchase",
            now=0.0,
            category="shoes",
            tags=["running"],
            creator="A",
        )
    profile = builder.record(
        profile,
        user="u",
        minor=False,
        personalization=True,
        kind="join",
        now=0.0,
        category="tech",
        creator="B",
    )
    scorer = builder.scorer(profile, 0.0)
    assert scorer("shoes", ["running"], "A") == pytest.approx(1.0)
    assert 0.0 < scorer("tech", [], "B") < scorer("shoes", [], "Z")
    assert scorer("toys", [], "Z") == 0.0
    assert 0.8 < scorer.confidence < 1.0
    # Confidence fades as the interests decay.
    assert builder.scorer(profile, 30 * DAY).confidence < 0.05
