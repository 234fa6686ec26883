"""Commerce rules without a database: offer ledgers, the sold-out gate, auctions, permissions."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from livecart.auth import Identity
from livecart.commerce import rules as rules
from livecart.commerce.rules import (
    EXTEND_WINDOW_S,
    AuctionState,
    OfferState,
    OfferTerms,
    SoldOutGate,
)
from livecart.protocol import Failure

USERS = st.sampled_from(["ann", "bob", "cat", "dan", "eve"])


def viewer(sub: str, *, minor: bool = False) -> Identity:
    return Identity(sub=sub, name=sub, role="viewer", minor=minor)


# ---------------------------------------------------------------- offer ledger


class OfferLedger(RuleBasedStateMachine):
    """Buys, confirms, cancels, expiries, the end and the clock in any order: the counters
    the store keeps with the same arithmetic never break SPEC §6."""

    orders = Bundle("orders")

    @initialize(
        quantity=st.integers(1, 12),
        limit=st.integers(1, 4),
        extra_stock=st.integers(0, 5),
        duration=st.floats(1, 100),
    )
    def open(self, quantity: int, limit: int, extra_stock: int, duration: float) -> None:
        self.now = 0.0
        self.initial_stock = quantity + extra_stock
        self.product_stock = extra_stock  # the offer took `quantity`
        self.offer = OfferState(
            quantity=quantity,
            remaining=quantity,
            per_user_limit=limit,
            status="open",
            ends_at=duration,
        )
        self.status: dict[int, str] = {}
        self.owner: dict[int, tuple[str, int]] = {}
        self.next_id = 0

    def holds(self, user: str) -> int:
        return sum(
            q for i, (u, q) in self.owner.items() if u == user and self.status[i] in rules.HOLDING
        )

    @rule(target=orders, user=USERS, qty=st.integers(1, 4), live=st.booleans())
    def buy(self, user: str, qty: int, live: bool) -> int:
        before = self.offer
        holds = self.holds(user)
        conditions = [
            ("offer_closed", not rules.offer_open_at(before, self.now)),
            ("not_live", not live),
            ("sold_out", before.remaining < qty),
            ("limit_reached", holds + qty > before.per_user_limit),
        ]
        expected = next((code for code, applies in conditions if applies), None)
        try:
            rules.decide_buy(before, qty=qty, user_holds=holds, session_live=live, now=self.now)
        except Failure as refusal:
            assert refusal.code == expected  # the first refusal that applies, in order
            return -1
        assert expected is None
        self.offer = rules.apply_buy(self.offer, qty)
        self.next_id += 1
        self.status[self.next_id] = "reserved"
        self.owner[self.next_id] = (user, qty)
        return self.next_id

    @rule(order=orders)
    def confirm(self, order: int) -> None:
        if order < 0:
            return
        try:
            if rules.decide_confirm(self.status[order]):  # type: ignore[arg-type]
                self.status[order] = "paid"
        except Failure as refusal:
            assert refusal.code == "offer_closed"
            assert self.status[order] in ("cancelled", "expired")

    def _release(self, order: int, to: str) -> None:
        self.status[order] = to
        self.offer, to_product = rules.apply_release(self.offer, self.owner[order][1])
        self.product_stock += to_product

    @rule(order=consumes(orders), by_seller=st.booleans())
    def cancel(self, order: int, by_seller: bool) -> None:
        if order < 0 or self.status[order] not in rules.HOLDING:
            return
        if self.status[order] == "paid" and not by_seller:
            return
        self._release(order, "cancelled")

    @rule(order=consumes(orders))
    def expire(self, order: int) -> None:
        if order >= 0 and self.status[order] == "reserved":
            self._release(order, "expired")

    @rule()
    def end(self) -> None:
        self.offer, returned = rules.apply_end(self.offer)
        self.product_stock += returned

    @rule(dt=st.floats(0, 30))
    def tick(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def counters_hold(self) -> None:
        held = {s: 0 for s in ("reserved", "paid", "cancelled", "expired")}
        for i, s in self.status.items():
            held[s] += self.owner[i][1]
        o = self.offer
        assert o.remaining >= 0
        assert o.remaining + held["reserved"] + held["paid"] == o.quantity
        if o.status == "ended":
            assert o.returned == o.remaining  # every unsold unit is back in stock
        else:
            assert o.returned == 0
        # No unit is created or lost between the product and the offer.
        assert self.product_stock + o.quantity - o.returned == self.initial_stock
        for user in {u for u, _ in self.owner.values()}:
            assert self.holds(user) <= o.per_user_limit


TestOfferLedger = OfferLedger.TestCase
TestOfferLedger.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_end_happens_once() -> None:
    offer = OfferState(quantity=5, remaining=3, per_user_limit=1, status="open", ends_at=10)
    ended, returned = rules.apply_end(offer)
    again, returned_again = rules.apply_end(ended)
    assert (returned, returned_again) == (3, 0)
    assert again == ended and ended.returned == 3


@given(
    quantity=st.integers(1, 10),
    remaining=st.integers(0, 10),
    qty=st.integers(1, 5),
    holds=st.integers(0, 5),
    limit=st.integers(1, 5),
    now=st.floats(0, 20),
)
def test_decide_buy_accepts_exactly_what_fits(
    quantity: int, remaining: int, qty: int, holds: int, limit: int, now: float
) -> None:
    assume(remaining <= quantity)
    offer = OfferState(
        quantity=quantity, remaining=remaining, per_user_limit=limit, status="open", ends_at=10
    )
    fits = now < 10 and qty <= remaining and holds + qty <= limit
    try:
        rules.decide_buy(offer, qty=qty, user_holds=holds, session_live=True, now=now)
        accepted = True
    except Failure:
        accepted = False
    assert accepted == fits


def test_buy_refusal_order() -> None:
    offer = OfferState(quantity=2, remaining=0, per_user_limit=1, status="open", ends_at=10)
    cases = [
        (rules.apply_end(offer)[0], True, 0.0, "offer_closed"),
        (offer, True, 10.0, "offer_closed"),
        (offer, False, 0.0, "not_live"),
        (offer, True, 0.0, "sold_out"),
    ]
    for state, live, now, code in cases:
        with pytest.raises(Failure) as refused:
            rules.decide_buy(state, qty=1, user_holds=1, session_live=live, now=now)
        assert refused.value.code == code
    with pytest.raises(Failure) as refused:
        rules.decide_buy(
            OfferState(quantity=2, remaining=2, per_user_limit=1, status="open", ends_at=10),
            qty=1,
            user_holds=1,
            session_live=True,
            now=0,
        )
    assert refused.value.code == "limit_reached"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_cents", -1),
        ("price_cents", rules.MAX_CENTS + 1),
        ("quantity", 0),
        ("per_user_limit", 0),
        ("duration_s", 0),
        ("duration_s", rules.MAX_DURATION_S + 1),
    ],
)
def test_offer_terms_out_of_range(field: str, value: float) -> None:
    terms = {"price_cents": 100, "quantity": 1, "per_user_limit": 1, "duration_s": 60.0}
    terms[field] = value
    with pytest.raises(Failure) as refused:
        rules.validate_offer(OfferTerms(**terms))  # type: ignore[arg-type]
    assert refused.value.code == "bad_frame"
    rules.validate_offer(OfferTerms(price_cents=0, quantity=1, per_user_limit=1, duration_s=1))


def test_offer_end_reason() -> None:
    assert rules.offer_end_reason(now=5, ends_at=10, session_status="live") is None
    assert rules.offer_end_reason(now=10, ends_at=10, session_status="live") == "time"
    assert rules.offer_end_reason(now=5, ends_at=10, session_status="ended") == "session_ended"


# ---------------------------------------------------------------- the sold-out gate


class GateAgainstDatabase(RuleBasedStateMachine):
    """One node's gate fed with committed observations that arrive late and out of order.
    Whenever it refuses, the database has nothing left and the user holds no order there (so
    it is not a retry), unless a return has committed that the gate has not been told of yet
    (the transient case: `reopen` follows each return's commit, locally or by NOTIFY)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = SoldOutGate(ttl_s=1e9)  # no time-based re-checks: test the logic alone
        self.remaining = 3
        self.buyers: set[str] = set()
        self.sold: list[str] = []
        self.pending: list[tuple[int, int, frozenset[str] | None]] = []
        self.unannounced_returns = 0

    @rule(user=USERS)
    def attempt(self, user: str) -> None:
        """A buy that passed the gate: read (and maybe buy) in the database."""
        if self.gate.check("o", user, 0.0) is not None:
            return
        stamp = self.gate.stamp("o")
        if self.remaining > 0:
            self.remaining -= 1
            self.buyers.add(user)
            self.sold.append(user)
        seen = frozenset(self.buyers) if self.remaining == 0 else None
        self.pending.append((stamp, self.remaining, seen))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.pending) - 1))
        stamp, remaining, buyers = self.pending.pop(i)
        self.gate.observe(
            "o",
            status="open",
            remaining=remaining,
            ends_at=1e12,
            buyers=buyers,
            now=0.0,
            stamp=stamp,
        )

    @precondition(lambda self: self.sold)
    @rule()
    def release_commits(self) -> None:
        self.sold.pop()
        self.remaining += 1
        self.unannounced_returns += 1

    @precondition(lambda self: self.unannounced_returns)
    @rule()
    def release_announced(self) -> None:
        self.unannounced_returns -= 1
        self.gate.reopen("o")

    @invariant()
    def refuses_only_when_empty(self) -> None:
        for user in ("ann", "bob", "cat", "dan", "eve"):
            code = self.gate.check("o", user, 0.0)
            if code is not None:
                assert code == "sold_out"
                # Exact once every committed return has been announced to the gate.
                exact = self.remaining == 0 and user not in self.buyers
                assert exact or self.unannounced_returns > 0


