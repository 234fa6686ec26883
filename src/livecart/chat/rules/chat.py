"""The decision on one chat message: shield mode, the order of the checks, and the split of
the checks between this node's state and a cluster's shared limits.

Pure: no I/O, no asyncio, no module state. Every time is a parameter `now` in seconds.
See docs/moderation.md for the semantics chosen where the specification is silent.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

import msgspec

from livecart.chat.rules.limits import (
    DuplicateFilter,
    FloodDetector,
    FloodPolicy,
    RateLimiter,
    RatePolicy,
    SlowMode,
    duplicate_key,
)
from livecart.chat.rules.links import domain_allowed, find_domains
from livecart.chat.rules.mutes import MuteBook
from livecart.chat.rules.normalize import match_forms
from livecart.chat.rules.terms import TermHit, TermMatcher, first_hit

Role = Literal["viewer", "creator", "moderator", "admin"]
ChatErrorCode = Literal[
    "muted", "banned", "rate_limited", "slow_mode", "duplicate", "blocked", "held"
]
Verdict = Literal["accept", "reject", "hold", "close"]

CLOSE_FLOODING: Final = 4008


class ShieldMode(msgspec.Struct, frozen=True):
    """One-click lockdown for raids."""

    slow_seconds: int = 30
    links: bool = False
    """False: every link is held, allow-listed or not."""
    new_account_minutes: int = 60
    """Hold messages from accounts first seen less than this long ago."""


DEFAULT_SHIELD: Final = ShieldMode()


class RoomRules(msgspec.Struct, frozen=True):
    """A room's moderation settings as in force for one message."""

    slow_seconds: float = 0.0
    allowed_domains: frozenset[str] = frozenset()
    hold_all_links: bool = False
    hold_new_accounts_s: float = 0.0
    shield: ShieldMode | None = None


def apply_shield(rules: RoomRules) -> RoomRules:
    """The rules with shield mode folded in; shield only ever tightens a setting."""
    shield = rules.shield
    if shield is None:
        return rules
    return msgspec.structs.replace(
        rules,
        slow_seconds=max(rules.slow_seconds, float(shield.slow_seconds)),
        hold_all_links=rules.hold_all_links or not shield.links,
        hold_new_accounts_s=max(rules.hold_new_accounts_s, shield.new_account_minutes * 60.0),
        shield=None,
    )


# --------------------------------------------------------------------------- the decision


class ChatContext(msgspec.Struct, frozen=True):
    """One chat message and everything the decision needs to know about it."""

    user: str
    role: Role
    creator: str
    """The session creator's id: scope of mutes, bans and the creator's blocked terms."""
    session: str
    text: str
    channel_moderator: bool = False
    """Appointed moderator of this creator."""
    connection: str = ""
    """Flood accounting key; the user when empty."""
    first_seen: float | None = None
    """When the platform first saw this account; None counts as brand new."""
    rules: RoomRules = RoomRules()
    global_terms: TermMatcher | None = None
    creator_terms: TermMatcher | None = None

    @property
    def privileged(self) -> bool:
        """The session's creator, its channel moderators, platform moderators, admins."""
        return (
            self.role in ("moderator", "admin")
            or self.channel_moderator
            or (self.role == "creator" and self.user == self.creator)
        )


class ChatDecision(msgspec.Struct, frozen=True):
    verdict: Verdict
    code: ChatErrorCode | None = None
    retry_after_ms: int | None = None
    until: float | None = None
    reasons: tuple[str, ...] = ()
    hit: TermHit | None = None
    close_code: int | None = None
    normalized: str = ""


class ChatGuards:
    """The per-node state `decide_chat` reads and updates."""

    def __init__(
        self,
        *,
        rate: RatePolicy = RatePolicy(),
        flood: FloodPolicy = FloodPolicy(),
        duplicate_window_s: float = 30.0,
        max_keys: int = 100_000,
    ) -> None:
        self.rate: RateLimiter[str] = RateLimiter(rate, max_keys=max_keys)
        self.flood: FloodDetector[str] = FloodDetector(flood, max_keys=max_keys)
        self.duplicates: DuplicateFilter[str] = DuplicateFilter(
            duplicate_window_s, max_keys=max_keys
        )
        self.slow: SlowMode[tuple[str, str]] = SlowMode(max_keys=max_keys)
        self.mutes = MuteBook()


class ChatCandidate(msgspec.Struct, frozen=True):
    """A message past flooding, mutes and this node's rate limit, its content already judged
    (steps 6–8 of `decide_chat`). Left are the per-user limits of steps 4–5, slow mode and
    the duplicate window: `limit_chat` runs them on this node's state, a cluster runs the
    same checks on state shared in Redis. Their refusals come before `outcome`."""

    user: str
    session: str
    normalized: str
    """The message's matching form; its `duplicate_digest` names it in the duplicate window."""
    slow_seconds: float
    """Slow mode in force for this message (shield folded in, capped); 0 when off."""
    exempt: bool
    """Privileged: no slow mode, no duplicate check."""
    outcome: ChatDecision
    """What the message gets when slow mode and the duplicate window let it through:
    accept, hold, or the `blocked` refusal."""

    @property
    def charges(self) -> bool:
        """Going through (accepted or held) starts the slow-mode interval and the duplicate
        window; a blocked message charges neither."""
        return not self.exempt and self.outcome.verdict in ("accept", "hold")


