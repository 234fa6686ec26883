"""The review queue of one node's moderation service: claims on held messages and the
decisions on held and reported messages. Its rules (a claim is a lease, a message is
decided exactly once, never over someone else's live claim) are the statements of
`livecart.chat.store`, which hold across nodes; this module carries their outcome
to the room log, the author and the audit log."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg

from ..auth import Identity
from ..protocol import Ack, ChatEvent, ErrorMsg, Failure
from ..realtime import archive as room_store
from . import store as store
from .model import ModerationPorts, RoomView

CLAIM_LEASE_S = 60.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _reported_offset(item: str) -> int | None:
    """The offset of a reported-message queue id (`report:<offset>`), else None."""
    if not item.startswith(store.REPORT_ITEM):
        return None
    digits = item.removeprefix(store.REPORT_ITEM)
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise Failure("not_found", "no reported message with that id in this session")
    return int(digits)


class ReviewQueue:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ports: ModerationPorts,
        *,
        require_above: Callable[[Identity, RoomView, str], Awaitable[None]],
        announce_removal: Callable[[RoomView, int], Awaitable[None]],
        audit: Callable[..., Awaitable[None]],
    ) -> None:
        self.pool = pool
        self._ports = ports
        self._require_above = require_above
        self._announce_removal = announce_removal
        self._audit = audit

    async def claim(self, who: Identity, room: RoomView, item: str) -> str:
        """A lease of `CLAIM_LEASE_S` on a held message for `who`; when it ends (ISO 8601)."""
        if _reported_offset(item) is not None:
            raise Failure("bad_frame", "reported messages are approved or rejected, not claimed")
        row = await store.claim(self.pool, room.id, item, who.sub, CLAIM_LEASE_S)
        if row is None:
            raise await self._why_not(room, item)
        claimed_until: str = row["claimed_until"].isoformat()
        return claimed_until

    async def decide(
        self,
        who: Identity,
        room: RoomView,
        item: str,
        action: Literal["approve", "reject"],
        reason: str | None,
    ) -> None:
        """Approve or reject a held or reported message, exactly once."""
        reported = _reported_offset(item)
        if reported is not None:
            await self._decide_reported(who, room, reported, action, reason)
            return
        status = "approved" if action == "approve" else "rejected"
        row = await store.decide(self.pool, room.id, item, who.sub, status)
        if row is None:
            raise await self._why_not(room, item)
        offset = None
        if status == "approved":
            offset = await self._ports.append(
                ChatEvent(room.id, row["author"], row["name"], row["text"], _now_ms()),
                author=row["author"],
                text=row["text"],
            )
            await store.set_held_offset(self.pool, item, offset)
            self._ports.tell(row["author"], Ack(row["ref"], offset))
        else:
            self._ports.tell(
                row["author"],
                ErrorMsg("blocked", "rejected by a moderator", row["ref"], None, room.id),
            )
        await self._audit(
            who,
            room,
            action,
            target=row["author"],
            offset=offset,
            reason=reason,
            original_text=row["text"],
        )

    async def _decide_reported(
        self,
        who: Identity,
        room: RoomView,
        offset: int,
        action: Literal["approve", "reject"],
        reason: str | None,
    ) -> None:
        """Approve dismisses the reports of a visible message; reject deletes it."""
        approve = action == "approve"
        if not approve:
            author = await room_store.chat_author(self.pool, room.id, offset)
            if author is not None:
                await self._require_above(who, room, author)
        async with self.pool.acquire() as conn:
            outcome, author, text = await store.decide_reported(
                conn, room.id, offset, who.sub, approve
            )
        if outcome == "not_found":
            raise Failure("not_found", "no reported message with that id in this session")
        if outcome != "done":
            raise Failure("forbidden", outcome)
        if approve:
            return  # the dismissal is its own audit row, written with the decision
        await self._announce_removal(room, offset)
        await self._audit(
            who,
            room,
            "delete",
            target=author,
            offset=offset,
            reason=reason or "reported",
            original_text=text,
        )

    async def _why_not(self, room: RoomView, item: str) -> Failure:
        """Why a claim or decision on a held message did not go through."""
        row = await store.held_item(self.pool, item)
        if row is None or row["session"] != room.id:
            return Failure("not_found", "no held message with that id in this session")
        if row["status"] != "held":
            return Failure("forbidden", f"already {row['status']} by {row['decided_by']}")
        until = row["claimed_until"].isoformat() if row["claimed_until"] else "?"
        return Failure("forbidden", f"claimed by {row['claimed_by']} until {until}")
