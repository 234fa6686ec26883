"""REST objects and request bodies (SPEC §4); the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from ..limits import ID_MAX_CHARS, MAX_CENTS, MAX_QUANTITY
from ..text import LINE_PATTERN, check_visible, line_meta

Title = Annotated[str, line_meta(1, 200)]
Cents = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$")]
Category = Annotated[str, line_meta(0, 64)]
Tag = Annotated[str, line_meta(1, 32)]
Tags = Annotated[list[Tag], Meta(max_length=20)]
Stock = Annotated[int, Meta(ge=0, le=MAX_QUANTITY)]
Url = Annotated[str, Meta(max_length=2000, pattern=r"^https?://" + LINE_PATTERN[1:])]
SessionStatus = Literal["scheduled", "live", "ended"]


def _visible(title: str | None, tags: list[str] | None) -> None:
    """Raised in `__post_init__`, so msgspec refuses the body while decoding (`bad_frame`):
    a title or tag that is nothing but whitespace or invisible characters."""
    if title is not None:
        check_visible(title, "title")
    for tag in tags or ():
        check_visible(tag, "tag")


class Product(Struct):
    id: str
    creator: str
    title: str
    price_cents: int
    currency: str
    stock: int
    category: str
    tags: list[str]


class ProductCreate(Struct, forbid_unknown_fields=True):
    title: Title
    price_cents: Cents
    currency: Currency = "USD"
    stock: Stock = 0
    category: Category = ""
    tags: Tags = []

    def __post_init__(self) -> None:
        _visible(self.title, self.tags)


class ProductPatch(Struct, forbid_unknown_fields=True):
    title: Title | None = None
    price_cents: Cents | None = None
    currency: Currency | None = None
    stock: Stock | None = None
    category: Category | None = None
    tags: Tags | None = None

    def __post_init__(self) -> None:
        _visible(self.title, self.tags)


class Session(Struct):
    id: str
    creator: str
    title: str
    category: str
    tags: list[str]
    status: SessionStatus
    playback_url: str | None
    scheduled_at: str | None
    started_at: str | None
    ended_at: str | None
    pinned_product: str | None
    showcase: list[str]


class SessionCreate(Struct, forbid_unknown_fields=True):
    title: Title
    category: Category = ""
    tags: Tags = []
    playback_url: Url | None = None
    scheduled_at: Annotated[datetime, Meta(tz=True)] | None = None
    """RFC 3339 with an offset (the schema's `date-time`), e.g. 2030-05-01T18:00:00Z."""

    def __post_init__(self) -> None:
        _visible(self.title, self.tags)


class ShowcaseAdd(Struct, forbid_unknown_fields=True):
    product_id: Annotated[str, line_meta(1, ID_MAX_CHARS)]


class PinRequest(Struct, forbid_unknown_fields=True):
    product_id: Annotated[str, line_meta(1, ID_MAX_CHARS)] | None


class ErrorBody(Struct):
    code: str
    message: str


class ErrorResponse(Struct):
    error: ErrorBody


class SessionStats(Struct):
    """Live and cumulative figures of a session (`GET /api/sessions/{id}/stats`)."""

    session: str
    status: SessionStatus
    viewers: int
    likes: int
    chat_messages: int
    chatters: int
    removed_messages: int
    orders: int
    units: int
    revenue_cents: int
    paid_cents: int
    buyers: int


class TimelinePage(Struct):
    session: str
    events: list[dict[str, Any]]
    next_since: int
