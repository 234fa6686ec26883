import msgspec
import pytest

from livecart import protocol
from livecart.protocol import Failure


def test_frames_decode_into_their_structs_in_one_step() -> None:
    f = protocol.decode_frame(b'{"type":"join","session":"s1","since":{"epoch":"e","offset":3}}')
    assert f == protocol.Join("s1", protocol.Position("e", 3))
    assert isinstance(protocol.decode_frame('{"type":"ping"}'), protocol.Ping)


@pytest.mark.parametrize(
    ("raw", "code", "ref"),
    [
        (b'{"type":"nope","ref":"r1"}', "unknown_type", "r1"),
        (b'{"type":"chat","session":"s","text":1,"ref":"r2"}', "bad_frame", "r2"),
        (b"\xff", "bad_frame", None),
        (b'{"type":"buy","session":"s","offer":"o","qty":0,"ref":"r3"}', "bad_frame", "r3"),
    ],
)
def test_bad_frames_get_codes_and_keep_their_ref(raw: bytes, code: str, ref: str | None) -> None:
    with pytest.raises(Failure) as exc:
        protocol.decode_frame(raw)
    assert exc.value.code == code
    assert protocol.frame_ref(exc.value) == ref


def test_server_frames_are_arrays_and_offsets_are_spliced() -> None:
    body = protocol.encode(protocol.ChatEvent("s", "u", "U", "hi", 1))
    msg = protocol.with_offset(7, body)
    assert msgspec.json.decode(msg) == {
        "offset": 7,
        "type": "chat",
        "session": "s",
        "user": "u",
        "name": "U",
        "text": "hi",
        "at": 1,
    }
    assert msgspec.json.decode(protocol.frame([msg, protocol.encode(protocol.Pong("p"))])) == [
        msgspec.json.decode(msg),
        {"type": "pong", "ref": "p"},
    ]
    assert msgspec.json.decode(protocol.with_offset(3, protocol.tombstone("s"))) == {
        "offset": 3,
        "type": "chat",
        "session": "s",
        "removed": True,
    }


def test_every_error_code_has_an_http_status() -> None:
    from livecart.runtime.rest.common import HTTP_STATUS

    assert set(HTTP_STATUS) == set(protocol.ERROR_CODES)
    assert len(protocol.ERROR_CODES) == 20


def test_a_purchase_is_1_to_1000_units_on_the_wire_and_over_rest_alike() -> None:
    """SPEC's bound, stated once (`limits.MAX_BUY_QTY`): the `buy` frame and the order body
    take the same figure."""
    from livecart.commerce import OrderCreate
    from livecart.limits import MAX_BUY_QTY

    assert MAX_BUY_QTY == 1000
    frame = b'{"type":"buy","session":"s","offer":"o","qty":%d,"ref":"r"}'
    body = b'{"offer_id":"o","qty":%d,"idempotency_key":"k"}'
    assert protocol.decode_frame(frame % MAX_BUY_QTY) == protocol.Buy("s", "o", MAX_BUY_QTY, "r")
    assert msgspec.json.decode(body % MAX_BUY_QTY, type=OrderCreate).qty == MAX_BUY_QTY
    with pytest.raises(Failure) as exc:
        protocol.decode_frame(frame % (MAX_BUY_QTY + 1))
    assert exc.value.code == "bad_frame"
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body % (MAX_BUY_QTY + 1), type=OrderCreate)


def test_ids_refs_and_cents_share_one_bound_across_frames_bodies_and_rules() -> None:
    from livecart.catalog import models
    from livecart.commerce import OfferCreate
    from livecart.commerce import rules as rules
    from livecart.limits import ID_MAX_CHARS, MAX_CENTS, MAX_QUANTITY

    ok, long = "r" * ID_MAX_CHARS, "r" * (ID_MAX_CHARS + 1)
    assert protocol.is_ref(ok) and not protocol.is_ref(long)
    with pytest.raises(Failure):
        protocol.decode_frame(b'{"type":"ping","ref":"%s"}' % long.encode())
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"product_id": long}, models.PinRequest)
    bid = b'{"type":"bid","session":"s","auction":"a","amount_cents":%d,"ref":"r"}'
    assert isinstance(protocol.decode_frame(bid % MAX_CENTS), protocol.Bid)
    with pytest.raises(Failure):
        protocol.decode_frame(bid % (MAX_CENTS + 1))
    product = {"title": "t", "price_cents": MAX_CENTS + 1}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(product, models.ProductCreate)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {**product, "price_cents": 1, "stock": MAX_QUANTITY + 1}, models.ProductCreate
        )
    offer = {"product_id": "p", "price_cents": 1, "quantity": MAX_QUANTITY + 1}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(offer, OfferCreate)
    terms = rules.OfferTerms(
        price_cents=1, quantity=MAX_QUANTITY + 1, per_user_limit=1, duration_s=60
    )
    with pytest.raises(Failure):
        rules.validate_offer(terms)
