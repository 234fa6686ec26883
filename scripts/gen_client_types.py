"""Generate the JavaScript SDK's message types from the server's protocol (SPEC §5).

Reads the msgspec Structs of `livecart.protocol` and writes `clients/js/src/protocol.d.ts`:
one interface per Struct, the client frames, the room events (with their `offset`) and the
other server messages, each as a union and as a `type` → interface map. Run after changing
`src/livecart/protocol.py`:

    ./dev types                                           # rewrite the file (or:)
    .venv/bin/python scripts/gen_client_types.py          # rewrite the file
    .venv/bin/python scripts/gen_client_types.py --check  # exit 1 when it is out of date

`tests/client/test_js_sdk.py` fails when the committed file differs from a fresh one.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from livecart import protocol

OUT = Path(__file__).resolve().parent.parent / "clients" / "js" / "src" / "protocol.d.ts"

HEADER = """\
// GENERATED from src/livecart/protocol.py by scripts/gen_client_types.py: do not edit.
// Regenerate with `./dev types` (scripts/gen_client_types.py) after changing the protocol;
// a test fails while this file differs from a fresh generation.
"""


def _tagged(cls: type[msgspec.Struct]) -> str | None:
    tag = cls.__struct_config__.tag
    return tag if isinstance(tag, str) else None


class Generator:
    def __init__(self) -> None:
        self.done: dict[type[msgspec.Struct], str] = {}
        self.order: list[type[msgspec.Struct]] = []
        self.room_tags = {_tagged(c) for c in protocol.ROOM_EVENTS}
        self.client = list(typing.get_args(protocol.ClientFrame))

    def ts(self, t: mi.Type) -> str:
        if isinstance(
            t,
            mi.StrType | mi.DateTimeType | mi.DateType | mi.TimeType | mi.UUIDType | mi.DecimalType,
        ):
            return "string"  # as msgspec encodes them in JSON
        if isinstance(t, mi.IntType | mi.FloatType):
            return "number"
        if isinstance(t, mi.BoolType):
            return "boolean"
        if isinstance(t, mi.NoneType):
            return "null"
        if isinstance(t, mi.LiteralType):
            return " | ".join(json.dumps(v) for v in t.values)
        if isinstance(t, mi.UnionType):
            return " | ".join(self.ts(a) for a in t.types)
        if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            inner = self.ts(t.item_type)
            return f"({inner})[]" if "|" in inner else f"{inner}[]"
        if isinstance(t, mi.TupleType):
            return "[" + ", ".join(self.ts(a) for a in t.item_types) + "]"
        if isinstance(t, mi.DictType):
            return f"Record<{self.ts(t.key_type)}, {self.ts(t.value_type)}>"
        if isinstance(t, mi.StructType):
            self.add(t.cls)
            return t.cls.__name__
        if isinstance(t, mi.Metadata):
            return self.ts(t.type)
        return "unknown"

    @staticmethod
    def note(t: mi.Type) -> str:
        """A field's limits, for its doc comment."""
        if isinstance(t, mi.UnionType):
            return "; ".join(n for n in (Generator.note(a) for a in t.types) if n)
        if isinstance(t, mi.StrType) and (t.min_length is not None or t.max_length is not None):
            return f"{t.min_length or 0}–{t.max_length if t.max_length is not None else '∞'} characters"
        if isinstance(t, mi.IntType | mi.FloatType):
            parts = []
            if t.ge is not None:
                parts.append(f"≥ {t.ge}")
            if t.gt is not None:
                parts.append(f"> {t.gt}")
            if t.le is not None:
                parts.append(f"≤ {t.le}")
            if t.lt is not None:
                parts.append(f"< {t.lt}")
            return " and ".join(parts)
        return ""

    def add(self, cls: type[msgspec.Struct]) -> None:
        if cls in self.done:
            return
        self.done[cls] = ""  # placeholder: nested types come first
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        config = cls.__struct_config__
        tag = _tagged(cls)
        room = tag in self.room_tags and cls not in self.client
        lines = []
        doc = inspect.getdoc(cls)
        if doc and cls.__doc__ is not None and "__doc__" in cls.__dict__:
            lines.append("/** " + " ".join(doc.split()) + " */")
        lines.append(f"export interface {cls.__name__} {{")
        if tag is not None:
            lines.append(f"  {config.tag_field}: {json.dumps(tag)};")
        if room:
            lines.append("  /** the event's position in the session's log (SPEC §5) */")
            lines.append("  offset: number;")
        for f in info.fields:
            optional = not f.required and (cls in self.client or config.omit_defaults)
            note = self.note(f.type)
            if note:
                lines.append(f"  /** {note} */")
            lines.append(f"  {f.encode_name}{'?' if optional else ''}: {self.ts(f.type)};")
        lines.append("}")
        self.done[cls] = "\n".join(lines)
        self.order.append(cls)

    def render(self) -> str:
        structs = [
            v
            for name, v in vars(protocol).items()
            if not name.startswith("_")
            and isinstance(v, type)
            and issubclass(v, msgspec.Struct)
            and v.__module__ == protocol.__name__
        ]
        for cls in structs:
            self.add(cls)
        client = self.client
        room = [c for c in self.order if _tagged(c) in self.room_tags and c not in client]
        server = [c for c in self.order if _tagged(c) and c not in client and c not in room]

        def table(name: str, classes: list[type[msgspec.Struct]]) -> list[str]:
            by_tag: dict[str, list[str]] = {}
            for c in classes:
                by_tag.setdefault(_tagged(c) or "", []).append(c.__name__)
            rows = [f"  {json.dumps(t)}: {' | '.join(names)};" for t, names in by_tag.items()]
            return [f"export interface {name} {{", *rows, "}"]

        out = [HEADER]
        out += [self.done[c] + "\n" for c in self.order]
        out += ["/** Client → server frames by `type`. */"]
        out += table("ClientFrameMap", client)
        out += ["export type ClientFrame = ClientFrameMap[keyof ClientFrameMap];", ""]
        out += ["/** Room log events by `type`: each has `session` and `offset`. */"]
        out += table("RoomEventMap", room)
        out += ["export type RoomEvent = RoomEventMap[keyof RoomEventMap];", ""]
        out += ["/** The other server messages by `type` (state, personal, replies). */"]
        out += table("ServerMessageMap", server)
        out += ["export type ServerMessage = ServerMessageMap[keyof ServerMessageMap];", ""]
        codes = " | ".join(json.dumps(c) for c in sorted(protocol.ERROR_CODES))
        out += ["/** SPEC §5 error codes. */", f"export type ErrorCode = {codes};", ""]
        return "\n".join(out)


def generate() -> str:
    return Generator().render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run scripts/gen_client_types.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__: list[Any] = ["generate", "main"]
