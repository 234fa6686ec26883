"""Wire frames of SPEC §5: client frames decoded in one step, server messages encoded once."""

from __future__ import annotations

import functools
import operator
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Meta, Raw, Struct

from .failure import ERROR_CODES as ERROR_CODES
from .failure import ErrorCode as ErrorCode
from .failure import Failure as Failure
from .limits import (
    CHAT_FRAME_MAX_CHARS,
    ID_MAX_CHARS,
    MAX_BUY_QTY,
    MAX_CENTS,
    MAX_OFFSET,
)
from .text import is_line, line_meta

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4001
CLOSE_FLOODING = 4008
CLOSE_TOO_SLOW = 4009


# ---------------------------------------------------------------- client frames

Ref = Annotated[str, line_meta(1, ID_MAX_CHARS)]
Id = Annotated[str, line_meta(1, ID_MAX_CHARS)]
Offset = Annotated[int, Meta(ge=0, le=MAX_OFFSET)]
# The picture time a viewer acted at (SPEC §12 and docs/commerce.md, "Trip allowance"): epoch
# milliseconds on the studio's clock, from the player's program-date-time (up to year 9999).
VIDEO_AT_MS_LIMIT = 253_402_300_799_999
VideoAt = Annotated[int, Meta(ge=0, le=VIDEO_AT_MS_LIMIT)]


class Position(Struct, frozen=True):
    epoch: Annotated[str, line_meta(0, 64)]
    offset: Offset


class Join(Struct, tag="join", tag_field="type", frozen=True):
    session: Id
    since: Position | None = None


class Leave(Struct, tag="leave", tag_field="type", frozen=True):
    session: Id


class Chat(Struct, tag="chat", tag_field="type", frozen=True):
    session: Id
    text: Annotated[str, line_meta(0, CHAT_FRAME_MAX_CHARS)]
    ref: Ref


class Like(Struct, tag="like", tag_field="type", frozen=True):
    session: Id
    count: Annotated[int, Meta(ge=1, le=50)] = 1


class Buy(Struct, tag="buy", tag_field="type", frozen=True):
    session: Id
    offer: Id
    qty: Annotated[int, Meta(ge=1, le=MAX_BUY_QTY)]
    ref: Ref
    video_at: VideoAt | None = None  # when the viewer pressed, in its picture (epoch ms)


class Bid(Struct, tag="bid", tag_field="type", frozen=True):
    """A bid; with `max_cents` a proxy bid: the server bids for the user up to that max
    (SPEC §11). The max is shown to nobody but its owner."""

    session: Id
    auction: Id
    amount_cents: Annotated[int, Meta(ge=1, le=MAX_CENTS)]
    ref: Ref
    max_cents: Annotated[int, Meta(ge=1, le=MAX_CENTS)] | None = None
    video_at: VideoAt | None = None  # when the viewer pressed, in its picture (epoch ms)


class BuyNow(Struct, tag="buy_now", tag_field="type", frozen=True):
    """Take the auction's lot at its buy-now price (SPEC §11): answered `order {ref, order}`."""

    session: Id
    auction: Id
    ref: Ref
    video_at: VideoAt | None = None  # when the viewer pressed, in its picture (epoch ms)


class Signal(Struct, tag="signal", tag_field="type", frozen=True):
    session: Id
    name: Literal["product_click", "add_to_cart", "share"]
    product: Id | None = None


class Report(Struct, tag="report", tag_field="type", frozen=True):
    session: Id
    offset: Annotated[int, Meta(ge=1, le=MAX_OFFSET)]
    reason: Annotated[str, line_meta(1, 200)]
    ref: Ref


class Feed(Struct, tag="feed", tag_field="type", frozen=True):
    on: bool


class Ping(Struct, tag="ping", tag_field="type", frozen=True):
    ref: Ref | None = None


class Auth(Struct, tag="auth", tag_field="type", frozen=True):
    """A token sent as a frame instead of `?token=`: first (then `hello`), or later to
    refresh the one in force (same `sub`)."""

    token: Annotated[str, Meta(min_length=1, max_length=8192)]


# ---------------------------------------------------------------- second chance (SPEC §11)


class Accept(Struct, tag="accept", tag_field="type", frozen=True):
    """Take the `second_chance` offered to the caller: answered `order {ref, order}`."""

    session: Id
    auction: Id
    ref: Ref


# ---------------------------------------------------------------- giveaways (client)


class Enter(Struct, tag="enter", tag_field="type", frozen=True):
    """Enter a giveaway of a session the connection has joined (SPEC §13)."""

    session: Id
    giveaway: Id
    ref: Ref


# ------------------------------------------------ client frames: selling in a show (SPEC §13)


