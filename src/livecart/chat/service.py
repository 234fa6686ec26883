"""Moderation service: runs the pure rules of `chat.rules` against this node's state and
carries out decisions in PostgreSQL and the room log. It reaches the rest of the node only
through `ModerationPorts`; what a connection is to do (a notice, a close) comes back to the
gateway as an outcome (`ChatRefused`, `flooding`), which sends it. The review queue is
`review_queue.ReviewQueue`; the cluster's shared limits are `shared_limits.SharedChatLimits`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .. import auth
from ..auth import Action, Identity
from ..catalog import store as catalog_store
from ..ids import new_id
from ..protocol import CLOSE_FLOODING, ChatRemoved, Failure, Muted, SlowEvent, tombstone
from ..realtime import archive as room_store
from . import store as store
from .model import ChatRefused, ModerationPorts, ModerationRequest, RoomView
from .review_queue import ReviewQueue
from .rules import chat as rules
from .rules.limits import FloodPolicy, RatePolicy
from .rules.links import domain_form
from .rules.mutes import MuteBook
from .rules.normalize import normalize
from .rules.terms import BlockedTerm, TermMatcher, term_problem
from .shared_limits import SharedChatLimits

log = logging.getLogger("livecart.moderation")

GLOBAL = "global"  # the scope name of platform-wide blocked terms
DEFAULT_TIMEOUT_S = 600


class ModerationService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ports: ModerationPorts,
        *,
        rate: RatePolicy,
        flood: FloodPolicy,
        redis_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self._ports = ports
        self._redis_url = redis_url
        self.guards = rules.ChatGuards(rate=rate, flood=flood)
        self._rate = rate
        self.shared: SharedChatLimits | None = None
        """Set in `start` when Redis is configured: the cluster's per-user limits."""
        self._clock = clock
        self._matchers: dict[str, TermMatcher] = {}
        self._terms: dict[str, dict[str, str]] = {}
        self._moderators: dict[str, set[str]] = {}
        self._seen_action = 0
        self._mutes_changed: list[Callable[[MuteBook], object]] | None = None
        self._allowed: dict[str, frozenset[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self.queue = ReviewQueue(
            pool,
            ports,
            require_above=self._require_above,
            announce_removal=self._announce_removal,
            audit=self._audit,
        )

    async def start(self) -> None:
        await self.reload()
        if self._redis_url:
            database = await self.pool.fetchval("SELECT current_database()")
            self.shared = SharedChatLimits(
                self._redis_url,
                self._rate,
                namespace=hashlib.blake2b(database.encode(), digest_size=4).hexdigest(),
                duplicate_window_s=self.guards.duplicates.window_s,
                max_slow_s=self.guards.slow.max_seconds,
            )
        self._task = asyncio.create_task(self._follow(), name="moderation-follow")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.shared is not None:
            await self.shared.close()

    async def reload(self) -> None:
        """Mutes, bans, blocked terms and channel moderators from PostgreSQL."""
        self._seen_action = await self.pool.fetchval(
            "SELECT coalesce(max(id), 0) FROM moderation_actions"
        )
        await self.reload_terms()
        # Mutes changed here while the rows are read may be missing from them: they are
        # replayed onto the new book, so a reload never undoes a timeout it raced with.
        changed: list[Callable[[MuteBook], object]] = []
        self._mutes_changed = changed
        try:
            mutes = MuteBook()
            for row in await store.active_mutes(self.pool):
                if row["kind"] == "ban":
                    mutes.ban(row["creator"], row["user_id"])
                else:
                    mutes.timeout(row["creator"], row["user_id"], row["until"].timestamp())
            for change in changed:
                change(mutes)
            self.guards.mutes = mutes
        finally:
            self._mutes_changed = None
        self._moderators.clear()
        self._allowed = {
            r["id"]: frozenset(d for d in r["domains"] if domain_form(d))
            for r in await store.allowed_domains(self.pool)
        }

    def _mute(self, change: Callable[[MuteBook], object]) -> None:
        """Apply a timeout, ban or unban decided here, now and to a reload under way."""
        change(self.guards.mutes)
        if self._mutes_changed is not None:
            self._mutes_changed.append(change)

    async def _follow(self, interval: float = 1.0) -> None:
        """Every moderation change writes an audit row: when another node wrote one, reload,
        so bans, timeouts and terms hold on every node within about a second."""
        while True:
            await asyncio.sleep(interval)
            try:
                newest = await self.pool.fetchval(
                    "SELECT coalesce(max(id), 0) FROM moderation_actions"
                )
                if newest != self._seen_action:
                    await self.reload()
            except Exception:
                log.exception("moderation reload failed")

    # ------------------------------------------------------------ caches

    async def reload_terms(self) -> None:
        by_scope: dict[str, dict[str, str]] = {}
        for row in await store.terms(self.pool):
            by_scope.setdefault(row["scope"], {})[row["term"]] = row["action"]
        self._terms = by_scope
        self._matchers = {scope: self._build(scope, t) for scope, t in by_scope.items()}

    @staticmethod
    def _build(scope: str, terms: dict[str, str]) -> TermMatcher:
        """The scope's matcher from its stored terms; a stored term that no longer loads (one
        the matcher cannot use, an unknown action) is logged and skipped, so it never stops
        a node from starting nor the scope's other terms from being enforced."""
        usable: list[BlockedTerm] = []
        for term, action in terms.items():
            problem = term_problem(term)
            if problem is None and action not in ("block", "hold"):
                problem = f"unknown action {action!r} for term {term!r}"
            if problem is not None:
                log.warning("blocked term skipped: %s", problem, extra={"scope": scope})
                continue
            usable.append(BlockedTerm(term, action))  # type: ignore[arg-type]
        return TermMatcher(usable, scope=scope)

    async def channel_moderators(self, creator: str) -> set[str]:
        mods = self._moderators.get(creator)
        if mods is None:
            mods = self._moderators[creator] = await store.channel_moderators(self.pool, creator)
        return mods

    async def may_moderate(self, who: Identity, creator: str) -> bool:
        if who.is_guest:
            return False
        appointed = who.sub in await self.channel_moderators(creator)
        return auth.can(who, Action.MODERATE, owner=creator, channel_moderator=appointed)

    async def _require_above(self, who: Identity, room: RoomView, target: str) -> None:
        """Roles act downwards: `forbidden` unless `who` stands above `target` here."""
        role = await catalog_store.user_role(self.pool, target)
        mods = await self.channel_moderators(room.creator)
        if not auth.may_act_on(
            who, target, role, owner=room.creator, channel_moderators=frozenset(mods)
        ):
            raise Failure("forbidden", "moderation acts only on people who stand lower")

    async def require_moderator(self, who: Identity, creator: str) -> None:
        if who.is_guest:
            raise Failure("unauthorized", "this call needs a token")
        if not await self.may_moderate(who, creator):
            raise Failure("forbidden", "only the creator, its moderators and platform staff")

    # ------------------------------------------------------------ chat

    def flooding(self, connection: str) -> bool:
        """Counts a non-chat frame toward the connection's flood budget: True when it is
        spent (the caller closes the connection with 4008)."""
        return self.guards.flood.hit(connection, self._clock())

    async def first_seen(self, user: str) -> float | None:
        """When the platform first saw `user` (None: not yet), for `check_chat`."""
        return await store.first_seen(self.pool, user)

    async def check_chat(
        self,
        who: Identity,
        room: RoomView,
        text: str,
        ref: str,
        *,
        connection: str,
        first_seen: float | None,
    ) -> str | None:
        """Raise the refusal (`ChatRefused`), or return the reason when the message was held
        (the caller tells the author with `held`) and None when it may be published."""
        now = self._clock()
        creator_terms = self._matchers.get(room.creator)
        shield = rules.DEFAULT_SHIELD if room.shield else None
        ctx = rules.ChatContext(
            user=who.sub,
            role=who.role,  # type: ignore[arg-type]
            creator=room.creator,
            session=room.id,
            text=text,
            channel_moderator=who.sub in await self.channel_moderators(room.creator),
            connection=connection,
            first_seen=first_seen,
            rules=rules.RoomRules(
                slow_seconds=float(room.slow),
                allowed_domains=self._allowed.get(room.creator, frozenset()),
                shield=shield,
            ),
            global_terms=self._matchers.get(GLOBAL),
            creator_terms=creator_terms,
        )
        screened = rules.screen_chat(ctx, self.guards, now)
        if isinstance(screened, rules.ChatDecision):
            decision = screened
        else:
            # Past this node's flood, mute and rate checks: the per-user limits shared by all
            # nodes decide (this node's own state only while Redis does not answer).
            shared = None if self.shared is None else await self.shared.check(screened)
            if shared is None:
                shared = rules.limit_chat(screened, self.guards, self._clock())
            decision = shared
        match decision.verdict:
            case "accept":
                return None
            case "close":
                raise ChatRefused(
                    "rate_limited", "flooding", close=decision.close_code or CLOSE_FLOODING
                )
            case "hold":
                reason = "; ".join(decision.reasons) or "held for review"
                await store.hold(
                    self.pool,
                    id=new_id("held"),
                    session=room.id,
                    author=who.sub,
                    name=who.name,
                    text=text,
                    reason=reason,
                    ref=ref,
                )
                return reason
            case _:
                code = decision.code or "blocked"
                message = {
                    "muted": "you are timed out in this channel",
                    "banned": "you are banned from this channel",
                    "rate_limited": "slow down",
                    "slow_mode": "slow mode is on",
                    "duplicate": "you just said that",
                    "blocked": decision.hit.why if decision.hit else "message blocked",
                }.get(code, code)
                notice = None
                if code in ("muted", "banned"):
                    until = None if decision.until is None else int(decision.until * 1000)
                    notice = Muted(room.id, until)
                raise ChatRefused(
                    code, message, retry_after_ms=decision.retry_after_ms, notice=notice
                )

    def not_published(self, user: str, text: str) -> None:
        """A message passed the checks but failed to publish: a retry is not a duplicate."""
        normalized = normalize(text)
        self.guards.duplicates.forget(user, normalized)
        if self.shared is not None:
            self.shared.forget_soon(user, normalized)

    async def report(self, who: Identity, room: RoomView, offset: int, reason: str) -> None:
        if who.is_guest:
            raise Failure("unauthorized", "sign in to report")
        if not await store.report(self.pool, room.id, offset, who.sub, reason):
            raise Failure("not_found", "no chat message at that offset")

    # ------------------------------------------------------------ actions

    async def act(self, who: Identity, session_id: str, req: ModerationRequest) -> dict[str, Any]:
        room = await self._ports.room(session_id)
        await self.require_moderator(who, room.creator)
        result: dict[str, Any] = {"action": req.action, "ok": True}
        match req.action:
            case "delete":
                if req.offset is None:
                    raise Failure("bad_frame", "delete needs offset")
                author = await room_store.chat_author(self.pool, room.id, req.offset)
                if author is not None:
                    await self._require_above(who, room, author)
                removed = await room_store.remove_chat(self.pool, room.id, req.offset)
                if removed is None:
                    raise Failure("not_found", "no visible chat message at that offset")
                await self._announce_removal(room, req.offset)
                await self._audit(
                    who,
                    room,
                    "delete",
                    target=removed[0],
                    offset=req.offset,
                    reason=req.reason,
                    original_text=removed[1],
                )
            case "timeout" | "ban":
                target = self._target(req)
                await self._require_above(who, room, target)
                if req.action == "timeout":
                    seconds = DEFAULT_TIMEOUT_S if req.seconds is None else req.seconds
                    if seconds < 1:
                        raise Failure("bad_frame", "timeout needs seconds >= 1 (unban lifts it)")
                    until = self._clock() + seconds
                    self._mute(lambda book: book.timeout(room.creator, target, until))
                    await store.set_mute(
                        self.pool,
                        room.creator,
                        target,
                        "timeout",
                        datetime.fromtimestamp(until, UTC),
                    )
                    self._ports.tell(target, Muted(room.id, int(until * 1000)))
                    result["until"] = int(until * 1000)
                else:
                    seconds = None
                    self._mute(lambda book: book.ban(room.creator, target))
                    await store.set_mute(self.pool, room.creator, target, "ban", None)
                    self._ports.tell(target, Muted(room.id, None))
                await self._audit(
                    who, room, req.action, target=target, seconds=seconds, reason=req.reason
                )
            case "unban":
                target = self._target(req)
                self._mute(lambda book: book.unban(room.creator, target))
                await store.clear_mute(self.pool, room.creator, target)
                await self._audit(who, room, "unban", target=target, reason=req.reason)
            case "slow":
                seconds = req.seconds or 0
                await store.set_room_rules(self.pool, room.id, slow=seconds)
                await self._ports.append(SlowEvent(room.id, seconds, room.shield))
                await self._audit(who, room, "slow", seconds=seconds, reason=req.reason)
            case "shield_on" | "shield_off":
                on = req.action == "shield_on"
                await store.set_room_rules(self.pool, room.id, shield=on)
                await self._ports.append(SlowEvent(room.id, room.slow, on))
                await self._audit(who, room, req.action, reason=req.reason)
            case "claim":
                result["claimed_until"] = await self.queue.claim(who, room, self._item(req))
            case "approve" | "reject":
                await self.queue.decide(who, room, self._item(req), req.action, req.reason)
        self._ports.acted(req.action)
        return result

    async def _announce_removal(self, room: RoomView, offset: int) -> None:
        """A removed message: tombstone in the live history, `chat_removed` to everyone."""
        await self._ports.redact(room.id, offset, tombstone(room.id))
        await self._ports.append(ChatRemoved(room.id, offset))

    @staticmethod
    def _target(req: ModerationRequest) -> str:
        if not req.user_id:
            raise Failure("bad_frame", f"{req.action} needs user_id")
        return req.user_id

    @staticmethod
    def _item(req: ModerationRequest) -> str:
        if not req.item:
            raise Failure("bad_frame", f"{req.action} needs item")
        return req.item

    async def _audit(self, who: Identity, room: RoomView, action: str, **kw: Any) -> None:
        await store.audit(
            self.pool, creator=room.creator, session=room.id, actor=who.sub, action=action, **kw
        )

    # ------------------------------------------------------------ terms and moderators

    def terms_of(self, scope: str) -> list[dict[str, str]]:
        return [{"term": t, "action": a} for t, a in sorted(self._terms.get(scope, {}).items())]

    async def add_term(self, who: Identity, scope: str, term: str, action: str) -> None:
        await self.require_terms(who, scope)
        # Refused before it is stored, so a term the matcher cannot use never reaches the table
        # (removing one stored earlier stays possible).
        problem = term_problem(term)
        if problem is not None:
            raise Failure("bad_frame", problem)
        await store.add_term(self.pool, scope, term, action, who.sub)
        await store.audit(
            self.pool,
            creator=scope,
            session=None,
            actor=who.sub,
            action="term_add",
            reason=f"{action}: {term}",
        )
        await self.reload_terms()

    async def remove_term(self, who: Identity, scope: str, term: str) -> None:
        await self.require_terms(who, scope)
        if not await store.remove_term(self.pool, scope, term):
            raise Failure("not_found", "no such term")
        await store.audit(
            self.pool, creator=scope, session=None, actor=who.sub, action="term_remove", reason=term
        )
        await self.reload_terms()

    async def require_terms(self, who: Identity, scope: str) -> None:
        """`forbidden` unless `who` keeps the blocked terms of `scope` (a creator's, or
        `GLOBAL`)."""
        if scope == GLOBAL:
            if who.is_guest:
                raise Failure("unauthorized", "this call needs a token")
            if not auth.can(who, Action.PLATFORM):
                raise Failure("forbidden", "global terms are kept by platform staff")
        else:
            await self.require_moderator(who, scope)

    def allowed_of(self, creator: str) -> list[str]:
        return sorted(self._allowed.get(creator, frozenset()))

    async def set_allowed(self, who: Identity, creator: str, domains: list[str]) -> list[str]:
        """Replace the creator's link allow-list (links elsewhere are held for review)."""
        await self.require_moderator(who, creator)
        clean = sorted({domain_form(d) for d in domains})
        if "" in clean:
            raise Failure("bad_frame", "a domain is empty after normalisation")
        await store.set_allowed_domains(self.pool, creator, clean)
        await store.audit(
            self.pool,
            creator=creator,
            session=None,
            actor=who.sub,
            action="allowed_domains",
            reason=", ".join(clean),
        )
        self._allowed[creator] = frozenset(clean)
        return clean

    async def appoint(self, who: Identity, creator: str, moderator: str, on: bool) -> None:
        if who.is_guest:
            raise Failure("unauthorized", "this call needs a token")
        if not auth.can(who, Action.APPOINT, owner=creator):
            raise Failure("forbidden", "only the creator or an admin appoints moderators")
        if on:
            await store.appoint(self.pool, creator, moderator)
        elif not await store.dismiss(self.pool, creator, moderator):
            raise Failure("not_found", "not a moderator of this creator")
        self._moderators.pop(creator, None)
        await store.audit(
            self.pool,
            creator=creator,
            session=None,
            actor=who.sub,
            action="appoint" if on else "dismiss",
            target=moderator,
        )
