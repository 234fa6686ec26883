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
from ..chat.rules.normalize import normalize
from ..failure import ErrorCode, Failure
from ..limits import MAX_CENTS, MAX_QUANTITY

OfferStatus = Literal["open", "ended"]
OrderStatus = Literal["reserved", "paid", "cancelled", "expired"]
AuctionMode = Literal["extend", "sudden_death"]
AuctionStatus = Literal["open", "ended"]  # as stored; "scheduled" is open before opens_at
ShownStatus = Literal["scheduled", "open", "ended"]
EndReason = Literal["time", "buy_now", "no_bids", "reserve_not_met"]

# Orders in these states hold units of an offer; the other two gave them back.
HOLDING: frozenset[str] = frozenset({"reserved", "paid"})

MAX_DURATION_S = 86_400
EXTEND_WINDOW_S = 10.0  # SPEC §6: a bid in the last 10 s moves the end to now + 10 s
DEFAULT_RESERVATION_TTL_S = 600.0
DEFAULT_SECOND_CHANCE_TTL_S = 300.0  # SPEC §11: how long a bidder has to take a second chance


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
    claim_word: str | None = None  # SPEC §13: a chat message equal to it claims one unit


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
    """An auction as clients see it (SPEC §4, §11). `min_increment_cents` is the step at the
    current price (at the start price before any bid); `increments` the whole table. The
    reserve and every max stay hidden: only `reserve_met` is shown."""

    id: str
    session: str
    product: str
    start_cents: int
    min_increment_cents: int
    current_cents: int | None
    leader: str | None
    mode: AuctionMode
    ends_at: str
    status: ShownStatus
    bids: int
    winner_order: str | None = None
    # `[[up_to_cents | null, step_cents], ...]` (lists, not tuples: plain JSON Schema arrays)
    increments: list[list[int | None]] = msgspec.field(default_factory=list)
    buy_now_cents: int | None = None
    reserve_met: bool = True
    opens_at: str | None = None
    reason: EndReason | None = None


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
    """An accepted bid as its bidder (`user`) sees it: `amount_cents` is the auction's price
    after it, `leader` who leads at that price; `max_cents` is the bidder's own max."""

    auction: str
    seq: int
    user: str
    amount_cents: int
    ends_at: str
    leading: bool = True
    leader: str = ""
    max_cents: int | None = None


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
    claim_word: str | None = None


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
    if terms.claim_word is not None:
        claim_key(terms.claim_word)


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
# SPEC §6 and §11. A bid is `amount_cents` with an optional hidden `max_cents` (a proxy):
# the server keeps the leader's max and, when someone challenges, answers for the leader
# with the least amount that still leads. Only the leader's max is kept: every other
# bidder's max is already below the price plus one step (see docs/commerce.md), so the
# contest is always the leader against the challenger.

# `[[up_to_cents, step_cents], ...]`: below `up_to_cents` the step is `step_cents`; the
# last row's `up_to_cents` may be None (no bound). Past a last bound the last step goes on.
IncrementRow = tuple[int | None, int]
Increments = tuple[IncrementRow, ...]

# The default table (eBay's published one, in cents): at a price under $1 a bid must add
# 5 cents, under $5 25 cents, ..., from $5,000 up $100.
DEFAULT_INCREMENTS: Increments = (
    (100, 5),
    (500, 25),
    (2_500, 50),
    (10_000, 100),
    (25_000, 250),
    (50_000, 500),
    (100_000, 1_000),
    (250_000, 2_500),
    (500_000, 5_000),
    (None, 10_000),
)
MAX_INCREMENT_ROWS = 32
MAX_STARTS_IN_S = 7 * 86_400


def flat_increments(step_cents: int) -> Increments:
    return ((None, step_cents),)


