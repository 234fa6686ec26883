"""Video time (SPEC §12): one viewer's reported delay in one session.

The smoothed target is the (lower) median of the viewer's last three reports: one glitchy
reading of the player's clock never moves it, a real change takes effect on its second
report, the first report at once. The delay in force follows the target but rises at most as
fast as wall time (1 s per s) and falls at once. A new viewer starts at 0 and climbs: its
picture is frozen meanwhile, which is what a player does while it buffers. Delivery per
delay bucket is `realtime.lag`.
"""

from __future__ import annotations

from collections import deque

REPORTS_KEPT = 3  # the smoothed target is the median of this many last reports


def judged_video_at(latest: float, pressed: float | None, allowance_s: float) -> float:
    """The video time a buy or bid is judged at (epoch seconds). `latest` is its arrival
    (when its bytes were read) minus the viewer's delay in force: what the server can vouch
    for. `pressed` is the picture time the frame says the viewer acted at (`video_at`), None
    when it says nothing. It is taken, but never more than `allowance_s` before `latest` (the
    trip from the player to the node, at most) nor after it: a client gains at most the
    allowance, and never an earlier time than its reported delay allows."""
    if pressed is None or pressed >= latest:
        return latest
    return max(pressed, latest - allowance_s)


def bucket_of(delay_ms: float, bucket_ms: int) -> int:
    """The bucket a delay rounds to (half up): with 250 ms buckets, 0-124 ms is bucket 0
    (no delay), 125-374 ms bucket 1 (250 ms), ..."""
    if bucket_ms <= 0:
        return 0
    return int(delay_ms / bucket_ms + 0.5)


class ViewerDelay:
    """One viewer's delay in one session; times are the event loop's clock (seconds)."""

    __slots__ = ("at", "force", "reports", "target")

    def __init__(self) -> None:
        self.reports: deque[int] = deque(maxlen=REPORTS_KEPT)
        self.target = 0  # ms, the smoothed report
        self.force = 0.0  # ms in force at `at`
        self.at = 0.0

    def in_force(self, now: float) -> float:
        """The delay in force (ms): the target, reached at no more than 1 s per s."""
        if self.force >= self.target:
            return float(self.target)
        return min(float(self.target), self.force + max(0.0, now - self.at) * 1000.0)

    def report(self, ms: int, now: float) -> None:
        """A new report (already validated to be within [0, max])."""
        self.force = self.in_force(now)
        self.at = now
        self.reports.append(ms)
        ordered = sorted(self.reports)
        self.target = ordered[(len(ordered) - 1) // 2]  # the lower median
        if self.target < self.force:
            self.force = float(self.target)  # falls at once

    def rising(self, now: float) -> bool:
        return self.in_force(now) < self.target
