import pytest

from livecart import auth
from livecart.auth import Action, Identity

SECRET = "s" * 40


def test_token_round_trip_with_minor_flag() -> None:
    tok = auth.issue(SECRET, "kid_1", "viewer", name="Kid", minor=True)
    who = auth.verify(SECRET, tok)
    assert who == Identity("kid_1", "Kid", "viewer", minor=True)


@pytest.mark.parametrize(
    "token",
    [
        auth.issue("other" * 10, "u", "viewer"),  # forged
        auth.issue(SECRET, "u", "viewer", ttl_s=10, now=1_000),  # expired
        "a.b.c",
        "",
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, token)


def test_claims_are_checked() -> None:
    import jwt

    no_exp = jwt.encode({"sub": "u", "role": "viewer"}, SECRET, algorithm="HS256")
    bad_role = jwt.encode({"sub": "u", "role": "root", "exp": 2**40}, SECRET, algorithm="HS256")
    bad_sub = jwt.encode({"sub": "a b", "role": "viewer", "exp": 2**40}, SECRET, algorithm="HS256")
    for tok in (no_exp, bad_role, bad_sub):
        with pytest.raises(auth.AuthError):
            auth.verify(SECRET, tok)
    with pytest.raises(ValueError):
        auth.issue(SECRET, "x" * 65, "viewer")


GUEST = auth.guest("c1")
VIEWER = Identity("v", "v", "viewer")
OWNER = Identity("c", "c", "creator")
OTHER = Identity("c2", "c2", "creator")
MOD = Identity("m", "m", "moderator")
ADMIN = Identity("a", "a", "admin")


@pytest.mark.parametrize(
    ("who", "action", "channel_mod", "allowed"),
    [
        (GUEST, Action.WATCH, False, True),
        (GUEST, Action.PARTICIPATE, False, False),
        (VIEWER, Action.PARTICIPATE, False, True),
        (VIEWER, Action.MANAGE, False, False),
        (OWNER, Action.MANAGE, False, True),
        (OTHER, Action.MANAGE, False, False),
        (ADMIN, Action.MANAGE, False, True),
        (MOD, Action.MANAGE, False, False),
        (VIEWER, Action.MODERATE, False, False),
        (VIEWER, Action.MODERATE, True, True),
        (GUEST, Action.MODERATE, True, False),
        (OWNER, Action.MODERATE, False, True),
        (OTHER, Action.MODERATE, False, False),
        (MOD, Action.MODERATE, False, True),
        (ADMIN, Action.MODERATE, False, True),
        (OWNER, Action.APPOINT, False, True),
        (MOD, Action.APPOINT, False, False),
        (VIEWER, Action.APPOINT, True, False),
        (ADMIN, Action.APPOINT, False, True),
    ],
)
def test_permission_table(who: Identity, action: Action, channel_mod: bool, allowed: bool) -> None:
    assert auth.can(who, action, owner="c", channel_moderator=channel_mod) is allowed
