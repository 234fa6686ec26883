"""Linked domains and allow-lists (`chat.rules.links`)."""

from __future__ import annotations

import pytest

from livecart.chat.rules.links import (
    disallowed_domain,
    domain_allowed,
    find_domains,
)

# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("text", "domains"),
    [
        ("go to https://Example.com/x?y=1", ["example.com"]),
        ("http://user:pw@evil.io:8080/a", ["evil.io"]),
        ("see www.shop.example.co.uk/path", ["www.shop.example.co.uk"]),
        ("buy at cheap-bags.xyz now", ["cheap-bags.xyz"]),
        ("t.me/joinchat", ["t.me"]),
        ("mail me@inbox.net", ["inbox.net"]),
        ("example[.]com and shop(.)io", ["example.com", "shop.io"]),
        ("visit ebay dot com", ["ebay.com"]),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", ["example.com"]),
        ("a.com a.com https://a.com", ["a.com"]),
    ],
)
def test_find_domains(text: str, domains: list[str]) -> None:
    assert find_domains(text) == domains


@pytest.mark.parametrize(
    "text",
    ["costs 3.99 now", "e.g. the red one", "thanks.me too", "polka dot dress", "v1.2 update"],
)
def test_no_domains_in_ordinary_text(text: str) -> None:
    assert find_domains(text) == []


def test_allow_list_covers_subdomains_only() -> None:
    allowed = ["example.com"]
    assert domain_allowed("example.com", allowed)
    assert domain_allowed("shop.example.com", allowed)
    assert not domain_allowed("notexample.com", allowed)
    assert not domain_allowed("example.com.evil.io", allowed)
    assert not domain_allowed("еxample.com", allowed)  # Cyrillic е


def test_links_pass_only_when_every_domain_is_allowed() -> None:
    allowed = {"example.com", "livecart.shop"}
    assert disallowed_domain("see https://shop.example.com and livecart.shop/x", allowed) is None
    assert disallowed_domain("example.com or evil.io", allowed) == "evil.io"
    assert disallowed_domain("no links here", allowed) is None
