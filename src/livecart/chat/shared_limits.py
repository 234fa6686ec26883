"""The per-user chat limits of a cluster, shared in Redis by every node (the Lua script
`lua/chat_limits.lua`)."""

from __future__ import annotations

import asyncio
import logging
import math

from ..lua import script
from ..redisconn import Pipeliner, connect
from .rules.chat import ChatCandidate, ChatDecision, duplicate_digest
from .rules.limits import RatePolicy

log = logging.getLogger("livecart.moderation")


class SharedChatLimits:
    """The per-user chat limits of a cluster, kept in Redis so that a user spread over several
    nodes meets one of each: the token bucket of `chat.rules.take_token`, slow mode per
    (session, user) and the duplicate window per (user, text). One script checks all three in
    the order of `decide_chat` and charges slow mode and the window only when the message
    goes through, so a refused message changes nothing there.

    Keys carry the user as hash tag (one slot per user, so the script also runs on Redis
    Cluster) and the deployment's namespace: one deployment is one PostgreSQL database, whose
    user ids are its own.

        lc:<ns>:{user}:rate                  hash t (tokens), ts (ms)
        lc:<ns>:{user}:slow:<session>        the user's last message in slow mode (ms)
        lc:<ns>:{user}:dup:<digest>          a text the user said within the window

    The node keeps the answers to chat frames on the same connection (`redis`, `prefix`),
    under lc:<ns>:{user}:ref:<ref>.
    """

    def __init__(
        self,
        url: str,
        policy: RatePolicy,
        *,
        namespace: str,
        duplicate_window_s: float,
        max_slow_s: float,
    ) -> None:
        self.redis = connect(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        """The connection, which others of the user's keys may share (`prefix`)."""
        self.pipeline = Pipeliner(self.redis)
        """Checks asked for at once (a burst of chat) go to Redis in one pipeline; the
        reply book shares it."""
        self._script = self.redis.register_script(script("chat_limits"))
        self._policy = policy
        self.prefix = f"lc:{namespace}:"
        self._dup_ms = max(1, round(duplicate_window_s * 1000))
        self._slow_ttl_ms = max(1, round(max_slow_s * 1000))
        self._pending: set[asyncio.Task[None]] = set()

    def keys(self, user: str, session: str, normalized: str) -> list[str]:
        base = f"{self.prefix}{{{user}}}:"
        return [
            base + "rate",
            f"{base}slow:{session}",
            f"{base}dup:{duplicate_digest(normalized)}",
        ]

    async def check(self, c: ChatCandidate) -> ChatDecision | None:
        """The final decision on a screened message, or None when Redis does not answer (the
        caller then falls back on this node's own state)."""
        mode = 0 if c.exempt else 1 if c.charges else 2
        try:
            code, wait_ms = await self.pipeline.script(
                self._script,
                self.keys(c.user, c.session, c.normalized),
                [
                    self._policy.rate_per_s,
                    self._policy.burst,
                    max(0, math.ceil(c.slow_seconds * 1000)),
                    self._dup_ms,
                    mode,
                    self._slow_ttl_ms,
                ],
            )
        except Exception as exc:
            log.warning("shared chat limits unavailable: %s", exc)
            return None
        match int(code):
            case 0:
                return c.outcome
            case 1:
                return ChatDecision(
                    "reject", code="rate_limited", retry_after_ms=max(1, int(wait_ms))
                )
            case 2:
                return ChatDecision("reject", code="slow_mode", retry_after_ms=max(1, int(wait_ms)))
            case _:
                return ChatDecision("reject", code="duplicate", normalized=c.normalized)

    async def forget(self, user: str, normalized: str) -> None:
        """Drop a text from the user's duplicate window (its message could not be published)."""
        try:
            await self.redis.delete(self.keys(user, "", normalized)[2])
        except Exception as exc:
            log.warning("could not clear a duplicate-window entry: %s", exc)

    def forget_soon(self, user: str, normalized: str) -> None:
        """`forget` from synchronous code: started now, before the caller answers the client."""
        task = asyncio.get_running_loop().create_task(self.forget(user, normalized))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.pipeline.close()
        await self.redis.aclose()
