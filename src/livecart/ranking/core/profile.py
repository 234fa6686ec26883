"""Per-viewer interest profiles: decayed affinities over categories, tags and creators.

Built only from the viewer's own events, with forward decay against a per-profile landmark
(one landmark for all three maps, so their numerators compare directly). Each map keeps its
strongest entries only. Minors and viewers with personalization off never get a profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from livecart.ranking.core.decay import LN2, ForwardDecay
from livecart.ranking.core.signals import SignalKind, SignalWeights

PROFILE_FORMAT = 1


class ProfileRefused(Exception):
    """Raised when a profile would be created for a minor or a viewer who opted out."""


def may_profile(*, minor: bool, personalization: bool) -> bool:
    """The one rule: a profile exists only for adults who left personalization on."""
    return personalization and not minor


def _interest_weights() -> SignalWeights:
    return SignalWeights(
        join=1.0,
        watch_per_minute=0.1,
        like=0.05,
        chat=0.3,
        product_click=1.0,
        add_to_cart=2.0,
        share=1.5,
        purchase=4.0,
        purchase_value=0.0,
    )


class ProfileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    half_life_s: float = 3 * 86_400.0
    """Interests fade far slower than trends: a taste lasts days, a spike minutes."""
    max_categories: int = 32
    max_tags: int = 128
    max_creators: int = 64
    weights: SignalWeights = msgspec.field(default_factory=_interest_weights)
    max_likes_per_event: int = 10
    max_minutes_per_event: float = 60.0
    category_share: float = 0.5
    tag_share: float = 0.2
    creator_share: float = 0.3
    confidence_mass: float = 3.0
    """Decayed weight at which a profile is trusted half-way (about three joins)."""
    max_exponent: float = 300.0

    def __post_init__(self) -> None:
        if not (self.half_life_s > 0.0 and math.isfinite(self.half_life_s)):
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s!r}")
        if min(self.max_categories, self.max_tags, self.max_creators) < 1:
            raise ValueError("profile size limits must be >= 1")
        shares = (self.category_share, self.tag_share, self.creator_share)
        if min(shares) < 0.0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
            raise ValueError(f"category/tag/creator shares must be >= 0 and sum to 1, got {shares}")
        if not self.confidence_mass > 0.0:
            raise ValueError("confidence_mass must be > 0")
        if not 0.0 < self.max_exponent <= 700.0:
            raise ValueError("max_exponent must be in (0, 700]")


class InterestProfile(msgspec.Struct, kw_only=True):
    """Stored numerators against `landmark`; `to_dict`/`from_dict` give the JSON form."""

    user: str
    half_life_s: float
    landmark: float
    updated_at: float
    categories: dict[str, float] = msgspec.field(default_factory=dict)
    tags: dict[str, float] = msgspec.field(default_factory=dict)
    creators: dict[str, float] = msgspec.field(default_factory=dict)
    events: int = 0
    format: int = PROFILE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready builtins (what is stored in PostgreSQL)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InterestProfile:
        """Validate and load a stored profile; raises ValueError on anything malformed."""
        try:
            profile = msgspec.convert(dict(data), cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid interest profile: {exc}") from None
        if profile.format != PROFILE_FORMAT:
            raise ValueError(f"unsupported interest profile format {profile.format}")
        if not (profile.half_life_s > 0.0 and math.isfinite(profile.half_life_s)):
            raise ValueError("invalid interest profile: half_life_s must be > 0")
        if not (math.isfinite(profile.landmark) and math.isfinite(profile.updated_at)):
            raise ValueError("invalid interest profile: times must be finite")
        for name in ("categories", "tags", "creators"):
            for key, value in getattr(profile, name).items():
                if not (value >= 0.0 and math.isfinite(value)):
                    raise ValueError(f"invalid interest profile: {name}[{key!r}] = {value!r}")
        return profile

    def erase(self) -> None:
        """Forget everything learned (the stored row should be deleted as well)."""
        self.categories.clear()
        self.tags.clear()
        self.creators.clear()
        self.events = 0

    def is_empty(self) -> bool:
        return not (self.categories or self.tags or self.creators)

    def describe(self, now: float) -> dict[str, dict[str, float]]:
        """Decayed affinities at `now`, strongest first: the human-readable export."""
        decay = ForwardDecay(self.half_life_s, landmark=self.landmark)
        return {
            name: {
                key: decay.value(numerator, now)
                for key, numerator in sorted(
                    getattr(self, name).items(), key=lambda kv: (-kv[1], kv[0])
                )
            }
            for name in ("categories", "tags", "creators")
        }


def _trim(entries: dict[str, float], limit: int) -> None:
    """Keep the `limit` strongest entries (one over: drop the weakest, an O(limit) scan)."""
    while len(entries) > limit:
        del entries[min(entries, key=lambda k: (entries[k], k))]


class ProfileBuilder:
    """Creates and updates interest profiles; refuses minors and opted-out viewers."""

    __slots__ = ("_per_kind", "config", "rate")

    def __init__(self, config: ProfileConfig | None = None) -> None:
        self.config = config or ProfileConfig()
        self.rate = LN2 / self.config.half_life_s
        w = self.config.weights
        self._per_kind: dict[str, float] = {
            "join": w.join,
            "chat": w.chat,
            "product_click": w.product_click,
            "add_to_cart": w.add_to_cart,
            "share": w.share,
            "purchase": w.purchase,
        }

    def create(
        self, user: str, *, minor: bool, personalization: bool, now: float
    ) -> InterestProfile:
        """A new, empty profile; raises ProfileRefused for minors and opted-out viewers."""
        if minor:
            raise ProfileRefused("no interest profile is kept for minors")
        if not personalization:
            raise ProfileRefused("personalization is off for this viewer")
        return InterestProfile(
            user=user, half_life_s=self.config.half_life_s, landmark=now, updated_at=now
        )

    def weight(self, kind: SignalKind, *, count: int = 1, minutes: float = 0.0) -> float:
        """How much one event of the viewer's moves their interests."""
        c = self.config
        w = c.weights
        if kind == "like":
            return w.like * max(0, min(count, c.max_likes_per_event))
        if kind == "watch":
            return w.watch_per_minute * max(0.0, min(minutes, c.max_minutes_per_event))
        return self._per_kind.get(kind, 0.0)

    def record(
        self,
        profile: InterestProfile | None,
        *,
        user: str,
        minor: bool,
        personalization: bool,
        kind: SignalKind,
        now: float,
        category: str | None = None,
        tags: Sequence[str] = (),
        creator: str | None = None,
        count: int = 1,
        minutes: float = 0.0,
    ) -> InterestProfile | None:
        """Fold one of the viewer's own events into their profile.

        Returns None, and changes nothing, when the viewer may not be profiled; creates the
        profile on the first event otherwise. The caller stores the returned profile.
        """
        if not may_profile(minor=minor, personalization=personalization):
            return None
        if profile is None:
            profile = self.create(user, minor=minor, personalization=personalization, now=now)
        elif profile.user != user:
            raise ValueError(f"profile of {profile.user!r} given for {user!r}")
        weight = self.weight(kind, count=count, minutes=minutes)
        if weight <= 0.0 or not math.isfinite(now):
            return profile
        if profile.half_life_s != self.config.half_life_s:
            self._convert(profile, now)
        x = self.rate * (now - profile.landmark)
        if x > self.config.max_exponent:
            self._move_landmark(profile, now)
            x = 0.0
        increment = weight * math.exp(x)
        c = self.config
        if category:
            profile.categories[category] = profile.categories.get(category, 0.0) + increment
            _trim(profile.categories, c.max_categories)
        if creator:
            profile.creators[creator] = profile.creators.get(creator, 0.0) + increment
            _trim(profile.creators, c.max_creators)
        unique_tags = [t for t in dict.fromkeys(tags) if t] if tags else ()
        if unique_tags:
            # Split so an item with many tags does not outweigh one with a single tag.
            share = increment / len(unique_tags)
            for tag in unique_tags:
                profile.tags[tag] = profile.tags.get(tag, 0.0) + share
            _trim(profile.tags, c.max_tags)
        profile.events += 1
        profile.updated_at = max(profile.updated_at, now)
        return profile

    def _move_landmark(self, profile: InterestProfile, new_landmark: float) -> None:
        factor = math.exp(-self.rate * (new_landmark - profile.landmark))
        for entries in (profile.categories, profile.tags, profile.creators):
            for key, numerator in entries.items():
                entries[key] = numerator * factor
        profile.landmark = new_landmark

    def _convert(self, profile: InterestProfile, now: float) -> None:
        """Re-express a profile stored under another half-life as decayed values at `now`."""
        old = ForwardDecay(profile.half_life_s, landmark=profile.landmark)
        for entries in (profile.categories, profile.tags, profile.creators):
            for key, numerator in entries.items():
                entries[key] = old.value(numerator, now)
        profile.half_life_s = self.config.half_life_s
        profile.landmark = now

    def scorer(self, profile: InterestProfile | None, now: float) -> AffinityScorer:
        """A reusable affinity function for one viewer at `now` (maxima computed once)."""
        return AffinityScorer(profile, self.config, now)


