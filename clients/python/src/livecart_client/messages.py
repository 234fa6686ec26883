"""Server messages of the livecart protocol (SPEC §5), as msgspec Structs.

GENERATED from the server's `livecart.protocol` by `scripts/gen_python_client.py`; do not
edit by hand. Room log events carry the `offset` the server adds when it delivers them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

__all__ = [
    "ROOM_EVENT_TYPES",
    "SERVER_MESSAGES",
    "Ack",
    "AuctionEnded",
    "AuctionEvent",
    "BidAck",
    "BidEvent",
    "ChatEvent",
    "ChatRemoved",
    "ChatSampled",
    "ChatTombstone",
    "ErrorMsg",
    "GiveawayEnded",
    "GiveawayEvent",
    "Held",
    "Hello",
    "Joined",
    "Left",
    "Likes",
    "Limits",
    "Muted",
    "OfferEnded",
    "OfferEvent",
    "OrderMsg",
    "Outbid",
    "Pinned",
    "Pong",
    "SecondChance",
    "SessionState",
    "SlowEvent",
    "Sold",
    "StatusEvent",
    "Stock",
    "Viewers",
    "WaitlistAck",
    "WaitlistPlace",
]


class Limits(Struct, kw_only=True):
    max_frame_bytes: int
    chat_max_chars: int
    chat_rate_per_s: float
    chat_burst: int
    max_viewer_delay_ms: int = 0
    trip_allowance_ms: int = 0


class SessionState(Struct, kw_only=True):
    status: str
    pinned: dict[str, Any] | None
    offers: list[dict[str, Any]]
    auction: dict[str, Any] | None
    viewers: int
    likes: int
    slow: int
    chat: list[Any]
    giveaway: dict[str, Any] | None = None


class Hello(Struct, tag="hello", tag_field="type", kw_only=True):
    user: str
    role: str
    server_time: int
    limits: Limits
    node: str


class Joined(Struct, tag="joined", tag_field="type", kw_only=True):
    session: str
    epoch: str
    offset: int
    recovered: bool
    state: SessionState
    delay_ms: int = 0


class Left(Struct, tag="left", tag_field="type", kw_only=True):
    session: str


class Ack(Struct, tag="ack", tag_field="type", kw_only=True):
    ref: str
    offset: int | None = None


class ErrorMsg(Struct, tag="error", tag_field="type", kw_only=True):
    code: str
    message: str
    ref: str | None = None
    retry_after_ms: int | None = None
    session: str | None = None
    min_cents: int | None = None


class Pong(Struct, tag="pong", tag_field="type", kw_only=True):
    ref: str | None = None


class Muted(Struct, tag="muted", tag_field="type", kw_only=True):
    session: str
    until: int | None


class Held(Struct, tag="held", tag_field="type", kw_only=True):
    ref: str
    reason: str = ""


class OrderMsg(Struct, tag="order", tag_field="type", kw_only=True):
    ref: str
    order: dict[str, Any]


class BidAck(Struct, tag="ack", tag_field="type", kw_only=True):
    ref: str
    amount_cents: int
    leading: bool
    max_cents: int | None = None


class Outbid(Struct, tag="outbid", tag_field="type", kw_only=True):
    session: str
    auction: str
    amount_cents: int


class WaitlistAck(Struct, tag="ack", tag_field="type", kw_only=True):
    ref: str
    position: int


class WaitlistPlace(Struct, tag="waitlist_place", tag_field="type", kw_only=True):
    session: str
    offer: str
    status: str
    position: int | None = None


class Viewers(Struct, tag="viewers", tag_field="type", kw_only=True):
    session: str
    count: int


class Likes(Struct, tag="likes", tag_field="type", kw_only=True):
    session: str
    total: int


class Stock(Struct, tag="stock", tag_field="type", kw_only=True):
    session: str
    offer: str
    remaining: int


class ChatSampled(Struct, tag="chat_sampled", tag_field="type", kw_only=True):
    session: str
    skipped: int


class SecondChance(Struct, tag="second_chance", tag_field="type", kw_only=True):
    session: str
    auction: str
    amount_cents: int
    expires_at: str


class ChatEvent(Struct, tag="chat", tag_field="type", kw_only=True):
    offset: int
    session: str
    user: str
    name: str
    text: str
    at: int


class ChatTombstone(Struct, tag="chat", tag_field="type", kw_only=True):
    offset: int
    session: str
    removed: bool = True


class ChatRemoved(Struct, tag="chat_removed", tag_field="type", kw_only=True):
    offset: int
    session: str
    target: int


class Pinned(Struct, tag="pinned", tag_field="type", kw_only=True):
    offset: int
    session: str
    product: dict[str, Any] | None


class StatusEvent(Struct, tag="status", tag_field="type", kw_only=True):
    offset: int
    session: str
    status: str


class SlowEvent(Struct, tag="slow", tag_field="type", kw_only=True):
    offset: int
    session: str
    seconds: int
    shield: bool = False


class OfferEvent(Struct, tag="offer", tag_field="type", kw_only=True):
    offset: int
    session: str
    id: str
    product: str
    price_cents: int
    currency: str
    quantity: int
    remaining: int
    per_user_limit: int
    starts_at: str
    ends_at: str
    status: str
    claim_word: str | None = None


class OfferEnded(Struct, tag="offer_ended", tag_field="type", kw_only=True):
    offset: int
    session: str
    offer: str
    reason: str
    returned: int


class Sold(Struct, tag="sold", tag_field="type", kw_only=True):
    offset: int
    session: str
    offer: str
    qty: int


class AuctionEvent(Struct, tag="auction", tag_field="type", kw_only=True):
    offset: int
    session: str
    id: str
    product: str
    start_cents: int
    min_increment_cents: int
    current_cents: int | None
    leader: str | None
    mode: str
    ends_at: str
    status: str
    bids: int
    winner_order: str | None = None
    increments: list[list[int | None]] = msgspec.field(default_factory=list)
    buy_now_cents: int | None = None
    reserve_met: bool = True
    opens_at: str | None = None
    reason: str | None = None


class BidEvent(Struct, tag="bid", tag_field="type", kw_only=True):
    offset: int
    session: str
    auction: str
    amount_cents: int
    user: str
    seq: int
    ends_at: str
    reserve_met: bool
    outbid: str | None = None


class AuctionEnded(Struct, tag="auction_ended", tag_field="type", kw_only=True):
    offset: int
    session: str
    auction: str
    winner: str | None
    amount_cents: int | None
    reason: str
    outbid: str | None = None


class GiveawayEvent(Struct, tag="giveaway", tag_field="type", kw_only=True):
    offset: int
    session: str
    id: str
    product: str
    winners: int
    eligibility: str
    ends_at: str
    status: str
    commitment: str


class GiveawayEnded(Struct, tag="giveaway_ended", tag_field="type", kw_only=True):
    offset: int
    session: str
    giveaway: str
    winners: list[str]
    seed: str
    entrants: int
    returned: int


# Every server message type, in the protocol's order.
SERVER_MESSAGES: tuple[type[Struct], ...] = (
    Hello,
    Joined,
    Left,
    Ack,
    ErrorMsg,
    Pong,
    Muted,
    Held,
    OrderMsg,
    BidAck,
    Outbid,
    WaitlistAck,
    WaitlistPlace,
    Viewers,
    Likes,
    Stock,
    ChatSampled,
    SecondChance,
    ChatEvent,
    ChatTombstone,
    ChatRemoved,
    Pinned,
    StatusEvent,
    SlowEvent,
    OfferEvent,
    OfferEnded,
    Sold,
    AuctionEvent,
    BidEvent,
    AuctionEnded,
    GiveawayEvent,
    GiveawayEnded,
)

# The `type` values of room log events (they carry `session` and `offset`).
ROOM_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "auction",
        "auction_ended",
        "bid",
        "chat",
        "chat_removed",
        "giveaway",
        "giveaway_ended",
        "offer",
        "offer_ended",
        "pinned",
        "slow",
        "sold",
        "status",
    }
)
