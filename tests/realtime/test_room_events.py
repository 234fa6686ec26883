"""Room events are typed Structs (protocol.py) encoded once, to the very bytes the room log
carried when they were dicts; they read back typed and cross the Redis bus unchanged."""

from __future__ import annotations

import asyncio
import secrets

import msgspec
import pytest

from livecart.catalog.models import Product
from livecart.commerce.rules import Auction, Offer
from livecart.protocol import (
    ROOM_EVENTS,
    AuctionEnded,
    AuctionEvent,
    BidEvent,
    ChatEvent,
    ChatRemoved,
    GiveawayEnded,
    GiveawayEvent,
    OfferEnded,
    OfferEvent,
    Pinned,
    RoomEvent,
    SlowEvent,
    Sold,
    StatusEvent,
    encode,
    kind_of,
    tombstone,
    with_offset,
)
from livecart.realtime.bus.base import Publication

S = "s1"
OFFER = Offer(
    id="o1",
    session=S,
    product="p1",
    price_cents=900,
    currency="USD",
    quantity=5,
    remaining=5,
    per_user_limit=1,
    starts_at="2026-12-06T02:00:00+00:00",
    ends_at="2026-12-06T02:05:00+00:00",
    status="open",
)
AUCTION = Auction(
    id="a1",
    session=S,
    product="p1",
    start_cents=100,
    min_increment_cents=10,
    current_cents=None,
    leader=None,
    mode="extend",
    ends_at="2026-12-06T02:05:00+00:00",
    status="open",
    bids=0,
    increments=[[None, 10]],
)
PRODUCT = Product(
    id="p1", creator="c", title="Hat", price_cents=900, currency="USD", stock=3, category="",
    tags=["x"],
)  # fmt: skip

# Each event as the domain builds it, and the bytes `Node.append` published for it when room
# events were dicts (`encode({"type": kind, "session": session, **body})`).
GOLDEN: list[tuple[RoomEvent, bytes]] = [
    (
        ChatEvent(S, "u1", "Ann", 'h\u00e9llo "x"', 1765000000000),
        b'{"type":"chat","session":"s1","user":"u1","name":"Ann",'
        b'"text":"h\xc3\xa9llo \\"x\\"","at":1765000000000}',
    ),
    (ChatRemoved(S, 7), b'{"type":"chat_removed","session":"s1","target":7}'),
    (
        Pinned(S, msgspec.to_builtins(PRODUCT)),
        b'{"type":"pinned","session":"s1","product":{"id":"p1","creator":"c","title":"Hat",'
        b'"price_cents":900,"currency":"USD","stock":3,"category":"","tags":["x"]}}',
    ),
    (Pinned(S, None), b'{"type":"pinned","session":"s1","product":null}'),
    (StatusEvent(S, "live"), b'{"type":"status","session":"s1","status":"live"}'),
    (SlowEvent(S, 5, True), b'{"type":"slow","session":"s1","seconds":5,"shield":true}'),
    (SlowEvent(S, 0, False), b'{"type":"slow","session":"s1","seconds":0,"shield":false}'),
    (
        OfferEvent(**msgspec.structs.asdict(OFFER)),
        b'{"type":"offer","session":"s1","id":"o1","product":"p1","price_cents":900,'
        b'"currency":"USD","quantity":5,"remaining":5,"per_user_limit":1,'
        b'"starts_at":"2026-12-06T02:00:00+00:00","ends_at":"2026-12-06T02:05:00+00:00",'
        b'"status":"open"}',
    ),
    (
        OfferEnded(S, "o1", "sold_out", 0),
        b'{"type":"offer_ended","session":"s1","offer":"o1","reason":"sold_out","returned":0}',
    ),
    (Sold(S, "o1", 2), b'{"type":"sold","session":"s1","offer":"o1","qty":2}'),
    (
        AuctionEvent(**msgspec.structs.asdict(AUCTION)),
        b'{"type":"auction","session":"s1","id":"a1","product":"p1","start_cents":100,'
        b'"min_increment_cents":10,"current_cents":null,"leader":null,"mode":"extend",'
        b'"ends_at":"2026-12-06T02:05:00+00:00","status":"open","bids":0,"winner_order":null,'
        b'"increments":[[null,10]],"buy_now_cents":null,"reserve_met":true,"opens_at":null,'
        b'"reason":null}',
    ),
    (
        BidEvent(S, "a1", 150, "u1", 3, "2026-12-06T02:05:10+00:00", True),
        b'{"type":"bid","session":"s1","auction":"a1","amount_cents":150,"user":"u1","seq":3,'
        b'"ends_at":"2026-12-06T02:05:10+00:00","reserve_met":true}',
    ),
    (
        BidEvent(S, "a1", 160, "u2", 4, "2026-12-06T02:05:10+00:00", False, "u1"),
        b'{"type":"bid","session":"s1","auction":"a1","amount_cents":160,"user":"u2","seq":4,'
        b'"ends_at":"2026-12-06T02:05:10+00:00","reserve_met":false,"outbid":"u1"}',
    ),
    (
        AuctionEnded(S, "a1", "u1", 150, "time"),
        b'{"type":"auction_ended","session":"s1","auction":"a1","winner":"u1","amount_cents":150,'
        b'"reason":"time"}',
    ),
    (
        AuctionEnded(S, "a1", "u3", 900, "buy_now", "u1"),
        b'{"type":"auction_ended","session":"s1","auction":"a1","winner":"u3","amount_cents":900,'
        b'"reason":"buy_now","outbid":"u1"}',
    ),
    (
        AuctionEnded(S, "a1", None, None, "reserve_not_met"),
        b'{"type":"auction_ended","session":"s1","auction":"a1","winner":null,"amount_cents":null,'
        b'"reason":"reserve_not_met"}',
    ),
    (
        GiveawayEvent(
            session=S,
            id="g1",
            product="p1",
            winners=2,
            eligibility="viewers",
            ends_at="2026-12-06T02:05:00+00:00",
            status="open",
            commitment="ab" * 32,
        ),
        b'{"type":"giveaway","session":"s1","id":"g1","product":"p1","winners":2,'
        b'"eligibility":"viewers","ends_at":"2026-12-06T02:05:00+00:00","status":"open",'
        b'"commitment":"' + b"ab" * 32 + b'"}',
    ),
    (
        GiveawayEnded(S, "g1", ["u2", "u1"], "cd" * 32, 7, 0),
        b'{"type":"giveaway_ended","session":"s1","giveaway":"g1","winners":["u2","u1"],'
        b'"seed":"' + b"cd" * 32 + b'","entrants":7,"returned":0}',
    ),
]
IDS = [f"{kind_of(e)}-{i}" for i, (e, _) in enumerate(GOLDEN)]
_any_event: msgspec.json.Decoder[RoomEvent] = msgspec.json.Decoder(RoomEvent)  # type: ignore[arg-type]