def validate_increments(rows: object) -> Increments:
    """The table as a tuple, or `bad_frame`: 1-32 rows `[up_to_cents, step_cents]`, bounds
    strictly ascending (only the last may be None), steps >= 1 and never decreasing."""
    if not isinstance(rows, (list, tuple)) or not 1 <= len(rows) <= MAX_INCREMENT_ROWS:
        raise Failure("bad_frame", f"increments must be 1-{MAX_INCREMENT_ROWS} rows")
    table: list[IncrementRow] = []
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise Failure("bad_frame", "each increments row is [up_to_cents, step_cents]")
        up_to, step = row
        if type(step) is not int or not 1 <= step <= MAX_CENTS:
            raise Failure("bad_frame", f"increments step_cents must be 1..{MAX_CENTS}")
        if up_to is None:
            if i != len(rows) - 1:
                raise Failure("bad_frame", "only the last increments row may have no up_to_cents")
        elif type(up_to) is not int or not 1 <= up_to <= MAX_CENTS:
            raise Failure("bad_frame", f"increments up_to_cents must be 1..{MAX_CENTS} or null")
        if table:
            prev_up, prev_step = table[-1]
            assert prev_up is not None
            if up_to is not None and up_to <= prev_up:
                raise Failure("bad_frame", "increments up_to_cents must be strictly ascending")
            if step < prev_step:
                raise Failure("bad_frame", "increments step_cents must not decrease")
        table.append((up_to, step))
    return tuple(table)


def step_at(increments: Increments, price: int) -> int:
    """The step that applies at `price`: the first row whose bound is above it."""
    for up_to, step in increments:
        if up_to is None or price < up_to:
            return step
    return increments[-1][1]


class AuctionTerms(msgspec.Struct, frozen=True, kw_only=True):
    start_cents: int
    duration_s: float
    mode: str
    min_increment_cents: int | None = None
    increments: object = None  # as given; `validate_auction` checks and returns the table
    buy_now_cents: int | None = None
    reserve_cents: int | None = None
    starts_in_s: float = 0.0


def validate_auction(terms: AuctionTerms) -> Increments:
    """Refuses bad terms with `bad_frame`; returns the increment table in force (the given
    one, a flat one from `min_increment_cents`, or the default)."""
    require_within("start_cents", terms.start_cents, 0, MAX_CENTS)
    require_within("duration_s", terms.duration_s, 1, MAX_DURATION_S)
    require_within("starts_in_s", terms.starts_in_s, 0, MAX_STARTS_IN_S)
    if terms.mode not in ("extend", "sudden_death"):
        raise Failure("bad_frame", "mode must be extend or sudden_death")
    if terms.increments is not None:
        if terms.min_increment_cents is not None:
            raise Failure("bad_frame", "give increments or min_increment_cents, not both")
        table = validate_increments(terms.increments)
    elif terms.min_increment_cents is not None:
        require_within("min_increment_cents", terms.min_increment_cents, 1, MAX_CENTS)
        table = flat_increments(terms.min_increment_cents)
    else:
        table = DEFAULT_INCREMENTS
    if terms.buy_now_cents is not None:
        require_within("buy_now_cents", terms.buy_now_cents, 1, MAX_CENTS)
        if terms.buy_now_cents < terms.start_cents:
            raise Failure("bad_frame", "buy_now_cents must be at least start_cents")
    if terms.reserve_cents is not None:
        require_within("reserve_cents", terms.reserve_cents, 0, MAX_CENTS)
        if terms.buy_now_cents is not None and terms.reserve_cents > terms.buy_now_cents:
            raise Failure("bad_frame", "reserve_cents must not be above buy_now_cents")
    return table


class AuctionState(msgspec.Struct, frozen=True, kw_only=True):
    """An auction as the rules see it. `leader_max_cents` (the leader's proxy limit, at least
    the price) and `leader_at` (the video time that max was set at) are never shown."""

    start_cents: int
    current_cents: int | None
    leader: str | None
    mode: AuctionMode
    ends_at: float
    status: AuctionStatus
    bids: int = 0
    increments: Increments = DEFAULT_INCREMENTS
    opens_at: float | None = None
    buy_now_cents: int | None = None
    reserve_cents: int | None = None
    leader_max_cents: int | None = None
    leader_at: float | None = None


def minimum_bid(auction: AuctionState) -> int:
    if auction.current_cents is None:
        return auction.start_cents
    return auction.current_cents + step_at(auction.increments, auction.current_cents)


