"""User-supplied text, checked once where it is decoded (SPEC §10).

Every string that comes from outside (frames, REST bodies, query values, token claims) is
declared with one of these types, so msgspec refuses a bad one while decoding and the code
behind never sees it:

- `Text`: no U+0000, no lone surrogates (PostgreSQL stores neither), no other C0 control but
  tab, line feed and carriage return, no DEL.
- `Line`: a `Text` that is also free of the bidirectional embedding, override and isolate
  controls (U+202A-U+202E, U+2066-U+2069), which make a name or a title read as something
  else; used for names, titles, chat, terms and anything shown to other people.

`bounded(...)` adds length limits; `check_line` is the same rule for a string that did not come
through msgspec (a token's `name`, a query value).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta

# Written as regex escapes, not as the characters themselves: the pattern appears in
# validation messages and the OpenAPI document, which must stay encodable (no lone surrogates).
_UNSTORABLE = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff"
_BIDI = r"\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = f"^[^{_UNSTORABLE}]*$"
LINE_PATTERN = f"^[^{_UNSTORABLE}{_BIDI}]*$"
_LINE = re.compile(LINE_PATTERN)

Text = Annotated[str, Meta(pattern=TEXT_PATTERN)]
Line = Annotated[str, Meta(pattern=LINE_PATTERN)]


def line_meta(min_length: int = 0, max_length: int | None = None, *, line: bool = True) -> Meta:
    """The constraints of a `Line` (or `Text`) with length limits, for a type checker-friendly
    alias: `Ref = Annotated[str, line_meta(1, 64)]`."""
    return Meta(
        pattern=LINE_PATTERN if line else TEXT_PATTERN,
        min_length=min_length,
        max_length=max_length,
    )


def bounded(min_length: int = 0, max_length: int | None = None, *, line: bool = True) -> Any:
    """A `Line` (or `Text`) type with length limits, e.g. `bounded(1, 64)`."""
    return Annotated[str, line_meta(min_length, max_length, line=line)]


def is_line(value: str) -> bool:
    """Whether `value` passes the `Line` rule."""
    return _LINE.match(value) is not None


def check_visible(value: str, what: str) -> str:
    """`value` if something is left of it after normalisation (invisible characters, marks
    and whitespace removed), else ValueError naming `what`: a title, tag or term of nothing."""
    from .chat.rules.normalize import normalize

    if not normalize(value).strip():
        raise ValueError(f"{what} is empty after normalisation")
    return value


def check_line(value: str, what: str) -> str:
    """`value` if it passes the `Line` rule, else ValueError naming `what`."""
    if not is_line(value):
        raise ValueError(f"{what} holds a control character, U+0000, a lone surrogate or a bidi override")
    return value
