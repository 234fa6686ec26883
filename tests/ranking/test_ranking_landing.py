"""Feeds wait while a burst lands (trends still moving look after look), at most max_wait_s."""

from __future__ import annotations

from livecart.ranking.core import Landing

TOL = 0.02


def digest(**trends: float) -> dict[tuple[str, str], float]:
    return {("product", k): v for k, v in trends.items()}


def test_quiet_trends_never_wait() -> None:
    landing = Landing(TOL, 0.3)
    for i in range(5):
        landing.look(digest(a=1.0, b=0.5 + 0.001 * i), i * 0.1)
        assert not landing.waiting(i * 0.1)


def test_a_burst_waits_until_a_quiet_look() -> None:
    landing = Landing(TOL, 0.3)
    landing.look(digest(a=1.0, b=0.2), 0.0)
    landing.look(digest(a=1.0, b=0.6), 0.1)  # the burst arrives
    assert landing.waiting(0.1) and landing.waiting(0.15)
    landing.look(digest(a=1.0, b=0.61), 0.2)  # it has landed: a move below the tolerance
    assert not landing.waiting(0.2)


def test_a_burst_that_keeps_moving_waits_no_longer_than_max_wait() -> None:
    landing = Landing(TOL, 0.3)
    landing.look(digest(a=1.0, b=0.1), 0.0)
    for i in range(1, 6):
        landing.look(digest(a=1.0, b=0.1 + 0.1 * i), i * 0.1)
    assert landing.waiting(0.35), "moving since 0.1"
    assert not landing.waiting(0.4)


def test_a_new_candidate_counts_as_a_move_and_a_later_burst_waits_again() -> None:
    landing = Landing(TOL, 0.3)
    landing.look(digest(a=1.0), 0.0)
    landing.look(digest(a=1.0, c=0.3), 0.1)
    assert landing.waiting(0.1)
    landing.look(digest(a=1.0, c=0.3), 0.2)
    assert not landing.waiting(0.2)
    landing.look(digest(a=0.5, c=1.0), 5.0)
    assert landing.waiting(5.0) and not landing.waiting(5.31)
