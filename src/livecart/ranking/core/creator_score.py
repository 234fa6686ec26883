"""Transparent creator scores: every component, its weight, inputs and prior, and nothing else.

Each component is a smoothed rate mapped to [0, 1]; the total is the weighted sum of the
components, with weights that sum to 1. `creator_score` returns a Struct that an API
serialises as is, so a creator sees exactly what the platform computes.
"""

from __future__ import annotations

import math

import msgspec


class CreatorStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts about one creator over the scoring period (the adapters keep them)."""

    creator: str
    impressions: int = 0
    """Times the creator's sessions or products were shown in a feed (exposure)."""
    viewers: int = 0
    """Distinct viewers who joined one of the creator's sessions."""
    buyers: int = 0
    """Distinct viewers who bought from the creator."""
    viewer_minutes: float = 0.0
    engagements: int = 0
    """Likes, chat messages, product clicks, add-to-carts and shares in the creator's sessions."""
    sessions_scheduled: int = 0
    sessions_on_time: int = 0
    """Scheduled sessions that went live within the grace period (see `started_on_time`)."""
    orders_reserved: int = 0
    """Orders that were reserved and have since been settled (paid, cancelled or expired)."""
    orders_paid: int = 0
    messages: int = 0
    messages_flagged: int = 0
    """Chat messages held for review or removed by a moderator."""


def started_on_time(scheduled_at: float, started_at: float, grace_s: float = 300.0) -> bool:
    """Punctuality of one session: live no later than `grace_s` after the announced time."""
    return started_at <= scheduled_at + grace_s


class CreatorScoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    conversion_weight: float = 0.30
    engagement_weight: float = 0.20
    punctuality_weight: float = 0.15
    fulfilment_weight: float = 0.25
    moderation_weight: float = 0.10
    conversion_prior_mean: float = 0.02
    conversion_prior_strength: float = 50.0
    """Pseudo-viewers: a creator with few viewers sits near the platform's typical rate."""
    conversion_target: float = 0.10
    """A smoothed conversion at or above this scores 1."""
    engagement_prior_rate: float = 0.5
    engagement_prior_minutes: float = 30.0
    engagement_half: float = 1.0
    """Engagements per viewer-minute that score 0.5 (value = r / (r + half))."""
    punctuality_prior_on_time: float = 4.0
    punctuality_prior_late: float = 1.0
    fulfilment_prior_paid: float = 9.0
    fulfilment_prior_unpaid: float = 1.0
    moderation_prior_flagged: float = 1.0
    moderation_prior_clean: float = 19.0

    def __post_init__(self) -> None:
        for name, value in msgspec.structs.asdict(self).items():
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not math.isclose(sum(self.weights().values()), 1.0, abs_tol=1e-9):
            raise ValueError(f"component weights must sum to 1, got {self.weights()}")
        if not 0.0 < self.conversion_prior_mean < 1.0 or self.conversion_target <= 0.0:
            raise ValueError("conversion_prior_mean must be in (0, 1) and conversion_target > 0")
        if self.engagement_half <= 0.0:
            raise ValueError("engagement_half must be > 0")

    def weights(self) -> dict[str, float]:
        return {
            "conversion": self.conversion_weight,
            "engagement": self.engagement_weight,
            "punctuality": self.punctuality_weight,
            "fulfilment": self.fulfilment_weight,
            "moderation": self.moderation_weight,
        }


class ScoreComponent(msgspec.Struct, frozen=True):
    name: str
    value: float
    """In [0, 1]."""
    weight: float
    contribution: float
    """value × weight; the total is the sum of the contributions."""
    estimate: float
    """The smoothed rate behind the value (e.g. the posterior mean conversion)."""
    inputs: dict[str, float]
    prior: dict[str, float]
    formula: str


class CreatorScore(msgspec.Struct, frozen=True):
    creator: str
    total: float
    components: list[ScoreComponent]
    formula: str = "total = Σ weight × value over the components; weights sum to 1"


def _ratio(numerator: float, denominator: float, empty: float) -> float:
    return numerator / denominator if denominator > 0.0 else empty


def _beta_mean(
    successes: float, trials: float, prior_yes: float, prior_no: float, empty: float
) -> float:
    """Posterior mean of a rate under a Beta(prior_yes, prior_no) prior; `empty` with no data."""
    return _ratio(successes + prior_yes, trials + prior_yes + prior_no, empty)


