"""Refusals: the SPEC §5 error codes and the `Failure` every layer raises with one of them.

Pure (no livecart imports), so the rules in `livecart.*.rules` need nothing from the wire;
`livecart.protocol` re-exports these names.
"""

from __future__ import annotations

from typing import Literal, get_args

ErrorCode = Literal[
    "bad_frame",
    "unknown_type",
    "too_large",
    "unauthorized",
    "forbidden",
    "not_found",
    "not_live",
    "rate_limited",
    "slow_mode",
    "duplicate",
    "muted",
    "banned",
    "blocked",
    "held",
    "sold_out",
    "limit_reached",
    "offer_closed",
    "bid_too_low",
    "auction_closed",
    "unavailable",
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


class Failure(Exception):
    """A refusal with a SPEC §5 code; adapters turn it into an error frame or HTTP error."""

    def __init__(
        self,
        code: ErrorCode,
        message: str = "",
        *,
        retry_after_ms: int | None = None,
        min_cents: int | None = None,
    ) -> None:
        super().__init__(message or code)
        self.code: ErrorCode = code
        self.message = message or code.replace("_", " ")
        self.retry_after_ms = retry_after_ms
        # `bid_too_low`: the least bid that would be taken now (also stated in the message).
        self.min_cents = min_cents
