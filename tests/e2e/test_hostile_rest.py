"""REST and pages against an attacker (issue 13): bodies bounded while read, rate limits per
identity, security headers on pages, JSON for every error the framework answers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ..conftest import scratch_database
from .harness import ServerProcess, headers, token

MAX_BODY = 64 * 1024
HUGE = 200 * 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def own_database(pg_server_url: str) -> Iterator[str]:
    """A database for this module's node alone, so a test may break its schema."""
    with scratch_database(pg_server_url, "livecart_hostile_") as url:
        yield url


@pytest.fixture(scope="module")
def node(own_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node of its own: a tight REST budget (2/s, burst 10) and pages that a shop may embed."""
    proc = ServerProcess(
        own_database,
        str(tmp_path_factory.mktemp("hostile-rest")),
        env={
            "LIVECART_REST_RATE_PER_S": "2",
            "LIVECART_REST_BURST": "10",
            "LIVECART_FRAME_ANCESTORS": "'self' https://shop.example",
        },
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    head: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        head[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(head.get("content-length", "0")))
    return int(status_line.split()[1]), head, body


def _stream_body(host: str, port: int, head: bytes, total: int) -> tuple[bytes, int]:
    """Send `head`, then a chunked body of `total` bytes from a thread while this one reads
    the answer; the sending stops at the answer or when the server closes. Plain blocking
    sockets: the answer stays readable after the server's reset of the unread rest."""
    sock = socket.create_connection((host, port))
    sock.sendall(head)
    chunk = b"%x\r\n" % (64 * 1024) + b" " * (64 * 1024) + b"\r\n"
    stop = threading.Event()
    sent = [0]

    def pump() -> None:
        try:
            while sent[0] < total and not stop.is_set():
                sock.sendall(chunk)
                sent[0] += 64 * 1024
            if not stop.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: what it should do

    writer = threading.Thread(target=pump, daemon=True)
    writer.start()
    sock.settimeout(30)
    data = b""
    try:
        while _parse_response(data)[0] == 0:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except ConnectionResetError:
        pass
    finally:
        stop.set()
        writer.join(30)
        sock.close()
    return data, sent[0]


def _parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a complete HTTP/1.1 answer in `data`, else (0, {}, b"")."""
    top, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return 0, {}, b""
    lines = top.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields.get("content-length", "0"))
    if len(rest) < length:
        return 0, {}, b""
    return int(lines[0].split()[1]), fields, rest[:length]


# ---------------------------------------------------------------- bodies (finding 4)


async def test_a_200_mb_chunked_body_is_refused_while_read_and_never_buffered(
    node: ServerProcess,
) -> None:
    """A creator streams a 200 MB chunked body: 413 too_large once 64 KiB are in, the
    connection is closed, and the server's peak memory does not grow by more than a few MB."""
    pid = node.proc.pid if node.proc else 0
    peak_before = _status_kb(pid, "VmHWM")
    host, port = node.url.removeprefix("http://").rsplit(":", 1)
    head = (
        "POST /api/products HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"Authorization: Bearer {token('big-body-creator', 'creator')}\r\n"
        "Content-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    raw, sent = await asyncio.to_thread(_stream_body, host, int(port), head, HUGE)
    status, head_fields, body = _parse_response(raw)
    assert status == 413, (status, body, "".join(node.output[-30:]))
    assert json.loads(body)["error"]["code"] == "too_large"
    grown_mb = (_status_kb(pid, "VmHWM") - peak_before) / 1024
    assert grown_mb < 8, f"peak RSS grew by {grown_mb:.0f} MB"
    assert sent < HUGE // 4, f"the server read {sent >> 20} MB before answering"
    assert head_fields.get("connection") == "close"


async def test_a_declared_oversized_body_is_refused_before_any_byte_is_read(
    server: ServerProcess,
) -> None:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /api/products HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Authorization: Bearer {token('declared-body-creator', 'creator')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {HUGE}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status, _head, body = await asyncio.wait_for(_read_response(reader), 5)
    writer.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    # The same on a route that reads no body at all.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            "POST /api/sessions/any/start HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Content-Length: {HUGE}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status, head, body = await asyncio.wait_for(_read_response(reader), 5)
    writer.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    assert head["connection"] == "close"
    # Just over the limit too, and just under it is decoded (then refused as bad JSON).
    async with httpx.AsyncClient(base_url=server.url) as http:
        h = headers(token("declared-body-creator", "creator"))
        r = await http.post("/api/products", headers=h, content=b" " * (MAX_BODY + 1))
        assert r.status_code == 413, r.text
        r = await http.post("/api/products", headers=h, content=b"{" + b" " * (MAX_BODY - 2))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", r.text


# ---------------------------------------------------------------- pages (risk 9)

PAGES = ("/studio", "/watch/some-session", "/moderate/some-session")


def _directives(policy: str) -> dict[str, str]:
    out = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        out[name] = value
    return out


async def test_pages_carry_a_csp_without_inline_script_and_the_other_headers(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in PAGES:
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            csp = _directives(r.headers["content-security-policy"])
            assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'", csp
            assert "unsafe" not in r.headers["content-security-policy"]
            assert csp["frame-ancestors"] == "'none'"
            assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            # What the policy would block is not there to block.
            html = r.text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
            assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", html, re.I), path
        script = await http.get("/static/watch.js")
        assert script.headers["x-content-type-options"] == "nosniff"
        assert "javascript" in script.headers["content-type"]
        api = await http.get("/api/sessions")
        assert api.headers["x-content-type-options"] == "nosniff"
        assert api.headers["referrer-policy"] == "no-referrer"


async def test_frame_ancestors_is_configurable_for_shops_embedding_the_player(
    node: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        r = await http.get("/watch/some-session")
    csp = _directives(r.headers["content-security-policy"])
    assert csp["frame-ancestors"] == "'self' https://shop.example"


def test_frame_ancestors_cannot_smuggle_other_directives(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    proc = ServerProcess(
        database_url,
        str(tmp_path_factory.mktemp("bad-ancestors")),
        env={"LIVECART_FRAME_ANCESTORS": "'none'; script-src *"},
    )
    with pytest.raises(RuntimeError, match="frame_ancestors"):
        proc.start(timeout=20)


# ---------------------------------------------------------------- errors (finding 7)


async def test_unknown_paths_and_methods_answer_json_errors_with_allow(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/no-such-thing")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "not_found"
        r = await http.get("/static/no-such-file.js")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await http.delete("/api/products/p1")
        assert r.status_code == 405 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == "bad_frame"
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert {"GET", "PATCH"} <= allowed, allowed
        r = await http.put("/api/sessions/s1/start")
        assert r.status_code == 405 and r.headers["allow"] == "POST"


async def test_an_unexpected_failure_answers_json_not_text(
    node: ServerProcess, own_database: str
) -> None:
    """The node's products table disappears under it: a JSON 500 `unavailable`, logged."""
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute("ALTER TABLE products RENAME TO products_gone")
        try:
            async with httpx.AsyncClient(base_url=node.url) as http:
                r = await http.get("/api/products/p1", headers=headers(token("err-reader")))
        finally:
            await conn.execute("ALTER TABLE products_gone RENAME TO products")
    finally:
        await conn.close()
    assert r.status_code == 500, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "unavailable"
    assert r.headers["x-content-type-options"] == "nosniff"
    deadline = time.monotonic() + 5
    while not any("products" in line and "GET /api/products/p1" in line for line in node.output):
        assert time.monotonic() < deadline, "the failure was not logged"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- rate limits (risk 9)


async def _burst(
    http: httpx.AsyncClient, path: str, n: int, h: dict[str, str] | None = None
) -> list[httpx.Response]:
    return [await http.get(path, headers=h) for _ in range(n)]


async def test_rest_is_rate_limited_per_identity_and_per_guest_address(
    node: ServerProcess,
) -> None:
    alice, bob = headers(token("rl-alice")), headers(token("rl-bob"))
    async with httpx.AsyncClient(base_url=node.url) as http:
        answers = await _burst(http, "/api/sessions", 16, alice)
        codes = [r.status_code for r in answers]
        assert codes[:10] == [200] * 10, codes  # the burst
        limited = [r for r in answers if r.status_code == 429]
        assert len(limited) >= 4, codes
        first: dict[str, Any] = limited[0].json()
        assert first["error"]["code"] == "rate_limited"
        assert int(limited[0].headers["retry-after"]) >= 1
        assert first["error"]["retry_after_ms"] > 0
        # Another identity has its own budget.
        assert (await http.get("/api/sessions", headers=bob)).status_code == 200
        # Guests share one per address.
        guest = [r.status_code for r in await _burst(http, "/api/sessions", 16)]
        assert guest.count(429) >= 4, guest
        # Health, readiness, metrics, pages and the schema are never limited.
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/studio"):
            got = {r.status_code for r in await _burst(http, path, 30)}
            assert got == {200}, (path, got)
        # After Retry-After, the identity may call again.
        await asyncio.sleep(int(limited[-1].headers["retry-after"]))
        assert (await http.get("/api/sessions", headers=alice)).status_code == 200


# ---------------------------------------------------------------- the schema (issue 13)


async def test_the_schema_and_the_decoder_agree(server: ServerProcess) -> None:
    """Integers written 136.0, `scheduled_at` as an RFC 3339 date-time, PATCH without a body,
    and every error status documented per operation."""
    h = headers(token("schema-creator", "creator"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        spec = (await http.get("/openapi.json")).json()
        r = await http.post(
            "/api/products", headers=h, json={"title": "Jug", "price_cents": 136.0, "stock": 2.0}
        )
        assert r.status_code == 201, r.text
        product = r.json()
        assert product["price_cents"] == 136 and product["stock"] == 2
        r = await http.post("/api/products", headers=h, json={"title": "Jug", "price_cents": 1.5})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame"

        when = spec["components"]["schemas"]["SessionCreate"]["properties"]["scheduled_at"]
        assert {"type": "string", "format": "date-time"} in when["anyOf"], when
        for bad in ("tomorrow", "2030-05-01T18:00:00", "0001-01-01T00:00:00+23:59"):
            r = await http.post(
                "/api/sessions", headers=h, json={"title": "Later", "scheduled_at": bad}
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_frame", (bad, r.text)
        r = await http.post(
            "/api/sessions",
            headers=h,
            json={"title": "Later", "scheduled_at": "2030-05-01T20:00:00+02:00"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["scheduled_at"].startswith("2030-05-01T18:00:00")

        patch = spec["paths"]["/api/products/{id}"]["patch"]
        assert patch["requestBody"]["required"] is False
        r = await http.patch(f"/api/products/{product['id']}", headers=h)
        assert r.status_code == 200 and r.json() == product, r.text

        create = spec["paths"]["/api/products"]["post"]["responses"]
        assert "default" not in create
        assert {"201", "400", "401", "403", "404", "409", "413", "429", "500", "503"} <= set(create)
        assert "Retry-After" in create["429"]["headers"]
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                assert {"400", "429", "500"} <= set(op["responses"]), (method, path)
