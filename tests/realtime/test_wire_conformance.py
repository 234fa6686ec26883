"""RFC 6455 conformance of the node's wire (`realtime.wire`), table-driven after the public
case list of the Autobahn|Testsuite (sections 1 framing, 2 pings/pongs, 3 reserved bits,
4 opcodes, 5 fragmentation, 6 UTF-8 handling, 7 closing, 9 limits; 10 miscellaneous). Each
case names the Autobahn case it follows. What the client sends is a list of reads (a case
"chopped" into pieces sends each piece as a read of its own); the expected outcome is the
messages delivered, the pongs written, the close code the node sends and, for fail-fast
cases, the read by which it must have closed.

Cases already in test_wire.py are not repeated here: payload lengths 125/126/65535/65536 and
headers read a byte at a time (1.x binary), a fragmented message with a ping inside (5.6),
a continuation without a message and a new message inside a fragmented one (5.9, 5.18),
single reserved bits (3.1-3.3 single frame), unmasked frames, valid and invalid close codes
and a close reason that is not UTF-8 (7.7, 7.9, 7.5.1). Not done: failing within one frame
that is still arriving (Autobahn 6.4.3/6.4.4, "non-strict" there): a frame is checked once
complete, and a frame is at most `max_size`. Compression (12.x, 13.x) is never negotiated
here (permessage-deflate clients are served by uvicorn's protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from livecart.realtime import wire
from livecart.realtime.wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

from .test_wire import Wire, client_frame, close_payload, server_frames

MAX_SIZE = 1 << 20  # the node's ws_max_size by default


@dataclass
class Case:
    id: str
    reads: list[bytes]
    messages: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    close: int | None = None  # the code of the node's close frame, if it sends one
    by: int | None = None  # the read after which the close must have been sent


def f(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    if len(payload) > 4096:  # masked in C
        n = len(payload)
        b0 = (0x80 if fin else 0) | rsv | opcode
        head = (
            bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
            if n < 1 << 16
            else bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
        )
        mask = b"\x37\xfa\x21\x3d"
        return head + mask + wire.apply_mask(payload, mask)
    return client_frame(opcode, payload, fin=fin, rsv=rsv)


def chop(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def octets(data: bytes) -> list[bytes]:
    return chop(data, 1)


def run(case: Case, *, max_fragments: int = wire.MAX_FRAGMENTS) -> None:
    w = Wire(max_size=MAX_SIZE, max_fragments=max_fragments).open()
    written = b""
    for i, read in enumerate(case.reads):
        if w.transport.closed:
            break
        w.proto.data_received(read)
        written += w.transport.take()
        if case.by is not None and i == case.by:
            assert any(op == OP_CLOSE for _, op, _ in server_frames(written)), (
                f"no close after read {i}"
            )
    frames = server_frames(written)
    assert w.gateway.payloads() == case.messages
    assert [p for _, op, p in frames if op == OP_PONG] == case.pongs
    closes = [p for _, op, p in frames if op == OP_CLOSE]
    if case.close is None:
        assert closes == [] and not w.transport.closed
    else:
        assert [int.from_bytes(p[:2], "big") for p in closes] == [case.close]
        assert w.transport.closed, "a failed connection is closed at once"
    assert all(op in (OP_PONG, OP_CLOSE) for _, op, _ in frames)


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def cases_of(cases: list[Case]) -> object:
    return pytest.mark.parametrize("case", cases, ids=ids(cases))


# ---------------------------------------------------------------- 1 framing

FRAMING = [
    Case(f"1.1.{i} text {n}", [f(OP_TEXT, b"*" * n)], [b"*" * n])
    for i, n in enumerate([0, 125, 126, 127, 128, 65535, 65536], 1)
] + [
    Case("1.1.8 text 65536 in chops of 997", chop(f(OP_TEXT, b"*" * 65536), 997), [b"*" * 65536]),
    Case("1.2.4 binary 127", [f(OP_BINARY, b"\xfe" * 127)], [b"\xfe" * 127]),
    Case("1.2.5 binary 128", [f(OP_BINARY, b"\xfe" * 128)], [b"\xfe" * 128]),
    Case(
        "1.2.8 binary 65536 in chops of 997",
        chop(f(OP_BINARY, b"\xfe" * 65536), 997),
        [b"\xfe" * 65536],
    ),
]


@cases_of(FRAMING)
async def test_1_framing(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 2 pings and pongs

PINGS = [
    Case("2.1 ping without payload", [f(OP_PING)], pongs=[b""]),
    Case("2.2 ping with small text", [f(OP_PING, b"Hello, world!")], pongs=[b"Hello, world!"]),
    Case("2.3 ping with binary", [f(OP_PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")],
         pongs=[b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"]),
    Case("2.4 ping of 125", [f(OP_PING, b"\xfe" * 125)], pongs=[b"\xfe" * 125]),
    Case("2.5 ping of 126 fails", [f(OP_PING, b"\xfe" * 126)], close=1002),
    Case("2.6 ping of 125 in 1-octet chops", octets(f(OP_PING, b"\xfe" * 125)),
         pongs=[b"\xfe" * 125]),
    Case("2.7 unsolicited pong", [f(OP_PONG)]),
    Case("2.8 unsolicited pong with payload", [f(OP_PONG, b"unsolicited pong payload")]),
    Case("2.9 unsolicited pong then ping", [f(OP_PONG, b"x"), f(OP_PING, b"ping")],
         pongs=[b"ping"]),
    Case("2.10 ten pings", [b"".join(f(OP_PING, b"p%d" % i) for i in range(10))],
         pongs=[b"p%d" % i for i in range(10)]),
    Case("2.11 ten pings in 1-octet chops",
         octets(b"".join(f(OP_PING, b"p%d" % i) for i in range(10))),
         pongs=[b"p%d" % i for i in range(10)]),
]  # fmt: skip


@cases_of(PINGS)
async def test_2_pings_and_pongs(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 3 reserved bits

RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10
RESERVED_BITS = [
    Case("3.2 text, text with RSV2, ping (one read)",
         [f(OP_TEXT, b"ok") + f(OP_TEXT, b"x", rsv=RSV2) + f(OP_PING)], [b"ok"], close=1002),
    Case("3.3 text, text with RSV3, ping (frame-wise)",
         [f(OP_TEXT, b"ok"), f(OP_TEXT, b"x", rsv=RSV3), f(OP_PING)], [b"ok"], close=1002, by=1),
    Case("3.4 text, text with RSV1+2, ping (octet-wise)",
         octets(f(OP_TEXT, b"ok") + f(OP_TEXT, b"x", rsv=RSV1 | RSV2) + f(OP_PING)),
         [b"ok"], close=1002),
    Case("3.5 binary with RSV1+3", [f(OP_BINARY, b"\x00\xff", rsv=RSV1 | RSV3)], close=1002),
    Case("3.6 ping with RSV2+3", [f(OP_PING, b"p", rsv=RSV2 | RSV3)], close=1002),
    Case("3.7 close with all RSV bits",
         [f(OP_CLOSE, close_payload(1000), rsv=RSV1 | RSV2 | RSV3)], close=1002),
]  # fmt: skip


@cases_of(RESERVED_BITS)
async def test_3_reserved_bits(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 4 opcodes

OPCODES = [
    Case(f"4.1.{i} reserved data opcode {op}", [f(op, payload)], close=1002)
    for i, (op, payload) in enumerate([(3, b""), (4, b"reserved")], 1)
] + [
    Case(f"4.1.{i} text, reserved data opcode {op}, ping",
         [f(OP_TEXT, b"ok"), f(op, payload), f(OP_PING)], [b"ok"], close=1002, by=1)
    for i, (op, payload) in enumerate([(5, b""), (6, b"reserved"), (7, b"reserved")], 3)
] + [
    Case(f"4.2.{i} reserved control opcode {op}", [f(op, payload)], close=1002)
    for i, (op, payload) in enumerate([(11, b""), (12, b"reserved")], 1)
] + [
    Case(f"4.2.{i} text, reserved control opcode {op}, ping",
         [f(OP_TEXT, b"ok"), f(op, payload), f(OP_PING)], [b"ok"], close=1002, by=1)
    for i, (op, payload) in enumerate([(13, b""), (14, b"reserved"), (15, b"reserved")], 3)
]  # fmt: skip


@cases_of(OPCODES)
async def test_4_opcodes(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 5 fragmentation

FRAG1, FRAG2 = b"fragment1", b"fragment2"
TWO_FRAGMENTS = f(OP_TEXT, FRAG1, fin=False) + f(OP_CONT, FRAG2)
WITH_PING = f(OP_TEXT, FRAG1, fin=False) + f(OP_PING, b"ping") + f(OP_CONT, FRAG2)
FRAGMENTATION = [
    Case("5.1 ping in 2 fragments", [f(OP_PING, b"a", fin=False) + f(OP_CONT, b"b")],
         close=1002),
    Case("5.2 pong in 2 fragments", [f(OP_PONG, b"a", fin=False) + f(OP_CONT, b"b")],
         close=1002),
    Case("5.3 text in 2 fragments", [TWO_FRAGMENTS], [FRAG1 + FRAG2]),
    Case("5.4 text in 2 fragments, frame-wise",
         [f(OP_TEXT, FRAG1, fin=False), f(OP_CONT, FRAG2)], [FRAG1 + FRAG2]),
    Case("5.5 text in 2 fragments, octet-wise", octets(TWO_FRAGMENTS), [FRAG1 + FRAG2]),
    Case("5.7 text in 2 fragments with a ping, frame-wise",
         [f(OP_TEXT, FRAG1, fin=False), f(OP_PING, b"ping"), f(OP_CONT, FRAG2)],
         [FRAG1 + FRAG2], [b"ping"]),
    Case("5.8 text in 2 fragments with a ping, octet-wise", octets(WITH_PING),
         [FRAG1 + FRAG2], [b"ping"]),
    Case("5.10 unfragmented continuation then text, frame-wise",
         [f(OP_CONT, b"x"), f(OP_TEXT, b"y")], close=1002, by=0),
    Case("5.11 unfragmented continuation then text, octet-wise",
         octets(f(OP_CONT, b"x") + f(OP_TEXT, b"y")), close=1002),
    Case("5.12 continuation with FIN unset, nothing to continue",
         [f(OP_CONT, b"x", fin=False) + f(OP_TEXT, b"y")], close=1002),
    Case("5.13 same, frame-wise", [f(OP_CONT, b"x", fin=False), f(OP_TEXT, b"y")],
         close=1002, by=0),
    Case("5.14 same, octet-wise", octets(f(OP_CONT, b"x", fin=False) + f(OP_TEXT, b"y")),
         close=1002),
    Case("5.15 text in 2 fragments, then a continuation and a text",
         [TWO_FRAGMENTS + f(OP_CONT, b"x") + f(OP_TEXT, b"y")], [FRAG1 + FRAG2], close=1002),
    Case("5.16 twice: a continuation with FIN unset, text, continuation",
         [(f(OP_CONT, b"x", fin=False) + f(OP_TEXT, b"y") + f(OP_CONT, b"z")) * 2],
         close=1002),
    Case("5.17 twice: a continuation with FIN set, text, continuation",
         [(f(OP_CONT, b"x") + f(OP_TEXT, b"y") + f(OP_CONT, b"z")) * 2], close=1002),
    Case("5.18 a text message in 2 text frames",
         [f(OP_TEXT, FRAG1, fin=False) + f(OP_TEXT, FRAG2)], close=1002),
    Case("5.19 text in 5 fragments with 2 pings between, frame-wise",
         [f(OP_TEXT, b"f1", fin=False), f(OP_CONT, b"f2", fin=False), f(OP_PING, b"p1"),
          f(OP_CONT, b"f3", fin=False), f(OP_CONT, b"f4", fin=False), f(OP_PING, b"p2"),
          f(OP_CONT, b"f5")],
         [b"f1f2f3f4f5"], [b"p1", b"p2"]),
    Case("5.20 same, octet-wise",
         octets(f(OP_TEXT, b"f1", fin=False) + f(OP_CONT, b"f2", fin=False)
                + f(OP_PING, b"p1") + f(OP_CONT, b"f3", fin=False)
                + f(OP_CONT, b"f4", fin=False) + f(OP_PING, b"p2") + f(OP_CONT, b"f5")),
         [b"f1f2f3f4f5"], [b"p1", b"p2"]),
    Case("5.x empty fragments", [f(OP_TEXT, b"", fin=False) + f(OP_CONT, b"", fin=False)
                                 + f(OP_CONT, b"")], [b""]),
    Case("5.x binary in fragments", [f(OP_BINARY, b"\x00", fin=False) + f(OP_CONT, b"\xff")],
         [b"\x00\xff"]),
]  # fmt: skip


@cases_of(FRAGMENTATION)
async def test_5_fragmentation(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 6 UTF-8 handling


def first_invalid(data: bytes) -> int | None:
    """Where a byte makes `data` invalid UTF-8 (RFC 3629 §4), or len(data) when it is only
    truncated, or None when valid: a reference independent of the node's decoder."""
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            ranges = [(0x80, 0xBF)]
        elif b == 0xE0:
            ranges = [(0xA0, 0xBF), (0x80, 0xBF)]
        elif 0xE1 <= b <= 0xEC or 0xEE <= b <= 0xEF:
            ranges = [(0x80, 0xBF)] * 2
        elif b == 0xED:
            ranges = [(0x80, 0x9F), (0x80, 0xBF)]
        elif b == 0xF0:
            ranges = [(0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)]
        elif 0xF1 <= b <= 0xF3:
            ranges = [(0x80, 0xBF)] * 3
        elif b == 0xF4:
            ranges = [(0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)]
        else:
            return i
        for k, (lo, hi) in enumerate(ranges, 1):
            if i + k >= n:
                return n
            if not lo <= data[i + k] <= hi:
                return i + k
        i += 1 + len(ranges)
    return None


