"""The token off the URL and its life on an open socket (SPEC §10): `auth {token}` as a first
frame, refresh with the same `sub`, and expiry answered `unauthorized` then closed with 4001
after the grace (1 s on this node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from .harness import Client, ServerProcess, live_session, say, token

GRACE_S = 1.0


@pytest.fixture(scope="module")
def node(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("tokens")),
        env={"LIVECART_AUTH_GRACE_S": str(GRACE_S)},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def run_id() -> str:
    return f"{time.time_ns() % 10**9}"


async def closed_with(c: Client, timeout: float) -> int | None:
    """Read until the server closes; the close code it sent (AssertionError if it does not)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await c._read(timeout)
    except websockets.ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code
    except TimeoutError:
        raise AssertionError(f"still open after {timeout}s; inbox={c.inbox}") from None
    raise AssertionError("unreachable")


async def test_auth_frame_signs_a_guest_connection_in(node: ServerProcess) -> None:
    run = run_id()
    live = await live_session(node.url, f"lc-host-{run}")
    sid = live["session"]["id"]
    c = await Client.connect(node)  # no ?token=: a guest at once
    hello = await c.expect("hello")
    assert hello["role"] == "guest"
    await c.send({"type": "join", "session": sid})
    await c.expect("joined", session=sid)
    assert (await say(c, sid, "as a guest"))["code"] == "unauthorized"

    await c.send({"type": "auth", "token": "not.a.token"})
    assert (await c.expect("error"))["code"] == "unauthorized"
    assert (await say(c, sid, "still a guest"))["code"] == "unauthorized"

    user = f"lc-user-{run}"
    await c.send({"type": "auth", "token": token(user, name="Frame User")})
    hello = await c.expect("hello")
    assert (hello["user"], hello["role"]) == (user, "viewer")
    reply = await say(c, sid, "signed in by frame")
    assert reply["type"] == "ack", reply
    chat = await c.expect("chat", offset=reply["offset"])
    assert (chat["user"], chat["name"]) == (user, "Frame User")
    await c.close()


async def test_refresh_keeps_the_user_and_refuses_another(node: ServerProcess) -> None:
    run = run_id()
    user = f"lc-ref-{run}"
    c = await Client.connect(node, token(user))
    await c.expect("hello", user=user)
    await c.send({"type": "auth", "token": token(f"lc-other-{run}", "admin")})
    assert (await c.expect("error"))["code"] == "forbidden"
    await c.send({"type": "auth", "token": token(user, "viewer", name="Renamed")})
    hello = await c.expect("hello")
    assert (hello["user"], hello["role"]) == (user, "viewer")
    await c.send({"type": "ping", "ref": "p"})
    await c.expect("pong", ref="p")
    await c.close()


async def test_an_expired_token_is_told_then_closed_with_4001(node: ServerProcess) -> None:
    c = await Client.connect(node, token(f"lc-exp-{run_id()}", ttl_s=2))
    await c.expect("hello")
    started = time.monotonic()
    err = await c.expect("error", timeout=5)
    assert err["code"] == "unauthorized", err
    assert await closed_with(c, GRACE_S + 3) == 4001
    assert time.monotonic() - started >= GRACE_S * 0.9


async def test_a_fresh_auth_within_the_grace_keeps_the_socket(node: ServerProcess) -> None:
    user = f"lc-fresh-{run_id()}"
    c = await Client.connect(node, token(user, ttl_s=2))
    await c.expect("hello")
    assert (await c.expect("error", timeout=5))["code"] == "unauthorized"
    await c.send({"type": "auth", "token": token(user, ttl_s=600)})
    await c.expect("hello", user=user)
    await asyncio.sleep(GRACE_S + 1.5)
    await c.send({"type": "ping", "ref": "alive"})
    await c.expect("pong", ref="alive")
    left: list[dict[str, Any]] = await c.drain(0.2)
    assert not [m for m in left if m.get("type") == "error"], left
    await c.close()


async def test_a_guest_has_no_expiry_and_an_auth_frame_starts_one(node: ServerProcess) -> None:
    c = await Client.connect(node)
    await c.expect("hello", role="guest")
    await c.send({"type": "auth", "token": token(f"lc-late-{run_id()}", ttl_s=2)})
    await c.expect("hello", role="viewer")
    assert (await c.expect("error", timeout=5))["code"] == "unauthorized"
    assert await closed_with(c, GRACE_S + 3) == 4001
