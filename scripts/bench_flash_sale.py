#!/usr/bin/env python3
"""Flash-sale benchmark: many buyers rush one hot offer over WebSockets.

Ours: `python -m livecart serve` (started here on 127.0.0.1 unless --url is given). Every
buyer holds its own WebSocket connection (default 2,000, each a distinct user, opened by
separate load-generator processes, each a `livecart_client.LivecartClient`) and, at one instant, sends `buy` frames for an offer of
`--stock` units until `--attempts` (default 20x the stock) have been made. Latency is taken
per attempt, from the moment the buy frame is sent to the moment its `order` or `error`
answer is read; attempts/s is attempts over the span from the first send to the last answer.
Buyers do not join the session unless --join is given (then each also receives the room's
offer/sold/stock fan-out, a cost the baselines do not have).

Baselines, measured in the same run on the same PostgreSQL, with the same number of
concurrent buyers, through an asyncpg pool the size of the server's (`db_pool_max`):
  (a) read-then-write: `SELECT stock`, then `UPDATE ... SET stock = <read - qty>` with the
      order insert, as two separate statements: the race oversells;
  (b) `SELECT ... FOR UPDATE`, then `UPDATE` and `INSERT` of the order, in one transaction.
The baselines run without any network protocol in front of them (the database round trips
only), which favours them. They use their own tables (bench_stock, bench_orders), dropped at
the end.

Each system runs one unreported warm-up round, then `--rounds` measured rounds, each on a
fresh offer (or a fresh stock row) of `--stock` units. Oversold units are read back from
PostgreSQL: units held by orders beyond the stock offered.

    python scripts/bench_flash_sale.py [--database-url URL] [--buyers 2000] [--stock 100]
        [--attempts N] [--rounds 3] [--generators 2] [--join] [--url URL --jwt-secret S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    Database,
    database,
    loadavg,
    machine_line,
    percentile,
    process_cpu_s,
    recv_from,
    require_local,
    run_generator,
    run_main,
    self_cpu_s,
)
from benchlib import with_database as with_database  # bench_claims imports it from here
from livecart.runtime.process import NodeProcess

TARGET_RATIO = 3.0
TARGET_P99_MS = 250.0
CONNECT_CONCURRENCY = 100
ROUND_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- results


@dataclass
class RoundResult:
    attempts: int = 0
    answered: int = 0
    orders: int = 0  # acknowledged to the buyers
    units: int = 0  # held in the database after the round
    oversold: int = 0
    span_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)
    generator_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    messages: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class SystemResult:
    name: str
    rounds: list[RoundResult] = field(default_factory=list)

    def total(self, attr: str) -> float:
        return sum(getattr(r, attr) for r in self.rounds)

    @property
    def rate(self) -> float:
        span = self.total("span_s")
        return self.total("attempts") / span if span else float("nan")

    def pct_ms(self, p: float) -> float:
        lat = sorted(x for r in self.rounds for x in r.latencies)
        return percentile(lat, p) * 1000

    @property
    def codes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rounds:
            for k, v in r.codes.items():
                out[k] = out.get(k, 0) + v
        return out


# ---------------------------------------------------------------- load generator (child)


def generator_main(pipe: Any, cfg: dict[str, Any]) -> None:
    """Child process: hold `cfg['users']` WebSocket connections and fire rounds on command."""
    run_generator(_generator, pipe, cfg)


async def _generator(pipe: Any, cfg: dict[str, Any]) -> None:
    """The buyers are livecart_client clients, as an integrator's would be; `unavailable` is
    not retried here (retry_for_s=0), so every answer is counted as the server gave it."""
    from livecart import auth
    from livecart_client import LivecartClient, LivecartError

    loop = asyncio.get_running_loop()
    users: list[str] = cfg["users"]
    answers: list[tuple[str, str, int, float]] = []  # (kind, code, qty, latency)
    counters = {"messages": 0}

    def count(_msg: Any) -> None:  # every message: answers and, with --join, the fan-out
        counters["messages"] += 1

    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(user: str) -> LivecartClient:
        client = LivecartClient(
            cfg["ws_url"],
            token=auth.issue(cfg["secret"], user, "viewer"),
            retry_for_s=0.0,
            open_timeout_s=60,
            ping_interval_s=None,
            close_timeout=1,
            compression=None,
        )
        async with gate:
            await client.connect()
            client.on("*", count)
            if cfg["join"]:
                await client.join(cfg["session"])
        return client

    started = time.monotonic()
    clients = await asyncio.gather(*(connect(u) for u in users))
    pipe.send(("ready", len(clients), time.monotonic() - started))

    async def attempt(client: LivecartClient, offer: str, qty: int, ref: str) -> None:
        sent = time.monotonic()
        try:
            answer = await client.request(
                "buy", session=cfg["session"], offer=offer, qty=qty, ref=ref
            )
            order = answer.order
            answers.append(("order", order["id"], order["qty"], time.monotonic() - sent))
        except LivecartError as exc:
            answers.append(("error", exc.code, 0, time.monotonic() - sent))

    while True:
        msg = await loop.run_in_executor(None, pipe.recv)
        if msg[0] == "stop":
            break
        _, offer, tag, t0, per_conn, qty = msg
        answers.clear()
        counters["messages"] = 0
        cpu0 = self_cpu_s()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        first_send = time.monotonic()
        tasks = [
            asyncio.create_task(attempt(c, offer, qty, f"{tag}-{k}"))
            for i, c in enumerate(clients)
            for k in range(per_conn[i])
        ]
        sent = len(tasks)
        late: set[asyncio.Task[None]] = set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=ROUND_TIMEOUT_S)
            for t in late:
                t.cancel()
        last = time.monotonic()
        # Let the sold/stock fan-out settle so that its cost is in the CPU figure.
        await asyncio.sleep(0.5)
        cpu = self_cpu_s() - cpu0
        pipe.send(
            (
                "round",
                {
                    "sent": sent,
                    "answers": list(answers),
                    "first_send": first_send,
                    "last_answer": last,
                    "cpu_s": cpu,
                    "messages": counters["messages"],
                    "unanswered": len(late),
                },
            )
        )

    for c in clients:
        with contextlib.suppress(Exception):
            await c.close()
    pipe.send(("stopped", None))


# ---------------------------------------------------------------- our server


class Server(NodeProcess):
    """`python -m livecart serve --port 0` in a child process, with its own temporary data dir."""

    def __init__(self, database_url: str, secret: str) -> None:
        super().__init__(
            tempfile.mkdtemp(prefix="livecart-bench-node-"),
            database_url=database_url,
            env={"LIVECART_JWT_SECRET": secret},
        )

    def start(self, port: int = 0, timeout: float = 60) -> Server:
        try:
            super().start(port, timeout)
        except RuntimeError as exc:
            raise SystemExit(f"bench_flash_sale: {exc}") from None
        return self

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid) if self.proc is not None else float("nan")

    def stop(self, timeout: float = 15) -> None:
        super().stop(timeout)
        shutil.rmtree(self.data_dir, ignore_errors=True)


# ---------------------------------------------------------------- the WebSocket run


async def run_ours(
    args: argparse.Namespace,
    base_url: str,
    secret: str,
    pool: Any,
    server: Server | None,
) -> tuple[SystemResult, dict[str, Any]]:
    import httpx

    from livecart import auth

    run = secrets.token_hex(3)
    creator = auth.issue(secret, f"bench-creator-{run}", "creator")
    h = {"authorization": f"Bearer {creator}"}
    http = httpx.AsyncClient(base_url=base_url, timeout=30)
    total_rounds = args.rounds + 1
    async with http:
        r = await http.post(
            "/api/products",
            headers=h,
            json={
                "title": "Hot sneakers",
                "price_cents": 12900,
                "stock": args.stock * total_rounds,
                "category": "fashion",
            },
        )
        r.raise_for_status()
        product = r.json()["id"]
        r = await http.post(
            "/api/sessions", headers=h, json={"title": "Flash drop", "category": "fashion"}
        )
        r.raise_for_status()
        session = r.json()["id"]
        (
            await http.post(
                f"/api/sessions/{session}/products", headers=h, json={"product_id": product}
            )
        ).raise_for_status()
        (await http.post(f"/api/sessions/{session}/start", headers=h)).raise_for_status()

        # Buyers, split over the generator processes; attempts spread over the buyers.
        users = [f"bench-{run}-{i:05d}" for i in range(args.buyers)]
        per_user = [args.attempts // args.buyers] * args.buyers
        for i in range(args.attempts % args.buyers):
            per_user[i] += 1
        ctx = mp.get_context("spawn")
        gens: list[tuple[Any, Any, list[int]]] = []
        ws_url = base_url.replace("http://", "ws://") + "/ws"
        for g in range(args.generators):
            idx = list(range(g, args.buyers, args.generators))
            parent_end, child_end = ctx.Pipe()
            cfg = {
                "users": [users[i] for i in idx],
                "secret": secret,
                "ws_url": ws_url,
                "session": session,
                "join": args.join,
            }
            proc = ctx.Process(target=generator_main, args=(child_end, cfg), daemon=True)
            proc.start()
            gens.append((proc, parent_end, [per_user[i] for i in idx]))

        def recv(pipe: Any, timeout: float) -> Any:
            return recv_from(pipe, timeout, "bench_flash_sale")

        info: dict[str, Any] = {}
        result = SystemResult("livecart (WebSocket)")
        try:
            t = time.monotonic()
            readies = await asyncio.gather(
                *(asyncio.to_thread(recv, pipe, 300) for _, pipe, _ in gens)
            )
            info["connections"] = sum(m[1] for m in readies)
            info["connect_s"] = time.monotonic() - t

            for rnd in range(total_rounds):
                r = await http.post(
                    f"/api/sessions/{session}/offers",
                    headers=h,
                    json={
                        "product_id": product,
                        "price_cents": 4900,
                        "quantity": args.stock,
                        "per_user_limit": args.per_user_limit,
                        "duration_s": 600,
                    },
                )
                r.raise_for_status()
                offer = r.json()["id"]
                await asyncio.sleep(0.3)  # the `offer` event reaches every joined buyer
                t0 = time.monotonic() + 0.3
                server_cpu0 = server.cpu_s() if server else float("nan")
                for _, pipe, per_conn in gens:
                    pipe.send(("round", offer, f"r{rnd}", t0, per_conn, args.qty))
                replies = await asyncio.gather(
                    *(asyncio.to_thread(recv, pipe, ROUND_TIMEOUT_S + 30) for _, pipe, _ in gens)
                )
                server_cpu = (server.cpu_s() if server else float("nan")) - server_cpu0
                rr = RoundResult()
                first = min(m[1]["first_send"] for m in replies)
                last = max(m[1]["last_answer"] for m in replies)
                rr.span_s = last - first
                for _, data in replies:
                    rr.attempts += data["sent"]
                    rr.generator_cpu_s += data["cpu_s"]
                    rr.messages += data["messages"]
                    if data["unanswered"]:
                        rr.notes.append(f"{data['unanswered']} attempts unanswered")
                    for kind, code, _qty, latency in data["answers"]:
                        rr.answered += 1
                        rr.latencies.append(latency)
                        key = "order" if kind == "order" else code
                        rr.codes[key] = rr.codes.get(key, 0) + 1
                        if kind == "order":
                            rr.orders += 1
                rr.server_cpu_s = server_cpu
                ledger = await pool.fetchrow(
                    "SELECT f.quantity, f.remaining, "
                    "coalesce(sum(o.qty) FILTER (WHERE o.status IN ('reserved', 'paid')), 0) "
                    "AS held, count(o.id) AS orders FROM offers f "
                    "LEFT JOIN orders o ON o.offer = f.id WHERE f.id = $1 GROUP BY f.id",
                    offer,
                )
                over_limit = await pool.fetchval(
                    "SELECT count(*) FROM (SELECT user_id FROM orders WHERE offer = $1 "
                    "AND status IN ('reserved', 'paid') GROUP BY user_id "
                    "HAVING sum(qty) > $2) x",
                    offer,
                    args.per_user_limit,
                )
                rr.units = ledger["held"]
                rr.oversold = max(0, ledger["held"] - ledger["quantity"])
                if ledger["remaining"] + ledger["held"] != ledger["quantity"]:
                    rr.notes.append(f"invariant broken: {dict(ledger)}")
                if ledger["orders"] != rr.orders:
                    rr.notes.append(f"{ledger['orders']} orders stored, {rr.orders} acknowledged")
                if over_limit:
                    rr.notes.append(f"{over_limit} buyers above the per-user limit")
                with contextlib.suppress(Exception):
                    await http.post(f"/api/offers/{offer}/end", headers=h)
                if rnd > 0:  # round 0 warms up
                    result.rounds.append(rr)
        finally:
            for _, pipe, _ in gens:
                with contextlib.suppress(Exception):
                    pipe.send(("stop",))
            for proc, pipe, _ in gens:
                with contextlib.suppress(Exception):
                    if pipe.poll(10):
                        pipe.recv()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
    return result, info


# ---------------------------------------------------------------- baselines


BASELINE_DDL = """
DROP TABLE IF EXISTS bench_orders;
DROP TABLE IF EXISTS bench_stock;
CREATE TABLE bench_stock (id integer PRIMARY KEY, stock integer NOT NULL);
CREATE TABLE bench_orders (
    id bigserial PRIMARY KEY,
    item integer NOT NULL REFERENCES bench_stock (id),
    user_id text NOT NULL,
    ref text NOT NULL,
    qty integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, ref)
);
"""

# (a): the write does not re-check what was read: two statements, no lock between them.
READ_STOCK = "SELECT stock FROM bench_stock WHERE id = $1"
WRITE_BLIND = (
    "WITH u AS (UPDATE bench_stock SET stock = $2 WHERE id = $1) "
    "INSERT INTO bench_orders (item, user_id, ref, qty) VALUES ($1, $3, $4, $5)"
)
# (b): lock the row, then decide, update and insert in the same transaction.
LOCK_STOCK = "SELECT stock FROM bench_stock WHERE id = $1 FOR UPDATE"
TAKE = "UPDATE bench_stock SET stock = stock - $2 WHERE id = $1"
INSERT_ORDER = "INSERT INTO bench_orders (item, user_id, ref, qty) VALUES ($1, $2, $3, $4)"


async def attempt_read_then_write(conn: Any, item: int, user: str, ref: str, qty: int) -> bool:
    stock = await conn.fetchval(READ_STOCK, item)
    if stock < qty:
        return False
    await conn.execute(WRITE_BLIND, item, stock - qty, user, ref, qty)
    return True


async def attempt_for_update(conn: Any, item: int, user: str, ref: str, qty: int) -> bool:
    async with conn.transaction():
        stock = await conn.fetchval(LOCK_STOCK, item)
        if stock < qty:
            return False
        await conn.execute(TAKE, item, qty)
        await conn.execute(INSERT_ORDER, item, user, ref, qty)
    return True


Attempt = Callable[[Any, int, str, str, int], Awaitable[bool]]


async def run_baseline(
    name: str, attempt: Attempt, args: argparse.Namespace, pool: Any
) -> SystemResult:
    result = SystemResult(name)
    # The same shape as the WebSocket run: `buyers` concurrent buyers, attempts spread over them.
    per_user = [args.attempts // args.buyers] * args.buyers
    for i in range(args.attempts % args.buyers):
        per_user[i] += 1
    for rnd in range(args.rounds + 1):
        item = rnd + 1
        await pool.execute(
            "INSERT INTO bench_stock (id, stock) VALUES ($1, $2) "
            "ON CONFLICT (id) DO UPDATE SET stock = excluded.stock",
            item,
            args.stock,
        )
        rr = RoundResult()

        async def buyer(
            u: int, n: int, t0: float, item: int = item, rnd: int = rnd, rr: RoundResult = rr
        ) -> None:
            for k in range(n):
                started = t0 if k == 0 else time.monotonic()
                try:
                    async with pool.acquire() as conn:
                        ok = await attempt(conn, item, f"b{u}", f"r{rnd}-{k}", args.qty)
                    code = "order" if ok else "sold_out"
                except Exception as exc:
                    code = type(exc).__name__
                rr.latencies.append(time.monotonic() - started)
                rr.codes[code] = rr.codes.get(code, 0) + 1

        cpu0 = self_cpu_s()
        t0 = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(buyer(u, n, t0) for u, n in enumerate(per_user))), ROUND_TIMEOUT_S
        )
        rr.span_s = time.monotonic() - t0
        rr.generator_cpu_s = self_cpu_s() - cpu0
        rr.attempts = sum(per_user)
        rr.answered = len(rr.latencies)
        rr.orders = rr.codes.get("order", 0)
        row = await pool.fetchrow(
            "SELECT coalesce(sum(qty), 0) AS units, count(*) AS orders FROM bench_orders "
            "WHERE item = $1",
            item,
        )
        rr.units = row["units"]
        rr.oversold = max(0, row["units"] - args.stock)
        if rnd > 0:
            result.rounds.append(rr)
    return result


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", ""),
        help="PostgreSQL on 127.0.0.1 (default: $DATABASE_URL, else an embedded PostgreSQL "
        "in a temporary data dir)",
    )
    p.add_argument(
        "--in-place",
        action="store_true",
        help="use --database-url's database itself instead of a scratch database on that "
        "server (created and dropped by this script)",
    )
    p.add_argument("--url", help="a running server (http://127.0.0.1:PORT); needs --jwt-secret")
    p.add_argument("--jwt-secret", default=os.environ.get("LIVECART_JWT_SECRET", ""))
    p.add_argument("--buyers", type=int, default=2000, help="WebSocket connections (buyers)")
    p.add_argument("--stock", type=int, default=100, help="units in the hot offer")
    p.add_argument("--attempts", type=int, help="buy attempts per round (default 20x stock)")
    p.add_argument("--qty", type=int, default=1, help="units per attempt")
    p.add_argument("--per-user-limit", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="measured rounds (after one warm-up)")
    p.add_argument("--generators", type=int, default=2, help="load-generator processes")
    p.add_argument(
        "--join",
        action="store_true",
        help="buyers join the session first, so each also receives the offer/sold/stock "
        "fan-out (the baselines have no equivalent cost)",
    )
    p.add_argument("--pool-size", type=int, help="baseline pool size (default: db_pool_max)")
    p.add_argument("--max-seconds", type=float, default=900, help="bound on the whole run")
    p.add_argument(
        "--json",
        default="",
        help="also write livecart's figures to this file (for scripts/capacity.py)",
    )
    args = p.parse_args(argv)
    if args.attempts is None:
        args.attempts = 20 * args.stock
    if min(args.buyers, args.stock, args.attempts, args.rounds, args.generators, args.qty) < 1:
        p.error("counts must be positive")
    if args.url and not args.jwt_secret:
        p.error("--url needs --jwt-secret (or LIVECART_JWT_SECRET) to sign the buyers' tokens")
    if args.url and not args.database_url:
        p.error("--url needs --database-url to check orders and run the baselines")
    if args.url:
        require_local(args.url, "--url", "bench_flash_sale")
    if args.database_url:
        require_local(args.database_url, "--database-url", "bench_flash_sale")
    return args


async def amain(args: argparse.Namespace) -> int:
    async with database(args.database_url, scratch=not args.in_place) as db:
        return await measure(args, db)


async def measure(args: argparse.Namespace, db: Database) -> int:
    import asyncpg

    from livecart.runtime import config

    settings = config.load()
    pool_size = args.pool_size or settings.db_pool_max
    database_url, db_label = db.url, db.label
    server: Server | None = None
    pool: Any = None
    try:
        if args.url:
            base_url, secret = args.url.rstrip("/"), args.jwt_secret
        else:
            secret = secrets.token_urlsafe(32)
            server = Server(database_url, secret)
            base_url = (await asyncio.to_thread(server.start)).url
        pool = await asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size)
        pg_version = await pool.fetchval("SHOW server_version")

        print("## Flash-sale benchmark\n")
        print(machine_line())
        print(f"database: {db_label}; PostgreSQL {pg_version}")
        print(
            f"settings: buyers={args.buyers} (one WebSocket each, distinct users), "
            f"stock={args.stock}, attempts/round={args.attempts} (qty {args.qty}), "
            f"per_user_limit={args.per_user_limit}, rounds={args.rounds} (+1 warm-up), "
            f"join={'yes' if args.join else 'no'}, generators={args.generators} processes, "
            f"pool={pool_size} connections (server db_pool_max={settings.db_pool_max}), "
            f"server={base_url}{'' if args.url else ' (started here)'}",
            flush=True,
        )

        ours, info = await run_ours(args, base_url, secret, pool, server)
        print(
            f"connections: {info['connections']} opened in {info['connect_s']:.1f}s (not measured)",
            flush=True,
        )
        if server is not None:
            server.stop()  # the baselines get the machine to themselves
            server = None

        try:
            await pool.execute(BASELINE_DDL)
            a = await run_baseline(
                "baseline (a) read, then write", attempt_read_then_write, args, pool
            )
            await pool.execute(BASELINE_DDL)  # fresh tables for (b)
            b = await run_baseline("baseline (b) SELECT FOR UPDATE", attempt_for_update, args, pool)
        finally:
            await pool.execute(
                "DROP TABLE IF EXISTS bench_orders; DROP TABLE IF EXISTS bench_stock"
            )

        systems = [ours, a, b]
        print()
        print("| system | attempts | attempts/s | p50 ms | p99 ms | orders | oversold | vs (b) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in systems:
            ratio = s.rate / b.rate if b.rate else float("nan")
            print(
                f"| {s.name} | {int(s.total('attempts'))} | {s.rate:,.0f} | {s.pct_ms(50):.1f} | "
                f"{s.pct_ms(99):.1f} | {int(s.total('orders'))} | {int(s.total('oversold'))} | "
                f"{ratio:.2f}x |"
            )
        print()
        stock_total = args.stock * args.rounds
        print(f"Totals over {args.rounds} rounds; {stock_total} units offered in all.")
        for s in systems:
            codes = ", ".join(f"{k} {v}" for k, v in sorted(s.codes.items()))
            per_round = ", ".join(f"{r.attempts / r.span_s:,.0f}" for r in s.rounds)
            line = (
                f"- {s.name}: answers {codes}; attempts/s per round {per_round}; "
                f"units held {int(s.total('units'))}"
            )
            if s is ours:
                server_cpu = s.total("server_cpu_s")
                line += (
                    f"; load-generator CPU {s.total('generator_cpu_s'):.2f}s, server CPU "
                    f"{'n/a' if server_cpu != server_cpu else f'{server_cpu:.2f}s'}, "
                    f"{int(s.total('messages'))} messages received by buyers"
                )
            else:
                line += f"; client CPU {s.total('generator_cpu_s'):.2f}s"
            notes = [n for r in s.rounds for n in r.notes]
            if notes:
                line += "; NOTES: " + "; ".join(notes)
            print(line)
        print(f"- load average after: {loadavg()} (1/5/15 min)")
        print(
            f"- wall time of the measured phases: ours {ours.total('span_s'):.2f}s, "
            f"(a) {a.total('span_s'):.2f}s, (b) {b.total('span_s'):.2f}s"
        )
        ratio = ours.rate / b.rate
        checks = [
            (
                f"attempts/s >= {TARGET_RATIO:.0f}x baseline (b)",
                ratio >= TARGET_RATIO,
                f"{ratio:.2f}x",
            ),
            (
                f"p99 < {TARGET_P99_MS:.0f} ms",
                ours.pct_ms(99) < TARGET_P99_MS,
                f"{ours.pct_ms(99):.1f} ms",
            ),
            ("0 oversold", ours.total("oversold") == 0, f"{int(ours.total('oversold'))}"),
            (
                "every attempt answered, stored orders = acknowledged",
                not any(r.notes for r in ours.rounds)
                and ours.total("answered") == ours.total("attempts"),
                f"{int(ours.total('answered'))}/{int(ours.total('attempts'))}",
            ),
        ]
        print()
        for label, ok, value in checks:
            print(f"target {label}: {'met' if ok else 'NOT met'} ({value})")
        if args.json:
            doc = {
                "bench": "flash_sale",
                "load_after": loadavg(),
                "attempts": int(ours.total("attempts")),
                "orders": int(ours.total("orders")),
                "attempts_per_s": ours.rate,
                "p99_ms": ours.pct_ms(99),
                "server_cpu_s": ours.total("server_cpu_s"),
                "server_cpu_us_per_attempt": ours.total("server_cpu_s")
                / max(1, ours.total("attempts"))
                * 1e6,
                "server_cpu_us_per_order": ours.total("server_cpu_s")
                / max(1, ours.total("orders"))
                * 1e6,
            }
            await asyncio.to_thread(Path(args.json).write_text, json.dumps(doc, indent=1))
        return 0 if all(ok for _, ok, _ in checks) else 1
    finally:
        if pool is not None:
            await pool.close()
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(amain(args), "bench_flash_sale", args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
