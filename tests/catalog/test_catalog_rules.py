"""Catalog rules without a database: the session state machine, who manages what, the
showcase and the pin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecart.auth import Identity
from livecart.catalog import rules as rules
from livecart.catalog.models import Product, Session
from livecart.protocol import Failure

STATUS = st.sampled_from(["scheduled", "live", "ended"])


def person(sub: str, role: str) -> Identity:
    return Identity(sub=sub, name=sub, role=role, minor=False)


def session(
    creator: str = "cara", status: str = "live", showcase: list[str] | None = None
) -> Session:
    return Session(
        id="ses_1",
        creator=creator,
        title="t",
        category="",
        tags=[],
        status=status,  # type: ignore[arg-type]
        playback_url=None,
        scheduled_at=None,
        started_at=None,
        ended_at=None,
        pinned_product=None,
        showcase=showcase or [],
    )


def product(creator: str = "cara", pid: str = "prd_1") -> Product:
    return Product(
        id=pid,
        creator=creator,
        title="mug",
        price_cents=100,
        currency="USD",
        stock=1,
        category="",
        tags=[],
    )


def refused(code: str, fn: object, *args: object) -> Failure:
    with pytest.raises(Failure) as caught:
        fn(*args)  # type: ignore[operator]
    assert caught.value.code == code
    return caught.value


# ---------------------------------------------------------------- states


def test_the_statuses_are_the_models() -> None:
    assert rules.STATUSES == ("scheduled", "live", "ended")
    assert rules.LIVE == "live" and rules.LIVE in rules.STATUSES


def test_forward_moves_name_where_they_may_come_from() -> None:
    assert rules.transition("scheduled", "live") == ("scheduled",)
    assert rules.transition("scheduled", "ended") == ("scheduled", "live")
    assert rules.transition("live", "ended") == ("scheduled", "live")


def test_a_session_already_there_needs_nothing() -> None:
    for status in rules.STATUSES:
        assert rules.transition(status, status) is None  # type: ignore[arg-type]


def test_nothing_goes_back() -> None:
    failure = refused("not_live", rules.transition, "ended", "live")
    assert failure.message == "a session that is ended cannot become live"
    refused("not_live", rules.transition, "live", "scheduled")
    refused("not_live", rules.transition, "ended", "scheduled")


@given(st.lists(st.sampled_from(["live", "ended"]), max_size=12))
def test_any_sequence_of_moves_only_goes_forward(moves: list[str]) -> None:
    """Start and end requests in any order: the status never moves back, each accepted move
    changes it, and an ended session stays ended."""
    order = {"scheduled": 0, "live": 1, "ended": 2}
    status = "scheduled"
    for to in moves:
        try:
            sources = rules.transition(status, to)  # type: ignore[arg-type]
        except Failure as exc:
            assert exc.code == "not_live"
            assert order[to] < order[status]
            continue
        if sources is None:
            assert status == to
            continue
        assert status in sources and status != to
        assert order[to] > order[status]
        status = to
    if "ended" in moves:
        assert status == "ended"


def test_status_filter() -> None:
    assert rules.status_filter(None) is None
    for status in rules.STATUSES:
        assert rules.status_filter(status) == status
    for bad in ("", "LIVE", "live ", "paused"):
        failure = refused("bad_frame", rules.status_filter, bad)
        assert failure.message == "status must be scheduled, live or ended"


def test_schedule_years() -> None:
    rules.check_schedule(None)
    rules.check_schedule(datetime(1970, 1, 1, tzinfo=UTC))
    rules.check_schedule(datetime(9998, 12, 31, tzinfo=UTC))
    for year in (1, 1969, 9999):
        failure = refused("bad_frame", rules.check_schedule, datetime(year, 6, 1, tzinfo=UTC))
        assert failure.message == "scheduled_at must be between 1970 and 9998"


# ---------------------------------------------------------------- who manages what


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        (person("cara", "creator"), True),
        (person("root", "admin"), True),
        (person("otto", "creator"), False),
        (person("cara", "viewer"), False),
        (person("mod", "moderator"), False),
        (person("guest-1", "guest"), False),
    ],
)
def test_only_the_owner_and_admins_manage(who: Identity, allowed: bool) -> None:
    if allowed:
        rules.require_manager(who, "cara")
    else:
        failure = refused("forbidden", rules.require_manager, who, "cara")
        assert failure.message == f"{who.role} may not manage here"


# ---------------------------------------------------------------- showcase and pin


def test_a_showcase_takes_only_its_creators_products() -> None:
    mine = product("cara")
    assert rules.check_showcase(session("cara"), mine) is mine
    for other in (product("otto"), None):
        failure = refused("not_found", rules.check_showcase, session("cara"), other)
        assert failure.message == "no such product of this creator"


def test_only_a_showcased_product_is_pinned() -> None:
    s = session(showcase=["prd_1", "prd_2"])
    rules.check_pin(s, "prd_2")
    rules.check_pin(s, None)  # unpinning needs no showcase
    rules.check_pin(session(showcase=[]), None)
    failure = refused("not_found", rules.check_pin, s, "prd_3")
    assert failure.message == "pin a product from the session's showcase"
