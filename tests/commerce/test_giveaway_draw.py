"""The giveaway draw (SPEC §13) is a pure function of the seed and the set of entrants: the
order (and repetition) of entrants is irrelevant, the same input gives the same winners, and
the result equals the definition computed by brute force. The verify script agrees."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.commerce import draw
from livecart.failure import Failure

users = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=64,
)
seeds = st.one_of(st.just(draw.new_seed()), st.text(min_size=0, max_size=80))


def _verify_script() -> ModuleType:
    path = Path(__file__).parents[2] / "scripts" / "verify_giveaway.py"
    spec = importlib.util.spec_from_file_location("verify_giveaway", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["verify_giveaway"] = module
    spec.loader.exec_module(module)
    return module


verify = _verify_script()


def brute_force(seed: str, entrants: list[str], winners: int) -> list[str]:
    """The definition read literally: try every set of `winners` distinct entrants and keep
    the one whose largest key is smallest (keys are distinct), listed by key."""
    distinct = sorted(set(entrants))
    k = min(winners, len(distinct))

    def key(u: str) -> str:
        return hashlib.sha256((seed + ":" + u).encode()).hexdigest()

    best = min(
        itertools.combinations(distinct, k),
        key=lambda combo: sorted(key(u) for u in combo),
    )
    return sorted(best, key=key)


@settings(max_examples=300, deadline=None)
@given(
    seed=seeds,
    entrants=st.lists(users, min_size=0, max_size=9),
    winners=st.integers(min_value=1, max_value=5),
    data=st.data(),
)
def test_draw_is_pure_and_equals_the_definition(
    seed: str, entrants: list[str], winners: int, data: st.DataObject
) -> None:
    result = draw.draw(seed, entrants, winners)
    assert result == brute_force(seed, entrants, winners)
    # Order and repetition of entrants do not matter.
    shuffled = data.draw(st.permutations(entrants + entrants[:2]))
    assert draw.draw(seed, shuffled, winners) == result
    # Deterministic, and the verifier computes the same.
    assert draw.draw(seed, list(entrants), winners) == result
    assert verify.recompute(seed, entrants, winners) == result
    assert len(result) == min(winners, len(set(entrants)))
    assert set(result) <= set(entrants)


@settings(max_examples=100, deadline=None)
@given(seed=seeds, entrants=st.lists(users, min_size=2, max_size=30, unique=True))
def test_more_winners_extend_the_list(seed: str, entrants: list[str]) -> None:
    """Raising `winners` only appends: the first winners never depend on the unit count."""
    ranked = draw.draw(seed, entrants, len(entrants))
    for n in range(1, len(entrants) + 1):
        assert draw.draw(seed, entrants, n) == ranked[:n]


def test_commitment_is_sha256_of_the_seed() -> None:
    seed = draw.new_seed()
    assert len(seed) == 64 and int(seed, 16) >= 0
    assert draw.commitment(seed) == hashlib.sha256(seed.encode()).hexdigest()
    assert draw.new_seed() != seed


@pytest.mark.parametrize(
    ("winners", "duration", "eligibility"),
    [(0, 60, "viewers"), (-1, 60, "viewers"), (draw.MAX_WINNERS + 1, 60, "viewers"),
     (1, 0, "viewers"), (1, draw.MAX_GIVEAWAY_S + 1, "viewers"), (1, 60, "everyone")],
)  # fmt: skip
def test_terms_out_of_range_are_bad_frame(winners: int, duration: int, eligibility: str) -> None:
    with pytest.raises(Failure) as refused:
        draw.validate_giveaway(
            draw.GiveawayTerms(winners=winners, duration_s=duration, eligibility=eligibility)
        )
    assert refused.value.code == "bad_frame"


def test_verifier_flags_tampering() -> None:
    seed = draw.new_seed()
    entrants = [f"u{i}" for i in range(20)]
    good = {
        "id": "gwy_x",
        "status": "ended",
        "winners": 3,
        "commitment": draw.commitment(seed),
        "seed": seed,
        "entrants": entrants,
        "drawn": draw.draw(seed, entrants, 3),
    }
    assert verify.check(good) == []
    other_seed = {**good, "seed": draw.new_seed()}
    assert any("commitment" in p for p in verify.check(other_seed))
    swapped = {**good, "drawn": [entrants[0], *good["drawn"][1:]]}
    if swapped["drawn"] != good["drawn"]:
        assert any("winners" in p for p in verify.check(swapped))
    fewer = {**good, "entrants": [u for u in entrants if u != good["drawn"][0]]}
    assert any("winners" in p for p in verify.check(fewer))
    assert verify.check({**good, "status": "open", "seed": None}) != []
