"""One set of message types: the client's Structs are generated from the server's protocol
and must not drift from it, and the client never imports the server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from livecart import protocol
from livecart_client import LivecartClient, messages, to_message

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_structs_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_python_client.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def _plain(node: Any) -> Any:
    """`items: {}` (any value) and no `items` say the same; msgspec writes one for `Any`,
    the other for `Raw`."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if not (k == "items" and v == {})}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _schema(cls: type[msgspec.Struct], drop: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = _plain(msgspec.json.schema(cls))
    for d in schema.get("$defs", {}).values():
        d.pop("description", None)
        d.pop("title", None)
        if drop and drop in d.get("properties", {}):
            del d["properties"][drop]
            d["required"] = [r for r in d.get("required", []) if r != drop]
    return schema


def test_every_server_message_has_the_same_schema_in_the_client() -> None:
    """Independently of the generator: msgspec's JSON schema of each server message equals
    the client's (room events aside from the `offset` the server splices in)."""
    room_tags = {t.__struct_config__.tag for t in protocol.ROOM_EVENTS}
    client_frames = set(protocol.ClientFrame.__args__)  # type: ignore[attr-defined]
    server = [
        obj
        for name, obj in vars(protocol).items()
        if isinstance(obj, type)
        and issubclass(obj, msgspec.Struct)
        and obj.__module__ == protocol.__name__
        and not name.startswith("_")
        and obj.__struct_config__.tag is not None
        and obj not in client_frames
    ]
    assert len(server) >= 20
    for cls in server:
        mine = getattr(messages, cls.__name__, None)
        assert mine is not None, f"{cls.__name__} is missing from livecart_client.messages"
        drop = "offset" if cls.__struct_config__.tag in room_tags else None
        assert _schema(mine, drop) == _schema(cls), cls.__name__
    assert set(messages.ROOM_EVENT_TYPES) == room_tags


def test_unknown_types_stay_dicts_and_known_ones_decode() -> None:
    chat = to_message(
        {"type": "chat", "offset": 3, "session": "s", "user": "u", "name": "U", "text": "hi", "at": 1}
    )
    assert isinstance(chat, messages.ChatEvent) and chat.text == "hi"
    gone = to_message({"type": "chat", "offset": 4, "session": "s", "removed": True})
    assert isinstance(gone, messages.ChatTombstone)
    new = {"type": "second_chance", "session": "s", "auction": "a", "amount_cents": 5}
    assert to_message(new) == new
    odd = {"type": "viewers", "session": "s"}  # a shape this client does not expect
    assert to_message(odd) == odd
    assert LivecartClient("ws://127.0.0.1:1/ws").connected is False


def test_the_client_does_not_import_the_server() -> None:
    code = (
        "import sys, livecart_client\n"
        "bad = [m for m in sys.modules if m == 'livecart' or m.startswith('livecart.')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
