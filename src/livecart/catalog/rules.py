"""Catalog rules (SPEC §4): who manages what, the session state machine, the showcase and
the pin.

Pure: no asyncio, no I/O. `livecart.catalog.service.CatalogService` asks these functions before it
writes, so REST routes and WebSocket frames share one decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, get_args

from ..auth import Action, Identity, can
from ..protocol import Failure
from .models import Product, Session, SessionStatus

STATUSES: Final[tuple[str, ...]] = get_args(SessionStatus)
LIVE: Final = "live"
"""The only status in which a room takes chat, likes and purchases."""

# scheduled → live → ended, and scheduled → ended (a show called off). Nothing goes back.
SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "scheduled": (),
    "live": ("scheduled",),
    "ended": ("scheduled", "live"),
}

FIRST_YEAR: Final = 1970
LAST_YEAR: Final = 9998


def require_manager(who: Identity, owner: str) -> None:
    """`forbidden` unless `who` may manage what `owner` created (the creator or an admin)."""
    if not can(who, Action.MANAGE, owner=owner):
        raise Failure("forbidden", f"{who.role} may not {Action.MANAGE.value} here")


def status_filter(value: str | None) -> SessionStatus | None:
    """A listing's `status` filter: None (every session) or one of the three statuses."""
    if value is None:
        return None
    for status in get_args(SessionStatus):
        if value == status:
            out: SessionStatus = status
            return out
    raise Failure("bad_frame", "status must be scheduled, live or ended")


def check_schedule(scheduled_at: datetime | None) -> None:
    """A planned start is a date PostgreSQL and every client can hold."""
    if scheduled_at is not None and not FIRST_YEAR <= scheduled_at.year <= LAST_YEAR:
        raise Failure("bad_frame", f"scheduled_at must be between {FIRST_YEAR} and {LAST_YEAR}")


def transition(current: str, to: SessionStatus) -> tuple[str, ...] | None:
    """The statuses from which a session may become `to` (the store moves it only from one of
    them, so a change made meanwhile is seen); None when it already is `to`: nothing to do,
    nothing to announce. `not_live` when `current` cannot become `to`."""
    if current == to:
        return None
    sources = SOURCES[to]
    if current not in sources:
        raise Failure("not_live", f"a session that is {current} cannot become {to}")
    return sources


def check_showcase(session: Session, product: Product | None) -> Product:
    """A session showcases only products of its own creator."""
    if product is None or product.creator != session.creator:
        raise Failure("not_found", "no such product of this creator")
    return product


def check_pin(session: Session, product_id: str | None) -> None:
    """Only a product in the session's showcase can be pinned; None unpins."""
    if product_id is not None and product_id not in session.showcase:
        raise Failure("not_found", "pin a product from the session's showcase")