def duplicate_digest(normalized: str) -> str:
    """A stable name (the same in every process) for the duplicate window's entry."""
    return hashlib.blake2b(duplicate_key(normalized).encode(), digest_size=10).hexdigest()


def decide_chat(ctx: ChatContext, guards: ChatGuards, now: float) -> ChatDecision:
    """Decide one chat message. Order, first match wins:

    1. flooding (every attempt counts, even a muted user's) → close 4008
    2. ban, then timeout → `banned` / `muted` with `until`
    3. rate limit (the attempt takes a token) → `rate_limited` with retry_after_ms
    4. slow mode → `slow_mode` with retry_after_ms
    5. duplicate of the user's text within the window → `duplicate`
    6. blocked term with action block (global or creator list) → `blocked`
    7. hold: term with action hold, link to a domain not allowed (any link in shield
       mode), account new during shield mode → `held` with every reason
    8. accept

    Privileged users (see `ChatContext.privileged`) skip 2 and 4–7; flooding and the
    rate limit protect the service and apply to everyone. Slow mode and the duplicate
    window are charged only by messages that are accepted or held, slow mode only while
    it is on.

    This is `screen_chat` followed by `limit_chat`; a cluster puts its shared checks of
    steps 3–5 between the two instead of `limit_chat`.
    """
    screened = screen_chat(ctx, guards, now)
    if isinstance(screened, ChatDecision):
        return screened
    return limit_chat(screened, guards, now)


def screen_chat(ctx: ChatContext, guards: ChatGuards, now: float) -> ChatDecision | ChatCandidate:
    """Steps 1–3 on this node's state (a refusal is final), then the content verdict of
    steps 6–8, which reads no state. Charges only the flood counter and the rate limit."""
    flood_key = ctx.connection or ctx.user
    if guards.flood.hit(flood_key, now):
        return ChatDecision("close", close_code=CLOSE_FLOODING)
    privileged = ctx.privileged
    if not privileged:
        mute = guards.mutes.status(ctx.creator, ctx.user, now)
        if mute is not None:
            return ChatDecision("reject", code=mute.kind, until=mute.until)
    allowance = guards.rate.check(ctx.user, now)
    if not allowance.allowed:
        return ChatDecision("reject", code="rate_limited", retry_after_ms=allowance.retry_after_ms)
    forms = match_forms(ctx.text)
    normalized = forms.leet
    if privileged:
        return ChatCandidate(
            ctx.user,
            ctx.session,
            normalized,
            0.0,
            True,
            ChatDecision("accept", normalized=normalized),
        )
    rules = apply_shield(ctx.rules)
    slow_seconds = max(0.0, min(rules.slow_seconds, guards.slow.max_seconds))
    hit = first_hit(forms, (ctx.global_terms, ctx.creator_terms), original=ctx.text)
    if hit is not None and hit.action == "block":
        outcome = ChatDecision(
            "reject", code="blocked", reasons=(hit.reason,), hit=hit, normalized=normalized
        )
    elif reasons := _hold_reasons(ctx, rules, hit, now):
        outcome = ChatDecision("hold", code="held", reasons=reasons, hit=hit, normalized=normalized)
    else:
        outcome = ChatDecision("accept", normalized=normalized)
    return ChatCandidate(ctx.user, ctx.session, normalized, slow_seconds, False, outcome)


def limit_chat(candidate: ChatCandidate, guards: ChatGuards, now: float) -> ChatDecision:
    """Steps 4–5 on this node's state: slow mode, then the duplicate window. Only a message
    that goes through charges them; a refused one changes nothing."""
    c = candidate
    if c.exempt:
        return c.outcome
    slow_key = (c.session, c.user)
    wait_ms = guards.slow.retry_after_ms(slow_key, c.slow_seconds, now)
    if wait_ms:
        return ChatDecision("reject", code="slow_mode", retry_after_ms=wait_ms)
    if guards.duplicates.seen(c.user, c.normalized, now):
        return ChatDecision("reject", code="duplicate", normalized=c.normalized)
    if c.charges:
        if c.slow_seconds > 0:
            guards.slow.record(slow_key, now)
        guards.duplicates.record(c.user, c.normalized, now)
    return c.outcome


def _hold_reasons(
    ctx: ChatContext, rules: RoomRules, hit: TermHit | None, now: float
) -> tuple[str, ...]:
    reasons: list[str] = []
    if hit is not None:
        reasons.append(hit.reason)
    domains = find_domains(ctx.text)
    if rules.hold_all_links and domains:
        reasons.append(f"link to {domains[0]} (links are off)")
    else:
        bad = next((d for d in domains if not domain_allowed(d, rules.allowed_domains)), None)
        if bad is not None:
            reasons.append(f"link to {bad}")
    if rules.hold_new_accounts_s > 0 and (
        ctx.first_seen is None or now - ctx.first_seen < rules.hold_new_accounts_s
    ):
        reasons.append(
            "new account during shield mode" if ctx.rules.shield is not None else "new account"
        )
    return tuple(reasons)
