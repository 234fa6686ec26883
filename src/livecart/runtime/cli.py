"""`livecart serve | demo | token | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

import uvicorn

from .. import auth
from ..realtime import handshake, http, wire
from . import config, logs
from .config import ConfigError, Settings, node_name
from .db import EmbeddedPostgres, migrate

log = logging.getLogger("livecart")


def _settings(args: argparse.Namespace) -> Settings:
    return config.load(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None),
        database_url=getattr(args, "database_url", None),
        redis_url=getattr(args, "redis_url", None),
        workers=getattr(args, "workers", None),
    )


class _Server(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT first drain our sockets with 1001 and the process
    then exits 0 instead of re-raising the signal."""

    def __init__(self, cfg: uvicorn.Config, drain: Any) -> None:
        super().__init__(cfg)
        self._drain = drain
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            self.force_exit = True
            return
        self._draining = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit()))  # type: ignore[union-attr]

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        finally:
            self.should_exit = True


async def _run_server(settings: Settings, on_ready: Any = None) -> None:
    from .app import create_app

    started = time.monotonic()
    embedded: EmbeddedPostgres | None = None
    database_url = settings.database_url
    if not database_url:
        embedded = EmbeddedPostgres(settings.data_dir)
        database_url = await embedded.astart()
    try:
        app = create_app(settings, database_url, config.jwt_secret(settings))
        cfg = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            # httptools with every request head bounded in size and time (realtime/http.py).
            http=http.protocol_class(
                max_head=settings.max_header_bytes, head_timeout=settings.handshake_timeout_s
            ),
            # `/ws` on the node's own protocol; anything else it hands to websockets-sansio.
            ws=handshake.protocol_class(
                app.gateway,
                max_fragments=settings.ws_max_fragments,
                max_request=settings.max_header_bytes,
                handshake_timeout=settings.handshake_timeout_s,
            ),
            ws_per_message_deflate=settings.ws_deflate,
            ws_max_size=max(1 << 20, settings.max_frame_bytes * 4),
            ws_ping_interval=wire.PING_INTERVAL_S,
            ws_ping_timeout=wire.PING_TIMEOUT_S,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(settings.drain_timeout_s),
        )
        server = _Server(cfg, app.state.node.drain)
        task = asyncio.create_task(server.serve(sockets=[_listen(settings)]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            await task
            raise SystemExit("livecart: the server did not start (see the log above)")
        port = settings.port
        for srv in server.servers:
            for sock in srv.sockets:
                port = sock.getsockname()[1]
        print(f"livecart ready on http://{settings.host}:{port}", flush=True)
        log.info("ready in %.2fs", time.monotonic() - started)
        if on_ready is not None:
            await on_ready(f"http://{settings.host}:{port}", app)
        await task
    finally:
        if embedded is not None:
            await embedded.astop()


def _listen(settings: Settings) -> socket.socket:
    """The listening socket; accepted sockets inherit its buffer sizes. A worker started by
    `serve --workers N` opens its own on the port its parent reserved, with SO_REUSEPORT, so
    the kernel spreads new connections evenly over the workers (LIVECART_REUSEPORT)."""
    sock = _bound(settings, reuseport=os.environ.get("LIVECART_REUSEPORT") == "1")
    if settings.socket_send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    sock.listen(2048)
    return sock


def _bound(settings: Settings, *, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    return sock


def _use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def _raise_nofile() -> None:
    """Every connection is an open file: take the soft limit up to the hard one (a process
    still tops out just under the hard limit; `--workers` spreads connections further)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup(settings.log_level, settings.log_format, node_name(settings))
    _raise_nofile()
    if settings.workers > 1:
        return _supervise(settings)
    _use_uvloop()
    # Thousands of connections mean many long-lived objects: with the default thresholds a
    # full collection runs often and stalls the loop for most of a second (measured with
    # 5,000 connections); collect young objects less eagerly and old ones rarely.
    gc.set_threshold(100_000, 50, 100)
    asyncio.run(_run_server(settings))
    return 0


def _die_with_parent() -> None:
    """In a worker, before it runs: on Linux the kernel sends it SIGTERM when the supervisor
    dies, even by SIGKILL, so no worker outlives it holding the port."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _supervise(settings: Settings) -> int:
    """`serve --workers N`: N node processes accepting on one socket (they share state through
    PostgreSQL and Redis like any nodes); SIGTERM/SIGINT are passed on, exit 0 when all do."""
    embedded = None
    database_url = settings.database_url
    if not database_url:
        embedded = EmbeddedPostgres(settings.data_dir)
        database_url = embedded.start()
    # Bound, never listening: it reserves the port (and picks one for port 0) while each
    # worker listens on its own SO_REUSEPORT socket; one shared accept queue instead let
    # whichever worker woke first take most connections.
    sock = _bound(settings, reuseport=True)
    port = sock.getsockname()[1]
    name = node_name(settings)
    workers = []
    try:
        for i in range(settings.workers):
            env = {
                **os.environ,
                "LIVECART_REUSEPORT": "1",
                "LIVECART_WORKERS": "1",
                "LIVECART_NODE_ID": f"{name}-w{i}",
                "DATABASE_URL": database_url,
                "REDIS_URL": settings.redis_url,
                "LIVECART_JWT_SECRET": config.jwt_secret(settings),
            }
            argv = [
                sys.executable,
                "-m",
                "livecart",
                "serve",
                "--host",
                settings.host,
                "--port",
                str(port),
                "--data-dir",
                settings.data_dir,
            ]
            workers.append(
                subprocess.Popen(
                    argv, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
                )
            )
        for w in workers:
            assert w.stdout is not None
            if not any(line.startswith("livecart ready on ") for line in w.stdout):
                raise SystemExit("livecart: a worker did not start")
        print(f"livecart ready on http://{settings.host}:{port}", flush=True)

        def forward(sig: int, frame: FrameType | None) -> None:
            for w in workers:
                w.send_signal(sig)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        codes = [w.wait() for w in workers]
        return 0 if all(c == 0 for c in codes) else 1
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        sock.close()
        if embedded is not None:
            embedded.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    settings = _settings(args)
    logs.setup("warning", settings.log_format, node_name(settings))
    _use_uvloop()
    asyncio.run(_run_server(settings, on_ready=demo.on_ready(bots=args.bots)))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = config.load(data_dir=args.data_dir)
    try:
        token = auth.issue(
            config.jwt_secret(settings),
            args.sub,
            args.role,
            name=args.name,
            ttl_s=args.ttl,
            minor=args.minor,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    except ValueError as exc:
        print(f"livecart token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> int:
        embedded = None
        url = settings.database_url
        if not url:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await embedded.astart()
        try:
            return await migrate(url)
        finally:
            if embedded is not None:
                await embedded.astop()

    version = asyncio.run(run())
    print(f"schema at version {version}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livecart", description="live-shopping event backend")
    sub = p.add_subparsers(dest="command", required=True)

    def server_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--host", help="bind address (default 127.0.0.1)")
        sp.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one)")
        sp.add_argument("--data-dir", dest="data_dir", help="data directory (default ./.livecart)")
        sp.add_argument(
            "--database-url", dest="database_url", help="PostgreSQL URL (default: embedded)"
        )
        sp.add_argument("--redis-url", dest="redis_url", help="Redis URL (cluster mode)")

    s = sub.add_parser("serve", help="run a node")
    server_flags(s)
    s.add_argument("--workers", type=int, help="worker processes (needs --redis-url when > 1)")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="serve, seed a live session and run bot viewers")
    d.add_argument("--host", help="bind address (default 127.0.0.1)")
    d.add_argument("--port", type=int, help="port (default 8000)")
    d.add_argument("--data-dir", dest="data_dir", help="data directory (default ./.livecart)")
    d.add_argument("--bots", type=int, default=30, help="bot viewers (default 30)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("token", help="print a signed JWT")
    t.add_argument("--sub", required=True)
    t.add_argument("--role", required=True, choices=auth.TOKEN_ROLES)
    t.add_argument("--name")
    t.add_argument("--ttl", type=int, default=86400, help="lifetime in seconds (default 1 day)")
    t.add_argument("--minor", action="store_true")
    t.add_argument("--data-dir", dest="data_dir")
    t.set_defaults(func=cmd_token)

    m = sub.add_parser("migrate", help="apply schema.sql to the configured database")
    m.add_argument("--data-dir", dest="data_dir")
    m.add_argument("--database-url", dest="database_url")
    m.set_defaults(func=cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"livecart: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
