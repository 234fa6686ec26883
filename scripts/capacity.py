#!/usr/bin/env python3
"""The capacity model of docs/capacity.md, recomputed from benchmark outputs.

Inputs (JSON written by the bench scripts with --json):
  --fanout F       scripts/bench_fanout.py --json F (a single-node livecart row gives the CPU
                   per delivery and per chat message; a row on Redis, --nodes 2 or
                   --workers, gives Redis commands per message; any livecart row gives
                   PostgreSQL commits and rows per message)
  --join-storm F   scripts/bench_join_storm.py --json F (CPU per join, RSS per connection)
  --flash-sale F   scripts/bench_flash_sale.py --json F (CPU per purchase attempt)

Per-unit costs are separated from the fixed background of a phase (heartbeats, syncs) by
a least-squares fit over every measured phase: cost = a·messages + b·deliveries (+ c·seconds
for Redis and PostgreSQL). Then two scenarios are sized: one show with --big-viewers
viewers, and --shows shows of --show-viewers viewers, with the chat, purchase and join rates
given below (all options), printing cores, processes, nodes, Redis shards, the PostgreSQL
write rate, and what saturates first.

    python scripts/capacity.py --fanout fanout.json --join-storm joins.json \
        --flash-sale flash.json [--json capacity.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any


def lstsq(rows: list[list[float]], y: list[float]) -> list[float]:
    """Least squares for a few unknowns (normal equations, Gauss-Jordan), clamped at 0."""
    n = len(rows[0])
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    aty = [sum(r[i] * v for r, v in zip(rows, y, strict=True)) for i in range(n)]
    m = [[*row[:], b] for row, b in zip(ata, aty, strict=True)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[p][c]) < 1e-18:
            return [float("nan")] * n
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [a - f * b for a, b in zip(m[r], m[c], strict=True)]
    return [max(0.0, m[i][n] / m[i][i]) for i in range(n)]


def phases(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in [run.get("fixed"), *run.get("steps", [])] if p and p["published"] > 0]


def fanout_costs(doc: dict[str, Any]) -> dict[str, Any]:
    runs = [r for r in doc["runs"] if r["system"] == "livecart"]
    single = [r for r in runs if r["label"] == "livecart (ours)"] or runs[:1]
    out: dict[str, Any] = {}
    ph = [p for r in single for p in phases(r)]
    if not ph:
        ph = [p for r in runs for p in phases(r)]
    if ph:
        per = [p["server_cpu_s"] / p["delivered"] * 1e6 for p in ph if p["delivered"]]
        # Busy rooms batch several messages per frame (cheapest phase); quiet rooms send one
        # message per frame (the dearest phase stands for them).
        out["cpu_us_per_delivery_best"] = min(per)
        out["cpu_us_per_delivery"] = max(per)
        out["viewers"] = single[0]["viewers"] if single else runs[0]["viewers"]
        # server CPU = a·published + b·delivered separates a chat message's own cost
        # (moderation, publish, archive) from a delivery's, if the runs had different
        # audiences (--viewers 200,2000); with one audience the two are proportional.
        if len({r["viewers"] for r in single}) > 1:
            a, b = lstsq(
                [[p["published"], p["delivered"]] for p in ph], [p["server_cpu_s"] for p in ph]
            )
            out["cpu_us_per_chat"] = a * 1e6
            # The dearest phase also carries its messages' own cost: the fit separates it.
            out["cpu_us_per_delivery"] = max(b * 1e6, out["cpu_us_per_delivery_best"])
        else:
            out["cpu_us_per_chat"] = 0.0
            out["cpu_us_per_chat_note"] = "inside the per-delivery cost (one audience size)"
    # PostgreSQL: the first phase of a run also flushes what the joins wrote (users), and
    # pg_stat_database lags by up to a second, so take the median over the later phases.
    db = [p for r in runs for p in phases(r)[1:] if p["pg_rows"] >= 0]
    if db:
        out["pg_rows_per_chat"] = statistics.median(p["pg_rows"] / p["published"] for p in db)
        out["pg_commits_per_chat"] = statistics.median(p["pg_commits"] / p["published"] for p in db)
    shared = [r for r in runs if r["label"] != "livecart (ours)"]
    rp = [p for r in shared for p in phases(r) if p["redis_cmds"] >= 0]
    if rp:
        per_msg, per_s = lstsq(
            [[p["published"], p["seconds"]] for p in rp], [p["redis_cmds"] for p in rp]
        )
        out["redis_cmds_per_chat"] = per_msg
        out["redis_cmds_per_s_background"] = per_s
        out["redis_label"] = ", ".join(sorted({r["label"] for r in shared}))
    return out


def size(args: argparse.Namespace, c: dict[str, float]) -> dict[str, Any]:
    usable = args.core_utilisation  # fraction of a core we plan to use
    per_proc = args.conns_per_process
    out: dict[str, Any] = {}
    for name, viewers, rooms, chat_per_room in (
        ("one show", args.big_viewers, 1, args.big_chat_rate),
        ("many shows", args.shows * args.show_viewers, args.shows, args.show_chat_rate),
    ):
        per_room = viewers / rooms
        shown = min(chat_per_room, args.display_budget)  # chat a viewer is sent per second
        deliveries = viewers * shown
        # A room's messages ride frames of several messages when busy (best measured cost),
        # one per frame when quiet (fitted average cost).
        per_delivery = (
            c["cpu_us_per_delivery_best"] if chat_per_room >= 10 else c["cpu_us_per_delivery"]
        )
        chats = rooms * chat_per_room
        joins = viewers / args.join_window_s
        purchases = rooms * args.purchases_per_room
        cpu = {
            "deliveries": deliveries * per_delivery / 1e6,
            "chat": chats * c["cpu_us_per_chat"] / 1e6,
            "joins": joins * c["cpu_us_per_join"] / 1e6,
            "purchases": purchases * c["cpu_us_per_attempt"] / 1e6,
        }
        cores = sum(cpu.values()) / usable
        processes = max(math.ceil(cores), math.ceil(viewers / per_proc))
        nodes = math.ceil(processes / args.cores_per_node)
        memory_gib = viewers * c["rss_kib_per_conn"] / (1 << 20)
        # Redis: each published message costs its shard the publish script and friends,
        # plus one pub/sub delivery per node subscribed to the room. Viewers of a room land
        # on any node (no affinity) unless the load balancer routes by room.
        # Every process is a node of the bus: it subscribes to each room it has viewers in.
        nodes_per_room = min(processes, per_room)
        nodes_per_room_affine = max(1, math.ceil(per_room / per_proc))
        redis_ops = chats * (c["redis_cmds_per_chat"] + nodes_per_room)
        redis_ops_affine = chats * (c["redis_cmds_per_chat"] + nodes_per_room_affine)
        # Presence and likes: one script per (process, room it has viewers in) per second.
        presence = processes * min(rooms, viewers / processes) if rooms > 1 else processes
        presence_affine = rooms * nodes_per_room_affine
        shards = max(1, math.ceil((redis_ops + presence) / args.redis_shard_ops))
        shards_affine = max(
            1, math.ceil((redis_ops_affine + presence_affine) / args.redis_shard_ops)
        )
        pg_rows = chats * c["pg_rows_per_chat"] + purchases * args.pg_rows_per_order
        pg_commits = chats * c["pg_commits_per_chat"] + purchases
        # Trending: every process syncs every 1/sync_hz s with every shard and reads back
        # the numerators of every live item (products, sessions, hosts): ZMSCORE lookups.
        live_items = rooms * (2 + args.products_per_show)
        ranking_lookups = processes * args.ranking_sync_hz * args.ranking_shards * live_items
        # What runs out first: nodes scale out, but one room's Redis shard and the one
        # PostgreSQL primary do not. Each as a fraction of what one of them is planned for.
        room_shard_ops = chat_per_room * (c["redis_cmds_per_chat"] + nodes_per_room)
        room_shard_ops += min(processes, per_room)  # presence reports for the room
        pressures = {
            "nodes for CPU": math.ceil(cores / args.cores_per_node),
            "nodes for open files": math.ceil(viewers / per_proc / args.cores_per_node),
            "the room's Redis shard (share of one)": room_shard_ops / args.redis_shard_ops,
            "the PostgreSQL primary (share of one)": pg_rows / args.pg_rows_per_s,
            # One score lookup counted as one op (ZMSCORE reads one member per lookup).
            "a trending shard's read-back (share of one)": ranking_lookups
            / args.ranking_shards
            / args.redis_shard_ops,
        }
        single = {k: v for k, v in pressures.items() if "share" in k}
        hot = max(single, key=lambda k: single[k])
        first = (
            hot
            if single[hot] >= 1
            else (
                "nodes for CPU"
                if pressures["nodes for CPU"] >= pressures["nodes for open files"]
                else "nodes for open files"
            )
        )
        out[name] = {
            "ranking_scripts_per_s": processes * args.ranking_sync_hz * args.ranking_shards,
            "ranking_member_lookups_per_s": ranking_lookups,
            "viewers": viewers,
            "rooms": rooms,
            "viewers_per_room": per_room,
            "chat_msgs_per_s": chats,
            "deliveries_per_s": deliveries,
            "cpu_core_s_per_s": cpu,
            "cores": cores,
            "processes": processes,
            "nodes": nodes,
            "memory_gib": memory_gib,
            "redis_ops_per_s": redis_ops + presence,
            "redis_ops_per_s_room_affinity": redis_ops_affine + presence_affine,
            "redis_shards": shards,
            "redis_shards_room_affinity": shards_affine,
            "pg_rows_per_s": pg_rows,
            "pg_commits_per_s": pg_commits,
            "pressures": pressures,
            "first_to_saturate": first,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fanout", required=True)
    p.add_argument("--join-storm", required=True)
    p.add_argument("--flash-sale", required=True)
    p.add_argument("--big-viewers", type=int, default=1_000_000)
    p.add_argument("--big-chat-rate", type=float, default=50.0, help="chat msg/s in the big show")
    p.add_argument("--shows", type=int, default=10_000)
    p.add_argument("--show-viewers", type=int, default=100)
    p.add_argument("--show-chat-rate", type=float, default=1.0, help="chat msg/s per small show")
    p.add_argument("--display-budget", type=float, default=30.0, help="chat msg/s per viewer")
    p.add_argument("--join-window-s", type=float, default=300.0, help="everyone joins within")
    p.add_argument(
        "--purchases-per-room",
        type=float,
        default=0.05,
        help="purchase attempts per second per show (the big show: x1000)",
    )
    p.add_argument(
        "--pg-rows-per-order",
        type=float,
        default=3.0,
        help="rows an order writes (order, offer, outbox)",
    )
    p.add_argument("--cores-per-node", type=int, default=16)
    p.add_argument("--core-utilisation", type=float, default=0.6)
    p.add_argument(
        "--conns-per-process", type=int, default=18_000, help="below the 20,000 open-file limit"
    )
    p.add_argument(
        "--redis-shard-ops",
        type=float,
        default=200_000,
        help="ops/s planned per Redis shard (one core)",
    )
    p.add_argument(
        "--pg-rows-per-s",
        type=float,
        default=50_000,
        help="rows/s planned for one PostgreSQL primary",
    )
    p.add_argument(
        "--ranking-sync-hz",
        type=float,
        default=10.0,
        help="trending syncs per second per process (ranking/sync.py)",
    )
    p.add_argument(
        "--ranking-shards",
        type=int,
        default=8,
        help="trending shards on a Redis Cluster (ranking/sync.py)",
    )
    p.add_argument("--products-per-show", type=int, default=5)  # fmt: skip
    p.add_argument(
        "--retention-days", type=int, default=30, help="days of room log kept in PostgreSQL"
    )
    p.add_argument("--json", default="")
    args = p.parse_args(argv)  # fmt: skip

    fanout = json.loads(Path(args.fanout).read_text())
    joins = json.loads(Path(args.join_storm).read_text())
    flash = json.loads(Path(args.flash_sale).read_text())
    c: dict[str, Any] = fanout_costs(fanout)
    storm = next(r for r in joins["results"] if r["system"] == "livecart" and r["workers"] == 1)
    c["cpu_us_per_join"] = storm["cpu_us_per_join"]
    c["rss_kib_per_conn"] = storm["rss_kib_per_conn"]
    c["cpu_us_per_attempt"] = flash["server_cpu_us_per_attempt"]
    c.setdefault("redis_cmds_per_chat", float("nan"))
    c.setdefault("pg_rows_per_chat", float("nan"))
    c.setdefault("pg_commits_per_chat", float("nan"))
    big = args.purchases_per_room
    sized = size(args, c)
    # The big show sells like a thousand small ones.
    args.purchases_per_room = big * 1000
    sized["one show"] = size(args, c)["one show"]
    args.purchases_per_room = big

    print("## Measured per-unit costs\n")
    print("| cost | value | from |")
    print("|---|---|---|")
    rows = [
        ("server CPU per delivery (busy room, several messages per frame)",
         f"{c['cpu_us_per_delivery_best']:.2f} µs", "bench_fanout, best phase"),
        ("server CPU per delivery (quiet room, one message per frame)",
         f"{c['cpu_us_per_delivery']:.2f} µs", "bench_fanout, fit over audiences (else the "
         "dearest phase)"),
        ("server CPU per chat message through moderation, publish and archive",
         f"{c['cpu_us_per_chat']:.0f} µs" + (f" ({c['cpu_us_per_chat_note']})"
                                             if "cpu_us_per_chat_note" in c else ""),
         "bench_fanout, fit over audiences"),
        ("server CPU per join (connect, handshake, token, join, snapshot)",
         f"{c['cpu_us_per_join']:.0f} µs", "bench_join_storm"),
        ("server RSS per connection after a join storm", f"{c['rss_kib_per_conn']:.2f} KiB",
         "bench_join_storm"),
        ("server CPU per purchase attempt", f"{c['cpu_us_per_attempt']:.0f} µs",
         "bench_flash_sale"),
        ("Redis commands per chat message", f"{c['redis_cmds_per_chat']:.1f}",
         f"bench_fanout ({c.get('redis_label', 'no Redis row')})"),
        ("PostgreSQL rows written per chat message", f"{c['pg_rows_per_chat']:.2f}",
         "bench_fanout"),
        ("PostgreSQL commits per chat message (with the node's background writes)",
         f"{c['pg_commits_per_chat']:.3f}", "bench_fanout"),
    ]  # fmt: skip
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    for name, s in sized.items():
        print(f"\n## {name}: {s['viewers']:,} viewers in {s['rooms']:,} room(s)\n")
        cpu = s["cpu_core_s_per_s"]
        print(f"- chat: {s['chat_msgs_per_s']:,.0f} msg/s published, "
              f"{s['deliveries_per_s']:,.0f} deliveries/s")  # fmt: skip
        print("- CPU (cores busy): " + ", ".join(f"{k} {v:,.1f}" for k, v in cpu.items())
              + f"; planned at {args.core_utilisation:.0%}: {s['cores']:,.0f} cores")  # fmt: skip
        print(f"- processes: {s['processes']:,} (≤ {args.conns_per_process:,} connections "
              f"each); nodes of {args.cores_per_node} cores: {s['nodes']:,}; "
              f"connection memory {s['memory_gib']:,.1f} GiB")  # fmt: skip
        print(f"- Redis: {s['redis_ops_per_s']:,.0f} ops/s → {s['redis_shards']:,} shard(s); "
              f"with room affinity at the load balancer: "
              f"{s['redis_ops_per_s_room_affinity']:,.0f} ops/s → "
              f"{s['redis_shards_room_affinity']:,} shard(s)")  # fmt: skip
        print(f"- trending sync: {s['ranking_scripts_per_s']:,.0f} scripts/s reading "
              f"{s['ranking_member_lookups_per_s']:,.0f} live-item scores/s in all")  # fmt: skip
        print(f"- PostgreSQL: {s['pg_rows_per_s']:,.0f} rows/s, "
              f"{s['pg_commits_per_s']:,.0f} commits/s")  # fmt: skip
        pr = s["pressures"]
        print("- pressures: " + "; ".join(
            f"{k} {v:,.0f}" if isinstance(v, int) else f"{k} {v:.1%}" for k, v in pr.items()
        ))  # fmt: skip
        print(f"- saturates first: {s['first_to_saturate']}")
    archive = fanout.get("archive") or {}
    per_row = archive.get("bytes_per_row", float("nan"))
    print("\n## Room log archive (`room_events`)\n")
    print(f"- measured: {archive.get('rows', 0):,} rows in {archive.get('bytes', 0) / 2**20:,.1f} "
          f"MiB with indexes → {per_row:,.0f} bytes per event")  # fmt: skip
    for name, sc in sized.items():
        rows_per_s = sc["chat_msgs_per_s"] * c["pg_rows_per_chat"]
        per_day = rows_per_s * 86_400 * per_row / 2**30
        sc["archive_gib_per_day"] = per_day
        print(f"- {name}: {rows_per_s:,.0f} events/s → {per_day:,.1f} GiB/day, "
              f"{per_day * args.retention_days:,.0f} GiB kept over {args.retention_days} days")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"costs": c, "scenarios": sized}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
