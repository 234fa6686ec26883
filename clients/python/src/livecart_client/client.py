"""`LivecartClient`: one WebSocket to a livecart node that multiplexes joined sessions
(`Room`) and the personal feed, and keeps them going across disconnects.

What it does for its user (SPEC §5, §10, §14):
- reconnects with exponential backoff and jitter, then resumes every joined session with
  `since {epoch, offset}`;
- delivers each session's log events once, in offset order, with no gap: an offset seen
  before is dropped, a gap makes it re-join from the last offset delivered; a new epoch (or
  a position outside the history window) gives a `resync` event with the fresh snapshot;
- `chat`, `buy`, `bid` (and any `send`) make their own ref and, on `unavailable`, send the
  same frame again with the same ref (after `retry_after_ms`), on this connection or the
  next one, until `retry_for_s` has passed;
- refreshes the token with the `auth` frame before it expires when given a token provider.

Server frames are JSON arrays of messages; each message is decoded into its Struct from
`livecart_client.messages`, or left a dict when this client does not know its type, and
dispatched by its `type`, so frame types the server adds reach handlers unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import messages as m
from .errors import LivecartError

log = logging.getLogger("livecart_client")

Message = Any
"""A server message: a Struct of `livecart_client.messages`, or a `dict` (with its `type`)
for a message type this version of the client does not know."""
Handler = Callable[[Any], Any]
"""A handler gets one message; it may be a plain function or a coroutine function."""
TokenProvider = Callable[[], Awaitable[str]]


class Position(msgspec.Struct, frozen=True):
    """A place in a session's log: the last event delivered."""

    epoch: str
    offset: int


class Resync(msgspec.Struct, kw_only=True, tag_field="type", tag="resync"):
    """A room's `resync` event: the server could not resume from `previous` (a new epoch, or
    outside the history window); `state` is the fresh snapshot to use instead of what was
    built from earlier events, and events go on from `offset`."""

    session: str
    epoch: str
    offset: int
    state: m.SessionState
    previous: Position
    new_epoch: bool
    joined: m.Joined


class Gap(msgspec.Struct, kw_only=True, tag_field="type", tag="gap"):
    """The `gap` event of a room's async iterator: its reader fell `max_queue` messages
    behind, so the `dropped` oldest messages it had not read yet were dropped. It comes where
    they were, before the newer ones still queued. Handlers got every message, and the room
    (`position`, `state`, `viewers`, `likes`, `stock`) is up to date; the log events missed
    are in `/api/sessions/{id}/timeline`."""

    session: str
    dropped: int


class _Inbox:
    """What one async iterator of a room has not read yet: at most `max_queue` messages;
    when full, the oldest is dropped and counted, and the reader gets a `Gap` for them."""

    __slots__ = ("dropped", "ended", "items", "max_queue", "session", "waiter")

    def __init__(self, session: str, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.session = session
        self.max_queue = max_queue
        self.items: deque[Message] = deque()
        self.dropped = 0
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None

    def put(self, msg: Message) -> None:
        if len(self.items) >= self.max_queue:
            self.items.popleft()
            self.dropped += 1
        self.items.append(msg)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> Message | None:
        """The next message (a `Gap` first when some were dropped); None once ended."""
        while not (self.items or self.dropped or self.ended):
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            return Gap(session=self.session, dropped=dropped)
        if self.items:
            return self.items.popleft()
        return None


class Offline(msgspec.Struct, kw_only=True, tag_field="type", tag="offline"):
    """The client's `offline` event: the connection closed (`code`, `reason`); the next
    attempt is in `retry_in_ms`."""

    code: int
    reason: str
    retry_in_ms: int


_BY_TYPE: dict[str, type[msgspec.Struct]] = {}
for _cls in m.SERVER_MESSAGES:
    _BY_TYPE.setdefault(str(_cls.__struct_config__.tag), _cls)  # chat: ChatEvent first
_ANSWERS = frozenset({"ack", "order", "held", "error", "pong"})
_CHAT_ANSWERS = frozenset({"ack", "held", "error"})
_STATE = frozenset({"viewers", "likes", "stock"})
_encoder = msgspec.json.Encoder()


def kind(msg: Message) -> str:
    """A message's `type`."""
    if isinstance(msg, dict):
        return str(msg.get("type", ""))
    return str(msg.__struct_config__.tag)


def _field(msg: Message, name: str) -> Any:
    return msg.get(name) if isinstance(msg, dict) else getattr(msg, name, None)


def to_message(raw: dict[str, Any]) -> Message:
    """One decoded JSON message as its Struct (a dict when the type is unknown, or when it
    does not have the shape this client expects)."""
    t = raw.get("type")
    cls = m.ChatTombstone if t == "chat" and raw.get("removed") else _BY_TYPE.get(str(t))
    if cls is None:
        return raw
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError:
        log.debug("message of unexpected shape kept as a dict: %r", raw)
        return raw


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: the server does that), else None."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None


