"""Identities from JWTs and the one permission table (SPEC §2) used by REST and WebSocket."""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hmac
import logging
import re
import time
from typing import Any, Literal

import jwt
import msgspec

from .text import is_line

Role = Literal["guest", "viewer", "creator", "moderator", "admin"]
TOKEN_ROLES: tuple[Role, ...] = ("viewer", "creator", "moderator", "admin")
_SUB = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
log = logging.getLogger("livecart.auth")


class Identity(msgspec.Struct, frozen=True):
    sub: str
    name: str
    role: Role
    minor: bool = False

    @property
    def is_guest(self) -> bool:
        return self.role == "guest"


def guest(conn_id: str) -> Identity:
    return Identity(sub=f"guest-{conn_id}", name="guest", role="guest")


class AuthError(Exception):
    """The token is missing a claim, expired, forged or malformed (code `unauthorized`)."""


def issue(
    secret: str,
    sub: str,
    role: str,
    *,
    name: str | None = None,
    ttl_s: int = 86400,
    minor: bool = False,
    now: float | None = None,
    issuer: str = "",
    audience: str = "",
) -> str:
    if not _SUB.match(sub):
        raise ValueError("sub must be 1-64 characters of [A-Za-z0-9_-]")
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {', '.join(TOKEN_ROLES)}")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    if name is not None and not (1 <= len(name) <= 64 and is_line(name)):
        raise ValueError("name must be 1-64 characters without control or bidi characters")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "name": name or sub,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_s,
    }
    if minor:
        claims["minor"] = True
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str) -> Identity:
    """An HS256 token checked with `secret` (see `Verifier` for the node's full rule)."""
    return Verifier(secret).verify(token)


MIN_SECRET_BYTES = 32
ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
JWKS_REFETCH_MIN_S = 1.0  # an unknown `kid` refetches the key set at most this often


class KeyMissing(AuthError):
    """The token names a `kid` the cached key set does not hold (yet)."""


