#!/usr/bin/env python3
"""Giveaway entry benchmark (SPEC §13): N viewers (default 2,000) enter one giveaway within a
window (default 10 s) over real WebSockets; every entry must be acknowledged.

`python -m livecart serve` is started here on 127.0.0.1 (one node, on a scratch database of
the given PostgreSQL, dropped after). One client process holds every connection (benchlib's
lean WebSocket client: handshake, masked frames, server frames parsed as JSON arrays); each
viewer is a distinct user, joined to the session. Two phases, the same viewers at the same rate (viewer i sends at window x i / N
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
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchlib import (
    Viewer,
    connect,
    database,
    machine_line,
    percentile,
    process_cpu_s,
    raise_nofile,
    require_local,
    run_main,
    self_cpu_s,
)
from livecart import auth
from livecart.runtime.process import NodeProcess

sys.path.insert(0, str(Path(__file__).parent))
from verify_giveaway import check

TARGET_P99_MS = 250.0
CONNECT_CONCURRENCY = 200


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
        v.send_json(frame_of(ref))
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
    nofile = raise_nofile()  # the server inherits it
    if args.viewers + 200 > nofile:
        raise SystemExit(f"bench_giveaway: {args.viewers} viewers need more than {nofile} files")
    if args.database_url:
        require_local(args.database_url, "the database", "bench_giveaway")
    secret = secrets.token_urlsafe(32)
    async with database(args.database_url) as db:
        data_dir = tempfile.mkdtemp(prefix="livecart-bench-giveaway-")
        server = NodeProcess(
            data_dir,
            database_url=db.url,
            env={"LIVECART_JWT_SECRET": secret, "LIVECART_LOG_LEVEL": "warning"},
        )
        try:
            await asyncio.to_thread(server.start, 0, 60)
            return await measure(args, server, secret, db.label)
        finally:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


async def measure(args: argparse.Namespace, server: NodeProcess, secret: str, db: str) -> int:
    import httpx

    assert server.proc is not None
    base = server.url
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    print("## Giveaway entry benchmark\n")
    print(machine_line())
    print(
        f"settings: viewers={args.viewers} (one WebSocket each, distinct users, one client "
        f"process), window={args.window}s, server={base} (started here), database {db}",
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
        r = await http.post(
            f"/api/sessions/{sid}/products", headers=h, json={"product_id": product}
        )
        r.raise_for_status()
        (await http.post(f"/api/sessions/{sid}/start", headers=h)).raise_for_status()

        t = time.perf_counter()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def viewer(i: int) -> Viewer:
            tok = auth.issue(secret, f"v{run}-{i:05d}", "viewer")
            async with gate:
                v = await connect(host, port, f"/ws?token={tok}")
                joined = v.first("joined")
                v.send_json({"type": "join", "session": sid})
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
        await asyncio.wait_for(asyncio.gather(*(v.first("giveaway") for v in viewers)), 30)
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
        v.close()
    acked = enter_codes.get("ack", 0) == args.viewers and entries == args.viewers
    ok = acked and p99_enter <= TARGET_P99_MS and not problems
    print(
        f"target: every entry acknowledged ({'yes' if acked else 'NO'}), p99 ≤ "
        f"{TARGET_P99_MS:.0f} ms ({'yes' if p99_enter <= TARGET_P99_MS else 'NO'})"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL on 127.0.0.1: the run uses a scratch database there, dropped after "
        "(empty: an embedded PostgreSQL)",
    )
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--winners", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=30.0, help="per answer, seconds")
    parser.add_argument("--max-seconds", type=float, default=900, help="bound on the whole run")
    args = parser.parse_args(argv)
    return run_main(amain(args), "bench_giveaway", args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
