"""A node's connections by user: personal messages reach exactly the user's own connections,
also after a guest signs in and after a connection closes."""

from __future__ import annotations

from livecart.auth import Identity
from livecart.realtime.connection import Connection, Connections
from tests.realtime.test_fanout import Recorder


def _conn(user: str, n: int, role: str = "viewer") -> tuple[Connection, Recorder]:
    rec = Recorder()
    conn = Connection(
        rec,
        f"conn-{user}-{n}",
        Identity(user, user, role),
        max_bytes=1 << 20,
        max_age_s=10,
        on_gap=lambda c, room: None,
    )
    return conn, rec


async def test_connections_are_found_by_their_user() -> None:
    conns = Connections()
    a1, _ = _conn("ann", 1)
    a2, _ = _conn("ann", 2)
    b1, _ = _conn("bob", 1)
    for c in (a1, a2, b1):
        conns.add(c)
    assert len(conns) == 3 and set(conns) == {a1, a2, b1}
    assert set(conns.of("ann")) == {a1, a2} and conns.of("bob") == [b1]
    assert conns.of("cid") == [] and conns.users() == {"ann", "bob"}

    conns.discard(a1)
    assert conns.of("ann") == [a2] and a1 not in conns and len(conns) == 2
    conns.discard(a1)  # twice: nothing more happens
    conns.discard(a2)
    assert conns.of("ann") == [] and conns.users() == {"bob"}


async def test_a_guest_that_signs_in_moves_under_its_user() -> None:
    conns = Connections()
    guest, _ = _conn("guest-7", 1, role="guest")
    conns.add(guest)
    conns.signed_in(guest, Identity("dora", "Dora", "viewer"))
    assert guest.identity.sub == "dora"
    assert conns.of("dora") == [guest] and conns.of("guest-7") == []
    assert conns.users() == {"dora"}
    conns.discard(guest)
    assert conns.users() == set() and len(conns) == 0


async def test_a_closed_connection_signing_in_is_not_indexed_again() -> None:
    conns = Connections()
    conn, _ = _conn("eve", 1)
    conns.add(conn)
    conns.discard(conn)
    conns.signed_in(conn, Identity("eve2", "Eve", "viewer"))
    assert conn.identity.sub == "eve2" and conns.users() == set() and conn not in conns
