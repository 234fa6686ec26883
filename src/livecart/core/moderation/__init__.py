"""Chat moderation rules, one module per concern:

- `terms`: blocked terms and their matcher
- `links`: linked domains and the allow-list
- `limits`: rate limit, flood detector, duplicate window, slow mode
- `mutes`: timeouts and bans
- `chat`: shield mode and the one function that decides a chat message

Pure: no I/O, no asyncio, no module state. Every time is a parameter `now` in seconds.
The stateful pieces (limiters, mute book) are plain in-memory objects that an adapter owns
per node and feeds from the database or Redis; they bound their own memory. The review queue
of held and reported messages is kept in PostgreSQL (`livecart.store.moderation`), where one
statement decides each claim and decision for every node at once.
See docs/moderation.md for the semantics chosen where the specification is silent.

This package re-exports the names of its modules, the rules' public face for tests and
tools; code of the service imports from the modules.
"""

from __future__ import annotations

from livecart.core.moderation.chat import (
    CLOSE_FLOODING,
    DEFAULT_SHIELD,
    ChatCandidate,
    ChatContext,
    ChatDecision,
    ChatErrorCode,
    ChatGuards,
    Role,
    RoomRules,
    ShieldMode,
    Verdict,
    apply_shield,
    decide_chat,
    duplicate_digest,
    limit_chat,
    screen_chat,
)
from livecart.core.moderation.limits import (
    DuplicateFilter,
    FloodDetector,
    FloodPolicy,
    RateDecision,
    RateLimiter,
    RatePolicy,
    SlowMode,
    _RecentMap,
    duplicate_key,
    take_token,
)
from livecart.core.moderation.links import (
    disallowed_domain,
    domain_allowed,
    domain_form,
    find_domains,
)
from livecart.core.moderation.mutes import MuteBook, MuteStatus
from livecart.core.moderation.terms import (
    Action,
    BlockedTerm,
    TermHit,
    TermMatcher,
    first_hit,
    term_problem,
)
from livecart.core.normalize import MatchForms, match_forms, normalize

__all__ = [
    "CLOSE_FLOODING",
    "DEFAULT_SHIELD",
    "Action",
    "BlockedTerm",
    "ChatCandidate",
    "ChatContext",
    "ChatDecision",
    "ChatErrorCode",
    "ChatGuards",
    "DuplicateFilter",
    "FloodDetector",
    "FloodPolicy",
    "MatchForms",
    "MuteBook",
    "MuteStatus",
    "RateDecision",
    "RateLimiter",
    "RatePolicy",
    "Role",
    "RoomRules",
    "ShieldMode",
    "SlowMode",
    "TermHit",
    "TermMatcher",
    "Verdict",
    "_RecentMap",
    "apply_shield",
    "decide_chat",
    "disallowed_domain",
    "domain_allowed",
    "domain_form",
    "duplicate_digest",
    "duplicate_key",
    "find_domains",
    "first_hit",
    "limit_chat",
    "match_forms",
    "normalize",
    "screen_chat",
    "take_token",
    "term_problem",
]
