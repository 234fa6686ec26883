"""Links in chat: the domains a message links to and the creator's allow-list.

Pure: no I/O, no module state. See docs/moderation.md ("Links").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from livecart.chat.rules.normalize import link_form


def domain_form(domain: str) -> str:
    """An allowed domain as links are matched against it (see `link_form`); empty when
    nothing is left of it."""
    return link_form(domain).strip().strip(".")


_COMMON_TLDS: Final = frozenset((
    "com", "net", "org", "info", "biz", "xyz", "top", "shop", "store", "online", "site",
    "website", "live", "link", "click", "club", "app", "dev", "io", "co", "ly", "gl", "gg",
    "tv", "cc", "ws", "su", "ru", "uk", "de", "fr", "es", "nl", "pl", "se", "ch", "cz", "ca",
    "au", "br", "cn", "jp", "kr", "vn", "tr", "mx", "ar", "id", "ua", "eu", "asia", "tk", "ml",
    "ga", "cf", "gq", "pw", "icu", "buzz", "vip", "win", "bid", "loan", "work", "fun", "space",
    "tech", "today", "sale", "deals", "рф", "xn--p1ai",
))  # fmt: skip
# Country codes that are also everyday words count only with a path ("x.me/abc").
_WORDLIKE_TLDS: Final = frozenset((
    "me", "to", "in", "it", "is", "us", "so", "at", "be", "no", "my", "am", "do", "go", "an",
    "as", "by", "hi", "ok", "or", "pe", "ai", "im",
))  # fmt: skip
_DEOBFUSCATE: Final = re.compile(
    r"(?<=[^\W_])\s*(?:\[\s*(?:\.|dot)\s*\]|\(\s*(?:\.|dot)\s*\)|\{\s*(?:\.|dot)\s*\}|\s+dot\s+)\s*(?=[^\W_])"
)
_URL: Final = re.compile(r"(?<![\w.])https?://([^\s/?#<>\"'\\]+)")
_WWW: Final = re.compile(r"(?<![\w.-])(www\.[^\s/?#<>\"'\\:]+)")
_BARE: Final = re.compile(
    r"(?<![\w.-])((?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+([^\W\d_]{2,24}|xn--[a-z0-9-]{2,20}))"
    r"(?![\w-])(/)?"
)


def _host(authority: str) -> str:
    host = authority.rsplit("@", 1)[-1]
    if not host.startswith("["):
        host = host.split(":", 1)[0]
    return host.strip(".")


def find_domains(text: str) -> list[str]:
    """Domains linked in `text`, lower-case, in order, without repeats: http(s) URLs,
    `www.` names, and bare names with a known top-level domain (`shop.example.com/x`,
    `example.com`), also when written `example[.]com` or `example dot com`."""
    s = _DEOBFUSCATE.sub(".", link_form(text))
    found: list[str] = []
    for rx in (_URL, _WWW):
        for m in rx.finditer(s):
            found.append(_host(m.group(1)))
        s = rx.sub(" ", s)
    for m in _BARE.finditer(s):
        tld = m.group(2)
        if tld in _COMMON_TLDS or (tld in _WORDLIKE_TLDS and m.group(3)):
            found.append(m.group(1).strip("."))
    return [d for d in dict.fromkeys(found) if d]


def domain_allowed(domain: str, allowed: Iterable[str]) -> bool:
    """True when `domain` is an allowed domain or a subdomain of one."""
    domain = domain.lower().strip(".")
    for base in allowed:
        base = base.lower().strip(".")
        if base and (domain == base or domain.endswith("." + base)):
            return True
    return False


def disallowed_domain(text: str, allowed: Iterable[str]) -> str | None:
    """The first linked domain not allowed, or None when every link is allowed."""
    allowed = tuple(allowed)
    for domain in find_domains(text):
        if not domain_allowed(domain, allowed):
            return domain
    return None
