"""SPEC §2, the moderation and participation cells of the permission table, end to end.

Each cell runs in a world of its own: a creator with a live session, a channel moderator it
appointed over REST, a channel moderator appointed by another creator, and a viewer (the
"victim") whose messages are acted on. A role the table allows must succeed and have its
effect; any other role gets 403 `forbidden` (401 `unauthorized` without a token) and nothing
changes: the message stays, the user can still chat, no audit row is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from .harness import Client, ServerProcess, code, headers, say, token

ROLES = [
    "guest",
    "viewer",
    "owner",  # the creator whose session it is
    "other_creator",
    "channel_mod",  # appointed by the owner
    "other_channel_mod",  # appointed by another creator
    "platform_mod",
    "admin",
]
TOKEN_ROLE = {
    "viewer": "viewer",
    "owner": "creator",
    "other_creator": "creator",
    "channel_mod": "viewer",
    "other_channel_mod": "viewer",
    "platform_mod": "moderator",
    "admin": "admin",
}
MODERATE = {"owner", "channel_mod", "platform_mod", "admin"}
APPOINT = {"owner", "admin"}  # appoint moderators, read the audit log
STAFF = {"platform_mod", "admin"}  # the global blocked-term list
PARTICIPATE = set(ROLES) - {"guest"}


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    server: ServerProcess
    http: httpx.AsyncClient
    tag: str
    sid: str
    owner: str
    subs: dict[str, str]
    victim: Client
    victim_sub: str
    clients: list[Client] = field(default_factory=list)

    def headers(self, role: str) -> dict[str, str]:
        if role == "guest":
            return {}
        return headers(token(self.subs[role], TOKEN_ROLE[role]))

    @property
    def owner_h(self) -> dict[str, str]:
        return self.headers("owner")

    async def client(self, role: str) -> Client:
        tok = None if role == "guest" else token(self.subs[role], TOKEN_ROLE[role])
        c = await Client.connect(self.server, tok)
        await c.expect("hello")
        await c.send({"type": "join", "session": self.sid})
        await c.expect("joined")
        self.clients.append(c)
        return c

    async def snapshot(self) -> dict[str, Any]:
        """The session's state as a newcomer's `joined` shows it."""
        c = await Client.connect(self.server)
        await c.send({"type": "join", "session": self.sid})
        state: dict[str, Any] = (await c.expect("joined"))["state"]
        await c.close()
        return state

    async def moderate(self, role: str, **body: Any) -> httpx.Response:
        return await self.http.post(
            f"/api/sessions/{self.sid}/moderation", headers=self.headers(role), json=body
        )

    async def audit(self, creator: str | None = None) -> list[dict[str, Any]]:
        creator = creator or self.owner
        h = self.owner_h if creator == self.owner else headers(token("perm-auditor", "admin"))
        r = await self.http.get(f"/api/creators/{creator}/audit", headers=h)
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["actions"]
        return rows

    async def queue(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/sessions/{self.sid}/moderation/queue", headers=self.owner_h)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def timeline(self) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/sessions/{self.sid}/timeline", params={"limit": 1000})
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    async def terms(self, scope: str | None = None) -> list[dict[str, str]]:
        scope = scope or self.owner
        h = self.owner_h if scope == self.owner else headers(token("perm-auditor", "admin"))
        r = await self.http.get(f"/api/creators/{scope}/blocked-terms", headers=h)
        assert r.status_code == 200, r.text
        terms: list[dict[str, str]] = r.json()["terms"]
        return terms

    async def victim_says(self, text: str) -> dict[str, Any]:
        return await say(self.victim, self.sid, text)

    async def held_item(self) -> tuple[str, str]:
        """A message of the victim held for review: (queue id, ref)."""
        reply = await self.victim_says(f"deals at www.{self.tag.replace('_', '-')}-shop.com")
        assert reply["type"] == "held", reply
        items = await self.queue()
        assert len(items) == 1
        return items[0]["id"], reply["_ref"]


def refused(r: httpx.Response, role: str) -> None:
    """The refusal the table demands: 401 without a token, 403 otherwise."""
    want = (401, "unauthorized") if role == "guest" else (403, "forbidden")
    assert (r.status_code, r.json()["error"]["code"]) == want, r.text


async def make_world(server: ServerProcess, http: httpx.AsyncClient, tag: str) -> World:
    base = f"pm-{tag}"
    subs = {
        "viewer": f"{base}-vw",
        "owner": f"{base}-own",
        "other_creator": f"{base}-oc",
        "channel_mod": f"{base}-cm",
        "other_channel_mod": f"{base}-ocm",
        "platform_mod": f"{base}-pm",
        "admin": f"{base}-ad",
    }
    owner_h = headers(token(subs["owner"], "creator"))
    r = await http.post("/api/sessions", headers=owner_h, json={"title": f"Show {tag}"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = await http.post(f"/api/sessions/{sid}/start", headers=owner_h)
    assert r.status_code == 200 and r.json()["status"] == "live", r.text
    for creator, mod in (
        (subs["owner"], subs["channel_mod"]),
        (subs["other_creator"], subs["other_channel_mod"]),
    ):
        r = await http.post(
            f"/api/creators/{creator}/moderators",
            headers=headers(token(creator, "creator")),
            json={"user_id": mod},
        )
        assert r.status_code == 201, r.text
    victim_sub = f"{base}-vic"
    victim = await Client.connect(server, token(victim_sub))
    await victim.expect("hello")
    await victim.send({"type": "join", "session": sid})
    await victim.expect("joined")
    return World(server, http, tag, sid, subs["owner"], subs, victim, victim_sub, [victim])


@pytest.fixture(scope="module")
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """One HTTP client for every cell (building a client costs tens of milliseconds)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


