#!/usr/bin/env python3
"""Giveaway entry benchmark (SPEC §13): N viewers (default 2,000) enter one giveaway within a
window (default 10 s) over real WebSockets; every entry must be acknowledged.

`python -m livecart serve` is started here on 127.0.0.1 (one node, the given PostgreSQL). One
client process holds every connection (a minimal asyncio WebSocket client: handshake, masked
frames, server frames parsed as JSON arrays); each viewer is a distinct user, joined to the
session. Two phases, the same viewers at the same rate (viewer i sends at window x i / N
after the phase starts):
  baseline  `ping {ref}` → `pong {ref}`: the same connections, the same path through the
            node's inbox, no I/O behind it;
  enter     `enter {session, giveaway, ref}` → `ack {ref}`: an entry committed in PostgreSQL
            (batched per giveaway) before the ack.
Latency per frame is from the write of the frame to the read of its answer (both in this
process; the machine's load delays both phases alike). The ratio printed is p99(enter) /
p99(ping) of this run. Afterwards the giveaway is drawn and checked with the same check as
`scripts/verify_giveaway.py`.

    python scripts/bench_giveaway.py [--database-url URL] [--viewers 2000] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import resource
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchlib import cpu_model, loadavg, percentile, process_cpu_s, require_local, self_cpu_s
from livecart import auth
from livecart.runtime.process import NodeProcess

sys.path.insert(0, str(Path(__file__).parent))
from verify_giveaway import check

TARGET_P99_MS = 250.0
CONNECT_CONCURRENCY = 200


def client_frame(payload: bytes) -> bytes:
    """A masked client text frame (RFC 6455 §5.3)."""
    n = len(payload)
    long = n >= 126
    header = bytes((0x81, 0x80 | (126 if long else n))) + (n.to_bytes(2, "big") if long else b"")
    mask = os.urandom(4)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class Viewer(asyncio.Protocol):
    """One WebSocket: answers by ref, the time each was read, and the room events seen."""

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.waiting: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self.kinds: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.buf = b""
        self.is_upgraded = False
        self.closed: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(json.dumps(message).encode()))

    def answer(self, ref: str) -> asyncio.Future[tuple[float, dict[str, Any]]]:
        fut = self.waiting[ref] = asyncio.get_running_loop().create_future()
        return fut

    def first(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        fut = self.kinds.get(kind)
        if fut is None:
            fut = self.kinds[kind] = asyncio.get_running_loop().create_future()
        return fut

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf + data
        pos = 0
        if not self.is_upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.connection_lost(ConnectionError(buf[:200].decode("latin-1")))
                return
            self.is_upgraded = True
            self.upgraded.set_result(None)
            pos = end + 4
        n = len(buf)
        while n - pos >= 2:
            length, hdr = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if pos + hdr + length > n:
                break
            opcode = buf[pos] & 0x0F
            payload = buf[pos + hdr : pos + hdr + length]
            pos += hdr + length
            if opcode == 1:
                self._messages(json.loads(payload), now)
            elif opcode == 8:
                self.closed = "close " + str(int.from_bytes(payload[:2], "big"))
        self.buf = buf[pos:]

    def _messages(self, messages: list[dict[str, Any]], now: float) -> None:
        for m in messages:
            ref = m.get("ref")
            if ref is not None and ref in self.waiting:
                fut = self.waiting.pop(ref)
                if not fut.done():
                    fut.set_result((now, m))
            kind = m.get("type", "")
            fut2 = self.kinds.get(kind)
            if fut2 is None:
                self.kinds[kind] = fut2 = asyncio.get_running_loop().create_future()
            if not fut2.done():
                fut2.set_result(m)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or ("eof" if exc is None else str(exc))
        for fut in [self.upgraded, *self.waiting.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError(self.closed))


async def connect(host: str, port: int, path: str) -> Viewer:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, viewer = await loop.create_connection(lambda: Viewer(request), host, port)
    await asyncio.wait_for(viewer.upgraded, 30)
    return viewer


async def phase(
    viewers: list[Viewer], window_s: float, frame_of: Any, timeout_s: float
) -> tuple[list[float], dict[str, int], float]:
    """Each viewer sends one frame at its slot of the window; (latencies in ms sorted,
    answers by type or error code, span in s)."""
    start = time.perf_counter() + 0.2
    n = len(viewers)

    async def one(i: int, v: Viewer) -> tuple[float, str]:
        await asyncio.sleep(max(0.0, start + window_s * i / n - time.perf_counter()))
        ref = f"r{i}-{secrets.token_hex(3)}"
        fut = v.answer(ref)
        sent = time.perf_counter()
        v.send(frame_of(ref))
        try:
            at, m = await asyncio.wait_for(fut, timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            return float("nan"), f"no answer ({type(exc).__name__})"
        kind = m["type"] if m["type"] != "error" else "error " + m.get("code", "?")
        return (at - sent) * 1000, kind

    results = await asyncio.gather(*(one(i, v) for i, v in enumerate(viewers)))
    span = time.perf_counter() - start
    codes: dict[str, int] = {}
    for _, kind in results:
        codes[kind] = codes.get(kind, 0) + 1
    return sorted(ms for ms, _ in results if ms == ms), codes, span


async def amain(args: argparse.Namespace) -> int:
    import httpx

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    if args.viewers + 200 > hard:
        raise SystemExit(f"bench_giveaway: {args.viewers} viewers need more than {hard} files")
    require_local(args.database_url, "the database", "bench_giveaway")
    secret = secrets.token_urlsafe(32)
    data_dir = tempfile.mkdtemp(prefix="livecart-bench-giveaway-")
    server = NodeProcess(
        data_dir,
        database_url=args.database_url,
        env={"LIVECART_JWT_SECRET": secret, "LIVECART_LOG_LEVEL": "warning"},
    )
    try:
        await asyncio.to_thread(server.start, 0, 60)
        assert server.proc is not None
        base = server.url
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        print("## Giveaway entry benchmark\n")
        print(
            f"machine: {os.cpu_count()} cores, {cpu_model()}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; load average "
            f"before: {loadavg()}"
        )
        print(
            f"settings: viewers={args.viewers} (one WebSocket each, distinct users, one client "
            f"process), window={args.window}s, server={base} (started here)",
            flush=True,
        )
        run = secrets.token_hex(3)
        h = {"authorization": f"Bearer {auth.issue(secret, f'host-{run}', 'creator')}"}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            product = (
                await http.post(
                    "/api/products",
                    headers=h,
                    json={"title": "Prize", "price_cents": 2500, "stock": 10},
                )
            ).json()["id"]
            session = (await http.post("/api/sessions", headers=h, json={"title": "Draw"})).json()
            sid = session["id"]
            r = await http.post(f"/api/sessions/{sid}/products", headers=h, json={"product_id": product})
            r.raise_for_status()
            (await http.post(f"/api/sessions/{sid}/start", headers=h)).raise_for_status()

            t = time.perf_counter()
            gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

            async def viewer(i: int) -> Viewer:
                tok = auth.issue(secret, f"v{run}-{i:05d}", "viewer")
                async with gate:
                    v = await connect(host, port, f"/ws?token={tok}")
                    joined = v.first("joined")
                    v.send({"type": "join", "session": sid})
                    await asyncio.wait_for(joined, 60)
                return v

            viewers = await asyncio.gather(*(viewer(i) for i in range(args.viewers)))
            print(f"connections: {len(viewers)} joined in {time.perf_counter() - t:.1f}s "
                  "(not measured)", flush=True)  # fmt: skip
            await asyncio.sleep(1.0)

            cpu0, me0 = process_cpu_s(server.proc.pid), self_cpu_s()
            ping_ms, ping_codes, ping_span = await phase(
                viewers, args.window, lambda ref: {"type": "ping", "ref": ref}, args.timeout
            )
            ping_cpu, me1 = process_cpu_s(server.proc.pid) - cpu0, self_cpu_s()

            r = await http.post(
                f"/api/sessions/{sid}/giveaways",
                headers=h,
                json={
                    "product_id": product,
                    "winners": args.winners,
                    "duration_s": int(args.window + 8),
                    "eligibility": "viewers",
                },
            )
            r.raise_for_status()
            giveaway = r.json()
            await asyncio.wait_for(
                asyncio.gather(*(v.first("giveaway") for v in viewers)), 30
            )
            cpu1, me2 = process_cpu_s(server.proc.pid), self_cpu_s()
            enter_ms, enter_codes, enter_span = await phase(
                viewers,
                args.window,
                lambda ref: {
                    "type": "enter",
                    "session": sid,
                    "giveaway": giveaway["id"],
                    "ref": ref,
                },
                args.timeout,
            )
            enter_cpu, me3 = process_cpu_s(server.proc.pid) - cpu1, self_cpu_s()
            entries = (await http.get(f"/api/giveaways/{giveaway['id']}")).json()["entries"]

            print()
            print("| phase | frames | answered | span s | p50 ms | p99 ms | max ms | "
                  "server CPU s | client CPU s |")  # fmt: skip
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            rows = (
                ("baseline: ping → pong", ping_ms, ping_span, ping_cpu, me1 - me0),
                ("enter → ack", enter_ms, enter_span, enter_cpu, me3 - me2),
            )
            for name, ms, span, cpu, mine in rows:
                print(
                    f"| {name} | {args.viewers} | {len(ms)} | {span:.1f} | "
                    f"{percentile(ms, 50):.1f} | {percentile(ms, 99):.1f} | "
                    f"{(ms[-1] if ms else float('nan')):.1f} | {cpu:.1f} | {mine:.1f} |"
                )
            p99_enter, p99_ping = percentile(enter_ms, 99), percentile(ping_ms, 99)
            print()
            print(f"answers: ping {ping_codes}; enter {enter_codes}")
            print(f"entries stored: {entries} of {args.viewers}")
            print(f"ratio p99(enter) / p99(ping), same run: {p99_enter / p99_ping:.2f}")

            # The draw, checked the way anyone would check it.
            deadline = time.monotonic() + args.window + args.timeout + 30
            final: dict[str, Any] = {}
            while time.monotonic() < deadline:
                final = (await http.get(f"/api/giveaways/{giveaway['id']}")).json()
                if final["status"] == "ended":
                    break
                await asyncio.sleep(0.5)
            problems = check(final, commitment=giveaway["commitment"])
            verdict = "; ".join(problems) if problems else "OK"
            entrants = len(final.get("entrants") or [])
            print(f"draw: {verdict} ({entrants} entrants, winners {final.get('drawn')})")
        for v in viewers:
            if v.transport is not None:
                v.transport.abort()
        acked = enter_codes.get("ack", 0) == args.viewers and entries == args.viewers
        ok = acked and p99_enter <= TARGET_P99_MS and not problems
        print(
            f"target: every entry acknowledged ({'yes' if acked else 'NO'}), p99 ≤ "
            f"{TARGET_P99_MS:.0f} ms ({'yes' if p99_enter <= TARGET_P99_MS else 'NO'})"
        )
        return 0 if ok else 1
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--winners", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30.0, help="per answer, seconds")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