class Waitlist(Struct, tag="waitlist", tag_field="type", frozen=True):
    """Join a sold-out open offer's waitlist: `ack {ref, position}`."""

    session: Id
    offer: Id
    ref: Ref


# ---------------------------------------------------------------- video time (SPEC §12)

# No delay report is larger than this, whatever `max_viewer_delay_ms` is set to (an hour).
DELAY_MS_LIMIT = 3_600_000


class Delay(Struct, tag="delay", tag_field="type", frozen=True):
    """How far the client's picture is behind the studio, in ms (from the player's
    program-date-time); at most the server's `max_viewer_delay_ms` (`hello.limits`)."""

    session: Id
    ms: Annotated[int, Meta(ge=0, le=DELAY_MS_LIMIT)]


ClientFrame = (
    Join
    | Leave
    | Chat
    | Like
    | Buy
    | Bid
    | BuyNow
    | Signal
    | Report
    | Feed
    | Ping
    | Auth
    | Accept
    | Enter
    | Waitlist
    | Delay
)
CLIENT_TYPES = frozenset(t.__struct_config__.tag for t in get_args(ClientFrame))

_frame_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)  # type: ignore[arg-type]

# The honest path costs (almost) nothing for the text rule. In a JSON document the characters
# the `Line` rule refuses can only be written as an escape (`\u0000`), as DEL (0x7f) or, for
# the bidi controls, as non-ASCII UTF-8 (raw C0 controls inside strings and lone surrogates
# are refused by the JSON parser itself). A frame that is ASCII without a backslash or DEL is
# decoded into subclasses of the frame types that keep every constraint but the text pattern
# (the same types to the code behind); any other frame gets the full check.
_META_FIELDS = (
    "gt", "ge", "lt", "le", "multiple_of", "pattern", "min_length", "max_length", "tz",
)  # fmt: skip


def _unpatterned(tp: Any) -> Any:
    if get_origin(tp) is Annotated:
        base, *metas = get_args(tp)
        kept = [
            Meta(
                **{
                    k: getattr(m, k)
                    for k in _META_FIELDS
                    if k != "pattern" and getattr(m, k) is not None
                }
            )
            if isinstance(m, Meta)
            else m
            for m in metas
        ]
        return Annotated[(_unpatterned(base), *kept)]  # type: ignore[valid-type]
    if get_origin(tp) in (Union, types.UnionType):
        return functools.reduce(operator.or_, [_unpatterned(a) for a in get_args(tp)])
    if isinstance(tp, type) and issubclass(tp, Struct):
        return _twin(tp)
    return tp


def _twin(cls: type[Struct]) -> type[Struct]:
    fields = [
        (f.name, _unpatterned(f.type))
        if f.required
        else (
            f.name,
            _unpatterned(f.type),
            f.default
            if f.default is not msgspec.NODEFAULT
            else msgspec.field(default_factory=f.default_factory),
        )
        for f in msgspec.structs.fields(cls)
    ]
    config = cls.__struct_config__

    def __eq__(self: Struct, other: object) -> bool:  # equal to the frame type's instances
        return isinstance(other, cls) and msgspec.structs.astuple(self) == msgspec.structs.astuple(
            other
        )

    return msgspec.defstruct(
        cls.__name__,
        fields,
        bases=(cls,),
        tag=config.tag,
        tag_field=config.tag_field,
        frozen=config.frozen,
        module=cls.__module__,
        namespace={"__eq__": __eq__, "__hash__": cls.__hash__},
    )


_plain_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(
    functools.reduce(operator.or_, [_twin(t) for t in get_args(ClientFrame)])
)


def _plain_text(data: bytes) -> bool:
    """No string in this JSON can break the `Line` rule (see above)."""
    return data.isascii() and data.find(b"\\") < 0 and data.find(b"\x7f") < 0


class _Envelope(Struct):
    # Only strings are read; anything else is skipped without being built.
    type: str | Raw | None = None
    ref: str | Raw | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def decode_frame(data: bytes | str) -> ClientFrame:
    """Decode one client frame or raise Failure(bad_frame | unknown_type), with the frame's
    ref echoed in the message when one could be read."""
    if type(data) is bytes and _plain_text(data):
        try:
            return _plain_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass  # the full decoder says why
    try:
        return _frame_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        ref = None
        code: ErrorCode = "bad_frame"
        try:
            env = _envelope_decoder.decode(data)
            ref = env.ref if isinstance(env.ref, str) and is_ref(env.ref) else None
            if isinstance(env.type, str) and env.type not in CLIENT_TYPES:
                code = "unknown_type"
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            pass
        failure = Failure(code, str(exc))
        failure.ref = ref  # type: ignore[attr-defined]
        raise failure from None
    except RecursionError:
        # Nested deeper than the interpreter's stack allows: refused like any other bad frame.
        raise Failure("bad_frame", "nested too deeply") from None