def creator_score(stats: CreatorStats, config: CreatorScoreConfig | None = None) -> CreatorScore:
    """Compute the score and its full explanation from counts (pure)."""
    c = config or CreatorScoreConfig()
    # Counts are clamped so inconsistent inputs (e.g. more buyers than viewers) cannot leave [0, 1].
    viewers = max(stats.viewers, 0)
    buyers = min(max(stats.buyers, 0), viewers)
    minutes = max(stats.viewer_minutes, 0.0) if math.isfinite(stats.viewer_minutes) else 0.0
    engagements = max(stats.engagements, 0)
    scheduled = max(stats.sessions_scheduled, 0)
    on_time = min(max(stats.sessions_on_time, 0), scheduled)
    reserved = max(stats.orders_reserved, 0)
    paid = min(max(stats.orders_paid, 0), reserved)
    messages = max(stats.messages, 0)
    flagged = min(max(stats.messages_flagged, 0), messages)

    prior_buy = c.conversion_prior_mean * c.conversion_prior_strength
    prior_skip = c.conversion_prior_strength - prior_buy
    conversion = _beta_mean(buyers, viewers, prior_buy, prior_skip, c.conversion_prior_mean)
    engagement = _ratio(
        engagements + c.engagement_prior_rate * c.engagement_prior_minutes,
        minutes + c.engagement_prior_minutes,
        0.0,
    )
    punctuality = _beta_mean(
        on_time, scheduled, c.punctuality_prior_on_time, c.punctuality_prior_late, 1.0
    )
    fulfilment = _beta_mean(paid, reserved, c.fulfilment_prior_paid, c.fulfilment_prior_unpaid, 1.0)
    flagged_share = _beta_mean(
        flagged, messages, c.moderation_prior_flagged, c.moderation_prior_clean, 0.0
    )

    rows: list[tuple[str, float, float, dict[str, float], dict[str, float], str]] = [
        (
            "conversion",
            min(1.0, conversion / c.conversion_target),
            conversion,
            {"buyers": buyers, "viewers": viewers},
            {"buyers": prior_buy, "non_buyers": prior_skip, "target": c.conversion_target},
            "min(1, ((buyers + a) / (viewers + a + b)) / target)",
        ),
        (
            "engagement",
            engagement / (engagement + c.engagement_half),
            engagement,
            {"engagements": engagements, "viewer_minutes": minutes},
            {
                "rate": c.engagement_prior_rate,
                "minutes": c.engagement_prior_minutes,
                "half": c.engagement_half,
            },
            "r / (r + half), r = (engagements + rate × minutes₀) / (viewer_minutes + minutes₀)",
        ),
        (
            "punctuality",
            punctuality,
            punctuality,
            {"sessions_scheduled": scheduled, "sessions_on_time": on_time},
            {"on_time": c.punctuality_prior_on_time, "late": c.punctuality_prior_late},
            "(on_time + a) / (scheduled + a + b)",
        ),
        (
            "fulfilment",
            fulfilment,
            fulfilment,
            {"orders_reserved": reserved, "orders_paid": paid},
            {"paid": c.fulfilment_prior_paid, "unpaid": c.fulfilment_prior_unpaid},
            "(paid + a) / (reserved + a + b)",
        ),
        (
            "moderation",
            1.0 - flagged_share,
            flagged_share,
            {"messages": messages, "messages_flagged": flagged},
            {"flagged": c.moderation_prior_flagged, "clean": c.moderation_prior_clean},
            "1 − (flagged + a) / (messages + a + b)",
        ),
    ]
    weights = c.weights()
    components = [
        ScoreComponent(
            name=name,
            value=value,
            weight=weights[name],
            contribution=value * weights[name],
            estimate=estimate,
            inputs={k: float(v) for k, v in inputs.items()},
            prior=prior,
            formula=formula,
        )
        for name, value, estimate, inputs, prior, formula in rows
    ]
    return CreatorScore(
        creator=stats.creator,
        total=math.fsum(component.contribution for component in components),
        components=components,
    )


def conversion_posterior(
    stats: CreatorStats, config: CreatorScoreConfig | None = None
) -> tuple[float, float]:
    """Beta(α, β) over the creator's conversion (the prior plus buyers and non-buyers)."""
    c = config or CreatorScoreConfig()
    viewers = max(stats.viewers, 0)
    buyers = min(max(stats.buyers, 0), viewers)
    prior_buy = c.conversion_prior_mean * c.conversion_prior_strength
    return prior_buy + buyers, c.conversion_prior_strength - prior_buy + viewers - buyers
