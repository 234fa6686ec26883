#!/usr/bin/env python3
"""Write the Python client's message Structs (`clients/python/src/livecart_client/messages.py`)
from the server's protocol (`src/livecart/protocol.py`), so both speak one set of types.

Every tagged msgspec Struct the protocol module defines that is not a client frame is a
server message; the untagged Structs they use (Limits, SessionState, …) come along. Room log
events (the tags of `protocol.ROOM_EVENTS`) gain the `offset` the server splices in. The
client gets no import of the server: the file is plain source.

    python scripts/gen_python_client.py          # rewrite the file
    python scripts/gen_python_client.py --check  # exit 1 when it is not up to date

`tests/client/test_messages.py` runs the check, so CI fails when the protocol changes and
the client was not regenerated.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Struct

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "clients" / "python" / "src" / "livecart_client" / "messages.py"

HEADER = '''"""Server messages of the livecart protocol (SPEC §5), as msgspec Structs.

GENERATED from the server's `livecart.protocol` by `scripts/gen_python_client.py`; do not
edit by hand. Room log events carry the `offset` the server adds when it delivers them.
"""

from __future__ import annotations

{imports}

__all__ = [
{names}
]
'''


def _render(tp: Any, need: list[type[Struct]]) -> str:
    if tp is Any or tp is msgspec.Raw:
        return "Any"  # raw JSON reaches the client as plain values
    if tp is type(None):
        return "None"
    origin = get_origin(tp)
    if origin is Annotated:
        return _render(get_args(tp)[0], need)
    if origin in (Union, types.UnionType):
        return " | ".join(_render(a, need) for a in get_args(tp))
    if origin is Literal:
        return "Literal[" + ", ".join(_q(a) for a in get_args(tp)) + "]"
    if origin in (list, dict, set, frozenset, tuple):
        args = get_args(tp)
        inner = ", ".join("..." if a is Ellipsis else _render(a, need) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(tp, type) and issubclass(tp, Struct):
        if tp not in need:
            need.append(tp)
        return tp.__name__
    if tp in (str, int, float, bool, bytes):
        return str(tp.__name__)
    raise TypeError(f"no client type for {tp!r}")


def _q(value: Any) -> str:
    """A literal as source, strings in double quotes."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _default(f: msgspec.structs.FieldInfo) -> str:
    if f.default is not msgspec.NODEFAULT:
        return _q(f.default)
    return f"msgspec.field(default_factory={f.default_factory.__name__})"


def server_messages(protocol: types.ModuleType) -> list[type[Struct]]:
    """The protocol's server messages, in the module's order."""
    client_frames = set(get_args(protocol.ClientFrame))
    out = []
    for name, obj in vars(protocol).items():
        if (
            isinstance(obj, type)
            and issubclass(obj, Struct)
            and obj.__module__ == protocol.__name__
            and not name.startswith("_")
            and obj.__struct_config__.tag is not None
            and obj not in client_frames
        ):
            out.append(obj)
    return out


def room_event_tags(protocol: types.ModuleType) -> set[str]:
    return {t.__struct_config__.tag for t in protocol.ROOM_EVENTS}


def generate() -> str:
    from livecart import protocol

    tagged = server_messages(protocol)
    room_tags = room_event_tags(protocol)
    need: list[type[Struct]] = []
    bodies: dict[type[Struct], str] = {}
    queue = list(tagged)
    while queue:
        cls = queue.pop(0)
        if cls in bodies:
            continue
        config = cls.__struct_config__
        opts = ["kw_only=True"]
        if config.tag is not None:
            opts = [f"tag={_q(config.tag)}", f"tag_field={_q(config.tag_field)}", *opts]
        lines = [f"class {cls.__name__}(Struct, {', '.join(opts)}):"]
        if config.tag in room_tags:
            lines.append("    offset: int")
        for f in msgspec.structs.fields(cls):
            hint = _render(f.type, need)
            if f.required:
                lines.append(f"    {f.name}: {hint}")
            else:
                lines.append(f"    {f.name}: {hint} = {_default(f)}")
        bodies[cls] = "\n".join(lines)
        for extra in need:
            if extra not in bodies and extra not in queue:
                queue.append(extra)
    # Nested (untagged) Structs first, so every name is defined before it is used.
    order = [c for c in bodies if c.__struct_config__.tag is None] + [
        c for c in bodies if c.__struct_config__.tag is not None
    ]
    exported = ["ROOM_EVENT_TYPES", "SERVER_MESSAGES", *sorted(c.__name__ for c in order)]
    names = "\n".join(f'    "{n}",' for n in exported)
    union = [c.__name__ for c in tagged]
    body = "\n\n\n".join(bodies[c] for c in order)
    typing = ["Any"] + (["Literal"] if "Literal[" in body else [])
    imports = f"from typing import {', '.join(typing)}\n\n"
    imports += "import msgspec\n" if "msgspec." in body else ""
    imports += "from msgspec import Struct"
    text = HEADER.format(names=names, imports=imports)
    text += "\n\n" + body + "\n"
    text += "\n\n# Every server message type, in the protocol's order.\n"
    text += "SERVER_MESSAGES: tuple[type[Struct], ...] = (\n"
    text += "".join(f"    {n},\n" for n in union) + ")\n"
    text += "\n# The `type` values of room log events (they carry `session` and `offset`).\n"
    text += "ROOM_EVENT_TYPES: frozenset[str] = frozenset(\n    {\n"
    text += "".join(f"        {_q(t)},\n" for t in sorted(room_tags)) + "    }\n)\n"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(
                f"{TARGET.relative_to(ROOT)} is not up to date with livecart.protocol; "
                "run: python scripts/gen_python_client.py",
                file=sys.stderr,
            )
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
