#!/usr/bin/env python3
"""Claim-by-comment benchmark (SPEC §13): many viewers type an offer's claim word at once.

Ours: `python -m livecart serve` (started here on 127.0.0.1 unless --url is given). Every
claimer holds its own WebSocket connection (default 1,000, each a distinct user, opened by
separate load-generator processes). In a round, an offer of `--stock` units (default 50, one
per buyer) is opened with a fresh claim word, and at one instant every claimer sends it as a
`chat` message. A claim's latency runs from sending the chat frame to reading its final
answer, the `order` or `error` carrying the chat's ref (after the chat's own `ack`). The run
checks that exactly `--stock` orders were acknowledged and are stored.

Baselines, measured in the same run, on the same server and the same connections:
  (buy)  every claimer sends a `buy` frame for a fresh offer of the same size instead: the
         direct purchase path, without the chat in front of it;
  (chat) every claimer sends a plain chat message (no claim word): the chat path alone,
         latency to its `ack`.
Claimers do not join the session unless --join is given (then each also receives every
claim's chat message: 1,000 claims fan out to 1,000 viewers each, a million messages).

Each kind runs one unreported warm-up round, then `--rounds` measured rounds; rounds are
spaced so that the chat rate limit (1 message/s, burst 5, per user) never refuses a claim.
The server's CPU time (utime + stime) over each kind's measured rounds is reported per
attempt, the figure to judge the server by on a machine shared with other work; with
`REDIS_URL` set in the environment the server uses Redis (bus, chat limits, reply book).

    python scripts/bench_claims.py [--database-url URL] [--claimers 1000] [--stock 50]
        [--rounds 3] [--generators 2] [--join] [--url URL --jwt-secret S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench_flash_sale import Server
from benchlib import (
    database,
    loadavg,
    machine_line,
    percentile,
    process_cpu_s,
    recv_from,
    require_local,
    run_generator,
    run_main,
)

TARGET_P99_MS = 250.0
CONNECT_CONCURRENCY = 100
ROUND_TIMEOUT_S = 60.0
ROUND_GAP_S = 2.5  # > 1 s per chat message per user: the rate limit never refuses


# ---------------------------------------------------------------- load generator (child)


def generator_main(pipe: Any, cfg: dict[str, Any]) -> None:
    run_generator(_generator, pipe, cfg)


async def _generator(pipe: Any, cfg: dict[str, Any]) -> None:
    import msgspec
    import websockets

    from livecart import auth

    loop = asyncio.get_running_loop()
    decoder = msgspec.json.Decoder()
    encoder = msgspec.json.Encoder()
    pending: dict[tuple[int, str], float] = {}
    sent_at: dict[tuple[int, str], float] = {}
    acks: list[float] = []  # claim rounds: the latency of the chat's own `ack`
    final: tuple[str, ...] = ()  # the answer types that end an attempt this round
    answers: list[tuple[str, str, float]] = []  # (type, order id or code, latency)
    done = asyncio.Event()
    joined: dict[int, asyncio.Event] = {}

    async def read(i: int, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                for m in decoder.decode(raw):
                    kind = m.get("type")
                    if kind == "joined" and i in joined:
                        joined[i].set()
                    if kind == "ack" and "ack" not in final:  # a claim's chat ack
                        at = sent_at.get((i, m.get("ref")))
                        if at is not None:
                            acks.append(now - at)
                    if kind not in final:
                        continue
                    sent = pending.pop((i, m.get("ref")), None)
                    if sent is None:
                        continue
                    if kind == "order":
                        answers.append(("order", m["order"]["id"], now - sent))
                    elif kind == "error":
                        answers.append(("error", m.get("code", "?"), now - sent))
                    else:
                        answers.append((kind, "", now - sent))
                    if not pending:
                        done.set()

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    readers: list[asyncio.Task[None]] = []

    async def connect(i: int, user: str) -> Any:
        tok = auth.issue(cfg["secret"], user, "viewer")
        async with gate:
            ws = await websockets.connect(
                f"{cfg['ws_url']}?token={tok}",
                max_size=None,
                open_timeout=60,
                ping_interval=None,
                close_timeout=1,
                compression=None,
            )
            readers.append(asyncio.create_task(read(i, ws)))
            if cfg["join"]:
                joined[i] = asyncio.Event()
                await ws.send(encoder.encode({"type": "join", "session": cfg["session"]}))
                await asyncio.wait_for(joined[i].wait(), 60)
            return ws

    started = time.monotonic()
    conns = await asyncio.gather(*(connect(i, u) for i, u in enumerate(cfg["users"])))
    pipe.send(("ready", len(conns), time.monotonic() - started))
    session = cfg["session"]
    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg[0] == "stop":
            break
        _, kind, offer, word, tag, t0 = msg
        answers.clear()
        pending.clear()
        sent_at.clear()
        acks.clear()
        done.clear()
        frames = []
        for i in range(len(conns)):
            ref = f"{tag}-{i}"
            if kind == "claim":
                frame = {"type": "chat", "session": session, "text": word, "ref": ref}
            elif kind == "buy":
                frame = {"type": "buy", "session": session, "offer": offer, "qty": 1, "ref": ref}
            else:
                frame = {"type": "chat", "session": session, "text": f"{word} {i}", "ref": ref}
            frames.append((ref, encoder.encode(frame)))
        final = ("ack", "error") if kind == "chat" else ("order", "error")
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        first = time.monotonic()
        for i, (ws, (ref, frame)) in enumerate(zip(conns, frames, strict=True)):
            pending[(i, ref)] = sent_at[(i, ref)] = time.monotonic()
            await ws.send(frame)
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), ROUND_TIMEOUT_S)
        last = time.monotonic()
        pipe.send(
            (
                "round",
                {
                    "answers": list(answers),
                    "acks": list(acks),
                    "first": first,
                    "last": last,
                    "unanswered": len(pending),
                },
            )
        )
    for ws in conns:
        with contextlib.suppress(Exception):
            await ws.close()
    pipe.send(("stopped", None))


# ---------------------------------------------------------------- results


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    orders: int = 0  # acknowledged
    stored: int = 0  # reserved orders in PostgreSQL on the rounds' offers
    attempts: int = 0
    span_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    rounds: int = 0
    acks: list[float] = field(default_factory=list)  # claim rounds: the chat's own ack
    server_cpu_s: float = 0.0  # the server process's CPU over the measured rounds

    def cpu_ms_per_attempt(self) -> float:
        return self.server_cpu_s * 1000 / self.attempts if self.attempts else float("nan")

    def pct_ms(self, p: float) -> float:
        return percentile(sorted(self.latencies), p) * 1000


# ---------------------------------------------------------------- the run


async def run(
    args: argparse.Namespace, base_url: str, secret: str, pool: Any, server_pid: int | None
) -> list[Result]:
    import httpx

    from livecart import auth

    tag = secrets.token_hex(3)
    h = {"authorization": f"Bearer {auth.issue(secret, f'claims-host-{tag}', 'creator')}"}
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    kinds = [
        ("claim", "claim by comment"),
        ("buy", "baseline: buy frames"),
        ("chat", "baseline: plain chat"),
    ]
    async with http:
        r = await http.post(
            "/api/products",
            headers=h,
            json={"title": "Mug", "price_cents": 1500, "stock": args.stock * 2 * (args.rounds + 1)},
        )
        r.raise_for_status()
        product = r.json()["id"]
        r = await http.post("/api/sessions", headers=h, json={"title": "Claims"})
        r.raise_for_status()
        session = r.json()["id"]
        (
            await http.post(
                f"/api/sessions/{session}/products", headers=h, json={"product_id": product}
            )
        ).raise_for_status()
        (await http.post(f"/api/sessions/{session}/start", headers=h)).raise_for_status()

        users = [f"claimer-{tag}-{i:05d}" for i in range(args.claimers)]
        ctx = mp.get_context("spawn")
        ws_url = base_url.replace("http://", "ws://") + "/ws"
        gens = []
        for g in range(args.generators):
            parent, child = ctx.Pipe()
            cfg = {
                "users": users[g :: args.generators],
                "secret": secret,
                "ws_url": ws_url,
                "session": session,
                "join": args.join,
            }
            proc = ctx.Process(target=generator_main, args=(child, cfg), daemon=True)
            proc.start()
            gens.append((proc, parent))

        def recv(pipe: Any, timeout: float) -> Any:
            return recv_from(pipe, timeout, "bench_claims")

        results = {k: Result(name) for k, name in kinds}
        try:
            t = time.monotonic()
            await asyncio.gather(*(asyncio.to_thread(recv, p, 300) for _, p in gens))
            print(
                f"connections: {args.claimers} opened in {time.monotonic() - t:.1f}s (not measured)",
                flush=True,
            )
            for rnd in range(args.rounds + 1):
                # Interleaved, so that the machine's load falls on every kind alike.
                for kind, _ in kinds:
                    word = f"grab{tag}{rnd}" if kind == "claim" else f"hello {tag} {rnd}"
                    offer = None
                    if kind != "chat":
                        body: dict[str, Any] = {
                            "product_id": product,
                            "price_cents": 900,
                            "quantity": args.stock,
                            "per_user_limit": 1,
                            "duration_s": 600,
                        }
                        if kind == "claim":
                            body["claim_word"] = word
                        r = await http.post(f"/api/sessions/{session}/offers", headers=h, json=body)
                        r.raise_for_status()
                        offer = r.json()["id"]
                    await asyncio.sleep(ROUND_GAP_S)
                    t0 = time.monotonic() + 0.2
                    cpu0 = process_cpu_s(server_pid) if server_pid else float("nan")
                    for _, pipe in gens:
                        pipe.send(("round", kind, offer, word, f"{kind}{rnd}", t0))
                    replies = await asyncio.gather(
                        *(asyncio.to_thread(recv, p, ROUND_TIMEOUT_S + 30) for _, p in gens)
                    )
                    cpu = (process_cpu_s(server_pid) if server_pid else float("nan")) - cpu0
                    if offer is not None:
                        stored = await pool.fetchval(
                            "SELECT count(*) FROM orders WHERE offer = $1 AND status = 'reserved'",
                            offer,
                        )
                        (await http.post(f"/api/offers/{offer}/end", headers=h)).raise_for_status()
                    if rnd == 0:
                        continue  # warm-up
                    res = results[kind]
                    res.rounds += 1
                    res.attempts += args.claimers
                    res.server_cpu_s += cpu
                    res.span_s += max(m[1]["last"] for m in replies) - min(
                        m[1]["first"] for m in replies
                    )
                    acked = 0
                    for _, data in replies:
                        res.acks.extend(data.get("acks", []))
                        if data["unanswered"]:
                            res.notes.append(f"round {rnd}: {data['unanswered']} unanswered")
                        for typ, what, latency in data["answers"]:
                            res.latencies.append(latency)
                            key = what if typ == "error" else typ
                            res.codes[key] = res.codes.get(key, 0) + 1
                            acked += typ == "order"
                    res.orders += acked
                    if offer is not None:
                        res.stored += stored
                        if acked != args.stock or stored != args.stock:
                            res.notes.append(f"round {rnd}: {acked} acknowledged, {stored} stored")
        finally:
            for _, pipe in gens:
                with contextlib.suppress(Exception):
                    pipe.send(("stop",))
            for proc, pipe in gens:
                with contextlib.suppress(Exception):
                    if pipe.poll(10):
                        pipe.recv()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
    return [results[k] for k, _ in kinds]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    p.add_argument("--url", help="a running server (http://127.0.0.1:PORT); needs --jwt-secret")
    p.add_argument("--jwt-secret", default=os.environ.get("LIVECART_JWT_SECRET", ""))
    p.add_argument("--claimers", type=int, default=1000)
    p.add_argument("--stock", type=int, default=50)
    p.add_argument(
        "--rounds", type=int, default=3, help="measured rounds per kind (after one warm-up)"
    )
    p.add_argument("--generators", type=int, default=2)
    p.add_argument("--join", action="store_true", help="claimers join the session (chat fan-out)")
    p.add_argument("--max-seconds", type=float, default=900)
    args = p.parse_args(argv)
    if min(args.claimers, args.stock, args.rounds, args.generators) < 1:
        p.error("counts must be positive")
    if args.url and not (args.jwt_secret and args.database_url):
        p.error("--url needs --jwt-secret and --database-url")
    if args.url:
        require_local(args.url, "--url", "bench_claims")
    if args.database_url:
        require_local(args.database_url, "--database-url", "bench_claims")
    return args


async def amain(args: argparse.Namespace) -> int:
    import asyncpg

    server: Server | None = None
    pool: Any = None
    # Given --url, the server's own database is the one to count orders in.
    async with database(args.database_url, scratch=not args.url) as db:
        try:
            if args.url:
                base_url, secret = args.url.rstrip("/"), args.jwt_secret
            else:
                secret = secrets.token_urlsafe(32)
                server = Server(db.url, secret)
                base_url = (await asyncio.to_thread(server.start)).url
            pool = await asyncpg.create_pool(db.url, min_size=1, max_size=2)
            return await report(args, server, base_url, secret, pool, db.label)
        finally:
            if pool is not None:
                await pool.close()
            if server is not None:
                server.stop()


async def report(
    args: argparse.Namespace,
    server: Server | None,
    base_url: str,
    secret: str,
    pool: Any,
    database_label: str,
) -> int:
    """Run the rounds and print the report; 0 when every target was met."""
    print("## Claim-by-comment benchmark\n")
    print(machine_line())
    print(f"database: {database_label}")
    print(
        f"settings: claimers={args.claimers} (one WebSocket each, distinct users), "
        f"stock={args.stock} per offer (limit 1 per buyer), rounds={args.rounds} per kind "
        f"(+1 warm-up), join={'yes' if args.join else 'no'}, generators={args.generators}",
        flush=True,
    )
    pid = server.proc.pid if server is not None and server.proc is not None else None
    results = await run(args, base_url, secret, pool, pid)
    claim, buy, chat = results
    print()
    print(
        "| run | attempts | p50 ms | p99 ms | max ms | server CPU ms per attempt "
        "| orders (acked/stored) | answers |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        codes = ", ".join(f"{k} {v}" for k, v in sorted(r.codes.items()))
        orders = f"{r.orders}/{r.stored}" if r is not chat else "-"
        print(
            f"| {r.name} | {r.attempts} | {r.pct_ms(50):.1f} | {r.pct_ms(99):.1f} | "
            f"{r.pct_ms(100):.1f} | {r.cpu_ms_per_attempt():.3f} | {orders} | {codes} |"
        )
    print()
    for r in results:
        if r.notes:
            print(f"- {r.name}: NOTES: " + "; ".join(r.notes))
    print(
        f"- p99 ratio claim / buy: {claim.pct_ms(99) / buy.pct_ms(99):.2f}x; "
        f"claim / plain chat: {claim.pct_ms(99) / chat.pct_ms(99):.2f}x"
    )
    print(
        f"- server CPU per attempt: claim {claim.cpu_ms_per_attempt():.3f} ms, "
        f"buy {buy.cpu_ms_per_attempt():.3f} ms, plain chat {chat.cpu_ms_per_attempt():.3f} ms "
        f"(claim / plain chat {claim.server_cpu_s / chat.server_cpu_s:.2f}x)"
        if server is not None and chat.server_cpu_s > 0
        else "- server CPU: not measured (a server given by --url)"
    )
    if claim.acks:
        acks = sorted(claim.acks)
        print(
            f"- the claims' own chat `ack`: p50 {percentile(acks, 50) * 1000:.1f} ms, "
            f"p99 {percentile(acks, 99) * 1000:.1f} ms ({len(acks)} acks)"
        )
    print(f"- load average after: {loadavg()} (1/5/15 min)")
    if server is not None:
        troubles = [
            ln for ln in server.output if any(w in ln.lower() for w in ("warning", "error"))
        ]
        print(f"- server log: {len(troubles)} warnings or errors")
        for line in dict.fromkeys(ln.strip()[:300] for ln in troubles[:200]):
            print(f"    {line}")
    exact = claim.orders == claim.stored == args.stock * claim.rounds and not claim.notes
    checks = [
        (f"exactly {args.stock} orders per round", exact, f"{claim.orders}/{claim.stored}"),
        (
            f"claim p99 <= {TARGET_P99_MS:.0f} ms",
            claim.pct_ms(99) <= TARGET_P99_MS,
            f"{claim.pct_ms(99):.1f} ms",
        ),
        (
            "every claim answered",
            len(claim.latencies) == claim.attempts,
            f"{len(claim.latencies)}/{claim.attempts}",
        ),
    ]
    print()
    for label, ok, value in checks:
        print(f"target {label}: {'met' if ok else 'NOT met'} ({value})")
    return 0 if all(ok for _, ok, _ in checks) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(amain(args), "bench_claims", args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
