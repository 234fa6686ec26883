"""Cold start of `livecart serve` on the embedded default: launch → "livecart ready" line.

Measures the first start on an empty data dir (initdb included) and warm restarts on the same
data dir, against a baseline measured in the same run: a bare uvicorn serving a one-route
Starlette app (the floor any Python server on this stack pays).

    python scripts/bench_cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import machine_line

BASELINE_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
import uvicorn

async def hello(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/", hello)])

class S(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("ready", flush=True)

S(uvicorn.Config(app, port=0, log_level="warning")).run()
"""


def time_to_line(args: list[str], marker: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith(marker):
                return time.perf_counter() - started
        raise RuntimeError(f"{args[:4]} exited without {marker!r}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    data = tempfile.mkdtemp(prefix="livecart-bench-")
    print(machine_line(), flush=True)
    serve = [sys.executable, "-m", "livecart", "serve", "--port", "0", "--data-dir", data]
    first = time_to_line(serve, "livecart ready on", env)
    warm = [time_to_line(serve, "livecart ready on", env) for _ in range(opts.runs)]
    base = [
        time_to_line([sys.executable, "-c", BASELINE_APP], "ready", env) for _ in range(opts.runs)
    ]
    print(f"runs: {opts.runs} warm starts each; embedded PostgreSQL, data dir {data}\n")
    print("| start | median s | min s | max s | ratio to baseline |")
    print("|---|---|---|---|---|")
    bm = statistics.median(base)
    print(
        f"| first start (initdb + migrate) | {first:.2f} | {first:.2f} | {first:.2f} | "
        f"{first / bm:.1f}x |"
    )
    wm = statistics.median(warm)
    print(
        f"| warm restart (same data dir) | {wm:.2f} | {min(warm):.2f} | {max(warm):.2f} | "
        f"{wm / bm:.1f}x |"
    )
    print(
        f"| baseline: bare uvicorn + Starlette | {bm:.2f} | {min(base):.2f} | {max(base):.2f} | "
        f"1.0x |"
    )


if __name__ == "__main__":
    main()
