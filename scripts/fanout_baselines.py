#!/usr/bin/env python3
"""Baseline fan-out servers for scripts/bench_fanout.py, one per process.

Each is the usual way to broadcast chat to a room with that library, bound to 127.0.0.1, on
uvloop when it is installed, without compression. A publisher sends
`{"type":"chat","session":S,"text":T,"ref":R,"user":U}`; the server builds the same event
livecart sends (`{"type":"chat","session","offset","user","name","text","at"}`, encoded once per
message) and delivers it to every viewer in the room. Viewers send
`{"type":"join","session":S}` and get `[{"type":"joined",...}]` once they receive the room.

  websockets   `websockets.asyncio.server.serve` + `broadcast()`, one message per frame,
               wrapped in a JSON array like livecart's frames
  broadcaster  Starlette + encode/broadcaster memory backend, the canonical chat example
               (a receiver that publishes, a sender that subscribes), under uvicorn
  socketio     python-socketio ASGI server under uvicorn: viewers `join` a room, the
               publisher's `chat` event is emitted to the room (`42["chat",{...}]`)

Uvicorn runs with the settings livecart uses (ws="websockets-sansio", pings every 20 s,
backlog 2048, warnings only), per-message deflate off.

    python scripts/fanout_baselines.py {websockets|broadcaster|socketio} [--port 0]

Prints `fanout baseline ready on http://127.0.0.1:PORT` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from benchlib import raise_nofile

READY = "fanout baseline ready on "
SYSTEMS = ("websockets", "broadcaster", "socketio")
# The package each baseline needs beyond the project's own dependencies.
PACKAGES = {"websockets": "websockets", "broadcaster": "broadcaster", "socketio": "python-socketio"}
MODULES = {"websockets": "websockets", "broadcaster": "broadcaster", "socketio": "socketio"}


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


class Room:
    """Offsets and the event body, the same fields as livecart's chat event."""

    def __init__(self) -> None:
        self.offset = 0

    def event(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.offset += 1
        user = str(frame.get("user", "publisher"))
        return {
            "type": "chat",
            "session": frame.get("session", "room"),
            "offset": self.offset,
            "user": user,
            "name": user,
            "text": frame.get("text", ""),
            "at": int(time.time() * 1000),
        }


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def announce(port: int) -> None:
    print(f"{READY}http://127.0.0.1:{port}", flush=True)


# ---------------------------------------------------------------- bare websockets


async def serve_websockets(port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    room = Room()
    viewers: set[Any] = set()

    async def handler(ws: Any) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "chat":
                    # Encoded once; broadcast() writes the same frame to every viewer.
                    broadcast(viewers, "[" + dumps(room.event(frame)) + "]")
                elif kind == "join":
                    viewers.add(ws)
                    await ws.send(dumps([{"type": "joined", "session": frame.get("session")}]))
        finally:
            viewers.discard(ws)

    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=20,
        ping_timeout=20,
        max_size=1 << 20,
        backlog=2048,
    ) as server:
        announce(next(iter(server.sockets)).getsockname()[1])
        await asyncio.get_running_loop().create_future()  # until killed


# ---------------------------------------------------------------- uvicorn-hosted


async def serve_uvicorn(app: Any, port: int) -> None:
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    cfg = uvicorn.Config(
        app,
        ws="websockets-sansio",
        ws_max_size=1 << 20,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )
    server = uvicorn.Server(cfg)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        await task
        raise SystemExit("fanout_baselines: uvicorn did not start")
    announce(sock.getsockname()[1])
    await task


def broadcaster_app() -> Any:
    """The canonical broadcaster chat example: on connect, a receiver that publishes what the
    client sends and a sender that subscribes to the channel and forwards every event."""
    import anyio
    from broadcaster import Broadcast
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    broadcast = Broadcast("memory://")
    room = Room()

    async def chatroom_ws(websocket: Any) -> None:
        await websocket.accept()
        subscribed = anyio.Event()
        async with anyio.create_task_group() as task_group:

            async def run_chatroom_ws_receiver() -> None:
                await chatroom_ws_receiver(websocket, subscribed)
                task_group.cancel_scope.cancel()

            task_group.start_soon(run_chatroom_ws_receiver)
            await chatroom_ws_sender(websocket, subscribed)

    async def chatroom_ws_receiver(websocket: Any, subscribed: anyio.Event) -> None:
        async for message in websocket.iter_text():
            frame = json.loads(message)
            kind = frame.get("type")
            if kind == "chat":
                event = "[" + dumps(room.event(frame)) + "]"
                await broadcast.publish(channel="chatroom", message=event)
            elif kind == "join":
                await subscribed.wait()
                await websocket.send_text(
                    dumps([{"type": "joined", "session": frame.get("session")}])
                )

    async def chatroom_ws_sender(websocket: Any, subscribed: anyio.Event) -> None:
        async with broadcast.subscribe(channel="chatroom") as subscriber:
            subscribed.set()
            async for event in subscriber:  # type: ignore[union-attr]
                await websocket.send_text(event.message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with broadcast:
            yield

    return Starlette(routes=[WebSocketRoute("/ws", chatroom_ws)], lifespan=lifespan)


def socketio_app() -> Any:
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
    room = Room()

    @sio.on("join")  # type: ignore[misc]
    async def join(sid: str, session: str) -> None:
        await sio.enter_room(sid, session)
        await sio.emit("joined", {"type": "joined", "session": session}, to=sid)

    @sio.on("chat")  # type: ignore[misc]
    async def chat(sid: str, frame: dict[str, Any]) -> None:
        # Encoded once by the server, sent to every socket in the room.
        await sio.emit("chat", room.event(frame), room=frame.get("session", "room"))

    return socketio.ASGIApp(sio)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    raise_nofile()
    try:
        __import__(MODULES[args.system])
    except ImportError:
        print(
            f"fanout_baselines: {args.system} needs `pip install {PACKAGES[args.system]}`",
            file=sys.stderr,
        )
        return 3
    if loop_name() == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.system == "websockets":
        coro = serve_websockets(args.port)
    elif args.system == "broadcaster":
        coro = serve_uvicorn(broadcaster_app(), args.port)
    else:
        coro = serve_uvicorn(socketio_app(), args.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