def reserve_met(auction: AuctionState) -> bool:
    """No reserve, or a price at or above it (the amount itself is never shown)."""
    if auction.reserve_cents is None:
        return True
    return auction.current_cents is not None and auction.current_cents >= auction.reserve_cents


def shown_status(auction: AuctionState, now: float) -> ShownStatus:
    if auction.status == "ended":
        return "ended"
    if auction.opens_at is not None and now < auction.opens_at:
        return "scheduled"
    return "open"


def judged_at(now: float, video_at: float | None) -> float:
    """The video time a bid or buy is judged at: `now` unless given, never after `now`."""
    return now if video_at is None else min(video_at, now)


def require_accepting(
    auction: AuctionState, *, now: float, at: float, settle_grace_s: float = 0.0
) -> None:
    """Bids (and pre-bids while scheduled) and buy-now are taken while the auction is not
    settled, judged at video time `at` before `ends_at`."""
    if auction.status != "open" or at >= auction.ends_at or now >= auction.ends_at + settle_grace_s:
        raise Failure("auction_closed", "the auction has ended")


class BidResult(msgspec.Struct, frozen=True, kw_only=True):
    auction: AuctionState
    leading: bool
    outbid: str | None  # the previous leader, when the lead changed hands


def decide_bid(
    auction: AuctionState,
    *,
    user: str,
    amount_cents: int,
    now: float,
    max_cents: int | None = None,
    video_at: float | None = None,
    settle_grace_s: float = 0.0,
) -> BidResult:
    """The auction after accepting this bid, or the refusal. Bids are applied one at a time
    in the order the store serialises them (a row lock on the auction); video time decides
    whether the bid came in time, the extension and ties between equal maxes, never the
    order, so an accepted bid is never judged again."""
    if max_cents is not None and max_cents < amount_cents:
        raise Failure("bad_frame", "max_cents must be at least amount_cents")
    at = judged_at(now, video_at)
    require_accepting(auction, now=now, at=at, settle_grace_s=settle_grace_s)
    least = minimum_bid(auction)
    if amount_cents < least:
        raise Failure("bid_too_low", f"the minimum bid is {least}", min_cents=least)
    top = amount_cents if max_cents is None else max_cents
    table = auction.increments
    leader, leader_max, leader_at = user, top, at
    outbid: str | None = None
    if auction.leader is None or auction.current_cents is None:
        price = amount_cents
    else:
        held = auction.current_cents
        if auction.leader_max_cents is not None:
            held = max(held, auction.leader_max_cents)
        # A leader from before maxes were kept counts as the earlier one.
        held_at = auction.leader_at if auction.leader_at is not None else float("-inf")
        if auction.leader == user:  # the leader raises the price (and maybe the max)
            price = amount_cents
            if top <= held:
                leader_max, leader_at = held, held_at
        elif top > held or (top == held and at < held_at):  # the challenger takes the lead
            price = max(amount_cents, min(top, held + step_at(table, held)))
            outbid = auction.leader
        else:  # the leader's proxy answers: the challenger's max plus one step, capped
            price = min(held, top + step_at(table, top))
            leader, leader_max, leader_at = auction.leader, held, held_at
    reserve = auction.reserve_cents
    if reserve is not None and price < reserve <= leader_max:
        price = reserve  # a max at or above the reserve bids the reserve at once
    ends_at = auction.ends_at
    opened = auction.opens_at is None or at >= auction.opens_at
    if auction.mode == "extend" and opened and ends_at - at < EXTEND_WINDOW_S:
        ends_at = max(ends_at, at + EXTEND_WINDOW_S)
    after = msgspec.structs.replace(
        auction,
        current_cents=price,
        leader=leader,
        leader_max_cents=leader_max,
        leader_at=leader_at,
        ends_at=ends_at,
        bids=auction.bids + 1,
    )
    return BidResult(auction=after, leading=leader == user, outbid=outbid)