class _Handlers:
    """Handlers by message type; `"*"` gets every message."""

    def __init__(self, tasks: set[asyncio.Task[Any]]) -> None:
        self._by_type: dict[str, list[Handler]] = {}
        self._tasks = tasks

    def add(self, type_: str, handler: Handler) -> Callable[[], None]:
        self._by_type.setdefault(type_, []).append(handler)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._by_type.get(type_, []).remove(handler)

        return off

    def emit(self, type_: str, msg: Message) -> None:
        for key in (type_, "*"):
            for handler in list(self._by_type.get(key, ())):
                try:
                    result = handler(msg)
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)
                        task.add_done_callback(self._done)
                except Exception:  # one broken handler must not stop the others
                    log.exception("handler for %s failed", type_)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handler failed", exc_info=task.exception())


class _Request:
    __slots__ = ("answers", "deadline", "frame", "future", "timer", "tries")

    def __init__(
        self,
        frame: dict[str, Any],
        future: asyncio.Future[Message],
        deadline: float,
        answers: frozenset[str],
    ) -> None:
        self.frame = frame
        self.future = future
        self.deadline = deadline
        self.answers = answers
        self.timer: asyncio.TimerHandle | None = None
        self.tries = 0


# Frames judged at the viewer's video time, which say when the viewer pressed.
_PRESSED = frozenset({"bid", "buy", "buy_now"})