class AffinityScorer:
    """affinity(item) in [0, 1]: the item's category, best tag and creator, each relative to
    the viewer's strongest entry; `confidence` in [0, 1) grows with the profile's decayed mass."""

    __slots__ = (
        "_cat_max",
        "_categories",
        "_creator_max",
        "_creators",
        "_tag_max",
        "_tags",
        "confidence",
        "config",
    )

    def __init__(self, profile: InterestProfile | None, config: ProfileConfig, now: float) -> None:
        self.config = config
        if profile is None or profile.is_empty():
            self._categories: dict[str, float] = {}
            self._tags: dict[str, float] = {}
            self._creators: dict[str, float] = {}
            self._cat_max = self._tag_max = self._creator_max = 1.0
            self.confidence = 0.0
            return
        self._categories = profile.categories
        self._tags = profile.tags
        self._creators = profile.creators
        self._cat_max = max(profile.categories.values(), default=0.0) or 1.0
        self._tag_max = max(profile.tags.values(), default=0.0) or 1.0
        self._creator_max = max(profile.creators.values(), default=0.0) or 1.0
        # Every event adds its full weight to the category map when it has one, else to creators.
        numerator = max(sum(profile.categories.values()), sum(profile.creators.values()))
        mass = ForwardDecay(profile.half_life_s, landmark=profile.landmark).value(numerator, now)
        self.confidence = mass / (mass + config.confidence_mass)

    def __call__(self, category: str | None, tags: Sequence[str], creator: str | None) -> float:
        c = self.config
        cat = self._categories.get(category, 0.0) / self._cat_max if category else 0.0
        cre = self._creators.get(creator, 0.0) / self._creator_max if creator else 0.0
        tag = 0.0
        if tags:
            entries = self._tags
            for t in tags:
                v = entries.get(t, 0.0)
                if v > tag:
                    tag = v
            tag /= self._tag_max
        return c.category_share * cat + c.tag_share * tag + c.creator_share * cre
