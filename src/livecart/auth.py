"""Identities from JWTs and the one permission table (SPEC §2) used by REST and WebSocket."""

from __future__ import annotations

import enum
import re
import time
from typing import Any, Literal

import jwt
import msgspec

Role = Literal["guest", "viewer", "creator", "moderator", "admin"]
TOKEN_ROLES: tuple[Role, ...] = ("viewer", "creator", "moderator", "admin")
_SUB = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
) -> str:
    if not _SUB.match(sub):
        raise ValueError("sub must be 1-64 characters of [A-Za-z0-9_-]")
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {', '.join(TOKEN_ROLES)}")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
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
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str) -> Identity:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "role"]}
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    sub, role, name = claims.get("sub"), claims.get("role"), claims.get("name", claims.get("sub"))
    if not isinstance(sub, str) or not _SUB.match(sub):
        raise AuthError("sub must be 1-64 characters of [A-Za-z0-9_-]")
    if role not in TOKEN_ROLES:
        raise AuthError("unknown role")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise AuthError("name must be a string of 1-64 characters")
    minor = claims.get("minor", False)
    if not isinstance(minor, bool):
        raise AuthError("minor must be a boolean")
    return Identity(sub=sub, name=name, role=role, minor=minor)


class Action(enum.Enum):
    WATCH = "watch"  # join, read chat, feed, trending
    PARTICIPATE = "participate"  # chat, like, buy, bid, report, signal
    MANAGE = "manage"  # products, sessions, start/end, pin, offers, auctions
    MODERATE = "moderate"  # delete, timeout, ban, unban, slow, held queue, blocked terms
    APPOINT = "appoint"  # channel moderators, own creator score


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
    own = role == "creator" and owner is not None and owner == who.sub
    if action in (Action.MANAGE, Action.APPOINT):
        return own
    # Action.MODERATE
    return own or role == "moderator" or channel_moderator
