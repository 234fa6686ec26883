"""The ranking core: forward-decayed trending, creator scores, interest profiles, feeds.

Pure code: no I/O, no clock (every time is a parameter), no globals. See docs/ranking.md.
"""

from livecart.ranking.core.creator_score import (
    CreatorScore,
    CreatorScoreConfig,
    CreatorStats,
    ScoreComponent,
    conversion_posterior,
    creator_score,
    started_on_time,
)
from livecart.ranking.core.decay import ForwardDecay, plain_decay, rescale
from livecart.ranking.core.feed import (
    Candidate,
    FeedConfig,
    FeedItem,
    Landing,
    TrendDigest,
    Why,
    build_feed,
    feed_changed,
    trend_digest,
    trends_moved,
)
from livecart.ranking.core.hysteresis import ranking_changed
from livecart.ranking.core.profile import (
    AffinityScorer,
    InterestProfile,
    ProfileBuilder,
    ProfileConfig,
    ProfileRefused,
    may_profile,
)
from livecart.ranking.core.signals import (
    SIGNAL_KINDS,
    DecayedCap,
    RankingConfig,
    Signal,
    SignalKind,
    SignalPolicy,
    SignalWeights,
    WindowCap,
)
from livecart.ranking.core.topk import TopK
from livecart.ranking.core.trending import (
    Delta,
    ProductInfo,
    SessionInfo,
    Trend,
    TrendingIndex,
    TrendingSnapshot,
    snapshot_changed,
    trending_changed,
)

__all__ = [
    "SIGNAL_KINDS",
    "AffinityScorer",
    "Candidate",
    "CreatorScore",
    "CreatorScoreConfig",
    "CreatorStats",
    "DecayedCap",
    "Delta",
    "FeedConfig",
    "FeedItem",
    "ForwardDecay",
    "InterestProfile",
    "Landing",
    "ProductInfo",
    "ProfileBuilder",
    "ProfileConfig",
    "ProfileRefused",
    "RankingConfig",
    "ScoreComponent",
    "SessionInfo",
    "Signal",
    "SignalKind",
    "SignalPolicy",
    "SignalWeights",
    "TopK",
    "Trend",
    "TrendDigest",
    "TrendingIndex",
    "TrendingSnapshot",
    "Why",
    "WindowCap",
    "build_feed",
    "conversion_posterior",
    "creator_score",
    "feed_changed",
    "may_profile",
    "plain_decay",
    "ranking_changed",
    "rescale",
    "snapshot_changed",
    "started_on_time",
    "trend_digest",
    "trending_changed",
    "trends_moved",
]
