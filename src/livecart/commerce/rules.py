"""Commerce rules (SPEC §6): offers, purchases, reservations, the sold-out gate, auctions.

Pure: no asyncio, no I/O; times are POSIX seconds passed in by the caller. The store layer
(`livecart.commerce.store`) asks these functions for every decision and mirrors their
arithmetic in single SQL statements, so the rules are tested here without a database.
"""

from __future__ import annotations

import itertools
from typing import Literal

import msgspec

from ..auth import Action, Identity, can
from ..failure import ErrorCode, Failure
from ..limits import MAX_CENTS, MAX_QUANTITY

OfferStatus = Literal["open", "ended"]
OrderStatus = Literal["reserved", "paid", "cancelled", "expired"]
AuctionMode = Literal["extend", "sudden_death"]
AuctionStatus = Literal["open", "ended"]

# Orders in these states hold units of an offer; the other two gave them back.
HOLDING: frozenset[str] = frozenset({"reserved", "paid"})

MAX_DURATION_S = 86_400
EXTEND_WINDOW_S = 10.0  # SPEC §6: a bid in the last 10 s moves the end to now + 10 s
DEFAULT_RESERVATION_TTL_S = 600.0


# ---------------------------------------------------------------- objects seen by clients


class Offer(msgspec.Struct, kw_only=True):
    """A flash deal. For an ended offer `remaining` counts the unsold units, all of which are
    back in product stock (`returned == remaining`)."""

    id: str
    session: str
    product: str
    price_cents: int
    currency: str
    quantity: int
    remaining: int
    per_user_limit: int
    starts_at: str
    ends_at: str
    status: OfferStatus


class Order(msgspec.Struct, kw_only=True):
    id: str
    user: str
    offer: str
    session: str
    product: str
    qty: int
    unit_cents: int
    total_cents: int
    currency: str
    status: OrderStatus
    expires_at: str
    created_at: str
    updated_at: str


class Auction(msgspec.Struct, kw_only=True):
    id: str
    session: str
    product: str
    start_cents: int
    min_increment_cents: int
    current_cents: int | None
    leader: str | None
    mode: AuctionMode
    ends_at: str
    status: AuctionStatus
    bids: int
    winner_order: str | None = None


class SecondChanceView(msgspec.Struct, kw_only=True):
    """A bidder's own second chance on an auction (SPEC §11): `offered` until `expires_at`,
    then `lapsed`, or `accepted` with its `order`."""

    auction: str
    session: str
    amount_cents: int
    expires_at: str
    status: Literal["offered", "accepted", "lapsed"]
    order: str | None = None


class BidAccepted(msgspec.Struct, kw_only=True):
    auction: str
    seq: int
    user: str
    amount_cents: int
    ends_at: str


# ---------------------------------------------------------------- permissions


def require_buyer(who: Identity) -> None:
    """Buying and bidding: a signed-in adult (SPEC §2)."""
    if who.is_guest or not can(who, Action.PARTICIPATE):
        raise Failure("unauthorized", "sign in to buy or bid")
    if who.minor:
        raise Failure("forbidden", "minors cannot buy or bid")


def require_manager(who: Identity, creator: str) -> None:
    """Offers and auctions: the session's creator or an admin."""
    if who.is_guest:
        raise Failure("unauthorized", "sign in first")
    if not can(who, Action.MANAGE, owner=creator):
        raise Failure("forbidden", "only the session's creator or an admin may do this")


def may_view_order(who: Identity, *, buyer: str, creator: str) -> bool:
    """The buyer, the session's creator, an admin."""
    return (not who.is_guest and who.sub == buyer) or can(who, Action.MANAGE, owner=creator)


def require_confirmer(who: Identity) -> None:
    """Payment capture is reported by an admin identity (the merchant's server holds one)."""
    if who.is_guest:
        raise Failure("unauthorized", "sign in first")
    if who.role != "admin":
        raise Failure("forbidden", "only an admin (or the merchant's server) confirms payment")


# ---------------------------------------------------------------- offers


class OfferTerms(msgspec.Struct, frozen=True, kw_only=True):
    price_cents: int
    quantity: int
    per_user_limit: int
    duration_s: float


def require_within(name: str, value: float, low: int, high: int) -> None:
    """Refuses `value` outside `low..high` with `bad_frame`, naming the field and its range."""
    if not low <= value <= high:
        raise Failure("bad_frame", f"{name} must be {low}..{high}")


def validate_offer(terms: OfferTerms) -> None:
    """Refuses out-of-range terms with `bad_frame` (the request itself is wrong)."""
    require_within("price_cents", terms.price_cents, 0, MAX_CENTS)
    require_within("quantity", terms.quantity, 1, MAX_QUANTITY)
    require_within("per_user_limit", terms.per_user_limit, 1, MAX_QUANTITY)
    require_within("duration_s", terms.duration_s, 1, MAX_DURATION_S)


class OfferState(msgspec.Struct, frozen=True, kw_only=True):
    """The counters of one offer, as stored."""

    quantity: int
    remaining: int
    per_user_limit: int
    status: OfferStatus
    ends_at: float
    returned: int = 0


