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
    from livecart.api.common import HTTP_STATUS

    assert set(HTTP_STATUS) == set(protocol.ERROR_CODES)
    assert len(protocol.ERROR_CODES) == 20