TestGateAgainstDatabase = GateAgainstDatabase.TestCase
TestGateAgainstDatabase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


def test_gate_rechecks_after_ttl_and_closes_for_good_when_ended() -> None:
    gate = SoldOutGate(ttl_s=1.0)
    gate.observe("o", status="open", remaining=0, ends_at=100, buyers=frozenset({"ann"}), now=0)
    assert gate.check("o", "bob", 0.5) == "sold_out"
    assert gate.check("o", "ann", 0.5) is None  # may be a retry: ask the database
    assert gate.check("o", "bob", 1.0) is None  # the probe
    assert gate.check("o", "cat", 1.1) == "sold_out"  # while the probe is out
    gate.observe("o", status="open", remaining=2, ends_at=100, buyers=None, now=1.2)
    assert gate.check("o", "cat", 1.3) is None
    gate.observe("o", status="ended", remaining=2, ends_at=50, buyers=frozenset({"ann"}), now=2)
    assert gate.check("o", "cat", 10.0) == "offer_closed"
    gate.reopen("o")  # a late return does not reopen an ended offer
    assert gate.check("o", "cat", 10.0) == "offer_closed"
    gate.prune(now=50 + 601)
    assert "o" not in gate


def test_gate_reopen_all_forgets_sold_out_but_not_ended() -> None:
    gate = SoldOutGate(ttl_s=60)
    gate.observe("a", status="open", remaining=0, ends_at=100, buyers=frozenset(), now=0)
    gate.observe("b", status="ended", remaining=3, ends_at=5, buyers=frozenset(), now=0)
    stamp = gate.stamp("a")
    gate.reopen_all()
    assert gate.check("a", "bob", 1) is None
    assert gate.check("b", "bob", 6) == "offer_closed"
    gate.observe(
        "a", status="open", remaining=0, ends_at=100, buyers=frozenset(), now=1, stamp=stamp
    )
    assert gate.check("a", "bob", 1) is None  # read before the reset: stale
    unseen = gate.stamp("c")  # an offer the gate never heard of
    gate.reopen_all()
    gate.observe(
        "c", status="open", remaining=0, ends_at=100, buyers=frozenset(), now=1, stamp=unseen
    )
    assert "c" not in gate


