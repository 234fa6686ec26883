"""Forward exponential decay (Cormode, Shkapenyuk, Srivastava, Xu, ICDE 2009).

An event of weight w at time tᵢ contributes w·exp(λ(tᵢ−L)) to a stored *numerator*,
where L is a landmark time shared by every item of a store and λ = ln 2 / half-life.
The decayed score at time t is N·exp(−λ(t−L)) = Σ w·2^(−(t−tᵢ)/h), plain exponential
decay. Every item shares the divisor, so rankings compare numerators directly and no
periodic pass ever decays the items. Only when λ(t−L) grows large is the landmark
moved forward, multiplying every numerator by exp(−λ(L′−L)).
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

LN2 = math.log(2.0)
DEFAULT_HALF_LIFE_S = 600.0
# exp(300) ≈ 1.9e130 leaves ~178 decimal orders of headroom below the double limit (~1.8e308).
DEFAULT_MAX_EXPONENT = 300.0
# math.exp overflows just above 709.78; beyond this the value is computed through logarithms.
_SAFE_EXPONENT = 700.0


class ForwardDecay:
    """The clock-to-numerator arithmetic of one store; the landmark is its only state."""

    __slots__ = ("half_life", "landmark", "max_exponent", "rate")

    def __init__(
        self,
        half_life: float = DEFAULT_HALF_LIFE_S,
        *,
        landmark: float = 0.0,
        max_exponent: float = DEFAULT_MAX_EXPONENT,
    ) -> None:
        if not (half_life > 0.0 and math.isfinite(half_life)):
            raise ValueError(f"half_life must be a positive number of seconds, got {half_life!r}")
        if not (0.0 < max_exponent <= _SAFE_EXPONENT):
            raise ValueError(f"max_exponent must be in (0, {_SAFE_EXPONENT}], got {max_exponent!r}")
        if not math.isfinite(landmark):
            raise ValueError(f"landmark must be finite, got {landmark!r}")
        self.half_life = float(half_life)
        self.rate = LN2 / self.half_life
        self.landmark = float(landmark)
        self.max_exponent = float(max_exponent)

    def exponent(self, t: float) -> float:
        """λ(t−L): the log of the factor an event at `t` is multiplied by."""
        return self.rate * (t - self.landmark)

    def needs_move(self, t: float) -> bool:
        """True when an event at `t` would push numerators towards overflow."""
        return self.rate * (t - self.landmark) > self.max_exponent

    def factor(self, t: float) -> float:
        """exp(λ(t−L)); callers move the landmark first when `needs_move(t)`."""
        x = self.rate * (t - self.landmark)
        if x > _SAFE_EXPONENT:
            raise OverflowError(f"landmark {self.landmark} is too far behind t={t}; move it first")
        return math.exp(x)

    def increment(self, weight: float, t: float) -> float:
        """The numerator increment of an event (what `ZINCRBY key increment member` adds)."""
        return weight * self.factor(t)

    def value(self, numerator: float, now: float) -> float:
        """The decayed score at `now` of a stored numerator."""
        if numerator <= 0.0:
            return 0.0
        x = self.rate * (now - self.landmark)
        if -_SAFE_EXPONENT < x < _SAFE_EXPONENT:
            return numerator * math.exp(-x)
        # Far from the landmark exp(±x) leaves the double range; logs keep the ratio exact.
        return math.exp(math.log(numerator) - x)

    def move_landmark(self, new_landmark: float) -> float:
        """Set L′ and return exp(−λ(L′−L)), the factor every stored numerator must take."""
        if not (math.isfinite(new_landmark) and new_landmark >= self.landmark):
            raise ValueError(f"the landmark only moves forward, got {new_landmark!r}")
        shift = self.rate * (new_landmark - self.landmark)
        self.landmark = float(new_landmark)
        # Underflow to 0.0 only hits items more than ~1,000 half-lives old: their score is 0.
        return math.exp(-shift)

    def clone(self) -> ForwardDecay:
        return ForwardDecay(self.half_life, landmark=self.landmark, max_exponent=self.max_exponent)


def rescale(numerators: MutableMapping[str, float], factor: float) -> None:
    """Apply a landmark move to one store of numerators (in place)."""
    for key, numerator in numerators.items():
        numerators[key] = numerator * factor


def plain_decay(events: list[tuple[float, float]], now: float, half_life: float) -> float:
    """Σ w·2^(−(now−tᵢ)/h) computed directly: the offline reference for forward decay."""
    return math.fsum(w * 2.0 ** (-(now - t) / half_life) for t, w in events)
