"""The one exception the client raises for a refusal."""

from __future__ import annotations

from typing import Any


class LivecartError(Exception):
    """A request the server refused, with its SPEC §5 `code` (`sold_out`, `bid_too_low`,
    `unauthorized`, …). Two codes come from the client itself: `closed` (the client was
    closed while the request waited) and `timeout` (no answer within `answer_timeout_s`).
    `unavailable` is raised only once the retries with the same ref ran out of time."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        ref: str | None = None,
        retry_after_ms: int | None = None,
        reply: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_ms = retry_after_ms
        self.reply = reply  # the `error` (or `held`) message itself, when there was one