def test_gate_answers_closed_at_the_end_time() -> None:
    gate = SoldOutGate(ttl_s=60)
    gate.observe("o", status="open", remaining=0, ends_at=10, buyers=frozenset(), now=0)
    assert gate.check("o", "bob", 9.9) == "sold_out"
    assert gate.check("o", "bob", 10.0) == "offer_closed"


def test_gate_ignores_a_snapshot_older_than_a_return() -> None:
    gate = SoldOutGate()
    stamp = gate.stamp("o")
    gate.reopen("o")  # units came back after the snapshot below was read
    gate.observe(
        "o", status="open", remaining=0, ends_at=10, buyers=frozenset(), now=0, stamp=stamp
    )
    assert gate.check("o", "bob", 1) is None


# ---------------------------------------------------------------- auctions

BIDS = st.lists(st.tuples(USERS, st.integers(0, 3000), st.floats(0, 15)), min_size=1, max_size=40)


@given(
    start=st.integers(0, 1000),
    increment=st.integers(1, 200),
    duration=st.floats(1, 60),
    mode=st.sampled_from(["extend", "sudden_death"]),
    bids=BIDS,
)
def test_auction_rules(
    start: int, increment: int, duration: float, mode: str, bids: list[tuple[str, int, float]]
) -> None:
    auction = AuctionState(
        start_cents=start,
        increments=rules.flat_increments(increment),
        current_cents=None,
        leader=None,
        mode=mode,  # type: ignore[arg-type]
        ends_at=duration,
        status="open",
    )
    now = 0.0
    accepted: list[int] = []
    for user, amount, dt in bids:
        now += dt
        before = auction
        try:
            auction = rules.decide_bid(before, user=user, amount_cents=amount, now=now).auction
        except Failure as refusal:
            if now >= before.ends_at:
                assert refusal.code == "auction_closed"
            else:
                assert refusal.code == "bid_too_low"
                assert amount < rules.minimum_bid(before)
            assert rules.auction_due(before, now) == (now >= before.ends_at)
            continue
        assert now < before.ends_at
        assert amount >= (start if not accepted else accepted[-1] + increment)
        accepted.append(amount)
        assert (auction.current_cents, auction.leader, auction.bids) == (
            amount,
            user,
            len(accepted),
        )
        if mode == "sudden_death" or before.ends_at - now >= EXTEND_WINDOW_S:
            assert auction.ends_at == before.ends_at
        else:
            assert auction.ends_at == now + EXTEND_WINDOW_S > before.ends_at
    outcome = rules.auction_outcome(auction)
    if accepted:
        assert outcome == (auction.leader, accepted[-1])
    else:
        assert outcome is None


