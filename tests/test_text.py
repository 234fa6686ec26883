"""The text rule (SPEC §10 "Text") where it is decoded: frames, REST bodies, terms and domains,
and the reply book that makes chat idempotent per (user, ref)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from livecart import protocol
from livecart.catalog.models import (
    PinRequest,
    ProductCreate,
    ProductPatch,
    SessionCreate,
    ShowcaseAdd,
)
from livecart.chat.model import (
    AllowedDomains,
    ModerationRequest,
    ModeratorRequest,
    TermRequest,
)
from livecart.chat.replies import ReplyBook
from livecart.chat.rules import links, terms
from livecart.commerce import AuctionCreate, OfferCreate, OrderCreate
from livecart.protocol import Failure
from livecart.text import Line, Text, check_line, check_visible, is_line

UNSTORABLE = ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\ud800", "\udfff"]
BIDI = ["\u202a", "\u202e", "\u2066", "\u2069"]


@pytest.mark.parametrize("bad", UNSTORABLE + BIDI)
def test_line_refuses_unstorable_and_bidi(bad: str) -> None:
    assert not is_line(f"a{bad}b")
    with pytest.raises(ValueError):
        check_line(bad, "name")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(f"x{bad}", Line)


def test_text_allows_bidi_but_not_unstorable() -> None:
    assert msgspec.convert("\u202eok", Text) == "\u202eok"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert("a\x00", Text)


def test_honest_text_passes() -> None:
    for ok in ("hello", "tab\there", "two\nlines\r\n", "émoji 🎉", "مرحبا", "日本語", "\u200d"):
        assert is_line(ok)


def test_refusal_messages_are_encodable() -> None:
    """The refusal of a bad string is sent back as JSON: its message must encode (a pattern
    holding a raw surrogate made every such refusal a 500)."""
    try:
        msgspec.json.decode(b'"\\u0000"', type=Line)
    except msgspec.ValidationError as exc:
        msgspec.json.encode({"message": str(exc)})
    else:
        raise AssertionError("U+0000 passed")
    msgspec.json.encode(msgspec.json.schema(ProductCreate))


def test_visible() -> None:
    assert check_visible("Mug", "title") == "Mug"
    for blank in ("   ", "\u200b", "\u00ad\u200d", "\t\n", "\u0301"):
        with pytest.raises(ValueError):
            check_visible(blank, "title")


# ------------------------------------------------------------------ frames


def _fails(raw: bytes | str) -> Failure:
    with pytest.raises(Failure) as info:
        protocol.decode_frame(raw)
    return info.value


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"chat","session":"s","text":"a\\u0000","ref":"r"}',
        b'{"type":"chat","session":"s","text":"\\u202eabc","ref":"r"}',
        b'{"type":"chat","session":"s\\u0001","text":"hi","ref":"r"}',
        b'{"type":"join","session":"s","since":{"epoch":"e\\u0000","offset":1}}',
        b'{"type":"join","session":"s","since":{"epoch":"e","offset":9223372036854775808}}',
        b'{"type":"report","session":"s","offset":1180591620717411303424,"reason":"x","ref":"r"}',
        b'{"type":"report","session":"s","offset":1,"reason":"\\u0000","ref":"r"}',
        b'{"type":"buy","session":"s","offer":"o\\u0000","qty":1,"ref":"r"}',
        b'{"type":"bid","session":"s","auction":"a","amount_cents":5,"ref":"r\\u0000"}',
        b'{"type":"signal","session":"s","name":"share","product":"\\u2066"}',
        b'{"type":"chat","session":"s","text":"\\ud800","ref":"r"}',
    ],
)
def test_frames_with_unstorable_values_are_bad_frames(raw: bytes) -> None:
    assert _fails(raw).code == "bad_frame"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"chat","session":"s","text":"a\x7fb","ref":"r"}',  # DEL, unescaped
        '{"type":"chat","session":"s","text":"\u202egnp.exe","ref":"r"}'.encode(),  # raw UTF-8
        '{"type":"chat","session":"s","text":"ok","ref":"\u2066r"}'.encode(),
    ],
)
def test_unescaped_refused_characters_are_bad_frames(raw: bytes) -> None:
    assert _fails(raw).code == "bad_frame"


def test_honest_frames_decode_to_their_types_whatever_the_path() -> None:
    """ASCII without escapes takes the fast path, anything else the full check: the frame
    is the same either way."""
    for text, raw in (
        ("plain ascii", b'{"type":"chat","session":"s","text":"plain ascii","ref":"r"}'),
        ("café 😀", '{"type":"chat","session":"s","text":"café 😀","ref":"r"}'.encode()),
        ("café", b'{"type":"chat","session":"s","text":"caf\\u00e9","ref":"r"}'),
        ("a — b", '{"type":"chat","session":"s","text":"a — b","ref":"r"}'.encode()),
    ):
        frame = protocol.decode_frame(raw)
        expected = protocol.Chat("s", text, "r")
        assert isinstance(frame, protocol.Chat)
        assert frame == expected and expected == frame
        assert type(frame).__struct_config__.tag == "chat"


def test_the_ref_is_echoed_only_when_it_is_text() -> None:
    f = _fails(b'{"type":"chat","session":"s","text":"a\\u0000","ref":"r1"}')
    assert protocol.frame_ref(f) == "r1"
    f = _fails(b'{"type":"chat","session":"s","text":"a","ref":"r\\u0000"}')
    assert protocol.frame_ref(f) is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"chat","session":"s","ref":"r","text":' + "[" * 7000 + "]" * 7000 + "}",
        '{"type":"chat","session":"s","ref":"r","x":' + "[" * 7000 + "]" * 7000 + "}",
        '{"type":' + '{"a":' * 7000 + "1" + "}" * 7000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_deeply_nested_frames_are_bad_frames(raw: str) -> None:
    assert _fails(raw).code == "bad_frame"


def test_offsets_up_to_bigint_pass() -> None:
    frame = protocol.decode_frame(
        b'{"type":"report","session":"s","offset":9223372036854775807,"reason":"x","ref":"r"}'
    )
    assert isinstance(frame, protocol.Report) and frame.offset == 2**63 - 1


# ------------------------------------------------------------------ REST bodies


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (ProductCreate, {"title": "a\x00", "price_cents": 1}),
        (ProductCreate, {"title": "   ", "price_cents": 1}),
        (ProductCreate, {"title": "Mug", "price_cents": 1, "tags": ["\u200b"]}),
        (ProductCreate, {"title": "Mug", "price_cents": 1, "category": "\u202e"}),
        (ProductPatch, {"title": "\u200b"}),
        (ProductPatch, {"tags": ["ok", " "]}),
        (SessionCreate, {"title": "\u00ad\u200d"}),
        (SessionCreate, {"title": "Show", "playback_url": "https://x/\x00"}),
        (SessionCreate, {"title": "Show", "scheduled_at": "2026\x00"}),
        (ShowcaseAdd, {"product_id": "p\x00"}),
        (PinRequest, {"product_id": "p\x01"}),
        (OfferCreate, {"product_id": "p\x00", "price_cents": 1, "quantity": 1}),
        (OrderCreate, {"offer_id": "o", "qty": 1, "idempotency_key": "k\x00"}),
        (
            AuctionCreate,
            {"product_id": "\u2066", "start_cents": 1, "min_increment_cents": 1, "duration_s": 5},
        ),
        (ModerationRequest, {"action": "delete", "offset": 2**63}),
        (ModerationRequest, {"action": "ban", "user_id": "u\x00"}),
        (ModerationRequest, {"action": "ban", "user_id": "u", "reason": "\x1b[2J"}),
        (ModeratorRequest, {"user_id": "\x00"}),
        (TermRequest, {"term": "a\x00"}),
        (AllowedDomains, {"domains": ["\u200b"]}),
        (AllowedDomains, {"domains": ["ok.example", ". "]}),
    ],
)
def test_bodies_with_bad_text_are_refused_while_decoding(
    kind: type, body: dict[str, object]
) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(body), type=kind)


def test_honest_bodies_pass() -> None:
    assert msgspec.convert({"title": " Mug ", "price_cents": 1, "tags": ["blue"]}, ProductCreate)
    assert msgspec.convert({"term": "fake*"}, TermRequest).term == "fake*"
    assert msgspec.convert({"domains": ["Shop.Example"]}, AllowedDomains)
    assert msgspec.convert({"action": "delete", "offset": 2**63 - 1}, ModerationRequest)


# ------------------------------------------------------------------ terms and domains


def test_term_problem_matches_the_matcher() -> None:
    for term in ("\u200b", "   ", "\u00ad\u200d", "*", "**", "\u0301"):
        assert terms.term_problem(term) is not None
        with pytest.raises(ValueError):
            terms.TermMatcher([(term, "block")])
    for term in ("scam", "fake*", "*coin", "ab"):
        assert terms.term_problem(term) is None
        terms.TermMatcher([(term, "block")])


def test_domain_form() -> None:
    assert links.domain_form(" Shop.Example ") == "shop.example"
    assert links.domain_form(".shop.example") == "shop.example"
    assert links.domain_form("shop\u200b.example") == "shop.example"
    assert links.domain_form("\u200b") == ""


# ------------------------------------------------------------------ reply book


async def test_reply_book_first_attempt_then_retries() -> None:
    now = [0.0]
    book = ReplyBook(max_keys=10, horizon_s=600, clock=lambda: now[0])
    first, fut = book.claim(("u", "r1"))
    assert first
    again, waiting = book.claim(("u", "r1"))
    assert not again and waiting is fut  # in flight: the retry waits for the first
    book.settle(("u", "r1"), fut, b"ack")
    assert await waiting == b"ack"
    again, done = book.claim(("u", "r1"))
    assert not again and done.result() == b"ack"
    assert book.claim(("other", "r1"))[0], "refs are per user"
    now[0] = 601.0
    assert book.claim(("u", "r1"))[0], "forgotten after the horizon"


async def test_reply_book_runs_a_retry_when_the_first_had_no_final_answer() -> None:
    book = ReplyBook()
    first, fut = book.claim(("u", "r"))
    again, waiting = book.claim(("u", "r"))
    assert first and not again
    book.settle(("u", "r"), fut, None)
    assert await waiting is None
    assert book.claim(("u", "r"))[0]


async def test_reply_book_is_bounded() -> None:
    book = ReplyBook(max_keys=100)
    for i in range(1000):
        _, fut = book.claim(("u", str(i)))
        book.settle(("u", str(i)), fut, b"x")
    assert len(book) == 100
    await asyncio.sleep(0)
