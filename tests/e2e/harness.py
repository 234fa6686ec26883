"""Real servers and real clients for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from livecart import auth
from livecart.runtime.process import NodeProcess

SECRET = "e2e-secret-" + "x" * 32


class ServerProcess(NodeProcess):
    """A node for a test: the tests' JWT secret, the given database (embedded when empty)."""

    def __init__(
        self,
        database_url: str,
        data_dir: str,
        *,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(
            data_dir,
            database_url=database_url,
            env={"LIVECART_JWT_SECRET": SECRET, **(env or {})},
            extra_args=extra_args,
        )

    def start(self, port: int = 0, timeout: float = 30) -> ServerProcess:
        super().start(port, timeout)
        return self


@contextlib.contextmanager
def cluster(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    count: int,
    *,
    name: str,
    env: dict[str, str],
) -> Iterator[list[ServerProcess]]:
    """`count` nodes on one database with `env` (node ids `name0`, `name1`…), killed
    afterwards; one that does not start takes down those already started."""
    procs: list[ServerProcess] = []
    try:
        for i in range(count):
            procs.append(
                ServerProcess(
                    database_url,
                    str(tmp_path_factory.mktemp(f"{name}{i}")),
                    env={**env, "LIVECART_NODE_ID": f"{name}{i}"},
                ).start()
            )
        yield procs
    finally:
        for p in procs:
            p.kill()


def token(sub: str, role: str = "viewer", **kw: Any) -> str:
    return auth.issue(SECRET, sub, role, **kw)


def headers(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


class Client:
    """A WebSocket client that flattens server frames (JSON arrays) into messages."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.frames = 0

    @classmethod
    async def connect(cls, server: ServerProcess, tok: str | None = None, **kw: Any) -> Client:
        url = server.ws_url + (f"?token={tok}" if tok else "")
        ws = await websockets.connect(url, max_size=None, **kw)
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        await self.ws.send(frame)

    async def _read(self, timeout: float) -> None:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        messages = json.loads(raw)
        assert isinstance(messages, list), f"server frame is not an array: {raw!r}"
        self.frames += 1
        self.inbox.extend(messages)

    async def expect(
        self, type_: str | tuple[str, ...], timeout: float = 5.0, **match: Any
    ) -> dict[str, Any]:
        """The first message (kept or new) of this type (or one of these types) whose fields
        match; earlier ones stay."""
        types = (type_,) if isinstance(type_, str) else type_
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.inbox):
                if m.get("type") in types and all(m.get(k) == v for k, v in match.items()):
                    return self.inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {type_} {match} within {timeout}s; inbox={self.inbox[-10:]}"
                )
            await self._read(left)

    async def drain(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                await self._read(left)
        except TimeoutError:
            pass
        out, self.inbox = self.inbox, []
        return out

    async def close(self) -> None:
        await self.ws.close()


async def live_session(base: str, creator: str = "creator1") -> dict[str, Any]:
    """A creator with a product in the showcase and a live session."""
    h = headers(token(creator, "creator"))
    async with httpx.AsyncClient(base_url=base) as http:
        product = (
            await http.post(
                "/api/products",
                headers=h,
                json={
                    "title": "Ceramic mug",
                    "price_cents": 1500,
                    "stock": 100,
                    "category": "home",
                },
            )
        ).json()
        session = (
            await http.post(
                "/api/sessions", headers=h, json={"title": "Morning show", "category": "home"}
            )
        ).json()
        r = await http.post(
            f"/api/sessions/{session['id']}/products", headers=h, json={"product_id": product["id"]}
        )
        assert r.status_code == 201, r.text
        r = await http.post(f"/api/sessions/{session['id']}/start", headers=h)
        assert r.status_code == 200, r.text
        return {"session": r.json(), "product": product, "creator": creator, "headers": h}


async def open_offer(
    base: str,
    live: dict[str, Any],
    *,
    price_cents: int,
    quantity: int,
    per_user_limit: int,
    duration_s: float = 60,
    **extra: Any,
) -> dict[str, Any]:
    """A flash offer on `live`'s product (from `live_session`), opened over REST (`extra`:
    more fields of the offer, e.g. `claim_word`)."""
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            f"/api/sessions/{live['session']['id']}/offers",
            headers=live["headers"],
            json={
                "product_id": live["product"]["id"],
                "price_cents": price_cents,
                "quantity": quantity,
                "per_user_limit": per_user_limit,
                "duration_s": duration_s,
                **extra,
            },
        )
        assert r.status_code == 201, r.text
        offer: dict[str, Any] = r.json()
        return offer



async def open_auction(
    base: str,
    live: dict[str, Any],
    *,
    start_cents: int,
    min_increment_cents: int,
    duration_s: float,
    mode: str,
    **extra: Any,
) -> dict[str, Any]:
    """An auction of `live`'s product (from `live_session`), opened over REST (`extra`: more
    fields of the auction, e.g. `reserve_cents`)."""
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post(
            f"/api/sessions/{live['session']['id']}/auctions",
            headers=live["headers"],
            json={
                "product_id": live["product"]["id"],
                "start_cents": start_cents,
                "min_increment_cents": min_increment_cents,
                "duration_s": duration_s,
                "mode": mode,
                **extra,
            },
        )
        assert r.status_code == 201, r.text
        auction: dict[str, Any] = r.json()
        return auction


_refs = itertools.count(1)


async def say(c: Client, sid: str, text: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send a chat message and return its answer: `ack`, `held` or `error` (with `_ref`)."""
    ref = f"s{next(_refs)}"
    await c.send({"type": "chat", "session": sid, "text": text, "ref": ref})
    reply = await c.expect(("ack", "held", "error"), timeout, ref=ref)
    reply["_ref"] = ref
    return reply


def code(reply: dict[str, Any]) -> str:
    """`ack`, `held`, or the error code."""
    return str(reply["code"]) if reply["type"] == "error" else str(reply["type"])
