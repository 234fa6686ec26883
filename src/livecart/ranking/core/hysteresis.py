"""When is a new ranking different enough to push? Near-ties must not flap.

The rule compares what was last *shown* with the newly computed list, using the new scores
of both (so a uniform decay of every score changes nothing):

- the shown keys are identical → no change;
- a shown key has vanished from the new list (ended, or fell far below) → change;
- there are more keys to show than before (a free slot filled) → change;
- a newcomer beats the weakest shown key by more than `margin` (relative) → change;
- two shown keys swapped places and the one now ahead leads by more than `margin` → change;
- otherwise the difference is a near-tie and the shown list stays.

Once a change is pushed it becomes the new reference, so undoing it takes another `margin`
in the other direction: that gap is the hysteresis.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def ranking_changed(
    shown: Sequence[tuple[K, float]],
    current: Sequence[tuple[K, float]],
    *,
    top_n: int,
    margin: float,
) -> bool:
    """True when `current[:top_n]` differs significantly from `shown[:top_n]`.

    Pass `current` longer than `top_n` (e.g. twice as long) so that a shown key that slipped
    just below the cut still has a score to be compared with.
    """
    if top_n < 1 or margin < 0.0:
        raise ValueError("top_n must be >= 1 and margin >= 0")
    shown_top = list(shown[:top_n])
    current_top = list(current[:top_n])
    if [key for key, _ in shown_top] == [key for key, _ in current_top]:
        return False
    score = {key: s for key, s in current}
    if any(key not in score for key, _ in shown_top):
        return True
    if len(current_top) > len(shown_top):
        return True
    lead = 1.0 + margin
    shown_keys = {key for key, _ in shown_top}
    weakest = min((score[key] for key in shown_keys), default=0.0)
    if any(key not in shown_keys and s > weakest * lead for key, s in current_top):
        return True
    new_rank = {key: i for i, (key, _) in enumerate(current_top)}
    ordered = [key for key, _ in shown_top if key in new_rank]
    for i, above in enumerate(ordered):
        for below in ordered[i + 1 :]:
            if new_rank[below] < new_rank[above] and score[below] > score[above] * lead:
                return True
    return False
