"""What the ranking sends and takes: the `trending` and `feed` messages, the settings patch."""

from __future__ import annotations

from typing import Any

import msgspec

from .core import FeedItem


class TrendingMsg(msgspec.Struct, tag="trending", tag_field="type"):
    products: list[dict[str, Any]]
    hosts: list[dict[str, Any]]


class FeedMsg(msgspec.Struct, tag="feed", tag_field="type"):
    version: int
    items: list[FeedItem]


class SettingsPatch(msgspec.Struct, forbid_unknown_fields=True):
    personalization: bool