@pytest.mark.parametrize(
    ("changes", "ok"),
    [
        ({}, True),
        ({"start_cents": -1}, False),
        ({"min_increment_cents": 0}, False),
        ({"duration_s": 0}, False),
        ({"mode": "dutch"}, False),
    ],
)
def test_auction_terms(changes: dict[str, object], ok: bool) -> None:
    terms = {"start_cents": 100, "min_increment_cents": 10, "duration_s": 60.0, "mode": "extend"}
    terms.update(changes)
    if ok:
        rules.validate_auction(rules.AuctionTerms(**terms))  # type: ignore[arg-type]
    else:
        with pytest.raises(Failure, match="must be"):
            rules.validate_auction(rules.AuctionTerms(**terms))  # type: ignore[arg-type]


# ---------------------------------------------------------------- who may do what


def test_buyers_are_signed_in_adults() -> None:
    rules.require_buyer(viewer("ann"))
    rules.require_buyer(Identity(sub="c", name="c", role="creator"))
    for who, code in (
        (Identity(sub="guest-1", name="g", role="guest"), "unauthorized"),
        (viewer("kid", minor=True), "forbidden"),
    ):
        with pytest.raises(Failure) as refused:
            rules.require_buyer(who)
        assert refused.value.code == code


def test_managers_cancellers_viewers_confirmers() -> None:
    creator = Identity(sub="cre", name="c", role="creator")
    admin = Identity(sub="adm", name="a", role="admin")
    other_creator = Identity(sub="zzz", name="z", role="creator")
    moderator = Identity(sub="mod", name="m", role="moderator")
    rules.require_manager(creator, "cre")
    rules.require_manager(admin, "cre")
    for who in (other_creator, moderator, viewer("ann")):
        with pytest.raises(Failure, match="creator or an admin"):
            rules.require_manager(who, "cre")

    assert rules.may_view_order(viewer("ann"), buyer="ann", creator="cre")
    assert rules.may_view_order(creator, buyer="ann", creator="cre")
    assert rules.may_view_order(admin, buyer="ann", creator="cre")
    assert not rules.may_view_order(viewer("bob"), buyer="ann", creator="cre")
    assert not rules.may_view_order(other_creator, buyer="ann", creator="cre")

    rules.may_cancel(viewer("ann"), buyer="ann", creator="cre", status="reserved")
    rules.may_cancel(creator, buyer="ann", creator="cre", status="paid")
    rules.may_cancel(admin, buyer="ann", creator="cre", status="paid")
    with pytest.raises(Failure, match="cancelled"):
        rules.may_cancel(viewer("ann"), buyer="ann", creator="cre", status="paid")
    with pytest.raises(Failure, match="not your order"):
        rules.may_cancel(viewer("bob"), buyer="ann", creator="cre", status="reserved")

    rules.require_confirmer(admin)
    with pytest.raises(Failure) as refused:
        rules.require_confirmer(creator)
    assert refused.value.code == "forbidden"
    assert rules.decide_confirm("reserved") is True
    assert rules.decide_confirm("paid") is False
    for status in ("cancelled", "expired"):
        with pytest.raises(Failure) as refused:
            rules.decide_confirm(status)  # type: ignore[arg-type]
        assert refused.value.code == "offer_closed"


@given(attempts=st.integers(0, 200))
def test_webhook_backoff_grows_and_is_capped(attempts: int) -> None:
    delay = rules.webhook_backoff_s(attempts, base_s=1.0, cap_s=3600.0)
    assert 0 <= delay <= 3600
    assert delay <= rules.webhook_backoff_s(attempts + 1, base_s=1.0, cap_s=3600.0)
    if 1 <= attempts <= 12:
        assert delay == 2.0 ** (attempts - 1)
