"""Idempotent chat: the answer to a `chat` frame by `(user, ref)`, so a retried frame (the
client lost the answer, reconnected, or sent it again while the first was in flight) gets the
first answer instead of publishing the message twice (SPEC §10), like purchases by their ref.

Kept on this node for the history window (10 minutes, at most `max_keys` entries, oldest
dropped first) and, when the node has Redis, for the cluster (`SharedReplies`), so a retry on
another node after a reconnect gets the same answer too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..redisconn import Pipeliner
from .rules.limits import _RecentMap

log = logging.getLogger("livecart.gateway")

HORIZON_S = 600.0
MAX_KEYS = 100_000

Key = tuple[str, str]


class ReplyBook:
    """`(user, ref)` -> the future of the first attempt's answer: the encoded message to send
    again (`ack`, `held`, a final error), or None when the first attempt has no final answer
    (it was refused for now, e.g. `rate_limited`, `unavailable`): then the retry runs."""

    def __init__(
        self,
        *,
        max_keys: int = MAX_KEYS,
        horizon_s: float = HORIZON_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._items: _RecentMap[Key, asyncio.Future[bytes | None]] = _RecentMap(max_keys, horizon_s)
        self._horizon = horizon_s
        self._clock = clock

    def claim(self, key: Key) -> tuple[bool, asyncio.Future[bytes | None]]:
        """(True, a new future) when this attempt is the first and must `settle` it; else
        (False, the first attempt's future) to wait for."""
        now = self._clock()
        fut = self._items.get(key)
        touched = self._items.touched(key)
        live = fut is not None and touched is not None and now - touched < self._horizon
        if fut is not None and live and (not fut.done() or fut.result() is not None):
            return False, fut
        fut = asyncio.get_running_loop().create_future()
        self._items.put(key, fut, now)
        return True, fut

    def settle(self, key: Key, fut: asyncio.Future[bytes | None], reply: bytes | None) -> None:
        """The first attempt's answer; None forgets the key, so a retry runs again."""
        if not fut.done():
            fut.set_result(reply)
        if reply is None and self._items.get(key) is fut:
            self._items.pop(key)

    def __len__(self) -> int:
        return len(self._items)


_PENDING = b"-"


class SharedReplies:
    """The cluster's reply book in Redis: `SET NX` claims `(user, ref)` for the first attempt
    (value `-` while it runs), which then stores its answer there for `HORIZON_S`. A retry on
    another node waits for that answer (polling, up to `wait_s`). When Redis does not answer,
    each node keeps to its own book.

        lc:<ns>:{user}:ref:<ref>    the answer's bytes, or "-" while the first attempt runs
    """

    def __init__(
        self,
        redis: Any,
        prefix: str,
        *,
        pipeline: Pipeliner | None = None,
        horizon_s: float = HORIZON_S,
        wait_s: float = 10.0,
    ) -> None:
        self._redis = redis
        # The first claim and the answer of each ref, many at once in one pipeline.
        self._pipeline = Pipeliner(redis) if pipeline is None else pipeline
        self._prefix = prefix
        self._ttl_ms = max(1, round(horizon_s * 1000))
        self._wait_s = wait_s
        # A claim outlives its node only briefly: a node that dies mid-attempt leaves no
        # pending claim that would make every retry wait for it.
        self._pending_ms = max(1, round(wait_s * 3000))
        self._pending: set[asyncio.Task[None]] = set()

    def key(self, key: Key) -> str:
        user, ref = key
        return f"{self._prefix}{{{user}}}:ref:{ref}"

    async def claim(self, key: Key) -> bytes | None:
        """None when this node runs the attempt (or Redis does not answer), else the answer
        another node gave. An attempt that stays pending past `wait_s` is answered with
        `unavailable` by the caller (raised as TimeoutError)."""
        name = self.key(key)
        px = self._pending_ms
        try:
            if await self._pipeline.call(lambda pipe: pipe.set(name, _PENDING, nx=True, px=px)):
                return None
            deadline = time.monotonic() + self._wait_s
            delay = 0.01
            while True:
                value = await self._redis.get(name)
                if value is None:  # the other attempt had no final answer: ours runs
                    if await self._redis.set(name, _PENDING, nx=True, px=self._pending_ms):
                        return None
                    continue
                if value != _PENDING:
                    return bytes(value)
                if time.monotonic() >= deadline:
                    raise TimeoutError("the first attempt of this ref is still running")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        except TimeoutError:
            raise
        except Exception as exc:
            log.warning("shared chat refs unavailable: %s", exc)
            return None

    async def _settle(self, key: Key, reply: bytes | None) -> None:
        name = self.key(key)
        try:
            if reply is None:
                await self._pipeline.call(lambda pipe: pipe.delete(name))
            else:
                ttl = self._ttl_ms
                await self._pipeline.call(lambda pipe: pipe.set(name, reply, px=ttl))
        except Exception as exc:
            log.warning("could not store a chat answer: %s", exc)

    def settle(self, key: Key, reply: bytes | None) -> None:
        """Store the answer in the background (the author has it already)."""
        task = asyncio.get_running_loop().create_task(self._settle(key, reply))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