def offer_open_at(offer: OfferState, now: float) -> bool:
    return offer.status == "open" and now < offer.ends_at


def decide_buy(
    offer: OfferState, *, qty: int, user_holds: int, session_live: bool, now: float
) -> None:
    """Raise the refusal for buying `qty` units, or return when the purchase may proceed.

    `user_holds` is the quantity of the buyer's reserved and paid orders on this offer. The
    order of checks is the order of the codes a buyer sees: closed, not live, sold out, limit.
    """
    if qty < 1:
        raise Failure("bad_frame", "qty must be at least 1")
    if not offer_open_at(offer, now):
        raise Failure("offer_closed", "this offer has ended")
    if not session_live:
        raise Failure("not_live", "the session is not live")
    if offer.remaining < qty:
        if offer.remaining == 0:
            raise Failure("sold_out", "sold out")
        raise Failure("sold_out", f"only {offer.remaining} left")
    if user_holds + qty > offer.per_user_limit:
        raise Failure(
            "limit_reached",
            f"limit is {offer.per_user_limit} per buyer; you hold {user_holds}",
        )


def apply_buy(offer: OfferState, qty: int) -> OfferState:
    """`UPDATE offers SET remaining = remaining - qty WHERE remaining >= qty AND open`."""
    assert offer.remaining >= qty
    return msgspec.structs.replace(offer, remaining=offer.remaining - qty)


def apply_release(offer: OfferState, qty: int) -> tuple[OfferState, int]:
    """A cancelled or expired order gives `qty` back: to the offer while it is open, else
    to the product. Returns the new offer and the units that go back to product stock.

    An ended offer counts the units as remaining *and* returned, so that
    `remaining + reserved + paid == quantity` holds for every offer at every moment."""
    if offer.status == "open":
        return msgspec.structs.replace(offer, remaining=offer.remaining + qty), 0
    return (
        msgspec.structs.replace(
            offer, remaining=offer.remaining + qty, returned=offer.returned + qty
        ),
        qty,
    )


def apply_end(offer: OfferState) -> tuple[OfferState, int]:
    """Ending gives every unsold unit back to product stock, once (open -> ended only)."""
    if offer.status == "ended":
        return offer, 0
    return (
        msgspec.structs.replace(offer, status="ended", returned=offer.remaining),
        offer.remaining,
    )


def offer_end_reason(*, now: float, ends_at: float, session_status: str) -> str | None:
    """Why the background pass ends an open offer now, or None to leave it open."""
    if session_status != "live":
        return "session_ended"
    if now >= ends_at:
        return "time"
    return None


# ---------------------------------------------------------------- orders


def may_cancel(who: Identity, *, buyer: str, creator: str, status: OrderStatus) -> None:
    """Buyer while reserved; the session's creator or an admin while reserved or paid.

    Cancelling an already cancelled or expired order is not an error (nothing is held)."""
    if who.is_guest:
        raise Failure("unauthorized", "sign in first")
    if can(who, Action.MANAGE, owner=creator):
        return
    if who.sub != buyer:
        raise Failure("forbidden", "not your order")
    if status == "paid":
        raise Failure("forbidden", "a paid order is cancelled (and refunded) by the seller")


def decide_confirm(status: OrderStatus) -> bool:
    """True when confirming changes the order; False for a repeated confirm of a paid order.

    A reserved order may be confirmed even a little past `expires_at`, as long as the expiry
    pass has not released it: its units are still held, and the buyer has paid."""
    if status == "reserved":
        return True
    if status == "paid":
        return False
    raise Failure("offer_closed", f"the order is {status}; its reservation is gone")


# ---------------------------------------------------------------- sold-out gate


class _GateEntry:
    __slots__ = ("buyers", "code", "ends_at", "learned_at")

    def __init__(
        self, code: ErrorCode, buyers: frozenset[str], ends_at: float, learned_at: float
    ) -> None:
        self.code = code
        self.buyers = buyers
        self.ends_at = ends_at
        self.learned_at = learned_at


