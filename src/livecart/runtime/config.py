"""Settings: one Struct, filled from defaults, then `LIVECART_*` / well-known env vars, then flags."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..redisconn import CLUSTER_SCHEME, cluster_nodes, is_cluster


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    """Address the HTTP/WebSocket server binds to."""
    port: int = 8000
    """TCP port; 0 picks a free one (the ready line tells which)."""
    data_dir: str = ".livecart"
    """Directory for the embedded PostgreSQL data and the generated JWT secret."""
    database_url: str = ""
    """PostgreSQL URL; empty starts the embedded PostgreSQL inside data_dir."""
    redis_url: str = ""
    """Redis URL for cluster mode (`redis://…`, or `redis+cluster://H:P,H:P` for a Redis
    Cluster); empty uses the in-process bus (single node)."""
    jwt_secret: str = ""
    """HS256 secret (at least 32 bytes); empty generates one and keeps it in data_dir."""
    jwt_algorithms: str = "HS256"
    """Token algorithms accepted, comma-separated: HS256, RS256, ES256, EdDSA."""
    jwt_public_key: str = ""
    """PEM public key (or a path to a PEM file) for RS256/ES256/EdDSA tokens."""
    jwt_jwks_url: str = ""
    """JWKS URL for RS256/ES256/EdDSA tokens; keys are cached and refetched on an unknown kid."""
    jwt_issuer: str = ""
    """Required `iss` of tokens; empty accepts any."""
    jwt_audience: str = ""
    """Required `aud` of tokens; empty accepts tokens without one."""
    auth_grace_s: float = 30.0
    """After a WebSocket's token expires (it is told `unauthorized`), time to send a fresh
    `auth` before it is closed with 4001."""
    max_joined_sessions: int = 20
    """Sessions one WebSocket connection may have joined at once (more get limit_reached)."""
    workers: int = 1
    """Worker processes (more than one needs redis_url)."""
    node_id: str = ""
    """Name of this node in logs and metrics; empty picks host-pid."""
    history_size: int = 1000
    """Room events kept per session for recovery."""
    history_ttl_s: float = 600.0
    """Age after which room events leave the recovery window."""
    recent_chat: int = 50
    """Chat messages included in the join snapshot."""
    outbox_max_bytes: int = 1 << 20
    """Bytes queued for one connection before it is closed with 4009."""
    outbox_max_age_s: float = 10.0
    """Age of the oldest queued frame before the connection is closed with 4009."""
    socket_send_buffer: int = 256 * 1024
    """Kernel send buffer per client socket (bytes; 0 keeps the OS's autotuning), so a stalled
    client backs up into the bounded outbox instead of megabytes of kernel memory."""
    max_frame_bytes: int = 16 * 1024
    """Largest client frame accepted (larger gets too_large)."""
    ws_max_fragments: int = 64
    """Frames one WebSocket message may span (more closes with 1009); each also counts toward
    the flood limit and is charged 64 bytes besides its payload against the message size."""
    max_header_bytes: int = 16 * 1024
    """Largest HTTP request line + headers, REST and WebSocket upgrades alike: the request is
    answered 431 and the connection closed as soon as more arrives."""
    handshake_timeout_s: float = 10.0
    """Time a client has to send a request's line and headers (from connecting, or from the
    first byte of a later request on the connection), WebSocket upgrades included; past it
    the connection is closed."""
    coalesce_interval_s: float = 0.2
    """Interval of coalesced state events (viewers, likes, stock) per session."""
    fanout_tick_s: float = 0.05
    """A busy room sends its events at most once per tick, as one frame shared by all its
    viewers; an idle room sends at once."""
    fanout_writes_per_s: int = 50_000
    """Frames a busy room writes per second on this node, at most: a room with many viewers
    here stretches its tick (local viewers / this, up to 0.25 s) so that each frame carries
    more events (0 keeps fanout_tick_s for every room)."""
    chat_display_budget: float = 30.0
    """Chat messages per second a viewer is shown; above it a huge room sends each viewer a
    fair sample, announced with chat_sampled (0 turns sampling off)."""
    ws_deflate: bool = False
    """Offer permessage-deflate to WebSocket clients. Compression is per connection, so
    frames to such clients leave the shared fast path (see docs/scaling.md for its cost)."""
    max_viewer_delay_ms: int = 15_000
    """Largest video delay a viewer may report (`delay` frame; more is bad_frame). Room events
    reach a viewer this late at most, and offers and auctions keep taking buys and bids made
    at an earlier video time for this long (plus trip_allowance_ms) after they end (SPEC §12)."""
    trip_allowance_ms: int = 1_000
    """How much earlier than its arrival minus the viewer's delay a buy or bid may be judged
    when it says when the viewer pressed (`video_at`): the trip from the player to the node,
    given back so a bid sent just before the end in the viewer's picture counts. A client
    gains at most this much, never beyond its reported delay; offers and auctions are settled
    this much later too (0 turns it off: `video_at` is then ignored)."""
    delay_bucket_ms: int = 250
    """Viewers whose delays round to the same multiple of this share one delayed frame."""
    reservation_ttl_s: float = 600.0
    """How long a reserved order holds stock before it expires unless confirmed."""
    second_chance_ttl_s: float = 300.0
    """How long a second chance (SPEC §11) stays open to the bidder it is offered to before
    it passes to the next bidder down (the unit returns to stock when nobody is left)."""
    webhook_url: str = ""
    """Merchant endpoint for order/offer webhooks; empty disables delivery (events queue)."""
    webhook_secret: str = ""
    """HMAC-SHA256 key for webhook signatures (required with webhook_url)."""
    rest_rate_per_s: float = 20.0
    """REST requests per second under /api/ per identity (per client IP for guests), token
    bucket refill; beyond it 429 rate_limited with Retry-After. Per node. 0 turns it off."""
    rest_burst: int = 100
    """REST requests an identity (or guest IP) may send at once before rest_rate_per_s applies."""
    frame_ancestors: str = "'none'"
    """CSP frame-ancestors of the pages: who may embed them in a frame ('none', or sources
    such as "'self' https://shop.example")."""
    chat_rate_per_s: float = 1.0
    """Chat messages per second per user (token bucket refill)."""
    chat_burst: int = 5
    """Chat messages a user may send at once before the rate applies."""
    flood_frames: int = 20
    """Frames within flood_window_s after which a connection is closed with 4008."""
    flood_window_s: float = 2.0
    """Window of the flood detector."""
    db_pool_min: int = 2
    """Minimum PostgreSQL connections per node."""
    db_pool_max: int = 10
    """Maximum PostgreSQL connections per node."""
    log_level: str = "info"
    """debug, info, warning or error."""
    log_format: str = "auto"
    """json, text, or auto (text on a terminal, json otherwise)."""
    drain_grace_s: float = 1.0
    """After SIGTERM, time /readyz fails while sockets stay open, so a load balancer stops
    sending new clients before they are closed with 1001."""
    drain_timeout_s: float = 6.0
    """Time allowed for in-flight work after SIGTERM before exit."""

    def validate(self) -> Settings:
        problems: list[str] = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.workers < 1:
            problems.append(f"workers must be >= 1, got {self.workers}")
        if self.workers > 1 and not self.redis_url:
            problems.append(
                "workers > 1 needs redis_url (REDIS_URL): the in-process bus is per process"
            )
        if not 0 <= self.max_viewer_delay_ms <= 3_600_000:
            problems.append(
                f"max_viewer_delay_ms must be 0..3600000, got {self.max_viewer_delay_ms}"
            )
        if not 0 <= self.trip_allowance_ms <= 5_000:
            problems.append(f"trip_allowance_ms must be 0..5000, got {self.trip_allowance_ms}")
        if not 10 <= self.delay_bucket_ms <= 10_000:
            problems.append(f"delay_bucket_ms must be 10..10000, got {self.delay_bucket_ms}")
        if self.history_size < 1:
            problems.append(f"history_size must be >= 1, got {self.history_size}")
        if self.history_ttl_s <= 0:
            problems.append(f"history_ttl_s must be > 0, got {self.history_ttl_s}")
        if self.outbox_max_bytes < 64 * 1024:
            problems.append(f"outbox_max_bytes must be >= 65536, got {self.outbox_max_bytes}")
        if self.max_frame_bytes < 1024:
            problems.append(f"max_frame_bytes must be >= 1024, got {self.max_frame_bytes}")
        if self.ws_max_fragments < 1:
            problems.append(f"ws_max_fragments must be >= 1, got {self.ws_max_fragments}")
        if self.max_header_bytes < 1024:
            problems.append(f"max_header_bytes must be >= 1024, got {self.max_header_bytes}")
        if self.handshake_timeout_s <= 0:
            problems.append(f"handshake_timeout_s must be > 0, got {self.handshake_timeout_s}")
        if self.db_pool_min < 1 or self.db_pool_max < self.db_pool_min:
            problems.append("db_pool_min must be >= 1 and db_pool_max >= db_pool_min")
        if self.log_level not in ("debug", "info", "warning", "error"):
            problems.append(f"log_level must be debug|info|warning|error, got {self.log_level!r}")
        if self.log_format not in ("auto", "json", "text"):
            problems.append(f"log_format must be auto|json|text, got {self.log_format!r}")
        if self.database_url and not self.database_url.startswith(("postgres://", "postgresql://")):
            problems.append("database_url must start with postgresql://")
        if self.redis_url and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://", CLUSTER_SCHEME)
        ):
            problems.append(
                "redis_url must start with redis://, rediss://, unix:// or redis+cluster://"
            )
        elif is_cluster(self.redis_url):
            try:
                cluster_nodes(self.redis_url)
            except ValueError as exc:
                problems.append(f"redis_url: {exc}")
        if self.chat_rate_per_s <= 0 or self.chat_burst < 1:
            problems.append("chat_rate_per_s must be > 0 and chat_burst >= 1")
        if self.flood_frames < 2 or self.flood_window_s <= 0:
            problems.append("flood_frames must be >= 2 and flood_window_s > 0")
        if not 0 <= self.drain_grace_s <= 5:
            problems.append("drain_grace_s must be between 0 and 5 (exit stays within 10 s)")
        if not 0 <= self.fanout_tick_s <= 1:
            problems.append(f"fanout_tick_s must be between 0 and 1, got {self.fanout_tick_s}")
        if self.fanout_writes_per_s < 0:
            problems.append("fanout_writes_per_s must be >= 0 (0 keeps fanout_tick_s)")
        if self.chat_display_budget < 0:
            problems.append("chat_display_budget must be >= 0 (0 turns sampling off)")
        if self.reservation_ttl_s <= 0:
            problems.append(f"reservation_ttl_s must be > 0, got {self.reservation_ttl_s}")
        if self.second_chance_ttl_s <= 0:
            problems.append(f"second_chance_ttl_s must be > 0, got {self.second_chance_ttl_s}")
        if self.webhook_url and not self.webhook_secret:
            problems.append("webhook_url needs webhook_secret (LIVECART_WEBHOOK_SECRET)")
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            problems.append("webhook_url must start with http:// or https://")
        if self.rest_rate_per_s < 0 or self.rest_burst < 1:
            problems.append("rest_rate_per_s must be >= 0 (0 is off) and rest_burst >= 1")
        if not self.frame_ancestors.strip() or any(
            c in ";," or not " " <= c <= "~" for c in self.frame_ancestors
        ):
            problems.append(
                "frame_ancestors must be CSP sources (printable ASCII, without ';' or ',')"
            )
        problems += self._token_problems()
        if self.auth_grace_s <= 0:
            problems.append(f"auth_grace_s must be > 0, got {self.auth_grace_s}")
        if self.max_joined_sessions < 1:
            problems.append(f"max_joined_sessions must be >= 1, got {self.max_joined_sessions}")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return self

    def _token_problems(self) -> list[str]:
        problems: list[str] = []
        algorithms = [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]
        unknown = [a for a in algorithms if a not in ("HS256", "RS256", "ES256", "EdDSA")]
        if not algorithms or unknown:
            problems.append(
                "jwt_algorithms (LIVECART_JWT_ALGORITHMS) must list HS256, RS256, ES256 or EdDSA"
            )
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"jwt_secret (LIVECART_JWT_SECRET) must be at least {MIN_SECRET_BYTES} bytes"
            )
        if any(a != "HS256" for a in algorithms) and not (self.jwt_public_key or self.jwt_jwks_url):
            problems.append(
                "RS256/ES256/EdDSA need jwt_public_key (LIVECART_JWT_PUBLIC_KEY) "
                "or jwt_jwks_url (LIVECART_JWT_JWKS_URL)"
            )
        if self.jwt_public_key and self.jwt_jwks_url:
            problems.append("set jwt_public_key or jwt_jwks_url, not both")
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith(("http://", "https://")):
            problems.append("jwt_jwks_url must start with http:// or https://")
        return problems


MIN_SECRET_BYTES = 32

# Env names that deployments already use without the LIVECART_ prefix.
_PLAIN_ENV = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}


def env_name(field: str) -> str:
    return _PLAIN_ENV.get(field, "LIVECART_" + field.upper())


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults < environment < explicit overrides (CLI flags); None overrides are ignored."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        value = env.get(env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return settings.validate()


def node_name(settings: Settings) -> str:
    import socket

    return settings.node_id or f"{socket.gethostname()}-{os.getpid()}"


def jwt_secret(settings: Settings) -> str:
    """The configured secret, or the one kept in the data dir (created on first use)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.data_dir) / "jwt_secret"
    if path.exists():
        secret = path.read_text().strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"invalid configuration: the JWT secret in {path} is shorter than "
                f"{MIN_SECRET_BYTES} bytes; set jwt_secret (LIVECART_JWT_SECRET) or remove the file"
            )
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


def reference() -> str:
    """docs/configuration.md, generated from the Settings definition (its field docstrings)."""
    import ast
    import inspect
    import itertools

    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    defaults = Settings()
    lines = [
        "# Configuration",
        "",
        "Every setting comes from, in rising precedence: its default, the environment, a",
        "command-line flag (`livecart serve --help`). Bad values stop the start with a message",
        "naming the setting. Generated by `python -m livecart.runtime.config`; a test keeps it current.",
        "",
        "| setting | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for field in msgspec.structs.fields(Settings):
        default = getattr(defaults, field.name)
        shown = f"`{default}`" if default != "" else "(empty)"
        lines.append(
            f"| {field.name} | `{env_name(field.name)}` | {shown} | {docs.get(field.name, '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
