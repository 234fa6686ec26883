"""The JavaScript SDK (clients/js): its node test suite against real nodes, its generated
types and the copy the pages load, each checked against its source."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
STATIC_COPY = ROOT / "src" / "livecart" / "web" / "static" / "livecart-client.js"


def _node() -> str:
    node = shutil.which("node")
    ok = node is not None and (JS / "node_modules" / "typescript").is_dir()
    if ok:
        assert node is not None
        major = subprocess.run(
            [node, "-p", "process.versions.node.split('.')[0]"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ok = int(major) >= 20
    if not ok:
        message = "needs Node >= 20 and clients/js/node_modules (./dev test runs npm ci)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert node is not None
    return node


def test_protocol_types_are_generated_from_protocol_py() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_client_types.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.generate()
    committed = (JS / "src" / "protocol.d.ts").read_text()
    assert committed == fresh, (
        "clients/js/src/protocol.d.ts is out of date: run "
        ".venv/bin/python scripts/gen_client_types.py and commit it"
    )
    # Every frame and message of the protocol is there, room events with their offset.
    for name in ("interface Buy {", "interface Joined {", "interface ChatEvent {", "ErrorCode"):
        assert name in fresh
    chat = fresh.split("export interface ChatEvent {")[1].split("}")[0]
    assert "offset: number;" in chat


def test_the_pages_load_the_same_sdk() -> None:
    assert STATIC_COPY.read_bytes() == (JS / "src" / "index.js").read_bytes(), (
        "web/static/livecart-client.js differs from clients/js/src/index.js: "
        "cp clients/js/src/index.js src/livecart/web/static/livecart-client.js"
    )


def test_node_suite_against_real_nodes(database_url: str) -> None:
    """`node --test`: reconnects through a cutting proxy, a new epoch, refusals, retries of
    `unavailable`, token refresh, tsc on the declarations and the size budget."""
    node = _node()
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.js"))
    env = {
        **os.environ,
        "LIVECART_TEST_DATABASE_URL": database_url,
        "LIVECART_PYTHON": sys.executable,
    }
    run = subprocess.run(
        [node, "--test", "--test-concurrency=1", *files],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "# fail 0" in out and "# skipped 0" in out, out[-3000:]