class SoldOutGate:
    """Answers `sold_out` / `offer_closed` for an offer without asking the database.

    It closes only on a committed observation that the offer has `remaining == 0` (or has
    ended), together with the set of users holding any order on it, read in the same
    snapshot. While remaining is 0 nobody can create an order, so that set is complete and
    every idempotent retry (whose user is in it) still reaches the database. Units come back
    only through a cancel or an expiry: this node reopens the gate on its own returns (and
    ignores observations that started before one, see `stamp`), and any entry older than
    `ttl_s` lets one attempt through to re-check, so a return made by another node refuses
    buyers for at most `ttl_s`.
    """

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _GateEntry] = {}
        # Per offer, the number of the latest return heard of; numbers are never reused, and
        # offers not listed share `_floor`, which a reset raises.
        self._generation: dict[str, int] = {}
        self._returns = itertools.count(1)
        self._floor = 0

    def check(self, offer_id: str, user: str, now: float) -> ErrorCode | None:
        """A refusal code, or None when the attempt must go to the database."""
        entry = self._entries.get(offer_id)
        if entry is None or user in entry.buyers:
            return None
        if now >= entry.ends_at:
            return "offer_closed"
        if entry.code == "sold_out" and now - entry.learned_at >= self.ttl_s:
            # Let this one attempt re-check; the others keep the recent answer meanwhile.
            entry.learned_at = now
            return None
        return entry.code

    def stamp(self, offer_id: str) -> int:
        """Take before reading the database; pass to `observe` with what was read."""
        return self._generation.get(offer_id, self._floor)

    def observe(
        self,
        offer_id: str,
        *,
        status: OfferStatus,
        remaining: int,
        ends_at: float,
        buyers: frozenset[str] | None,
        now: float,
        stamp: int | None = None,
    ) -> None:
        """Learn from a committed snapshot; `buyers` must come from that same snapshot."""
        if status == "open" and remaining > 0:
            self._entries.pop(offer_id, None)
        elif buyers is not None:
            if stamp is not None and status == "open" and stamp != self.stamp(offer_id):
                return  # units came back after this snapshot was read: it is stale
            code: ErrorCode = "offer_closed" if status == "ended" else "sold_out"
            self._entries[offer_id] = _GateEntry(code, buyers, ends_at, now)

    def reopen(self, offer_id: str) -> None:
        """Units went back to the open offer."""
        self._generation[offer_id] = next(self._returns)
        entry = self._entries.get(offer_id)
        if entry is not None and entry.code == "sold_out":
            del self._entries[offer_id]

    def reopen_all(self) -> None:
        """Returns may have been missed (e.g. while not listening): forget every `sold_out`."""
        for offer_id in [k for k, e in self._entries.items() if e.code == "sold_out"]:
            del self._entries[offer_id]
        self._generation.clear()
        self._floor = next(self._returns)  # observations read before now are stale

    def prune(self, now: float, horizon_s: float = 600.0) -> None:
        """Drop entries of offers that ended long ago; the database answers those."""
        stale = [k for k, e in self._entries.items() if now - e.ends_at > horizon_s]
        for k in stale:
            del self._entries[k]
            self._generation.pop(k, None)
        if len(self._generation) > 10_000:
            # Only observations in flight use these; a new floor makes them all stale (safe).
            self._generation.clear()
            self._floor = next(self._returns)

    def __contains__(self, offer_id: object) -> bool:
        return offer_id in self._entries


# ---------------------------------------------------------------- auctions


class AuctionTerms(msgspec.Struct, frozen=True, kw_only=True):
    start_cents: int
    min_increment_cents: int
    duration_s: float
    mode: str


def validate_auction(terms: AuctionTerms) -> None:
    require_within("start_cents", terms.start_cents, 0, MAX_CENTS)
    require_within("min_increment_cents", terms.min_increment_cents, 1, MAX_CENTS)
    require_within("duration_s", terms.duration_s, 1, MAX_DURATION_S)
    if terms.mode not in ("extend", "sudden_death"):
        raise Failure("bad_frame", "mode must be extend or sudden_death")


class AuctionState(msgspec.Struct, frozen=True, kw_only=True):
    start_cents: int
    min_increment_cents: int
    current_cents: int | None
    leader: str | None
    mode: AuctionMode
    ends_at: float
    status: AuctionStatus
    bids: int = 0


def minimum_bid(auction: AuctionState) -> int:
    if auction.current_cents is None:
        return auction.start_cents
    return auction.current_cents + auction.min_increment_cents


def decide_bid(auction: AuctionState, *, user: str, amount_cents: int, now: float) -> AuctionState:
    """The auction after accepting this bid, or the refusal. Bids are applied one at a time
    in the order the store serialises them (a row lock on the auction)."""
    if auction.status != "open" or now >= auction.ends_at:
        raise Failure("auction_closed", "the auction has ended")
    least = minimum_bid(auction)
    if amount_cents < least:
        raise Failure("bid_too_low", f"the minimum bid is {least}")
    ends_at = auction.ends_at
    if auction.mode == "extend" and ends_at - now < EXTEND_WINDOW_S:
        ends_at = now + EXTEND_WINDOW_S
    return msgspec.structs.replace(
        auction, current_cents=amount_cents, leader=user, ends_at=ends_at, bids=auction.bids + 1
    )


def auction_due(auction: AuctionState, now: float) -> bool:
    return auction.status == "open" and now >= auction.ends_at


def auction_outcome(auction: AuctionState) -> tuple[str, int] | None:
    """(winner, price) when someone bid; None returns the lot to product stock."""
    if auction.leader is None or auction.current_cents is None:
        return None
    return auction.leader, auction.current_cents


# ---------------------------------------------------------------- webhooks


def webhook_backoff_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 3600.0) -> float:
    """Delay before the next delivery attempt after `attempts` failed ones (1, 2, 4, … capped)."""
    if attempts < 1:
        return 0.0
    return float(min(cap_s, base_s * 2.0 ** min(attempts - 1, 60)))