# --------------------------------------------------------------------------- REST cells
#
# Each cell gets the world, the acting role and whether the table allows it; it acts and then
# checks the effect, or that nothing changed.

Cell = Callable[[World, str, bool], Awaitable[None]]


async def audited(w: World, role: str, allowed: bool, act: Callable[[], Awaitable[Any]]) -> Any:
    """Run `act`; an allowed call adds audit rows by the actor, a refused one adds none."""
    before = len(await w.audit())
    result = await act()
    after = await w.audit()  # newest first
    rows = after[: len(after) - before]
    if allowed:
        assert rows and all(r["actor"] == w.subs[role] for r in rows), rows
    else:
        assert rows == [], rows
    return result


async def cell_delete(w: World, role: str, allowed: bool) -> None:
    sent = await w.victim_says("what a lovely mug")
    offset = sent["offset"]
    r = await audited(w, role, allowed, lambda: w.moderate(role, action="delete", offset=offset))
    event = next(e for e in await w.timeline() if e["offset"] == offset)
    if allowed:
        assert r.status_code == 200, r.text
        assert event.get("removed") is True and "text" not in event
        assert (await w.victim.expect("chat_removed"))["target"] == offset
    else:
        refused(r, role)
        assert event["text"] == "what a lovely mug"


async def cell_timeout(w: World, role: str, allowed: bool) -> None:
    r = await audited(
        w,
        role,
        allowed,
        lambda: w.moderate(role, action="timeout", user_id=w.victim_sub, seconds=60),
    )
    reply = await w.victim_says("can I still talk?")
    if allowed:
        assert r.status_code == 200, r.text
        assert (await w.victim.expect("muted"))["until"] == r.json()["until"]
        assert code(reply) == "muted"
    else:
        refused(r, role)
        assert code(reply) == "ack"
        assert all(m["type"] != "muted" for m in await w.victim.drain(0.1))


async def cell_ban(w: World, role: str, allowed: bool) -> None:
    r = await audited(
        w, role, allowed, lambda: w.moderate(role, action="ban", user_id=w.victim_sub)
    )
    reply = await w.victim_says("can I still talk?")
    if allowed:
        assert r.status_code == 200, r.text
        assert (await w.victim.expect("muted"))["until"] is None
        assert code(reply) == "banned"
    else:
        refused(r, role)
        assert code(reply) == "ack"
        assert all(m["type"] != "muted" for m in await w.victim.drain(0.1))


async def cell_unban(w: World, role: str, allowed: bool) -> None:
    r = await w.moderate("owner", action="ban", user_id=w.victim_sub)
    assert r.status_code == 200, r.text
    r = await audited(
        w, role, allowed, lambda: w.moderate(role, action="unban", user_id=w.victim_sub)
    )
    reply = await w.victim_says("am I back?")
    if allowed:
        assert r.status_code == 200, r.text
        assert code(reply) == "ack"
    else:
        refused(r, role)
        assert code(reply) == "banned"