class Room:
    """A joined session: its position, its state, its events. Made by `LivecartClient.join`.

    Events: the room log events (`chat`, `offer`, `sold`, `bid`, …), the coalesced state
    (`viewers`, `likes`, `stock`), `resync` (a `Joined` with the fresh snapshot, after a new
    epoch or a position outside the history window), and every other message that names
    this session (`muted`, `chat_sampled`, `outbid`, …). `async for event in room` yields
    them too (from the moment iteration starts; a reader more than `max_queue` behind gets
    a `Gap` in place of the oldest it missed, see `events`)."""

    def __init__(self, client: LivecartClient, session: str) -> None:
        self.client = client
        self.id = session
        self.epoch: str | None = None
        self.offset = 0
        self.state: m.SessionState | None = None
        self.viewers = 0
        self.likes = 0
        self.stock: dict[str, int] = {}
        self.joined = False
        # The viewer's video delay as last reported with `delay()` (None: never reported).
        self.delay_ms: int | None = None
        self._handlers = _Handlers(client._tasks)
        self._inboxes: list[_Inbox] = []
        self._waiter: asyncio.Future[Room] | None = None
        self._resyncing = False

    @property
    def position(self) -> Position | None:
        """The last position delivered (None before the first `joined`)."""
        return None if self.epoch is None else Position(self.epoch, self.offset)

    def on(self, type_: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(message)` for this room's messages of `type_` (`"*"`: all);
        returns a function that removes it."""
        return self._handlers.add(type_, handler)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self.events()

    async def events(self, max_queue: int = 10_000) -> AsyncIterator[Message]:
        """This room's messages from now on, until it is left or the client closes. At most
        `max_queue` of them wait for the reader: past that the oldest are dropped and the
        reader gets a `Gap` (how many) in their place, so a reader that falls behind costs
        bounded memory and learns that it did."""
        inbox = _Inbox(self.id, max_queue)
        self._inboxes.append(inbox)
        try:
            while (msg := await inbox.get()) is not None:
                yield msg
        finally:
            with contextlib.suppress(ValueError):
                self._inboxes.remove(inbox)

    def _emit(self, type_: str, msg: Message) -> None:
        self._handlers.emit(type_, msg)
        for inbox in self._inboxes:
            inbox.put(msg)

    def _end(self) -> None:
        for inbox in self._inboxes:
            inbox.end()

    # ------------------------------------------------------------ actions

    async def send(self, type_: str, **fields: Any) -> Message:
        """Send a frame of `type_` for this session with a fresh ref (unless `ref=` is
        given) and return its answer (`Ack`, `OrderMsg`, …); a refusal raises
        `LivecartError`. `unavailable` is retried with the same ref. A `bid`, `buy` or
        `buy_now` says when its viewer pressed (`video_at`) once a delay was reported."""
        if type_ in _PRESSED and "video_at" not in fields:
            pressed = self.video_at()
            if pressed is not None:
                fields["video_at"] = pressed
        return await self.client.request(type_, session=self.id, **fields)

    async def delay(self, ms: int) -> bool:
        """Report how far this viewer's picture is behind the studio (ms, from the player's
        program-date-time; SPEC §12). Reported again after every re-join; from now on bids
        and buys carry the picture time they were made at (`video_at`). False when offline
        (it is sent with the next join)."""
        self.delay_ms = ms
        return await self.post("delay", ms=ms)

    def video_at(self) -> int | None:
        """The picture time now (epoch ms on the server's clock), None without a delay."""
        if self.delay_ms is None:
            return None
        return round(self.client.now() * 1000) - self.delay_ms

    async def post(self, type_: str, **fields: Any) -> bool:
        """Send a frame that gets no answer (`like`, `signal`, `delay`…); False when offline
        (it is not queued)."""
        return await self.client.send(type_, session=self.id, **fields)

    async def chat(self, text: str, *, ref: str | None = None) -> int:
        """Post a chat message; returns its offset. A message held for review raises
        `LivecartError` with code `held`."""
        frame = {"type": "chat", "session": self.id, "text": text, "ref": ref or ""}
        ack = await self.client._request(frame, _CHAT_ANSWERS)
        offset = _field(ack, "offset")
        return int(offset) if offset is not None else 0

    async def buy(self, offer: str, qty: int = 1, *, ref: str | None = None) -> dict[str, Any]:
        """Buy `qty` units of `offer`; returns the order (a reserved order's fields). A
        refusal raises `LivecartError` with the code (`sold_out`, `limit_reached`, …)."""
        fields: dict[str, Any] = {"offer": offer, "qty": qty}
        if ref is not None:
            fields["ref"] = ref
        answer = await self.send("buy", **fields)
        order = _field(answer, "order")
        if not isinstance(order, dict):
            raise LivecartError("bad_frame", f"unexpected answer to buy: {answer!r}")
        return order

    async def bid(
        self, auction: str, amount: int, *, max: int | None = None, ref: str | None = None
    ) -> Message:
        """Bid `amount` (minor units) on `auction`; with `max`, a proxy bid up to it (SPEC
        §11). Returns the `ack`; a refusal raises `LivecartError` (`bid_too_low`, …)."""
        fields: dict[str, Any] = {"auction": auction, "amount_cents": amount}
        if max is not None:
            fields["max_cents"] = max
        if ref is not None:
            fields["ref"] = ref
        return await self.send("bid", **fields)

    async def like(self, count: int = 1) -> bool:
        return await self.post("like", count=count)

    async def signal(self, name: str, product: str | None = None) -> bool:
        """`product_click`, `add_to_cart` or `share` (feeds ranking)."""
        fields: dict[str, Any] = {"name": name}
        if product is not None:
            fields["product"] = product
        return await self.post("signal", **fields)

    async def report(self, offset: int, reason: str) -> Message:
        return await self.send("report", offset=offset, reason=reason)

    async def leave(self) -> None:
        """Leave the session: no more events, and no resume on reconnect."""
        await self.client.leave(self.id)


class LivecartClient:
    """One connection to a livecart node (see the module's docstring).

    `url` is the WebSocket URL (`ws://host:port/ws`); `token` a JWT (none: a guest).
    `token_provider` (an async function returning a fresh token) is called
    `refresh_margin_s` before the token in force expires (or at half its life, if sooner)
    and when the server says it expired; the new token is sent with `auth`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        refresh_margin_s: float = 30.0,
        reconnect_initial_s: float = 0.25,
        reconnect_max_s: float = 10.0,
        retry_for_s: float = 30.0,
        answer_timeout_s: float | None = None,
        resend_after_s: float = 10.0,
        open_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        **ws_options: Any,
    ) -> None:
        self.url = url
        self.token = token
        self.token_provider = token_provider
        self.refresh_margin_s = refresh_margin_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.retry_for_s = retry_for_s
        self.answer_timeout_s = answer_timeout_s
        self.resend_after_s = resend_after_s
        self.open_timeout_s = open_timeout_s
        self.ping_interval_s = ping_interval_s
        self.ws_options = ws_options
        self.hello: m.Hello | None = None
        # The server's clock minus ours (s), from the last `hello` (its `server_time`).
        self.clock_offset_s = 0.0
        self.connections = 0  # connections that got as far as `hello`
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers = _Handlers(self._tasks)
        self._rooms: dict[str, Room] = {}
        self._requests: dict[str, _Request] = {}
        self._ws: ClientConnection | None = None  # set once `hello` arrived
        self._runner: asyncio.Task[None] | None = None
        self._first: asyncio.Future[m.Hello] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._auth_waiter: asyncio.Future[m.Hello] | None = None
        self._closed = False
        self._feed_on = False
        self._attempt = 0
        self._ref_base = secrets.token_hex(4)
        self._refs = itertools.count(1)

    # ------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def rooms(self) -> dict[str, Room]:
        return dict(self._rooms)

    def on(self, type_: str, handler: Handler) -> Callable[[], None]:
        """Call `handler(message)` for every server message of `type_` (a room's log events
        once delivered, answers, `feed`, `trending`, `error`, `order`s nobody waits for, …)
        and for the client's own events: `open` (a connection said `hello`), `offline`
        (`Offline`: closed, next attempt in …), `unauthorized` (4001 and no way to a new
        token), `retry` (an `unavailable` answer being retried with the same ref). `"*"` gets
        every message. Returns a function that removes the handler."""
        return self._handlers.add(type_, handler)

    async def connect(self) -> m.Hello:
        """Open the connection and wait for `hello`. A first connection that fails raises
        (`LivecartError` `unavailable`, or `unauthorized` for a refused token); after that
        the client reconnects by itself until `close`."""
        if self._closed:
            raise LivecartError("closed", "the client was closed")
        if self._runner is not None and not self._runner.done():
            if self.hello is not None:
                return self.hello
            assert self._first is not None
            return await asyncio.shield(self._first)  # a connect already under way
        first: asyncio.Future[m.Hello] = asyncio.get_running_loop().create_future()
        self._first = first
        self._runner = asyncio.create_task(self._run(first), name="livecart-client")
        hello = await asyncio.shield(first)
        self._schedule_refresh()
        return hello

    async def join(self, session: str) -> Room:
        """Join `session` and return its `Room` once the snapshot (`joined`) is in; a refusal
        raises `LivecartError` (`not_found`, `limit_reached`, …). Joining again returns the
        same room. Connects first if `connect` was not called."""
        if self._runner is None or self._runner.done():
            await self.connect()
        room = self._rooms.get(session)
        if room is not None and room.joined:
            return room
        if room is None:
            room = self._rooms[session] = Room(self, session)
        if room._waiter is None or room._waiter.done():
            room._waiter = asyncio.get_running_loop().create_future()
        waiter = room._waiter
        await self._send_join(room)
        try:
            return await waiter
        except BaseException:
            if not room.joined:
                self._rooms.pop(session, None)
            raise

    async def leave(self, session: str) -> None:
        room = self._rooms.pop(session, None)
        if room is not None:
            room.joined = False
            room._end()
            await self._send({"type": "leave", "session": session})

    async def feed(self, on: bool = True) -> None:
        """Turn the personal feed on (`feed` and `trending` messages now and on every change,
        kept across reconnects) or off."""
        self._feed_on = on
        await self._send({"type": "feed", "on": on})

    async def auth(self, token: str) -> m.Hello:
        """Refresh the token in force (same user) with the `auth` frame; returns the
        server's `hello`. A token the server refuses raises `LivecartError`
        (`unauthorized`, or `forbidden` for another user) and changes nothing."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[m.Hello] = loop.create_future()
        self._auth_waiter = waiter
        if not await self._send({"type": "auth", "token": token}):
            self.token = token  # offline: the next connection signs in with it
        try:
            async with asyncio.timeout(self.answer_timeout_s or 30.0):
                hello = await waiter
        except TimeoutError:
            raise LivecartError("timeout", "no answer to auth") from None
        finally:
            if self._auth_waiter is waiter:
                self._auth_waiter = None
        self.token = token
        self._schedule_refresh()
        return hello

    def now(self) -> float:
        """The time on the server's clock (epoch s), as its last `hello` told it."""
        return time.time() + self.clock_offset_s

    async def request(self, type_: str, **fields: Any) -> Message:
        """Send a frame that is answered by ref (`ack`, `order`, `held` or `error`) with a
        fresh ref unless `ref=` is given; returns the answer, raises `LivecartError` for a
        refusal; retries `unavailable` with the same ref, across reconnects too."""
        frame = {"type": type_, **fields}
        return await self._request(frame, _ANSWERS)

    async def send(self, type_: str, **fields: Any) -> bool:
        """Send a frame without waiting for an answer; False when offline (not queued)."""
        return await self._send({"type": type_, **fields})

    async def ping(self) -> Message:
        return await self.request("ping")

    async def close(self) -> None:
        """Close the connection for good: requests still waiting raise `closed`."""
        self._closed = True
        for task in (self._refresher, self._runner):
            if task is not None:
                task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._refresher, self._runner):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._fail_all(LivecartError("closed", "the client was closed"))
        for room in self._rooms.values():
            room._end()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> LivecartClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ requests

    def new_ref(self, prefix: str = "r") -> str:
        return f"{prefix}-{self._ref_base}-{next(self._refs)}"

    async def _request(self, frame: dict[str, Any], answers: frozenset[str]) -> Message:
        if self._closed:
            raise LivecartError("closed", "the client was closed")
        ref = frame.get("ref") or self.new_ref(str(frame["type"])[:8])
        frame["ref"] = ref
        if ref in self._requests:
            raise LivecartError("duplicate", f"ref {ref!r} is already waiting for its answer")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        req = _Request(frame, future, time.monotonic() + self.retry_for_s, answers)
        self._requests[ref] = req
        try:
            await self._send(frame)  # offline: it goes out once the connection is back
            if self.answer_timeout_s is None:
                return await self._answered(req)
            try:
                async with asyncio.timeout(self.answer_timeout_s):
                    return await self._answered(req)
            except TimeoutError:
                raise LivecartError("timeout", "no answer in time", ref=ref) from None
        finally:
            if self._requests.get(ref) is req:
                del self._requests[ref]
            if req.timer is not None:
                req.timer.cancel()

    async def _answered(self, req: _Request) -> Message:
        """The request's answer. One that does not come within `resend_after_s` while
        connected (an answer lost on its way) is asked for again: the same frame, same ref,
        which the server answers with the first attempt's result."""
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(req.future), self.resend_after_s)
            except TimeoutError:
                if req.future.done():
                    return req.future.result()
                if req.timer is None:  # not waiting out an `unavailable`
                    log.info("livecart: no answer to %s yet: sending it again", req.frame["ref"])
                    await self._send(req.frame)

    def _answer(self, req: _Request, msg: Message) -> None:
        if req.future.done():
            return
        t = kind(msg)
        if t == "error":
            code = str(_field(msg, "code"))
            retry_ms = _field(msg, "retry_after_ms")
            if code == "unavailable" and time.monotonic() < req.deadline:
                self._retry_later(req, retry_ms)
                self._handlers.emit("retry", msg)
                return
            req.future.set_exception(
                LivecartError(
                    code,
                    str(_field(msg, "message") or ""),
                    ref=req.frame["ref"],
                    retry_after_ms=retry_ms,
                    reply=msg,
                )
            )
        elif t == "held":
            req.future.set_exception(
                LivecartError(
                    "held", str(_field(msg, "reason") or ""), ref=req.frame["ref"], reply=msg
                )
            )
        else:
            req.future.set_result(msg)

    def _retry_later(self, req: _Request, retry_after_ms: int | None) -> None:
        """`unavailable`: the same frame, same ref, after the server's hint or a backoff."""
        req.tries += 1
        backoff = min(self.reconnect_max_s, self.reconnect_initial_s * 2.0 ** min(req.tries, 8))
        delay = (retry_after_ms / 1000.0) if retry_after_ms else backoff
        delay *= 1.0 + random.random() * 0.2
        delay = max(0.0, min(delay, req.deadline - time.monotonic()))

        def again() -> None:
            req.timer = None
            if not req.future.done():
                self._spawn(self._send(req.frame))

        if req.timer is not None:
            req.timer.cancel()
        req.timer = asyncio.get_running_loop().call_later(delay, again)

    def _fail_all(self, error: LivecartError) -> None:
        for req in list(self._requests.values()):
            if not req.future.done():
                req.future.set_exception(error)
        for room in self._rooms.values():
            if room._waiter is not None and not room._waiter.done():
                room._waiter.set_exception(error)
        if self._auth_waiter is not None and not self._auth_waiter.done():
            self._auth_waiter.set_exception(error)

    def _expire_offline(self) -> None:
        """Requests that waited offline past their retry time fail with `unavailable`."""
        now = time.monotonic()
        for req in list(self._requests.values()):
            if now >= req.deadline and not req.future.done():
                req.future.set_exception(
                    LivecartError("unavailable", "not connected", ref=req.frame["ref"])
                )

    # ------------------------------------------------------------ connection

    def _ws_url(self) -> str:
        if not self.token:
            return self.url
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}token={quote(self.token, safe='')}"

    async def _send(self, frame: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(_encoder.encode(frame).decode())
        except ConnectionClosed:
            return False
        return True

    async def _join_later(self, room: Room, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._rooms.get(room.id) is room:
            await self._send_join(room)

    async def _send_join(self, room: Room) -> bool:
        frame: dict[str, Any] = {"type": "join", "session": room.id}
        if room.epoch is not None:
            frame["since"] = {"epoch": room.epoch, "offset": room.offset}
        return await self._send(frame)

    async def _run(self, first: asyncio.Future[m.Hello]) -> None:
        """Connect, read, reconnect with backoff, until closed."""
        while not self._closed:
            code, reason = 1006, ""
            try:
                async with connect(
                    self._ws_url(),
                    open_timeout=self.open_timeout_s,
                    ping_interval=self.ping_interval_s,
                    max_size=None,
                    **self.ws_options,
                ) as ws:
                    try:
                        async for raw in ws:
                            await self._on_frame(ws, raw, first)
                    finally:
                        if ws.close_code is not None:
                            code, reason = ws.close_code, ws.close_reason or ""
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as exc:
                if exc.rcvd is not None:
                    code, reason = exc.rcvd.code, exc.rcvd.reason
            except Exception as exc:
                log.debug("livecart connection failed: %s", exc)
                reason = str(exc)
                if not first.done():
                    first.set_exception(LivecartError("unavailable", str(exc)))
                    return
            finally:
                self._ws = None
            if self._closed:
                return
            if code == 4001:
                if not await self._after_unauthorized(first):
                    return
                continue
            if not first.done():
                first.set_exception(LivecartError("unavailable", f"closed with {code}"))
                return
            self._expire_offline()
            wait = self._backoff(code)
            self._handlers.emit(
                "offline", Offline(code=code, reason=reason, retry_in_ms=int(wait * 1000))
            )
            await asyncio.sleep(wait)

    def _backoff(self, code: int) -> float:
        """Exponential, with jitter: half fixed, half random. A planned restart (1001) comes
        back fast; a flooding close (4008) waits longer."""
        base = self.reconnect_initial_s * (0.5 if code == 1001 else 8.0 if code == 4008 else 1.0)
        delay = min(self.reconnect_max_s, base * 2.0 ** min(self._attempt, 16))
        self._attempt += 1
        return delay * (0.5 + random.random() * 0.5)

    async def _after_unauthorized(self, first: asyncio.Future[m.Hello]) -> bool:
        """Closed with 4001: with a token provider, connect again with a fresh token; else
        fail what waits and stop."""
        if self.token_provider is not None:
            try:
                self.token = await self.token_provider()
                await asyncio.sleep(self._backoff(4001))
                return True
            except Exception as exc:
                log.warning("livecart token provider failed: %s", exc)
        error = LivecartError("unauthorized", "the server refused the token (4001)")
        if not first.done():
            first.set_exception(error)
        self._handlers.emit("error", m.ErrorMsg(code="unauthorized", message=str(error)))
        self._handlers.emit("unauthorized", {"code": 4001, "reason": "unauthorized"})
        self._closed = True
        self._fail_all(error)
        for room in self._rooms.values():
            room._end()
        return False

    async def _on_frame(
        self, ws: ClientConnection, raw: str | bytes, first: asyncio.Future[m.Hello]
    ) -> None:
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            log.warning("livecart: a frame that is not JSON: %r", raw[:200])
            return
        items = data if isinstance(data, list) else [data]
        decoded = [to_message(x) for x in items if isinstance(x, dict)]
        # Huge-room sampling: a frame that announces skipped chat may leave gaps in its chat.
        sampled = {str(_field(x, "session")) for x in decoded if kind(x) == "chat_sampled"}
        for msg in decoded:
            if kind(msg) == "hello":
                await self._on_hello(ws, msg, first)
                continue
            try:
                self._dispatch(msg, sampled)
            except Exception:  # a message of a shape this client did not expect
                log.exception("livecart: could not handle %r", msg)

    async def _on_hello(
        self, ws: ClientConnection, hello: Message, first: asyncio.Future[m.Hello]
    ) -> None:
        self.hello = hello
        server_time = _field(hello, "server_time")
        if isinstance(server_time, int) and server_time > 0:
            self.clock_offset_s = server_time / 1000 - time.time()
        waiter = self._auth_waiter
        if self._ws is ws:  # an answer to `auth` on this connection
            if waiter is not None and not waiter.done():
                waiter.set_result(hello)
            self._handlers.emit("hello", hello)
            return
        # A new connection: resume everything, then let requests through.
        self._ws = ws
        self._attempt = 0
        self.connections += 1
        for room in list(self._rooms.values()):
            room._resyncing = False
            await self._send_join(room)
        if self._feed_on:
            await self._send({"type": "feed", "on": True})
        for req in list(self._requests.values()):
            if not req.future.done():
                if req.timer is not None:
                    req.timer.cancel()
                    req.timer = None
                await self._send(req.frame)
        if waiter is not None and not waiter.done():
            waiter.set_result(hello)  # `auth` sent offline: this connection used its token
        if not first.done():
            first.set_result(hello)
        self._handlers.emit("hello", hello)
        self._handlers.emit("open", hello)

    def _dispatch(self, msg: Message, sampled: set[str]) -> None:
        """A message to its room (if it names a joined session), to the request waiting for
        its ref, and to the client's handlers; a log event only once and in order."""
        t = kind(msg)
        session = _field(msg, "session")
        room = self._rooms.get(session) if isinstance(session, str) else None
        if t == "joined":
            if room is not None:
                self._joined(room, msg)
            self._handlers.emit(t, msg)
            return
        if room is not None and t in m.ROOM_EVENT_TYPES and isinstance(_field(msg, "offset"), int):
            if self._room_event(room, t, msg, room.id in sampled):
                self._handlers.emit(t, msg)
            return
        ref = _field(msg, "ref") if t in _ANSWERS else None
        if t == "error" and ref is None:
            self._unanswered_error(msg, room)
        if ref is not None:
            req = self._requests.get(str(ref))
            if req is not None and t in req.answers:
                self._answer(req, msg)
        if room is not None:
            if t == "viewers":
                room.viewers = int(_field(msg, "count"))
            elif t == "likes":
                room.likes = int(_field(msg, "total"))
            elif t == "stock":
                room.stock[str(_field(msg, "offer"))] = int(_field(msg, "remaining"))
            room._emit(t, msg)
        self._handlers.emit(t, msg)

    def _unanswered_error(self, msg: Message, room: Room | None) -> None:
        code = str(_field(msg, "code"))
        waiter = self._auth_waiter
        if waiter is not None and not waiter.done() and code in ("unauthorized", "forbidden"):
            waiter.set_exception(LivecartError(code, str(_field(msg, "message") or "")))
            return
        if room is not None and room._waiter is not None and not room._waiter.done():
            room._waiter.set_exception(LivecartError(code, str(_field(msg, "message") or "")))
            return
        if room is not None and room.joined and code in ("unavailable", "rate_limited"):
            # A resume (or gap fill) the node could not serve now: ask again in a moment.
            retry_ms = _field(msg, "retry_after_ms")
            delay = retry_ms / 1000.0 if retry_ms else self._backoff(1006)
            self._spawn(self._join_later(room, delay))
            return
        if code == "unauthorized" and self.token_provider is not None:
            self._spawn(self._refresh_now())  # the token in force expired: a fresh one

    def _joined(self, room: Room, msg: Message) -> None:
        before = room.position
        first = before is None
        resync = before is not None and (msg.epoch != before.epoch or not msg.recovered)
        if first or resync:
            room.epoch, room.offset = msg.epoch, msg.offset
        room.state = msg.state
        room.viewers, room.likes = msg.state.viewers, msg.state.likes
        room.stock = {
            str(o["id"]): int(o.get("remaining", 0)) for o in msg.state.offers if "id" in o
        }
        room._resyncing = False
        room.joined = True
        if room.delay_ms is not None:  # a new connection starts at delay 0: report again
            self._spawn(room.post("delay", ms=room.delay_ms))
        if room._waiter is not None and not room._waiter.done():
            room._waiter.set_result(room)
        room._emit("joined", msg)
        if resync and before is not None:
            room._emit(
                "resync",
                Resync(
                    session=room.id,
                    epoch=msg.epoch,
                    offset=msg.offset,
                    state=msg.state,
                    previous=before,
                    new_epoch=msg.epoch != before.epoch,
                    joined=msg,
                ),
            )

    def _room_event(self, room: Room, t: str, msg: Message, sampled: bool) -> bool:
        """Deliver a log event once, in order (True when delivered); a gap re-joins from the
        last offset delivered."""
        offset = int(_field(msg, "offset"))
        if room._resyncing or offset <= room.offset:
            return False  # the re-join's replay brings it, or it was delivered already
        if offset != room.offset + 1 and not (sampled and t == "chat"):
            log.info(
                "livecart: gap in %s after %d (got %d): re-joining", room.id, room.offset, offset
            )
            room._resyncing = True
            self._spawn(self._send_join(room))
            return False
        room.offset = offset
        room._emit(t, msg)
        return True

    # ------------------------------------------------------------ tokens

    def _schedule_refresh(self) -> None:
        if self.token_provider is None or self._closed:
            return
        if self._refresher is not None and not self._refresher.done():
            if self._refresher is asyncio.current_task():
                return
            self._refresher.cancel()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="livecart-refresh")

    async def _refresh_loop(self) -> None:
        while not self._closed:
            exp = token_expiry(self.token or "")
            if exp is None:
                return
            left = exp - time.time()
            await asyncio.sleep(max(0.0, left - min(self.refresh_margin_s, left / 2)))
            await self._refresh_now()

    async def _refresh_now(self) -> None:
        assert self.token_provider is not None
        try:
            await self.auth(await self.token_provider())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("livecart token refresh failed: %s", exc)
            self._handlers.emit("error", m.ErrorMsg(code="unauthorized", message=str(exc)))
            await asyncio.sleep(1.0)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
