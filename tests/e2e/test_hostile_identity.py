"""Identity against a deliberate attacker (SPEC §10): asymmetric keys and JWKS with issuer and
audience, type-checked claims, an HS256 secret long enough, roles acting downwards, a cap on
the sessions one connection joins, and deploy files without a default secret or tokens in
logs. Every test runs against real nodes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from .harness import SECRET, Client, ServerProcess, headers, live_session, say, token

ROOT = Path(__file__).resolve().parents[2]


def claims(sub: str, role: str = "viewer", ttl: int = 600, **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "name": sub, "role": role, "exp": int(time.time()) + ttl, **extra}


async def hello_or_close(server: ServerProcess, tok: str) -> dict[str, Any] | int:
    """`hello` for a token the node accepts, else the close code it answered with."""
    c = await Client.connect(server, tok)
    try:
        return await c.expect("hello")
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code
    finally:
        await c.close()


async def rest_status(server: ServerProcess, tok: str) -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return (await http.get("/api/me/orders", headers=headers(tok))).status_code


# --------------------------------------------------------------------------- PEM keys


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(public: Any) -> str:
    raw: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return raw.decode()


@pytest.fixture(scope="module")
def rs256_node(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("rs256")),
        env={
            "LIVECART_JWT_ALGORITHMS": "RS256",
            "LIVECART_JWT_PUBLIC_KEY": pem(rsa_key.public_key()),
            "LIVECART_JWT_ISSUER": "https://id.example",
            "LIVECART_JWT_AUDIENCE": "livecart",
        },
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


async def test_rs256_with_a_pem_key_and_issuer_and_audience(
    rs256_node: ServerProcess, rsa_key: rsa.RSAPrivateKey
) -> None:
    good = claims("rs_user", iss="https://id.example", aud="livecart")
    tok = jwt.encode(good, rsa_key, algorithm="RS256")
    hello = await hello_or_close(rs256_node, tok)
    assert isinstance(hello, dict) and hello["user"] == "rs_user"
    assert await rest_status(rs256_node, tok) == 200
    refused = {
        "wrong issuer": jwt.encode({**good, "iss": "https://evil.example"}, rsa_key, "RS256"),
        "wrong audience": jwt.encode({**good, "aud": "other"}, rsa_key, "RS256"),
        "no issuer": jwt.encode({k: v for k, v in good.items() if k != "iss"}, rsa_key, "RS256"),
        # HS256 is not among this node's algorithms, whatever the secret.
        "hs256": jwt.encode(good, SECRET, algorithm="HS256"),
        # the public key used as an HMAC secret (algorithm confusion)
        "confusion": token("rs_user"),
    }
    for why, bad in refused.items():
        assert await hello_or_close(rs256_node, bad) == 4001, why
        assert await rest_status(rs256_node, bad) == 401, why


# --------------------------------------------------------------------------- JWKS


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose key set the test changes (a rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, jwk: dict[str, Any]) -> None:
        self.keys = [*self.keys, jwk]


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    try:
        yield server
    finally:
        server.httpd.shutdown()


@pytest.fixture(scope="module")
def es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_node(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    jwks: Jwks,
    es_key: ec.EllipticCurvePrivateKey,
) -> Iterator[ServerProcess]:
    jwks.add({**ECAlgorithm.to_jwk(es_key.public_key(), as_dict=True), "kid": "k1"})
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("jwks")),
        env={"LIVECART_JWT_ALGORITHMS": "ES256,EdDSA", "LIVECART_JWT_JWKS_URL": jwks.url},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


async def test_jwks_keys_are_cached_and_a_rotated_key_is_fetched(
    jwks_node: ServerProcess, jwks: Jwks, es_key: ec.EllipticCurvePrivateKey
) -> None:
    tok = jwt.encode(claims("es_user"), es_key, algorithm="ES256", headers={"kid": "k1"})
    fetched = jwks.fetches
    for _ in range(3):
        hello = await hello_or_close(jwks_node, tok)
        assert isinstance(hello, dict) and hello["user"] == "es_user"
    assert await rest_status(jwks_node, tok) == 200
    assert jwks.fetches == fetched, "known keys are served from the cache"

    # Rotation: a new EdDSA key under a new kid; the first token using it makes the node
    # fetch the key set again.
    new_key = ed25519.Ed25519PrivateKey.generate()
    new_tok = jwt.encode(claims("ed_user"), new_key, algorithm="EdDSA", headers={"kid": "k2"})
    assert await hello_or_close(jwks_node, new_tok) == 4001  # not published yet
    await asyncio.sleep(1.1)  # past the refetch throttle
    jwks.add({**OKPAlgorithm.to_jwk(new_key.public_key(), as_dict=True), "kid": "k2"})
    hello = await hello_or_close(jwks_node, new_tok)
    assert isinstance(hello, dict) and hello["user"] == "ed_user"
    assert await rest_status(jwks_node, new_tok) == 200
    # A key that signs with the right kid but is not the published one is refused.
    forged = jwt.encode(
        claims("ed_user"),
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "k2"},
    )
    assert await hello_or_close(jwks_node, forged) == 4001
    assert await rest_status(jwks_node, forged) == 401


# --------------------------------------------------------------------------- claims


async def test_claims_are_type_checked(server: ServerProcess) -> None:
    base = claims("typed_user")
    bad = {
        "exp as a numeric string": {**base, "exp": "9999999999"},
        "exp as a boolean": {**base, "exp": True},
        "minor as a string": {**base, "minor": "false"},
        "name with a right-to-left override": {**base, "name": "adm\u202eni"},
        "name with U+0000": {**base, "name": "a\x00b"},
        "name too long": {**base, "name": "n" * 65},
    }
    for why, body in bad.items():
        tok = jwt.encode(body, SECRET, algorithm="HS256")
        assert await hello_or_close(server, tok) == 4001, why
        assert await rest_status(server, tok) == 401, why
    ok = await hello_or_close(server, jwt.encode(base, SECRET, algorithm="HS256"))
    assert isinstance(ok, dict) and ok["user"] == "typed_user"


def test_a_short_hs256_secret_refuses_to_start(database_url: str, tmp_path: Path) -> None:
    for secret, where in (("x" * 31, "env"), ("y" * 12, "file")):
        env = {"LIVECART_JWT_SECRET": secret} if where == "env" else {}
        if where == "file":
            (tmp_path / "jwt_secret").write_text(secret)
        args = [sys.executable, "-m", "livecart", "serve", "--port", "0"]
        args += ["--data-dir", str(tmp_path), "--database-url", database_url]
        run = subprocess.run(
            args,
            env={**_env_without_secret(), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode != 0, where
        assert "LIVECART_JWT_SECRET" in run.stderr + run.stdout, (where, run.stderr)


def _env_without_secret() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "LIVECART_JWT_SECRET"}


# --------------------------------------------------------------------------- roles


async def _signed_in(server: ServerProcess, sub: str, role: str, sid: str) -> Client:
    c = await Client.connect(server, token(sub, role))
    await c.expect("hello")
    await c.send({"type": "join", "session": sid})
    await c.expect("joined", session=sid)
    return c


async def test_roles_act_downwards(server: ServerProcess) -> None:
    run = f"{time.time_ns() % 10**9}"
    host, cmod, staff, boss, fan = (f"rd{n}-{run}" for n in ("host", "cm", "pm", "ad", "fan"))
    live = await live_session(server.url, host)
    sid = live["session"]["id"]
    clients = {
        host: await _signed_in(server, host, "creator", sid),
        cmod: await _signed_in(server, cmod, "viewer", sid),
        staff: await _signed_in(server, staff, "moderator", sid),
        boss: await _signed_in(server, boss, "admin", sid),
        fan: await _signed_in(server, fan, "viewer", sid),
    }
    roles = {host: "creator", cmod: "viewer", staff: "moderator", boss: "admin", fan: "viewer"}
    offsets = {}
    for who, c in clients.items():
        reply = await say(c, sid, f"hello from {who}")
        assert reply["type"] == "ack", reply
        offsets[who] = reply["offset"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.post(
            f"/api/creators/{host}/moderators",
            headers=headers(token(host, "creator")),
            json={"user_id": cmod},
        )
        assert r.status_code == 201, r.text

        async def act(actor: str, action: str, target: str) -> httpx.Response:
            body: dict[str, Any] = {"action": action}
            if action == "delete":
                body["offset"] = offsets[target]
            else:
                body["user_id"] = target
                if action == "timeout":
                    body["seconds"] = 60
            return await http.post(
                f"/api/sessions/{sid}/moderation",
                headers=headers(token(actor, roles[actor])),
                json=body,
            )

        # Upwards or sideways: forbidden, and nothing changes.
        for actor, targets in ((cmod, (host, staff, boss)), (staff, (boss,))):
            for target in targets:
                for action in ("timeout", "ban", "delete"):
                    r = await act(actor, action, target)
                    assert r.status_code == 403, (actor, action, target, r.text)
                    assert r.json()["error"]["code"] == "forbidden"
        # A report sent over the WebSocket, then rejected (a deletion) by the channel
        # moderator: forbidden for the creator's message, too.
        await clients[fan].send(
            {"type": "report", "session": sid, "offset": offsets[host], "reason": "x", "ref": "r1"}
        )
        await clients[fan].expect("ack", ref="r1")
        r = await http.post(
            f"/api/sessions/{sid}/moderation",
            headers=headers(token(cmod, "viewer")),
            json={"action": "reject", "item": f"report:{offsets[host]}"},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        for who in (host, staff, boss):
            assert (await say(clients[who], sid, f"still here {who}"))["type"] == "ack", who
        async with httpx.AsyncClient(base_url=server.url) as http2:
            r = await http2.get(f"/api/sessions/{sid}/timeline", params={"since": 0})
            texts = [e.get("text") for e in r.json()["events"] if e.get("type") == "chat"]
        assert all(f"hello from {w}" in texts for w in (host, staff, boss)), texts

        # Downwards: allowed.
        assert (await act(cmod, "timeout", fan)).status_code == 200
        assert (await act(staff, "delete", host)).status_code == 200
        assert (await act(boss, "timeout", staff)).status_code == 200
        assert (await say(clients[fan], sid, "can I talk"))["code"] == "muted"
    for c in clients.values():
        await c.close()


# --------------------------------------------------------------------------- joins


async def test_one_connection_joins_a_bounded_number_of_sessions(server: ServerProcess) -> None:
    run = f"{time.time_ns() % 10**9}"
    creator = f"jc-{run}"
    h = headers(token(creator, "creator"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        sids = []
        for i in range(21):
            r = await http.post("/api/sessions", headers=h, json={"title": f"show {i}"})
            assert r.status_code == 201, r.text
            sids.append(r.json()["id"])
    c = await Client.connect(server)
    await c.expect("hello")
    for sid in sids[:20]:
        await c.send({"type": "join", "session": sid})
        await c.expect("joined", session=sid)
        await asyncio.sleep(0.12)  # under the flood limit (20 frames in 2 s)
    await c.send({"type": "join", "session": sids[20]})
    err = await c.expect("error")
    assert err["code"] == "limit_reached", err
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get(f"/api/sessions/{sids[20]}")
        assert r.status_code == 200
    await asyncio.sleep(0.12)
    await c.send({"type": "join", "session": sids[0]})  # joined again: not a new one
    await c.expect("joined", session=sids[0])
    await c.send({"type": "leave", "session": sids[1]})
    await c.expect("left")
    await c.send({"type": "join", "session": sids[20]})
    await c.expect("joined", session=sids[20])
    await c.close()


# --------------------------------------------------------------------------- deploy files


def test_compose_has_no_default_secret_and_nginx_logs_no_query_strings() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    secrets_ = re.findall(r"LIVECART_JWT_SECRET:\s*(\S.*)", compose)
    assert secrets_, "compose passes LIVECART_JWT_SECRET"
    for value in secrets_:
        assert re.fullmatch(r"\$\{LIVECART_JWT_SECRET:\?.+\}", value.strip()), value
    nginx = (ROOT / "deploy/nginx.conf").read_text()
    formats = re.findall(r"log_format\s+(\w+)((?:\s*'[^']*')+)\s*;", nginx)
    assert formats, "nginx.conf defines its own log_format"
    names = {name for name, _ in formats}
    for name, fmt in formats:
        for leaky in ("$request ", "$request\"", "$request_uri", "$args", "$query_string",
                      "$http_referer", "$is_args"):
            assert leaky not in fmt.replace("'", ""), (name, leaky)
    logs = re.findall(r"access_log\s+(\S+)(?:\s+(\w+))?\s*;", nginx)
    assert logs and all(fmt in names or path == "off" for path, fmt in logs), logs
