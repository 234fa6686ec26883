"""Ranking: trending and personal feeds over the pure core in `livecart.ranking.core`.

service.py is the façade a node builds (from the narrow ports in ports.py); catalog_cache.py,
profiles.py, exposure.py and feeds.py hold its parts; store.py its SQL; sync.py the cluster
side in Redis."""

from __future__ import annotations

from .messages import FeedMsg, SettingsPatch, TrendingMsg
from .service import RankingService
from .sync import SharedTrending

__all__ = ["FeedMsg", "RankingService", "SettingsPatch", "SharedTrending", "TrendingMsg"]
