"""Giveaways, the pure part (SPEC §13): the terms, who may enter, the commitment and the draw.

No I/O. The draw is a pure function of the seed and the set of entrants, so anyone holding
the published seed and entrant list can recompute it (`scripts/verify_giveaway.py` does, with
nothing but hashlib):

    commitment = hex(SHA-256(seed))
    key(user)  = hex(SHA-256(seed + ":" + user))
    winners    = the `winners` distinct entrants with the smallest key (ties, which would
                 need a SHA-256 collision, broken by user id), smallest first.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import Literal

import msgspec

from ..auth import Identity
from ..failure import Failure

Eligibility = Literal["viewers", "buyers"]
GiveawayStatus = Literal["open", "ended"]

MAX_WINNERS = 100  # units (and winners) of one giveaway
MAX_GIVEAWAY_S = 3600  # a giveaway runs 1 s .. 1 h
# Orders that giveaways hand out carry this idempotency-key prefix (then the giveaway id);
# they do not make their holder a "buyer" for a later giveaway's eligibility.
PRIZE_KEY = "giveaway:"


class Giveaway(msgspec.Struct, kw_only=True):
    """A giveaway as clients see it. `seed`, `entrants` and `drawn` (the winners' user ids,
    in draw order) are None until it has ended; `entries` counts the entrants so far."""

    id: str
    session: str
    product: str
    winners: int
    eligibility: Eligibility
    ends_at: str
    status: GiveawayStatus
    commitment: str
    entries: int = 0
    seed: str | None = None
    entrants: list[str] | None = None
    drawn: list[str] | None = None


class GiveawayTerms(msgspec.Struct, frozen=True, kw_only=True):
    winners: int
    duration_s: float
    eligibility: str


def validate_giveaway(terms: GiveawayTerms) -> None:
    """Refuses out-of-range terms with `bad_frame`, naming the field and its range."""
    if not 1 <= terms.winners <= MAX_WINNERS:
        raise Failure("bad_frame", f"winners must be 1..{MAX_WINNERS}")
    if not 1 <= terms.duration_s <= MAX_GIVEAWAY_S:
        raise Failure("bad_frame", f"duration_s must be 1..{MAX_GIVEAWAY_S}")
    if terms.eligibility not in ("viewers", "buyers"):
        raise Failure("bad_frame", "eligibility must be viewers or buyers")


def require_entrant(who: Identity, *, creator: str | None = None) -> None:
    """Entering: a signed-in adult who is not the session's own creator."""
    if who.is_guest:
        raise Failure("unauthorized", "sign in to enter giveaways")
    if who.minor:
        raise Failure("forbidden", "minors cannot enter giveaways")
    if creator is not None and who.sub == creator:
        raise Failure("forbidden", "the host cannot enter their own giveaway")


def entry_open(*, status: str, ends_at: float, now: float) -> bool:
    return status == "open" and now < ends_at


# ---------------------------------------------------------------- commitment and draw


def new_seed() -> str:
    """256 random bits from the OS (`secrets`), as 64 hex characters."""
    return secrets.token_hex(32)


def commitment(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def draw_key(seed: str, user: str) -> str:
    return hashlib.sha256(f"{seed}:{user}".encode()).hexdigest()


def draw(seed: str, entrants: Iterable[str], winners: int) -> list[str]:
    """The winners, smallest key first: a pure function of the seed and the set of entrants."""
    if winners <= 0:
        return []
    ranked = sorted((draw_key(seed, user), user) for user in set(entrants))
    return [user for _, user in ranked[:winners]]
