import base64
import hmac
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from livecart import auth
from livecart.auth import Action, Identity
from livecart.runtime import config

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
        # The global blocked terms: platform staff only, whatever the channel.
        (MOD, Action.PLATFORM, False, True),
        (ADMIN, Action.PLATFORM, False, True),
        (OWNER, Action.PLATFORM, False, False),
        (VIEWER, Action.PLATFORM, True, False),
        (GUEST, Action.PLATFORM, False, False),
    ],
)
def test_permission_table(who: Identity, action: Action, channel_mod: bool, allowed: bool) -> None:
    assert auth.can(who, action, owner="c", channel_moderator=channel_mod) is allowed


# ---------------------------------------------------------------- keys and claims (SPEC §10)

def _claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u1", "name": "U", "role": "viewer", "exp": int(time.time()) + 60, **extra}


def _pem(private: Any) -> str:
    raw: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return raw.decode()


@pytest.mark.parametrize(
    ("alg", "make"),
    [
        ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_asymmetric_keys_verify_and_forgeries_do_not(alg: str, make: Any) -> None:
    key = make()
    verifier = auth.Verifier(algorithms=("RS256", "ES256", "EdDSA"), public_key=_pem(key))
    who, exp = verifier.identify(jwt.encode(_claims(), key, algorithm=alg))
    assert who == Identity("u1", "U", "viewer") and exp > time.time()
    with pytest.raises(auth.AuthError):
        verifier.verify(jwt.encode(_claims(), make(), algorithm=alg))
    with pytest.raises(auth.AuthError):  # HS256 is not among the algorithms
        verifier.verify(jwt.encode(_claims(), SECRET, algorithm="HS256"))


def test_issuer_and_audience_are_required_when_set() -> None:
    verifier = auth.Verifier(SECRET, issuer="https://id", audience="shop")
    good = _claims(iss="https://id", aud="shop")
    assert verifier.verify(jwt.encode(good, SECRET, algorithm="HS256")).sub == "u1"
    for bad in (
        {**good, "iss": "https://other"},
        {**good, "aud": "elsewhere"},
        {k: v for k, v in good.items() if k != "aud"},
        {k: v for k, v in good.items() if k != "iss"},
    ):
        with pytest.raises(auth.AuthError):
            verifier.verify(jwt.encode(bad, SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "extra",
    [
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": None},
        {"minor": "true"},
        {"minor": 1},
        {"iat": "1"},
        {"nbf": time.time() + 3600},
        {"name": "a\u202eb"},
        {"name": "a\x00b"},
        {"name": ""},
        {"name": 5},
    ],
)
def test_claims_are_type_checked(extra: dict[str, Any]) -> None:
    with pytest.raises(auth.AuthError):
        auth.verify(SECRET, jwt.encode(_claims(**extra), SECRET, algorithm="HS256"))


def test_a_short_hs256_secret_is_refused_naming_the_setting() -> None:
    with pytest.raises(config.ConfigError, match="LIVECART_JWT_SECRET"):
        config.load({"LIVECART_JWT_SECRET": "x" * 31})
    assert config.load({"LIVECART_JWT_SECRET": "x" * 32}).jwt_secret == "x" * 32
    with pytest.raises(config.ConfigError, match="LIVECART_JWT_PUBLIC_KEY"):
        config.load({"LIVECART_JWT_ALGORITHMS": "RS256"})
    with pytest.raises(config.ConfigError, match="LIVECART_JWT_ALGORITHMS"):
        config.load({"LIVECART_JWT_ALGORITHMS": "none"})


CREATOR = "c"


@pytest.mark.parametrize(
    ("who", "target", "target_role", "allowed"),
    [
        (Identity("cm", "cm", "viewer"), "c", "creator", False),  # the channel's creator
        (Identity("cm", "cm", "viewer"), "m", "moderator", False),
        (Identity("cm", "cm", "viewer"), "a", "admin", False),
        (Identity("cm", "cm", "viewer"), "cm2", "viewer", False),  # a peer
        (Identity("cm", "cm", "viewer"), "v", "viewer", True),
        (Identity("cm", "cm", "viewer"), "ghost", None, True),  # never seen: a viewer
        (Identity("m", "m", "moderator"), "a", "admin", False),
        (Identity("m", "m", "moderator"), "c", "creator", True),
        (Identity("m", "m", "moderator"), "cm", "viewer", True),
        (Identity("c", "c", "creator"), "m", "moderator", False),
        (Identity("c", "c", "creator"), "cm", "viewer", True),
        (Identity("c", "c", "creator"), "c2", "creator", True),  # another creator, here a viewer
        (Identity("a", "a", "admin"), "a2", "admin", True),
    ],
)
def test_roles_act_downwards(
    who: Identity, target: str, target_role: str | None, allowed: bool
) -> None:
    mods = frozenset({"cm", "cm2"})
    assert (
        auth.may_act_on(who, target, target_role, owner=CREATOR, channel_moderators=mods)
        is allowed
    )


def test_issued_tokens_carry_issuer_and_audience_and_clean_names() -> None:
    verifier = auth.Verifier(SECRET, issuer="https://id", audience="shop")
    tok = auth.issue(SECRET, "u1", "viewer", issuer="https://id", audience="shop")
    assert verifier.verify(tok).sub == "u1"
    with pytest.raises(auth.AuthError):
        verifier.verify(auth.issue(SECRET, "u1", "viewer"))
    with pytest.raises(ValueError):
        auth.issue(SECRET, "u1", "viewer", name="adm\u202ein")


def test_the_public_key_setting_takes_a_pem_file(tmp_path: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "id.pem").write_text(_pem(key))
    settings = config.load(
        {"LIVECART_JWT_ALGORITHMS": "ES256", "LIVECART_JWT_PUBLIC_KEY": str(tmp_path / "id.pem")}
    )
    verifier = auth.Verifier.from_settings(settings, "")
    assert verifier.verify(jwt.encode(_claims(), key, algorithm="ES256")).sub == "u1"
    broken = config.load({"LIVECART_JWT_ALGORITHMS": "ES256", "LIVECART_JWT_PUBLIC_KEY": "-----x"})
    with pytest.raises(config.ConfigError, match="LIVECART_JWT_PUBLIC_KEY"):
        auth.Verifier.from_settings(broken, "")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: bytes, payload: bytes, secret: str = SECRET) -> str:
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    sig = hmac.digest(secret.encode(), signing_input.encode(), "sha256")
    return f"{signing_input}.{_b64(sig)}"


_H = b'{"alg":"HS256","typ":"JWT"}'
_OK = b'{"sub":"u1","role":"viewer","exp":%d}' % (2**40)
_PLAIN = auth.issue(SECRET, "u1", "viewer", name="Una", minor=True)
# Tokens the default verifier's own HS256 check must judge exactly as PyJWT does.
_TOKENS = [
    _PLAIN,
    auth.issue(SECRET, "u2", "creator"),
    auth.issue("other" * 10, "u", "viewer"),  # forged
    auth.issue(SECRET, "u", "viewer", ttl_s=10, now=1_000),  # expired
    _PLAIN[:-2] + ("AA" if _PLAIN[-2:] != "AA" else "BB"),  # signature altered
    _PLAIN.rsplit(".", 1)[0] + ".",  # no signature
    _PLAIN + "=",  # padded
    _PLAIN.replace(".", ". ", 1),
    "a.b.c",
    "a.b",
    "",
    _signed(b'{"alg":"HS256"}', _OK),
    _signed(b'{"alg":"hs256"}', _OK),
    _signed(b'{"alg":"none"}', _OK),
    _signed(b'{"typ":"JWT"}', _OK),
    _signed(b'{"alg":"HS256","typ":7}', _OK),
    _signed(b'{"alg":"HS256","kid":3}', _OK),
    _signed(b'{"alg":"HS256","crit":["b64"],"b64":false}', _OK),
    _signed(b'["alg","HS256"]', _OK),
    _signed(b"not json", _OK),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"aud":"shop"}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"aud":""}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"jti":5}' % (2**40)),
    _signed(_H, b'{"sub":5,"role":"viewer","exp":%d}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":null}'),
    _signed(_H, b'{"sub":"u1","role":null,"exp":%d}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":NaN}'),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":Infinity}'),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":"9999999999"}'),
    _signed(_H, b'{"sub":"u1","role":"viewer","role":"admin","exp":%d}' % (2**40)),
    _signed(_H, _OK.decode().encode("utf-16")),
    _signed(_H, b"[1, 2]"),
    _signed(_H, b'"claims"'),
    _signed(_H, _OK + b" "),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"nbf":%d}' % (2**40, 2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"nbf":1,"iat":1}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"iat":"1"}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"iss":5}' % (2**40)),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":true}'),
    _signed(_H, b'{"sub":"u1","role":"viewer","exp":%d,"minor":1}' % (2**40)),
    _signed(b'{"alg":"HS256","typ":"at+jwt"}', _OK),
]


@pytest.mark.parametrize("token", _TOKENS)
def test_the_own_hs256_check_judges_as_pyjwt_does(token: str) -> None:
    fast = auth.Verifier(SECRET)
    assert fast._hs256 is not None
    general = auth.Verifier(SECRET)
    general._hs256 = None  # PyJWT's decode only

    def verdict(v: auth.Verifier) -> Any:
        try:
            return v.identify(token)
        except auth.AuthError as exc:
            return ("refused", str(exc))

    assert verdict(fast) == verdict(general)


def test_a_plain_hs256_token_takes_the_own_check() -> None:
    v = auth.Verifier(SECRET)
    claims = v._hs256_claims(_PLAIN)
    assert claims is not None and claims["sub"] == "u1"
    assert v.identify(_PLAIN)[0] == Identity("u1", "Una", "viewer", minor=True)
    assert v._hs256_claims(auth.issue("other" * 10, "u1", "viewer")) is None
    # An issuer or audience to check, or another algorithm: PyJWT's decode every time.
    assert auth.Verifier(SECRET, issuer="https://id")._hs256 is None
    assert auth.Verifier(SECRET, audience="shop")._hs256 is None
    assert auth.Verifier(SECRET, algorithms=("HS256", "RS256"))._hs256 is None
