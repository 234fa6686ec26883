"""Tokens on an open connection (SPEC §10, §14): a token provider keeps a connection whose
tokens live 3 s signed in past their expiry without reconnecting; without one, the server's
`unauthorized` and 4001 end the client; `auth` with a bad or foreign token raises and
changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from livecart_client import LivecartClient, LivecartError

from ..e2e.harness import ServerProcess, live_session, token
from .conftest import FAST_CHAT


@pytest.fixture(scope="module")
def strict(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node that closes an expired connection 1 s after telling it."""
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("sdk-auth")),
        env={**FAST_CHAT, "LIVECART_AUTH_GRACE_S": "1"},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


async def test_a_token_provider_refreshes_before_expiry(strict: ServerProcess) -> None:
    live = await live_session(strict.url, creator="sdk-auth-host")
    issued: list[str] = []

    async def fresh() -> str:
        issued.append(token("sdk-refresher", ttl_s=3))
        return issued[-1]

    client = LivecartClient(strict.ws_url, token=await fresh(), token_provider=fresh)
    errors: list[Any] = []
    client.on("error", errors.append)
    try:
        await client.connect()
        room = await client.join(live["session"]["id"])
        await asyncio.sleep(7)  # two token lifetimes, plus the grace
        assert len(issued) >= 3, issued
        assert client.connections == 1, "signed in all along: never closed, never reconnected"
        assert errors == []
        assert await room.chat("still here") > 0
        assert client.token == issued[-1]
    finally:
        await client.close()


async def test_without_refresh_the_server_ends_the_connection(strict: ServerProcess) -> None:
    live = await live_session(strict.url, creator="sdk-expire-host")
    client = LivecartClient(strict.ws_url, token=token("sdk-expiring", ttl_s=2))
    errors: list[Any] = []
    client.on("error", errors.append)
    try:
        await client.connect()
        room = await client.join(live["session"]["id"])
        async with asyncio.timeout(10):
            while not any(e.code == "unauthorized" and "4001" in e.message for e in errors):
                await asyncio.sleep(0.05)
        assert errors[0].code == "unauthorized"  # the server's notice came first
        with pytest.raises(LivecartError) as after:
            await room.chat("too late")
        assert after.value.code == "closed"
    finally:
        await client.close()


async def test_connect_with_a_refused_token_raises_unauthorized(strict: ServerProcess) -> None:
    client = LivecartClient(strict.ws_url, token="not-a-jwt")
    unauthorized: list[Any] = []
    client.on("unauthorized", unauthorized.append)
    with pytest.raises(LivecartError) as refused:
        await client.connect()
    assert refused.value.code == "unauthorized" and unauthorized
    await client.close()
    nobody = LivecartClient("ws://127.0.0.1:9/ws")  # nothing listens on the discard port
    with pytest.raises(LivecartError) as down:
        await nobody.connect()
    assert down.value.code == "unavailable"
    await nobody.close()


async def test_auth_refuses_a_bad_or_foreign_token_and_keeps_the_user(
    strict: ServerProcess,
) -> None:
    live = await live_session(strict.url, creator="sdk-auth-host2")
    client = LivecartClient(strict.ws_url, token=token("sdk-auth-user"))
    try:
        hello = await client.connect()
        assert hello.user == "sdk-auth-user"
        with pytest.raises(LivecartError) as foreign:
            await client.auth(token("sdk-someone-else"))
        assert foreign.value.code == "forbidden"
        with pytest.raises(LivecartError) as bad:
            await client.auth("not-a-jwt")
        assert bad.value.code == "unauthorized"
        fresh = token("sdk-auth-user", ttl_s=600)
        assert (await client.auth(fresh)).user == "sdk-auth-user"
        assert client.token == fresh
        room = await client.join(live["session"]["id"])
        assert await room.chat("signed in") > 0

        # A guest signs in on the open connection.
        guest = LivecartClient(strict.ws_url)
        try:
            assert (await guest.connect()).role == "guest"
            assert (await guest.auth(token("sdk-late-signer"))).user == "sdk-late-signer"
            g_room = await guest.join(live["session"]["id"])
            assert await g_room.chat("now I may") > 0
        finally:
            await guest.close()
    finally:
        await client.close()
