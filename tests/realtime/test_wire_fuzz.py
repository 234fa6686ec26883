"""Fuzzing the frame parser (`realtime.wire`) with Hypothesis, on the recording transport and
gateway of test_wire: random byte streams (valid frames, invalid ones, garbage) cut at random
points never raise, end only in the defined closes, keep the protocol's buffers within the
message limit, and behave exactly as the same stream read in one piece. Conversations of valid
frames deliver exactly their messages however they are cut. The HTTP head limit is fuzzed the
same way. Derandomized, so every run tries the same examples."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livecart.realtime import wire
from livecart.realtime.wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

from .test_wire import Http, Wire, client_frame, close_payload, server_frames

MAX_SIZE = 2048
MAX_FRAGMENTS = 8
FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

masks = st.binary(min_size=4, max_size=4)
payloads = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=120, max_size=300),
    st.text(max_size=40).map(str.encode),
)


@st.composite
def data_frames(draw: Any) -> bytes:
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT]))
    return client_frame(opcode, draw(payloads), fin=draw(st.booleans()), mask=draw(masks))


@st.composite
def control_frames(draw: Any) -> bytes:
    opcode = draw(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE]))
    if opcode == OP_CLOSE and draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1002, 1005, 1007, 1016, 3000, 4999, 5000]))
        payload = close_payload(code, draw(st.binary(max_size=10)))
    else:
        payload = draw(st.binary(max_size=130))
    fin = draw(st.sampled_from([True, True, True, False]))
    return client_frame(opcode, payload, fin=fin, mask=draw(masks))


@st.composite
def invalid_frames(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["unmasked", "rsv", "opcode", "huge", "too-big", "utf8"]))
    payload = draw(st.binary(max_size=20))
    if kind == "unmasked":
        return client_frame(OP_TEXT, payload, masked=False)
    if kind == "rsv":
        return client_frame(OP_TEXT, payload, rsv=draw(st.sampled_from([0x10, 0x20, 0x40])))
    if kind == "opcode":
        return client_frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 15])), payload)
    if kind == "huge":  # a header announcing far more than any limit, and no payload
        return bytes((0x82, 0xFF)) + draw(st.integers(MAX_SIZE + 1, 2**63 - 1)).to_bytes(8, "big")
    if kind == "too-big":
        return client_frame(OP_BINARY, bytes(MAX_SIZE + 1))
    return client_frame(OP_TEXT, b"ok" + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0"])))


streams = st.lists(
    st.one_of(
        data_frames(),
        data_frames(),
        control_frames(),
        invalid_frames(),
        st.binary(min_size=1, max_size=24),  # garbage
    ),
    max_size=24,
).map(b"".join)


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(stream), *(p % (len(stream) + 1) for p in points)})
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def run(chunks: list[bytes]) -> tuple[Wire, list[tuple[bool, int, bytes]]]:
    """Feed the chunks as a socket would (nothing after the transport is closed), checking
    the buffers after each; the protocol and every frame it wrote."""
    w = Wire(max_size=MAX_SIZE, max_fragments=MAX_FRAGMENTS).open()
    for chunk in chunks:
        if w.transport.closed:
            break
        w.proto.data_received(chunk)
        buf, parts = w.proto._buf, w.proto._parts
        assert buf is None or 0 < len(buf) < 14 + MAX_SIZE
        assert parts is None or len(parts) <= MAX_SIZE
    return w, server_frames(w.transport.take())


VALID_CLOSE_CODES = {1000, 1001, 1003, *range(1007, 1015), *range(3000, 5000)}


@FUZZ
@given(stream=streams, points=st.lists(st.integers(min_value=0), max_size=16))
async def test_any_stream_cut_anywhere_ends_only_in_a_defined_close(
    stream: bytes, points: list[int]
) -> None:
    w, written = run(cut(stream, points))
    whole, whole_written = run([stream])
    # Cut or not, the same messages, frames and fate.
    assert written == whole_written
    assert w.gateway.payloads() == whole.gateway.payloads()
    assert len(w.gateway.fragments) == len(whole.gateway.fragments)
    assert w.transport.closed == whole.transport.closed
    closes = [payload for _, opcode, payload in written if opcode == OP_CLOSE]
    assert len(closes) <= 1
    assert all(opcode in (OP_PONG, OP_CLOSE) for _, opcode, _ in written)
    for _, message in w.gateway.messages:
        assert len(message) <= MAX_SIZE
    w.proto.connection_lost(None)
    [(_, reported)] = w.gateway.closes
    if closes:
        # A protocol error of the client's, or the echo of its own valid close.
        code = int.from_bytes(closes[0][:2], "big")
        assert code in (1002, 1007, 1009) or code in VALID_CLOSE_CODES
        assert reported == code or (reported, code) == (1005, 1000)
        assert w.transport.closed
    else:
        assert reported == 1006 and not w.transport.closed


@st.composite
def conversations(draw: Any) -> tuple[bytes, list[bytes], list[bytes]]:
    """Valid messages, some fragmented with pings between their frames: the stream, the
    messages and the ping payloads."""
    stream = b""
    messages: list[bytes] = []
    pings: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        is_text = draw(st.booleans())
        message = draw(st.text(max_size=200)).encode() if is_text else draw(st.binary(max_size=300))
        n = draw(st.integers(1, MAX_FRAGMENTS))
        if len(message) + n * wire.FRAME_COST * (n > 1) > MAX_SIZE:
            n = 1
        edges = sorted(draw(st.lists(st.integers(0, len(message)), min_size=n - 1, max_size=n - 1)))
        pieces = [message[a:b] for a, b in zip([0, *edges], [*edges, len(message)], strict=True)]
        for i, piece in enumerate(pieces):
            opcode = (OP_TEXT if is_text else OP_BINARY) if i == 0 else OP_CONT
            stream += client_frame(opcode, piece, fin=i == n - 1, mask=draw(masks))
            if draw(st.integers(0, 4)) == 0:
                ping = draw(st.binary(max_size=125))
                pings.append(ping)
                stream += client_frame(OP_PING, ping, mask=draw(masks))
        messages.append(message)
    return stream, messages, pings


@FUZZ
@given(conversation=conversations(), points=st.lists(st.integers(min_value=0), max_size=30))
async def test_valid_conversations_deliver_exactly_their_messages_however_cut(
    conversation: tuple[bytes, list[bytes], list[bytes]], points: list[int]
) -> None:
    stream, messages, pings = conversation
    w, written = run(cut(stream, points))
    assert w.gateway.payloads() == messages
    assert written == [(True, OP_PONG, p) for p in pings]
    assert not w.transport.closed
    assert w.proto._buf is None and w.proto._parts is None


@FUZZ
@given(
    head=st.binary(min_size=1, max_size=3000),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
async def test_http_heads_never_feed_the_parser_more_than_the_limit(
    head: bytes, points: list[int]
) -> None:
    h = Http(max_head=1024)
    for chunk in cut(b"GET / HTTP/1.1\r\n" + head, points):
        if h.transport.closed:
            break
        h.feed(chunk)
        assert h.parser.fed <= 1024 or h.proto._head < 0  # type: ignore[attr-defined]
    answer = h.transport.take()
    assert answer == b"" or answer.startswith(
        (b"HTTP/1.1 400 ", b"HTTP/1.1 431 ", b"HTTP/1.1 200 ")
    ), answer[:100]
    h.proto.connection_lost(None)