async def cell_slow(w: World, role: str, allowed: bool) -> None:
    r = await audited(w, role, allowed, lambda: w.moderate(role, action="slow", seconds=60))
    first, second = await w.victim_says("one"), await w.victim_says("two")
    assert code(first) == "ack"
    slow = (await w.snapshot())["slow"]
    if allowed:
        assert r.status_code == 200, r.text
        assert code(second) == "slow_mode" and slow == 60
    else:
        refused(r, role)
        assert code(second) == "ack" and slow == 0


async def cell_shield(w: World, role: str, allowed: bool) -> None:
    r = await audited(w, role, allowed, lambda: w.moderate(role, action="shield_on"))
    reply = await w.victim_says("hello from a brand-new account")
    if allowed:
        assert r.status_code == 200, r.text
        assert code(reply) == "held"
    else:
        refused(r, role)
        assert code(reply) == "ack"


async def cell_queue(w: World, role: str, allowed: bool) -> None:
    item, _ = await w.held_item()
    r = await w.http.get(f"/api/sessions/{w.sid}/moderation/queue", headers=w.headers(role))
    if allowed:
        assert r.status_code == 200, r.text
        assert [i["id"] for i in r.json()["items"]] == [item]
    else:
        refused(r, role)
        assert "www." not in r.text


async def cell_claim(w: World, role: str, allowed: bool) -> None:
    item, _ = await w.held_item()
    r = await w.moderate(role, action="claim", item=item)
    (after,) = await w.queue()
    if allowed:
        assert r.status_code == 200, r.text
        assert after["claimed_by"] == w.subs[role]
    else:
        refused(r, role)
        assert after["claimed_by"] is None


async def cell_approve(w: World, role: str, allowed: bool) -> None:
    item, ref = await w.held_item()
    r = await audited(w, role, allowed, lambda: w.moderate(role, action="approve", item=item))
    texts = [e.get("text") for e in await w.timeline()]
    if allowed:
        assert r.status_code == 200, r.text
        ack = await w.victim.expect("ack", ref=ref)
        assert ack["offset"] >= 1 and await w.queue() == []
        assert any(t and "-shop.com" in t for t in texts)
    else:
        refused(r, role)
        assert [i["id"] for i in await w.queue()] == [item]
        assert not any(t and "-shop.com" in t for t in texts)
        assert all(m.get("ref") != ref for m in await w.victim.drain(0.1))


async def cell_reject(w: World, role: str, allowed: bool) -> None:
    item, ref = await w.held_item()
    r = await audited(w, role, allowed, lambda: w.moderate(role, action="reject", item=item))
    if allowed:
        assert r.status_code == 200, r.text
        assert (await w.victim.expect("error", ref=ref))["code"] == "blocked"
        assert await w.queue() == []
    else:
        refused(r, role)
        assert [i["id"] for i in await w.queue()] == [item]
        assert all(m.get("ref") != ref for m in await w.victim.drain(0.1))


def _term(w: World) -> str:
    """A word nobody else says, unique to the cell (letters only: digits would be leetspeak)."""
    digest = hashlib.sha1(w.tag.encode()).hexdigest()[:12]
    return "zq" + "".join(chr(ord("a") + int(c, 16)) for c in digest)


async def cell_term_add(w: World, role: str, allowed: bool) -> None:
    term = _term(w)

    def add() -> Awaitable[httpx.Response]:
        return w.http.post(
            f"/api/creators/{w.owner}/blocked-terms",
            headers=w.headers(role),
            json={"term": term, "action": "block"},
        )

    r = await audited(w, role, allowed, add)
    reply = await w.victim_says(f"say {term} again")
    if allowed:
        assert r.status_code == 201, r.text
        assert {"term": term, "action": "block"} in await w.terms()
        assert code(reply) == "blocked"
    else:
        refused(r, role)
        assert await w.terms() == []
        assert code(reply) == "ack"


async def cell_term_remove(w: World, role: str, allowed: bool) -> None:
    term = _term(w)
    r = await w.http.post(
        f"/api/creators/{w.owner}/blocked-terms",
        headers=w.owner_h,
        json={"term": term, "action": "block"},
    )
    assert r.status_code == 201, r.text

    def remove() -> Awaitable[httpx.Response]:
        return w.http.request(
            "DELETE",
            f"/api/creators/{w.owner}/blocked-terms",
            headers=w.headers(role),
            json={"term": term},
        )

    r = await audited(w, role, allowed, remove)
    reply = await w.victim_says(f"say {term} again")
    if allowed:
        assert r.status_code == 200, r.text
        assert await w.terms() == []
        assert code(reply) == "ack"
    else:
        refused(r, role)
        assert len(await w.terms()) == 1
        assert code(reply) == "blocked"


