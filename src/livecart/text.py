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

_UNSTORABLE = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff"
_BIDI = "\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = f"^[^{_UNSTORABLE}]*$"
LINE_PATTERN = f"^[^{_UNSTORABLE}{_BIDI}]*$"
_LINE = re.compile(LINE_PATTERN)

Text = Annotated[str, Meta(pattern=TEXT_PATTERN)]
Line = Annotated[str, Meta(pattern=LINE_PATTERN)]


def bounded(min_length: int = 0, max_length: int | None = None, *, line: bool = True) -> Any:
    """A `Line` (or `Text`) type with length limits, e.g. `bounded(1, 64)`."""
    meta = Meta(
        pattern=LINE_PATTERN if line else TEXT_PATTERN,
        min_length=min_length,
        max_length=max_length,
    )
    return Annotated[str, meta]


def is_line(value: str) -> bool:
    """Whether `value` passes the `Line` rule."""
    return _LINE.match(value) is not None


def check_line(value: str, what: str) -> str:
    """`value` if it passes the `Line` rule, else ValueError naming `what`."""
    if not is_line(value):
        raise ValueError(f"{what} holds a control character, U+0000, a lone surrogate or a bidi override")
    return value