@pytest.mark.parametrize(("event", "wire"), GOLDEN, ids=IDS)
def test_each_room_event_encodes_to_the_bytes_the_dict_path_published(
    event: RoomEvent, wire: bytes
) -> None:
    assert encode(event) == wire


@pytest.mark.parametrize(("event", "wire"), GOLDEN, ids=IDS)
def test_each_room_event_reads_back_typed_with_its_offset_spliced_in(
    event: RoomEvent, wire: bytes
) -> None:
    delivered = with_offset(42, encode(event))
    assert delivered == b'{"offset":42,' + wire[1:]
    assert _any_event.decode(delivered) == event  # the offset is not a field of the event
    assert msgspec.json.decode(delivered)["type"] == kind_of(event)


def test_every_room_event_kind_has_a_golden_example() -> None:
    kinds = {kind_of(e) for e, _ in GOLDEN}
    assert kinds == {t.__struct_config__.tag for t in ROOM_EVENTS}
    assert kinds == {
        "chat", "chat_removed", "pinned", "offer", "offer_ended", "sold", "auction", "bid",
        "auction_ended", "status", "slow", "giveaway", "giveaway_ended",
    }  # fmt: skip


@pytest.mark.parametrize(("event", "domain"), [(OfferEvent, Offer), (AuctionEvent, Auction)])
def test_offer_and_auction_events_carry_every_field_of_their_object_session_first(
    event: type[msgspec.Struct], domain: type[msgspec.Struct]
) -> None:
    names = [f.name for f in msgspec.structs.fields(domain)]
    names.remove("session")
    assert [f.name for f in msgspec.structs.fields(event)] == ["session", *names]


def test_a_tombstone_is_a_chat_event_without_author_or_text() -> None:
    assert tombstone(S) == b'{"type":"chat","session":"s1","removed":true}'


def test_a_slow_event_from_before_the_shield_reads_as_shield_off() -> None:
    assert _any_event.decode(b'{"type":"slow","session":"s1","seconds":3}') == SlowEvent(S, 3)


@pytest.mark.redis
async def test_the_redis_bus_round_trips_every_room_event_unchanged() -> None:
    from livecart.realtime.bus.redis import RedisBus
    from tests.conftest import redis_url_or_skip
    from tests.realtime.test_bus_contract import Floors, Recorder, delete_prefix, eventually

    url = redis_url_or_skip()
    prefix = f"lctest-{secrets.token_hex(4)}"
    floors, seen = Floors(), Recorder()
    writer = RedisBus(url, floors, node_id=f"{prefix}-w", key_prefix=prefix)
    reader = RedisBus(url, floors, node_id=f"{prefix}-r", key_prefix=prefix)
    room = f"room-{secrets.token_hex(4)}"
    try:
        await writer.start(lambda _room, _pub: None)
        await reader.start(seen)
        await reader.subscribe(room)
        offsets = []
        for event, _ in GOLDEN:
            position = await writer.publish(room, kind_of(event), encode(event))
            offsets.append(position.offset)
        await eventually(lambda: len(seen.got[room]) == len(GOLDEN), what="every event")
        expected = [
            Publication(offset, kind_of(e), wire)
            for offset, (e, wire) in zip(offsets, GOLDEN, strict=True)
        ]
        assert seen.got[room] == expected
        history = await reader.history(room, None, len(GOLDEN))
        assert history.publications == expected
        assert [_any_event.decode(p.data) for p in history.publications] == [e for e, _ in GOLDEN]
    finally:
        await asyncio.gather(writer.stop(), reader.stop())
        await delete_prefix(url, prefix)