def is_ref(value: str) -> bool:
    """Whether `value` may be echoed back as a ref (1-64 characters of the `Line` rule)."""
    return 1 <= len(value) <= ID_MAX_CHARS and is_line(value)


def frame_ref(failure: Failure) -> str | None:
    return getattr(failure, "ref", None)


# ---------------------------------------------------------------- server messages


class Limits(Struct, frozen=True):
    max_frame_bytes: int
    chat_max_chars: int
    chat_rate_per_s: float
    chat_burst: int
    max_viewer_delay_ms: int = 0  # the largest `delay` a client may report (SPEC §12)
    # How much earlier than arrival minus delay a frame's `video_at` may be judged (ms).
    trip_allowance_ms: int = 0


class Hello(Struct, tag="hello", tag_field="type"):
    user: str
    role: str
    server_time: int
    limits: Limits
    node: str


class SessionState(Struct):
    status: str
    pinned: dict[str, Any] | None
    offers: list[dict[str, Any]]
    auction: dict[str, Any] | None
    viewers: int
    likes: int
    slow: int
    chat: list[Raw]
    giveaway: dict[str, Any] | None = None  # the open giveaway, without its seed


class Joined(Struct, tag="joined", tag_field="type"):
    session: str
    epoch: str
    offset: int
    recovered: bool
    state: SessionState
    delay_ms: int = 0  # the viewer's delay in force (SPEC §12)


class Left(Struct, tag="left", tag_field="type"):
    session: str


class Ack(Struct, tag="ack", tag_field="type", omit_defaults=True):
    ref: str
    offset: int | None = None


class ErrorMsg(Struct, tag="error", tag_field="type", omit_defaults=True):
    code: str
    message: str
    ref: str | None = None
    retry_after_ms: int | None = None
    session: str | None = None
    min_cents: int | None = None  # `bid_too_low`: the least bid taken now


class Pong(Struct, tag="pong", tag_field="type", omit_defaults=True):
    ref: str | None = None


class Muted(Struct, tag="muted", tag_field="type"):
    session: str
    until: int | None


class Held(Struct, tag="held", tag_field="type", omit_defaults=True):
    ref: str
    reason: str = ""


class OrderMsg(Struct, tag="order", tag_field="type"):
    ref: str
    order: dict[str, Any]


# ---------------------------------------------------------------- auction personal messages
# SPEC §11: the answer to a bid and the notice to the bidder who lost the lead.


class BidAck(Struct, tag="ack", tag_field="type", omit_defaults=True):
    """`ack` to a bid: the auction's price after it, whether the bidder leads, and the
    bidder's own max (sent only to them)."""

    ref: str
    amount_cents: int
    leading: bool
    max_cents: int | None = None


class Outbid(Struct, tag="outbid", tag_field="type"):
    session: str
    auction: str
    amount_cents: int


class WaitlistAck(Struct, tag="ack", tag_field="type"):
    """SPEC §13: the answer to `waitlist`; `position` 1 is served first."""

    ref: str
    position: int


class WaitlistPlace(Struct, tag="waitlist_place", tag_field="type"):
    """Personal (SPEC §13): the user's place on an offer's waitlist, pushed whenever it
    changes: on joining, when a waiter ahead is served or dropped, and when the place itself
    ends. `status` is `waiting` (then `position`, 1 = served next), `served` (the `order`
    with the waitlist ref comes with it) or `dropped` (the offer ended, or the waiter could
    not be served: the per-user limit, a ref used meanwhile); `position` is null then."""

    session: str
    offer: str
    status: str
    position: int | None = None


class Viewers(Struct, tag="viewers", tag_field="type"):
    session: str
    count: int


class Likes(Struct, tag="likes", tag_field="type"):
    session: str
    total: int


class Stock(Struct, tag="stock", tag_field="type"):
    session: str
    offer: str
    remaining: int


class ChatSampled(Struct, tag="chat_sampled", tag_field="type"):
    """Huge-room chat sampling: `skipped` chat messages were not sent to this viewer."""

    session: str
    skipped: int


class SecondChance(Struct, tag="second_chance", tag_field="type"):
    """Personal: the unit of an auction whose order lapsed is offered to this bidder at
    their highest bid, until `expires_at` (ISO 8601, as orders carry it)."""

    session: str
    auction: str
    amount_cents: int
    expires_at: str