async def cell_term_list(w: World, role: str, allowed: bool) -> None:
    r = await w.http.get(f"/api/creators/{w.owner}/blocked-terms", headers=w.headers(role))
    if allowed:
        assert r.status_code == 200 and r.json()["terms"] == [], r.text
    else:
        refused(r, role)


async def cell_global_term_add(w: World, role: str, allowed: bool) -> None:
    term = _term(w) + "g"
    admin = headers(token("perm-auditor", "admin"))
    before = len(await w.audit("global"))
    r = await w.http.post(
        "/api/creators/global/blocked-terms",
        headers=w.headers(role),
        json={"term": term, "action": "block"},
    )
    rows = await w.audit("global")
    listed = {"term": term, "action": "block"} in await w.terms("global")
    reply = await w.victim_says(f"{term} everywhere")
    try:
        if allowed:
            assert r.status_code == 201, r.text
            assert listed and len(rows) == before + 1 and rows[0]["actor"] == w.subs[role]
            assert code(reply) == "blocked"
        else:
            refused(r, role)
            assert not listed and len(rows) == before
            assert code(reply) == "ack"
    finally:
        if listed:
            await w.http.request(
                "DELETE", "/api/creators/global/blocked-terms", headers=admin, json={"term": term}
            )


async def cell_audit(w: World, role: str, allowed: bool) -> None:
    r = await w.http.get(f"/api/creators/{w.owner}/audit", headers=w.headers(role))
    if allowed:
        assert r.status_code == 200, r.text
        actions = [(a["action"], a["target"]) for a in r.json()["actions"]]
        assert ("appoint", w.subs["channel_mod"]) in actions
    else:
        refused(r, role)
        assert w.subs["channel_mod"] not in r.text


async def _can_moderate(w: World, sub: str) -> bool:
    r = await w.http.get(
        f"/api/sessions/{w.sid}/moderation/queue", headers=headers(token(sub, "viewer"))
    )
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


async def cell_appoint(w: World, role: str, allowed: bool) -> None:
    newcomer = f"pm-{w.tag}-new"

    def appoint() -> Awaitable[httpx.Response]:
        return w.http.post(
            f"/api/creators/{w.owner}/moderators",
            headers=w.headers(role),
            json={"user_id": newcomer},
        )

    r = await audited(w, role, allowed, appoint)
    if allowed:
        assert r.status_code == 201, r.text
        assert await _can_moderate(w, newcomer)
    else:
        refused(r, role)
        assert not await _can_moderate(w, newcomer)


async def cell_dismiss(w: World, role: str, allowed: bool) -> None:
    chmod = w.subs["channel_mod"]

    def dismiss() -> Awaitable[httpx.Response]:
        return w.http.request(
            "DELETE",
            f"/api/creators/{w.owner}/moderators",
            headers=w.headers(role),
            json={"user_id": chmod},
        )

    r = await audited(w, role, allowed, dismiss)
    if allowed:
        assert r.status_code == 200, r.text
        assert not await _can_moderate(w, chmod)
    else:
        refused(r, role)
        assert await _can_moderate(w, chmod)


REST_CELLS: dict[str, tuple[Cell, set[str]]] = {
    "delete": (cell_delete, MODERATE),
    "timeout": (cell_timeout, MODERATE),
    "ban": (cell_ban, MODERATE),
    "unban": (cell_unban, MODERATE),
    "slow": (cell_slow, MODERATE),
    "shield": (cell_shield, MODERATE),
    "queue": (cell_queue, MODERATE),
    "claim": (cell_claim, MODERATE),
    "approve": (cell_approve, MODERATE),
    "reject": (cell_reject, MODERATE),
    "term_add": (cell_term_add, MODERATE),
    "term_remove": (cell_term_remove, MODERATE),
    "term_list": (cell_term_list, MODERATE),
    "global_term_add": (cell_global_term_add, STAFF),
    "audit": (cell_audit, APPOINT),
    "appoint": (cell_appoint, APPOINT),
    "dismiss": (cell_dismiss, APPOINT),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(REST_CELLS))
