#!/usr/bin/env python3
"""Join storm and memory: N viewers join one room as fast as the load generators can open
connections, then the server's RSS per connection is measured with all of them held (after
the storm, not only when idle).

Systems, each in its own server process on 127.0.0.1, same storm, same run:
  livecart     `python -m livecart serve` (one node process; PostgreSQL embedded unless
               --database-url), viewers with a JWT each, `join` → `joined` with the snapshot
  websockets   bare `websockets` server (scripts/fanout_baselines.py) answering `join` with a
               one-line `joined`: the baseline
  workers      with --redis-url and --workers N: one `livecart serve --workers N` (N node
               processes on one port, sharing the room through Redis), --worker-viewers
               viewers (default N x 16,667, at most 50,000)

Figures: joins/s = viewers joined / time from the first connect to the last `joined`; server
CPU per join (utime + stime of the server processes over the storm, /proc); the load
generators' CPU per join (they share the machine's cores with the server: a join rate is only
as good as they are lean); RSS per connection = (RSS of the server processes 1 s after the
storm - RSS before) / viewers.

This machine caps a process at 20,000 open files (hard RLIMIT_NOFILE): one server process
tops out just under 20,000 connections, and so does one load generator, so the viewers are
spread over --generators processes (each from its own 127.0.0.x source address, which also
keeps each under the ~28,000 ephemeral ports of one address). More connections per machine
need more server processes: `serve --workers N`.

    python scripts/bench_join_storm.py [--viewers 18000] [--generators 3]
        [--concurrency 500] [--systems livecart,websockets] [--database-url URL]
        [--redis-url URL --workers 3 [--worker-viewers 50000]] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_fanout import Generators, Runner, postmaster_pid
from benchlib import (
    cpu_model,
    loadavg,
    mem_total_gib,
    process_cpu_s,
    require_local,
    rss_kib,
    use_uvloop,
)
from fanout_baselines import raise_nofile


async def storm(
    runner: Runner, args: argparse.Namespace, system: str, viewers: int, workers: int
) -> dict[str, Any]:
    t, servers = await runner.start(system, 1, workers)
    gens: Generators | None = None
    try:
        # One generator per ~16,000 viewers at least (the file limit), and at least --generators.
        n_gen = max(args.generators, -(-viewers // 16_000))
        runner.args.generators = n_gen
        cfgs = runner.generator_cfgs(t, viewers)
        for g, cfg in enumerate(cfgs):
            cfg["source"] = f"127.0.0.{2 + g}"
        gens = Generators(cfgs)
        await gens.wait(180)
        await asyncio.sleep(1.0)
        rss0 = sum(rss_kib(pid) for pid in t.pids)
        cpu0 = sum(process_cpu_s(pid) for pid in t.pids)
        gen0 = sum(r["cpu"] for r in await gens.ask("take"))
        started = time.monotonic()
        ready = await gens.ask("connect", timeout=900)
        wall = time.monotonic() - started
        cpu1 = sum(process_cpu_s(pid) for pid in t.pids)
        gen1 = sum(r["cpu"] for r in await gens.ask("take"))
        joined = sum(r["ok"] for r in ready)
        joined_s = max(r["ok_seconds"] for r in ready)
        await asyncio.sleep(1.0)
        rss1 = sum(rss_kib(pid) for pid in t.pids)
        out = {
            "system": system,
            "label": t.label,
            "workers": workers or 1,
            "viewers": viewers,
            "joined": joined,
            "failed": sum(r["failed"] for r in ready),
            "first_error": next((r["error"] for r in ready if r["error"]), ""),
            "joined_s": joined_s,
            "wall_s": wall,
            "joins_per_s": joined / joined_s if joined_s > 0 else float("nan"),
            "server_cpu_s": cpu1 - cpu0,
            "cpu_us_per_join": (cpu1 - cpu0) / joined * 1e6 if joined else float("nan"),
            "generator_cpu_s": gen1 - gen0,
            "generator_cpu_us_per_join": (gen1 - gen0) / joined * 1e6 if joined else float("nan"),
            "rss_before_mib": rss0 / 1024,
            "rss_after_mib": rss1 / 1024,
            "rss_kib_per_conn": (rss1 - rss0) / joined if joined else float("nan"),
            "generators": n_gen,
        }
        print(
            f"  {t.label}: {joined:,}/{viewers:,} joined in {joined_s:.2f} s "
            f"({out['joins_per_s']:,.0f} joins/s), server CPU {out['cpu_us_per_join']:.0f} µs "
            f"per join (load generators {out['generator_cpu_us_per_join']:.0f} µs), "
            f"RSS {rss0 / 1024:,.1f} → {rss1 / 1024:,.1f} MiB "
            f"({out['rss_kib_per_conn']:.2f} KiB per connection)"
            + (f"; {out['failed']:,} failed, first: {out['first_error']}" if out["failed"] else ""),
            flush=True,
        )
        return out
    finally:
        if gens is not None:
            await gens.close()
        for s in servers:
            runner.stop_one(s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--viewers", type=int, default=18_000)
    p.add_argument("--generators", type=int, default=3)
    p.add_argument(
        "--concurrency", type=int, default=500, help="connections opened at once per generator"
    )
    p.add_argument("--systems", default="livecart,websockets")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    p.add_argument("--redis-url", default="")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--worker-viewers", type=int, default=0)
    p.add_argument("--join-timeout", type=float, default=120.0)
    p.add_argument("--json", default="", help="write the figures to this file")
    args = p.parse_args(argv)  # fmt: skip
    if args.workers and not args.redis_url:
        p.error("--workers needs --redis-url (the workers share the room through Redis)")
    for url, what in ((args.redis_url, "--redis-url"), (args.database_url, "--database-url")):
        if url:
            require_local(url, what, "bench_join_storm")
    # What Runner and its generators read.
    args.client = "raw"
    args.sample_every = 1_000_000
    args.connect_concurrency = args.concurrency
    args.livecart_env = {}
    args.nodes = 1
    return args


async def amain(args: argparse.Namespace) -> int:
    nofile = raise_nofile()
    embedded: Any = None
    embedded_dir = ""
    database_url = args.database_url
    pg_pid: int | None = None
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        if not database_url and ("livecart" in systems or args.workers):
            from livecart.runtime.db import EmbeddedPostgres

            embedded_dir = tempfile.mkdtemp(prefix="livecart-bench-join-pg-")
            embedded = EmbeddedPostgres(embedded_dir)
            database_url = await embedded.astart()
            pg_pid = postmaster_pid(embedded.path)
        print("## Join storm and memory\n")
        print(
            f"machine: {os.cpu_count()} cores, {cpu_model()}, {mem_total_gib():.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"RLIMIT_NOFILE {nofile} per process"
        )
        print(f"load average before: {loadavg()} (1/5/15 min)", flush=True)
        runner = Runner(args, database_url, pg_pid)
        results = []
        for system in systems:
            print(f"- {system}: {args.viewers:,} viewers, load average {loadavg()}", flush=True)
            results.append(await storm(runner, args, system, args.viewers, 0))
        if args.workers:
            n = args.worker_viewers or min(50_000, args.workers * 16_667)
            print(f"- livecart --workers {args.workers}: {n:,} viewers, load average "
                  f"{loadavg()}", flush=True)  # fmt: skip
            results.append(await storm(runner, args, "livecart", n, args.workers))
        print(f"\nload average after: {loadavg()} (1/5/15 min)\n")
        base = next((r for r in results if r["system"] == "websockets"), None)
        print("| server | viewers joined | joins/s | CPU per join | load generators' CPU per join "
              "| RSS per connection | vs websockets (joins/s, RSS) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for r in results:
            ratio = ""
            if base and r is not base:
                ratio = (f"{r['joins_per_s'] / base['joins_per_s']:.2f}x, "
                         f"{r['rss_kib_per_conn'] / base['rss_kib_per_conn']:.2f}x")  # fmt: skip
            print(
                f"| {r['label']} | {r['joined']:,}/{r['viewers']:,} in {r['joined_s']:.2f} s "
                f"| {r['joins_per_s']:,.0f} | {r['cpu_us_per_join']:.0f} µs "
                f"| {r['generator_cpu_us_per_join']:.0f} µs "
                f"| {r['rss_kib_per_conn']:.2f} KiB | {ratio} |"
            )
        args.results = results
        return 0 if all(r["failed"] == 0 for r in results) else 1
    finally:
        if embedded is not None:
            await embedded.astop()
            shutil.rmtree(embedded_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop()
    code = asyncio.run(amain(args))
    if args.json:
        doc = {"bench": "join_storm", "load": loadavg(), "results": args.results}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