_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _plain_hs256_header(segment: str) -> bool:
    """A JOSE header of exactly `alg: HS256` and optionally a string `typ`."""
    try:
        header = msgspec.json.decode(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return False
    return (
        isinstance(header, dict)
        and header.get("alg") == "HS256"
        and isinstance(header.get("typ", ""), str)
        and header.keys() <= {"alg", "typ"}
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Verifier:
    """The node's one token rule (SPEC §10): its algorithms, its key (HS256 secret, PEM
    public key or JWKS keys, cached), issuer and audience when set, and type-checked claims.
    `identify` never does I/O; `identify_async` fetches the JWKS (in a thread) on an unknown
    `kid`, at most once per JWKS_REFETCH_MIN_S."""

    def __init__(
        self,
        secret: str = "",
        *,
        algorithms: tuple[str, ...] = ("HS256",),
        public_key: str = "",
        jwks_url: str = "",
        issuer: str = "",
        audience: str = "",
    ) -> None:
        self.algorithms = list(algorithms)
        self.secret = secret
        self.public_key: Any = None
        if public_key:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            if all(a == "HS256" for a in algorithms):
                raise ValueError("a public key needs an asymmetric algorithm in jwt_algorithms")
            self.public_key = load_pem_public_key(public_key.encode())
        self.issuer = issuer or None
        self.audience = audience or None
        self._jwks: jwt.PyJWKClient | None = None
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._fetching: asyncio.Lock | None = None
        if jwks_url:
            self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=False, timeout=5)
        # The default rule (HS256 only, no issuer or audience) verifies a plain token itself
        # (`_hs256_claims`): most of PyJWT's time per token is its generality. Header
        # segments already found plain are remembered (tokens of one issuer share theirs).
        self._hs256: bytes | None = None
        self._headers: set[str] = set()
        if self.algorithms == ["HS256"] and secret and not self.issuer and not self.audience:
            try:  # the key PyJWT would use; it refuses a secret that looks like a PEM key
                self._hs256 = jwt.get_algorithm_by_name("HS256").prepare_key(secret)
            except jwt.PyJWTError:
                self._hs256 = None

    @classmethod
    def from_settings(cls, settings: Any, secret: str) -> Verifier:
        from .runtime.config import ConfigError

        public_key: str = settings.jwt_public_key
        try:
            if public_key and not public_key.lstrip().startswith("-----"):
                with open(public_key) as f:  # a path to the PEM file
                    public_key = f.read()
            return cls(
                secret,
                algorithms=tuple(
                    a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()
                ),
                public_key=public_key,
                jwks_url=settings.jwt_jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"invalid configuration: jwt_public_key (LIVECART_JWT_PUBLIC_KEY) is not a "
                f"usable PEM public key or file: {exc}"
            ) from None

    def _key(self, token: str) -> tuple[Any, list[str]]:
        if self.algorithms == ["HS256"] and self.secret:
            return self.secret, self.algorithms  # the default: no header to read first
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"algorithm {alg!r} is not accepted")
        if alg == "HS256":
            if not self.secret:
                raise AuthError("HS256 tokens are not accepted")
            return self.secret, [alg]
        if self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise AuthError("token has no kid")
            key = self._keys.get(kid)
            if key is None:
                raise KeyMissing(f"unknown key id {kid!r}")
            return key, [alg]
        if self.public_key is None:
            raise AuthError(f"no key for {alg}")
        return self.public_key, [alg]

    def identify(self, token: str) -> tuple[Identity, float]:
        """The identity and the expiry (epoch seconds) of a valid token, else AuthError."""
        if self._hs256 is not None:
            claims = self._hs256_claims(token)
            if claims is not None:
                return _claims(claims)
        key, algorithms = self._key(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": ["exp", "sub", "role"]
                    + (["iss"] if self.issuer else [])
                    + (["aud"] if self.audience else []),
                    # checked below, as numbers only (PyJWT takes "9999999999" too)
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from None
        return _claims(claims)

    def _hs256_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a plain HS256 token whose signature holds, checked as PyJWT would
        (`identify`'s options), without PyJWT's general machinery; None for anything else (a
        bad signature, another header, an `aud` or `jti` claim, malformed base64 or JSON):
        PyJWT then gives the verdict and its message."""
        if not _COMPACT.fullmatch(token):
            return None
        header, payload, signature = token.split(".")
        if header not in self._headers:
            if not _plain_hs256_header(header):
                return None
            if len(self._headers) >= 64:
                self._headers.clear()
            self._headers.add(header)
        try:
            sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return None
        signed = token[: len(header) + 1 + len(payload)].encode()
        assert self._hs256 is not None
        if not hmac.compare_digest(hmac.digest(self._hs256, signed, "sha256"), sig):
            return None
        try:
            claims = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return None
        if (
            not isinstance(claims, dict)
            or claims.get("exp") is None
            or not isinstance(claims.get("sub"), str)
            or claims.get("role") is None
            or "aud" in claims
            or "jti" in claims
        ):
            return None
        return claims

    def verify(self, token: str) -> Identity:
        return self.identify(token)[0]

    async def identify_async(self, token: str) -> tuple[Identity, float]:
        try:
            return self.identify(token)
        except KeyMissing:
            await self.refresh()
            return self.identify(token)

    def refresh_soon(self) -> None:
        """`refresh` in the background (for callers that cannot wait)."""
        task = asyncio.get_running_loop().create_task(self.refresh())
        _refreshing.add(task)
        task.add_done_callback(_refreshing.discard)

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the JWKS again (in a thread), unless it was fetched under
        JWKS_REFETCH_MIN_S ago."""
        if self._jwks is None:
            return
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            if not force and time.monotonic() - self._fetched_at < JWKS_REFETCH_MIN_S:
                return
            self._fetched_at = time.monotonic()
            try:
                keys = await asyncio.to_thread(self._jwks.get_jwk_set, True)
            except jwt.PyJWTError as exc:
                log.warning("JWKS fetch failed: %s", exc)
                return
            self._keys = {k.key_id: k.key for k in keys.keys if k.key_id}


_refreshing: set[asyncio.Task[None]] = set()


def _claims(claims: dict[str, Any]) -> tuple[Identity, float]:
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise AuthError("exp must be a number")
    now = time.time()
    if exp <= now:
        raise AuthError("Signature has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _number(nbf) or nbf > now):
        raise AuthError("nbf must be a number in the past")
    iat = claims.get("iat")
    if iat is not None and not _number(iat):
        raise AuthError("iat must be a number")
    sub, role, name = claims.get("sub"), claims.get("role"), claims.get("name", claims.get("sub"))
    if not isinstance(sub, str) or not _SUB.match(sub):
        raise AuthError("sub must be 1-64 characters of [A-Za-z0-9_-]")
    if role not in TOKEN_ROLES:
        raise AuthError("unknown role")
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not is_line(name):
        raise AuthError("name must be 1-64 characters without control or bidi characters")
    minor = claims.get("minor", False)
    if not isinstance(minor, bool):
        raise AuthError("minor must be a boolean")
    return Identity(sub=sub, name=name, role=role, minor=minor), float(exp)


class Action(enum.Enum):
    WATCH = "watch"  # join, read chat, feed, trending
    PARTICIPATE = "participate"  # chat, like, buy, bid, report, signal
    MANAGE = "manage"  # products, sessions, start/end, pin, offers, auctions
    MODERATE = "moderate"  # delete, timeout, ban, unban, slow, held queue, blocked terms
    APPOINT = "appoint"  # channel moderators, own creator score
    PLATFORM = "platform"  # global blocked terms: platform staff


def can(
    who: Identity,
    action: Action,
    *,
    owner: str | None = None,
    channel_moderator: bool = False,
) -> bool:
    """SPEC §2. `owner` is the creator owning the target; `channel_moderator` says whether
    that creator appointed `who`."""
    role = who.role
    if action is Action.WATCH:
        return True
    if role == "guest":
        return False
    if action is Action.PARTICIPATE or role == "admin":
        return True
    if action is Action.PLATFORM:
        return role == "moderator"
    own = role == "creator" and owner is not None and owner == who.sub
    if action in (Action.MANAGE, Action.APPOINT):
        return own
    # Action.MODERATE
    return own or role == "moderator" or channel_moderator


def _rank(sub: str, role: str, owner: str, channel_moderator: bool) -> int:
    """Standing in one creator's channel: admin > platform moderator > the channel's creator
    > its channel moderators > everyone else."""
    if role == "admin":
        return 4
    if role == "moderator":
        return 3
    if sub == owner:
        return 2
    return 1 if channel_moderator else 0


def may_act_on(
    who: Identity,
    target: str,
    target_role: str | None,
    *,
    owner: str,
    channel_moderators: set[str] | frozenset[str],
) -> bool:
    """Roles act downwards (SPEC §10): a timeout, ban or deletion by `who` in `owner`'s
    channel may only target someone who stands lower there (an admin may act on anyone).
    `target_role` is the role the target last signed in with (None: never seen: a viewer)."""
    if who.role == "admin":
        return True
    mine = _rank(who.sub, who.role, owner, who.sub in channel_moderators)
    theirs = _rank(target, target_role or "viewer", owner, target in channel_moderators)
    return mine > theirs