def decide_buy_now(
    auction: AuctionState,
    *,
    now: float,
    video_at: float | None = None,
    settle_grace_s: float = 0.0,
) -> int:
    """The buy-now price, or the refusal: the auction takes bids (judged at video time) and
    no bid has reached the buy-now price."""
    if auction.buy_now_cents is None:
        raise Failure("bad_frame", "this auction has no buy-now price")
    require_accepting(
        auction, now=now, at=judged_at(now, video_at), settle_grace_s=settle_grace_s
    )
    if auction.current_cents is not None and auction.current_cents >= auction.buy_now_cents:
        raise Failure("auction_closed", "bidding has reached the buy-now price")
    return auction.buy_now_cents


def auction_due(auction: AuctionState, now: float, settle_grace_s: float = 0.0) -> bool:
    """Settled `settle_grace_s` after the end (wall clock), so late-delivered bids whose
    video time is before the end still count."""
    return auction.status == "open" and now >= auction.ends_at + settle_grace_s


def auction_outcome(auction: AuctionState) -> tuple[str, int] | None:
    """(winner, price) when someone bid at or above the reserve; None returns the lot to
    product stock."""
    if auction.leader is None or auction.current_cents is None or not reserve_met(auction):
        return None
    return auction.leader, auction.current_cents


def end_reason(auction: AuctionState) -> EndReason:
    """Why an auction settled at its end ends the way it does."""
    if auction.leader is None:
        return "no_bids"
    if not reserve_met(auction):
        return "reserve_not_met"
    return "time"


# ---------------------------------------------------------------- selling (SPEC §13)

CLAIM_WORD_MAX_CHARS = 32
CLAIM_KEY_MAX_CHARS = 128  # the normalised form may be longer (æ → ae); bounded all the same
CLAIM_PREFIX = "claim:"  # a claim's idempotency key: `claim:<offer>`, one claim per user


def claim_key(word: str) -> str:
    """The matching form of a claim word: the chat normaliser's (NFKC, case folded, invisibles
    removed, look-alikes and leetspeak folded). Refuses with `bad_frame` a word outside 1..32
    characters after trimming, or one that normalises to nothing."""
    word = word.strip()
    require_within("claim_word length", len(word), 1, CLAIM_WORD_MAX_CHARS)
    key = normalize(word)
    if not key.strip():
        raise Failure("bad_frame", "the claim word normalises to nothing; pick a visible word")
    return key


def claim_candidate(text: str) -> str | None:
    """The form to look up among the session's claim keys, or None when the message is too
    long to be one (most chat is: nothing else is done for it)."""
    if len(text) > CLAIM_KEY_MAX_CHARS:
        return None
    key = normalize(text)
    return key if 0 < len(key) <= CLAIM_KEY_MAX_CHARS else None


def claim_ref(offer_id: str) -> str:
    return CLAIM_PREFIX + offer_id


def decide_waitlist(offer: OfferState, *, user_holds: int, session_live: bool, now: float) -> None:
    """Raise the refusal for joining the offer's waitlist, or return when it may proceed:
    closed → offer_closed, not live → not_live, units left → bad_frame (buy instead), the
    buyer already holds the per-user limit → limit_reached."""
    if not offer_open_at(offer, now):
        raise Failure("offer_closed", "this offer has ended")
    if not session_live:
        raise Failure("not_live", "the session is not live")
    if offer.remaining > 0:
        raise Failure("bad_frame", f"{offer.remaining} left: buy instead of waiting")
    if user_holds + 1 > offer.per_user_limit:
        raise Failure(
            "limit_reached",
            f"limit is {offer.per_user_limit} per buyer; you hold {user_holds}",
        )


def may_serve_waiter(offer: OfferState, *, user_holds: int, session_live: bool, now: float) -> bool:
    """A returned unit goes to the next waiter when the offer is still open in a live session
    and one more unit keeps the waiter within the per-user limit."""
    return (
        offer_open_at(offer, now)
        and session_live
        and offer.remaining > 0
        and user_holds + 1 <= offer.per_user_limit
    )


# ---------------------------------------------------------------- webhooks


def webhook_backoff_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 3600.0) -> float:
    """Delay before the next delivery attempt after `attempts` failed ones (1, 2, 4, … capped)."""
    if attempts < 1:
        return 0.0
    return float(min(cap_s, base_s * 2.0 ** min(attempts - 1, 60)))