# ---------------------------------------------------------------- room events
# The events of a session's log (SPEC §5), built by the domain code and encoded once by
# `Node.append`; the offset is spliced in per delivery (`with_offset`). Field order is wire
# order: `type`, `session`, then the rest.


class ChatEvent(Struct, tag="chat", tag_field="type"):
    session: str
    user: str
    name: str
    text: str
    at: int


class ChatTombstone(Struct, tag="chat", tag_field="type"):
    """A deleted chat message as history serves it: no author, no text."""

    session: str
    removed: bool = True


class ChatRemoved(Struct, tag="chat_removed", tag_field="type"):
    session: str
    target: int


class Pinned(Struct, tag="pinned", tag_field="type"):
    session: str
    product: dict[str, Any] | None


class StatusEvent(Struct, tag="status", tag_field="type"):
    session: str
    status: str


class SlowEvent(Struct, tag="slow", tag_field="type"):
    session: str
    seconds: int
    shield: bool = False  # always sent; the default reads events from before it existed


class OfferEvent(Struct, tag="offer", tag_field="type", kw_only=True, omit_defaults=True):
    """An opened offer: every field of `commerce.rules.Offer`, `session` first."""

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
    claim_word: str | None = None  # SPEC §13: "type it in chat to claim one"


class OfferEnded(Struct, tag="offer_ended", tag_field="type"):
    session: str
    offer: str
    reason: str
    returned: int


class Sold(Struct, tag="sold", tag_field="type"):
    session: str
    offer: str
    qty: int


class AuctionEvent(Struct, tag="auction", tag_field="type", kw_only=True):
    """An opened (or scheduled) auction: every field of `commerce.rules.Auction`, `session`
    first. Never the reserve nor any max."""

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


class BidEvent(Struct, tag="bid", tag_field="type", omit_defaults=True):
    """The auction's price after an accepted bid and who leads at it (`user`): with proxies
    that may be the one whose max answered, not the one who sent the bid. `outbid` is the
    previous leader when the lead changed hands (public already: the previous `user`)."""

    session: str
    auction: str
    amount_cents: int
    user: str
    seq: int
    ends_at: str
    reserve_met: bool
    outbid: str | None = None


class AuctionEnded(Struct, tag="auction_ended", tag_field="type", omit_defaults=True):
    """`reason`: time | buy_now | no_bids | reserve_not_met; `outbid`: on buy-now, the
    leader the lot was taken from."""

    session: str
    auction: str
    winner: str | None
    amount_cents: int | None
    reason: str
    outbid: str | None = None


# ---------------------------------------------------------------- giveaways (room events)


class GiveawayEvent(Struct, tag="giveaway", tag_field="type", kw_only=True):
    """An opened giveaway: every field of `commerce.draw.Giveaway` known at the start (no
    seed), `session` first."""

    session: str
    id: str
    product: str
    winners: int
    eligibility: str
    ends_at: str
    status: str
    commitment: str


class GiveawayEnded(Struct, tag="giveaway_ended", tag_field="type"):
    """The draw: `winners` are user ids in draw order; `seed` opens the commitment;
    `returned` units went back to stock (fewer entrants than winners)."""

    session: str
    giveaway: str
    winners: list[str]
    seed: str
    entrants: int
    returned: int


RoomEvent = (
    ChatEvent
    | ChatRemoved
    | Pinned
    | StatusEvent
    | SlowEvent
    | OfferEvent
    | OfferEnded
    | Sold
    | AuctionEvent
    | BidEvent
    | AuctionEnded
    | GiveawayEvent
    | GiveawayEnded
)
ROOM_EVENTS: tuple[type[RoomEvent], ...] = get_args(RoomEvent)


def kind_of(event: RoomEvent) -> str:
    """The event's `type` on the wire, the `kind` of the room log."""
    return event.__struct_config__.tag  # type: ignore[return-value]


_encoder = msgspec.json.Encoder()


def encode(message: Any) -> bytes:
    """One server message (not yet a frame)."""
    return _encoder.encode(message)


def frame(messages: list[bytes]) -> bytes:
    """A server frame: always a JSON array of already-encoded messages."""
    return b"[" + b",".join(messages) + b"]"


def ws_text_frame(payload: bytes) -> bytes:
    """`payload` as one unmasked, final WebSocket text frame (RFC 6455 §5.2), the bytes a
    server writes to the socket; built once and written to every subscriber of a room."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def with_offset(offset: int, body: bytes) -> bytes:
    """Splice the log offset into an encoded room event `{...}`."""
    return b'{"offset":' + str(offset).encode() + b"," + body[1:]


def tombstone(session: str) -> bytes:
    """A deleted chat message as history serves it (no author, no text), without offset."""
    return _encoder.encode(ChatTombstone(session))