async def test_rest_permission_cell(
    server: ServerProcess, http: httpx.AsyncClient, action: str, role: str
) -> None:
    cell, allowed_roles = REST_CELLS[action]
    w = await make_world(server, http, f"{action}-{role}")
    try:
        await cell(w, role, role in allowed_roles)
    finally:
        for c in w.clients:
            await c.close()


# --------------------------------------------------------------------------- WebSocket cells


async def ws_chat(w: World, role: str, allowed: bool) -> None:
    c = await w.client(role)
    text = f"hello from {role}"
    reply = await say(c, w.sid, text)
    texts = [e.get("text") for e in await w.timeline()]
    if allowed:
        assert code(reply) == "ack"
        assert (await w.victim.expect("chat", offset=reply["offset"]))["text"] == text
        assert text in texts
    else:
        assert code(reply) == "unauthorized"
        assert text not in texts


async def ws_like(w: World, role: str, allowed: bool) -> None:
    c = await w.client(role)
    await c.send({"type": "like", "session": w.sid, "count": 7})
    if allowed:
        assert (await w.victim.expect("likes", timeout=3))["total"] == 7
    else:
        assert (await c.expect("error"))["code"] == "unauthorized"
        assert all(m["type"] != "likes" for m in await w.victim.drain(0.5))
        assert (await w.snapshot())["likes"] == 0


async def ws_report(w: World, role: str, allowed: bool) -> None:
    sent = await w.victim_says("buy my followers")
    c = await w.client(role)
    await c.send(
        {
            "type": "report",
            "session": w.sid,
            "offset": sent["offset"],
            "reason": "spam",
            "ref": "rep",
        }
    )
    if allowed:
        assert (await c.expect("ack", ref="rep")) == {"type": "ack", "ref": "rep"}
        items = await w.queue()
        assert [(i["kind"], i["offset"], i["reports"]) for i in items] == [
            ("report", sent["offset"], 1)
        ]
    else:
        assert (await c.expect("error", ref="rep"))["code"] == "unauthorized"
        assert await w.queue() == []


async def ws_slow_exempt(w: World, role: str, allowed: bool) -> None:
    """Who may moderate is who slow mode does not apply to: the same table over WebSocket."""
    r = await w.moderate("owner", action="slow", seconds=60)
    assert r.status_code == 200, r.text
    c = await w.client(role)
    first = await say(c, w.sid, f"{role} says one")
    second = await say(c, w.sid, f"{role} says two")
    if role == "guest":
        assert code(first) == code(second) == "unauthorized"
    elif allowed:
        assert code(first) == code(second) == "ack"
    else:
        assert (code(first), code(second)) == ("ack", "slow_mode")


async def ws_no_moderation_frames(w: World, role: str, allowed: bool) -> None:
    """The WebSocket has no moderation frames: nobody deletes or bans through it."""
    sent = await w.victim_says("a message nobody may delete over the socket")
    c = await w.client(role)
    for frame in (
        {"type": "delete", "session": w.sid, "offset": sent["offset"], "ref": "d"},
        {"type": "moderation", "session": w.sid, "action": "ban", "user_id": w.victim_sub},
    ):
        await c.send(json.dumps(frame))
        assert (await c.expect("error"))["code"] == "unknown_type"
    event = next(e for e in await w.timeline() if e["offset"] == sent["offset"])
    assert event["text"] == "a message nobody may delete over the socket"
    assert code(await w.victim_says("still talking")) == "ack"
    del allowed


WS_CELLS: dict[str, tuple[Cell, set[str]]] = {
    "chat": (ws_chat, PARTICIPATE),
    "like": (ws_like, PARTICIPATE),
    "report": (ws_report, PARTICIPATE),
    "slow_exempt": (ws_slow_exempt, MODERATE),
    "no_moderation_frames": (ws_no_moderation_frames, set()),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(WS_CELLS))
async def test_websocket_permission_cell(
    server: ServerProcess, http: httpx.AsyncClient, action: str, role: str
) -> None:
    cell, allowed_roles = WS_CELLS[action]
    w = await make_world(server, http, f"ws-{action}-{role}")
    try:
        await cell(w, role, role in allowed_roles)
    finally:
        for c in w.clients:
            await c.close()
