"""Per-node limiters (`chat.rules.limits`): rate limit, flooding, duplicates, slow mode,
each with the clock as a parameter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from livecart.chat.rules.limits import (
    DuplicateFilter,
    FloodDetector,
    FloodPolicy,
    RateDecision,
    RateLimiter,
    RatePolicy,
    SlowMode,
    duplicate_key,
    take_token,
)
from livecart.chat.rules.normalize import normalize

# --------------------------------------------------------------------------- rate limit


def test_rate_limiter_burst_then_refill() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=1.0, burst=5))
    assert all(limiter.check("u", 0.0).allowed for _ in range(5))
    assert limiter.check("u", 0.0) == RateDecision(False, 1000)
    assert limiter.check("u", 0.5) == RateDecision(False, 500)
    assert limiter.check("u", 1.0).allowed
    assert not limiter.check("u", 1.0).allowed
    assert limiter.check("other", 1.0).allowed


def test_rate_limiter_refills_up_to_burst_only() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=1.0, burst=5))
    limiter.check("u", 0.0)
    assert sum(limiter.check("u", 1000.0).allowed for _ in range(10)) == 5


def test_waiting_retry_after_is_enough() -> None:
    limiter: RateLimiter[str] = RateLimiter(RatePolicy(rate_per_s=2.0, burst=1))
    assert limiter.check("u", 10.0).allowed
    refused = limiter.check("u", 10.1)
    assert not refused.allowed
    assert refused.retry_after_ms == 400
    assert limiter.check("u", 10.1 + refused.retry_after_ms / 1000).allowed


def test_clock_going_backwards_mints_no_tokens() -> None:
    level, decision = take_token(0.0, 100.0, 50.0, RatePolicy())
    assert not decision.allowed
    assert level == 0.0


def test_rate_limiter_memory_is_bounded() -> None:
    limiter: RateLimiter[int] = RateLimiter(RatePolicy(), max_keys=10)
    for user in range(100):
        limiter.check(user, 0.0)
    assert len(limiter) == 10
    limiter.check(999, 5.0)  # every other bucket is full again by now, so forgotten
    assert len(limiter) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=80))
def test_rate_limiter_never_allows_more_than_burst_plus_refill(times: list[float]) -> None:
    policy = RatePolicy(rate_per_s=1.0, burst=5)
    limiter: RateLimiter[str] = RateLimiter(policy)
    times.sort()
    allowed = sum(limiter.check("u", t).allowed for t in times)
    assert allowed <= policy.burst + policy.rate_per_s * (times[-1] - times[0]) + 1e-9


# --------------------------------------------------------------------------- flooding


def test_flood_detector_trips_past_the_limit_within_the_window() -> None:
    flood: FloodDetector[str] = FloodDetector(FloodPolicy(max_frames=20, window_s=2.0))
    assert not any(flood.hit("c", i * 0.05) for i in range(20))
    assert flood.hit("c", 1.0)
    assert not flood.hit("other", 1.0)


def test_steady_traffic_is_not_flooding() -> None:
    flood: FloodDetector[str] = FloodDetector(FloodPolicy(max_frames=20, window_s=2.0))
    assert not any(flood.hit("c", i * 0.11) for i in range(200))


def test_flood_memory_is_bounded() -> None:
    flood: FloodDetector[int] = FloodDetector(FloodPolicy(), max_keys=5)
    for conn in range(50):
        flood.hit(conn, 0.0)
    assert len(flood) == 5
    flood.hit(1000, 10.0)
    assert len(flood) == 1


# --------------------------------------------------------------------------- duplicates


def test_duplicate_within_window_then_expires() -> None:
    dups: DuplicateFilter[str] = DuplicateFilter(30.0)
    dups.record("u", normalize("Is this real leather?"), 0.0)
    assert dups.seen("u", normalize("is this REAL leather??"), 29.9)
    assert not dups.seen("u", normalize("is this real leather?"), 30.0)
    assert not dups.seen("v", normalize("is this real leather?"), 1.0)
    assert not dups.seen("u", normalize("is this real suede?"), 1.0)


def test_duplicate_key_ignores_punctuation_but_not_emoji_only_text() -> None:
    assert duplicate_key(normalize("great!!!")) == duplicate_key(normalize("great"))
    assert duplicate_key(normalize("❤️")) != duplicate_key(normalize("🔥"))


def test_duplicate_memory_is_bounded_per_user_and_overall() -> None:
    dups: DuplicateFilter[int] = DuplicateFilter(30.0, per_key=3, max_keys=4)
    for i in range(4):
        dups.record(1, f"text {i}", 0.0)
    assert not dups.seen(1, "text 0", 1.0)
    assert dups.seen(1, "text 3", 1.0)
    for user in range(10):
        dups.record(user, "hi", 1.0)
    assert len(dups) == 4


# --------------------------------------------------------------------------- slow mode


def test_slow_mode_one_message_per_interval() -> None:
    slow: SlowMode[str] = SlowMode()
    assert slow.retry_after_ms("u", 10, 0.0) == 0
    slow.record("u", 0.0)
    assert slow.retry_after_ms("u", 10, 3.0) == 7000
    assert slow.retry_after_ms("u", 10, 10.0) == 0
    assert slow.retry_after_ms("u", 0, 3.0) == 0
    assert slow.retry_after_ms("u", 5, 3.0) == 2000  # shortened live


def test_slow_mode_caps_at_max_seconds() -> None:
    slow: SlowMode[str] = SlowMode(max_seconds=60)
    slow.record("u", 0.0)
    assert slow.retry_after_ms("u", 10_000, 30.0) == 30_000
