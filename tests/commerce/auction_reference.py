"""A brute-force reference auction (SPEC §11), written independently of `commerce.rules`:
after every bid it recomputes the whole state from all the bids accepted so far, instead of
keeping the leader's max the way the engine does.

- A bid is taken when its amount is at least the start (first bid) or the price plus the
  table's step at the price.
- Each bidder counts with the best max they ever gave (a bid without a max is a max equal to
  its amount); equal maxes rank by the earlier video time, then the earlier arrival.
- The leader is the best bidder; the price is the highest amount anyone bid, raised to the
  runner-up's max plus one step (capped at the leader's max), and to the reserve when the
  leader's max reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RefBid:
    user: str
    amount: int
    max: int | None
    video_at: float


@dataclass(frozen=True)
class RefState:
    price: int | None
    leader: str | None


def ref_step(table: list[tuple[int | None, int]], price: int) -> int:
    step = table[-1][1]
    for up_to, s in reversed(table):  # the lowest bound above the price wins
        if up_to is None or price < up_to:
            step = s
    return step


def ref_state(
    table: list[tuple[int | None, int]], reserve: int | None, accepted: list[tuple[int, RefBid]]
) -> RefState:
    if not accepted:
        return RefState(None, None)
    best: dict[str, tuple[int, float, int]] = {}  # user -> (max, -video_at, -arrival)
    for arrival, b in accepted:
        top = b.amount if b.max is None else b.max
        key = (top, -b.video_at, -arrival)
        if b.user not in best or key > best[b.user]:
            best[b.user] = key
    ranked = sorted(best.items(), key=lambda kv: kv[1], reverse=True)
    leader, (top, _, _) = ranked[0]
    price = max(b.amount for _, b in accepted)
    if len(ranked) > 1:
        second = ranked[1][1][0]
        price = max(price, min(top, second + ref_step(table, second)))
    if reserve is not None and top >= reserve:
        price = max(price, reserve)
    return RefState(price, leader)


def ref_minimum(start: int, table: list[tuple[int | None, int]], state: RefState) -> int:
    return start if state.price is None else state.price + ref_step(table, state.price)


def run_reference(
    start: int,
    table: list[tuple[int | None, int]],
    reserve: int | None,
    bids: list[RefBid],
) -> list[RefState | None]:
    """The state after each bid, or None where the bid is refused as too low."""
    accepted: list[tuple[int, RefBid]] = []
    out: list[RefState | None] = []
    state = RefState(None, None)
    for arrival, b in enumerate(bids):
        if b.amount < ref_minimum(start, table, state):
            out.append(None)
            continue
        accepted.append((arrival, b))
        state = ref_state(table, reserve, accepted)
        out.append(state)
    return out