VALID_UTF8 = {
    "6.1.1 empty": b"",
    "6.2 Hello-µ@ßöäüàá-UTF-8!!": "Hello-µ@ßöäüàá-UTF-8!!".encode(),
    "6.5.1 kosme": "κόσμε".encode(),
    "6.7.1 U+0000": b"\x00",
    "6.7.2 U+0080": b"\xc2\x80",
    "6.7.3 U+0800": b"\xe0\xa0\x80",
    "6.7.4 U+10000": b"\xf0\x90\x80\x80",
    "6.8.1 U+007F": b"\x7f",
    "6.8.2 U+07FF": b"\xdf\xbf",
    "6.8.3 U+FFFF": b"\xef\xbf\xbf",
    "6.8.4 U+10FFFF": b"\xf4\x8f\xbf\xbf",
    "6.9.1 U+D7FF": b"\xed\x9f\xbf",
    "6.9.2 U+E000": b"\xee\x80\x80",
    "6.9.3 U+FFFD": b"\xef\xbf\xbd",
    "6.22 noncharacter U+FFFE": b"\xef\xbf\xbe",
    "6.22 noncharacter U+10FFFE": b"\xf4\x8f\xbf\xbe",
    "6.23 BOM U+FEFF": b"\xef\xbb\xbf",
}
INVALID_UTF8 = {
    "6.3.1 kosme-edited": b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    "6.6 kosme then a lone lead": "κόσμε".encode() + b"\xce",
    "6.7 first 5-octet": b"\xf8\x88\x80\x80\x80",
    "6.7 first 6-octet": b"\xfc\x84\x80\x80\x80\x80",
    "6.8 U+110000": b"\xf4\x90\x80\x80",
    "6.8 last 5-octet": b"\xfb\xbf\xbf\xbf\xbf",
    "6.10.1 lone 0x80": b"\x80",
    "6.10.2 lone 0xbf": b"\xbf",
    "6.10.3 continuations": b"\x80\xbf\x80\xbf",
    "6.12 all continuation bytes": bytes(range(0x80, 0xC0)),
    "6.13.1 lone 2-octet starts": b"\xc0 \xc1 \xc2 ",
    "6.13.2 lone 3-octet start": b"\xe0 ",
    "6.13.3 lone 4-octet start": b"\xf0 ",
    "6.14.1 2-octet missing last": b"\xc2",
    "6.14.2 3-octet missing last": b"\xe0\xa0",
    "6.14.3 4-octet missing last": b"\xf0\x90\x80",
    "6.14.4 U+07FF missing last": b"\xdf",
    "6.14.5 U+FFFF missing last": b"\xef\xbf",
    "6.15 incomplete sequences concatenated": b"\xc0\xe0\x80\xf0\x80\x80\xdf\xef\xbf",
    "6.16.1 0xfe": b"\xfe",
    "6.16.2 0xff": b"\xff",
    "6.16.3 fe fe ff ff": b"\xfe\xfe\xff\xff",
    "6.17.1 overlong /": b"\xc0\xaf",
    "6.17.2 overlong / (3)": b"\xe0\x80\xaf",
    "6.17.3 overlong / (4)": b"\xf0\x80\x80\xaf",
    "6.18.1 max overlong 2": b"\xc1\xbf",
    "6.18.2 max overlong 3": b"\xe0\x9f\xbf",
    "6.18.3 max overlong 4": b"\xf0\x8f\xbf\xbf",
    "6.19.1 overlong NUL 2": b"\xc0\x80",
    "6.19.2 overlong NUL 3": b"\xe0\x80\x80",
    "6.20.1 U+D800": b"\xed\xa0\x80",
    "6.20.4 U+DB80": b"\xed\xae\x80",
    "6.20.5 U+DBFF": b"\xed\xaf\xbf",
    "6.20.6 U+DC00": b"\xed\xb0\x80",
    "6.20.7 U+DFFF": b"\xed\xbf\xbf",
    "6.21.1 U+D800 U+DC00": b"\xed\xa0\x80\xed\xb0\x80",
    "6.21.8 U+DBFF U+DFFF": b"\xed\xaf\xbf\xed\xbf\xbf",
}


def test_the_reference_agrees_with_python() -> None:
    for text in VALID_UTF8.values():
        assert first_invalid(text) is None
        text.decode()
    for text in INVALID_UTF8.values():
        assert first_invalid(text) is not None
        with pytest.raises(UnicodeDecodeError):
            text.decode()


@pytest.mark.parametrize("text", list(VALID_UTF8.values()), ids=list(VALID_UTF8))
@pytest.mark.parametrize("how", ["one-frame", "octet-fragments", "chopped-frame"])
async def test_6_valid_utf8_is_delivered(text: bytes, how: str) -> None:
    if how == "one-frame":
        run(Case("", [f(OP_TEXT, text)], [text]))
    elif how == "octet-fragments" and 1 < len(text) < wire.MAX_FRAGMENTS:
        frames = [
            f(OP_TEXT if i == 0 else OP_CONT, text[i : i + 1], fin=i == len(text) - 1)
            for i in range(len(text))
        ]
        run(Case("", frames, [text]))
    else:
        run(Case("", octets(f(OP_TEXT, text)), [text]))


@pytest.mark.parametrize("text", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
@pytest.mark.parametrize("how", ["one-frame", "octet-fragments", "chopped-frame", "with-tail"])
async def test_6_invalid_utf8_closes_with_1007_as_soon_as_it_is_known(
    text: bytes, how: str
) -> None:
    bad = first_invalid(text)
    assert bad is not None
    if how == "one-frame":
        run(Case("", [f(OP_TEXT, text)], close=1007, by=0))
    elif how == "chopped-frame":
        run(Case("", octets(f(OP_TEXT, text)), close=1007))
    elif how == "octet-fragments":
        # Each octet a fragment, the last one never sent: the close comes with the octet
        # that makes the text invalid (a truncated text only when the message ends).
        frames = [f(OP_TEXT if i == 0 else OP_CONT, text[i : i + 1], fin=False)
                  for i in range(len(text))]  # fmt: skip
        if bad == len(text):
            frames.append(f(OP_CONT, b""))
        run(Case("", frames, close=1007, by=min(bad, len(frames) - 1)))
    else:
        # 6.4.1/6.4.2: valid, then the fragment that breaks it, then valid text that never
        # gets read: fail fast.
        frames = [
            f(OP_TEXT, "κόσμε".encode(), fin=False),
            f(OP_CONT, text, fin=bad == len(text)),
            f(OP_CONT, b"edited"),
        ]
        run(Case("", frames, close=1007, by=1))


FAIL_FAST = [
    Case("6.4.1 the middle fragment is U+110000",
         [f(OP_TEXT, "κόσμε".encode(), fin=False), f(OP_CONT, b"\xf4\x90\x80\x80", fin=False),
          f(OP_CONT, b"edited")], close=1007, by=1),
    Case("6.4.2 the first fragment ends in a lead, the next breaks it",
         [f(OP_TEXT, "κόσμε".encode() + b"\xf4", fin=False), f(OP_CONT, b"\x90", fin=False),
          f(OP_CONT, b"\x80\x80edited")], close=1007, by=1),
    Case("6.x a surrogate fails at its second octet",
         [f(OP_TEXT, b"ok\xed", fin=False), f(OP_CONT, b"\xa0", fin=False),
          f(OP_CONT, b"\x80")], close=1007, by=1),
]  # fmt: skip


@cases_of(FAIL_FAST)
async def test_6_4_fail_fast(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 7 closing

CLOSE_1000 = f(OP_CLOSE, close_payload(1000))
CLOSING = [
    Case("7.1.1 text then close", [f(OP_TEXT, b"Hello World!") + CLOSE_1000],
         [b"Hello World!"], close=1000),
    Case("7.1.2 close twice", [CLOSE_1000 + CLOSE_1000], close=1000),
    Case("7.1.3 ping after close", [CLOSE_1000 + f(OP_PING, b"late")], close=1000),
    Case("7.1.4 text after close", [CLOSE_1000 + f(OP_TEXT, b"late")], close=1000),
    Case("7.1.5 fragmented text with a close between",
         [f(OP_TEXT, FRAG1, fin=False) + CLOSE_1000 + f(OP_CONT, FRAG2)], close=1000),
    Case("7.1.6 256 KiB text, close, ping",
         [f(OP_TEXT, b"*" * (256 << 10)) + CLOSE_1000 + f(OP_PING)], [b"*" * (256 << 10)],
         close=1000),
    Case("7.3.1 close without payload (answered 1000)", [f(OP_CLOSE)], close=1000),
    Case("7.3.2 close with a 1-octet payload", [f(OP_CLOSE, b"\x03")], close=1002),
    Case("7.3.3 close with a code only", [CLOSE_1000], close=1000),
    Case("7.3.4 close with a code and reason", [f(OP_CLOSE, close_payload(1000, b"bye"))],
         close=1000),
    Case("7.3.5 close with a 123-octet reason",
         [f(OP_CLOSE, close_payload(1000, b"r" * 123))], close=1000),
    Case("7.3.6 close with a 124-octet reason", [f(OP_CLOSE, close_payload(1000, b"r" * 124))],
         close=1002),
    Case("7.x close frame not final", [f(OP_CLOSE, close_payload(1000), fin=False)],
         close=1002),
    Case("7.x close in 1-octet chops", octets(f(OP_CLOSE, close_payload(1001, b"away"))),
         close=1001),
]  # fmt: skip


@cases_of(CLOSING)
async def test_7_closing(case: Case) -> None:
    run(case)


# ---------------------------------------------------------------- 9 limits (and 10)

KIB = 1 << 10
LIMITS = [
    Case(f"9.1.{i} text {n // KIB} KiB", [f(OP_TEXT, b"*" * n)], [b"*" * n])
    for i, n in enumerate([64 * KIB, 256 * KIB, MAX_SIZE], 1)
] + [
    Case("9.1.4 text 4 MiB: refused from its header", [f(OP_TEXT, b"*" * (4 << 20))[:10]],
         close=1009, by=0),
    Case("9.2.3 binary 1 MiB", [f(OP_BINARY, b"\xfe" * MAX_SIZE)], [b"\xfe" * MAX_SIZE]),
    Case("9.2.4 binary 4 MiB: refused from its header",
         [f(OP_BINARY, b"\xfe" * (4 << 20))[:10]], close=1009, by=0),
] + [
    Case(f"9.3 text 256 KiB in frames of {size // KIB} KiB",
         [b"".join(f(OP_TEXT if i == 0 else OP_CONT, b"*" * size, fin=i == 256 * KIB // size - 1)
                   for i in range(256 * KIB // size))],
         [b"*" * (256 * KIB)])
    for size in (4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB)
] + [
    Case("9.3 text 256 KiB in 1 KiB frames: more than max_fragments",
         [b"".join(f(OP_TEXT if i == 0 else OP_CONT, b"*" * KIB, fin=i == 255)
                   for i in range(256))], close=1009),
    Case("9.3 text 4 MiB in 64 KiB frames: over max_size while arriving",
         chop(b"".join(f(OP_TEXT if i == 0 else OP_CONT, b"*" * (64 * KIB), fin=i == 63)
                       for i in range(64)), 64 * KIB + 8), close=1009, by=16),
] + [
    Case(f"9.5 text 1 MiB in chops of {size}", chop(f(OP_TEXT, b"*" * MAX_SIZE), size),
         [b"*" * MAX_SIZE])
    for size in (64, 128, 256, 1024, 4096)
] + [
    Case("9.7 1000 text messages of 16 octets", [f(OP_TEXT, b"*" * 16) * 1000],
         [b"*" * 16] * 1000),
    Case("9.8 1000 binary messages in 1-octet chops",
         octets(f(OP_BINARY, b"\xfe" * 4) * 1000), [b"\xfe" * 4] * 1000),
    Case("10.1.1 64 KiB text in 1300-octet frames",
         [b"".join(f(OP_TEXT if i == 0 else OP_CONT, piece, fin=i == 50)
                   for i, piece in enumerate(chop(b"*" * 65536, 1300)))],
         [b"*" * 65536]),
]  # fmt: skip


@cases_of(LIMITS)
async def test_9_limits(case: Case) -> None:
    run(case)
