"""Set-Cookie values: Domain, Path and Secure change; nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.rewrite.cookies import CookieRewriter, domain_matches, is_address, public_host
from bastion.rewrite.urls import Origin, UrlMap

INTERNAL = (
    Origin.parse("http://10.0.0.5:8080"),
    Origin.parse("http://app.intranet.corp:8080"),
    Origin.parse("http://www.example.com"),  # the Host the origin was sent
)


def rewriter(
    *,
    authority: bytes = b"www.example.com:8443",
    prefix: bytes | None = b"/legacy",
    drop: bool = False,
    secure: bool = False,
) -> CookieRewriter:
    url_map = UrlMap(INTERNAL, b"https", authority, prefix)
    return CookieRewriter(url_map, authority, prefix, drop_domain=drop, secure=secure)


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        # Domain naming an internal host, or a parent domain of one: the public host
        (b"a=1; Domain=10.0.0.5", b"a=1; Domain=www.example.com"),
        (b"a=1; domain=.intranet.corp", b"a=1; domain=www.example.com"),
        (
            b"a=1; DOMAIN = App.Intranet.Corp ; Path=/x",
            b"a=1; DOMAIN = www.example.com ; Path=/legacy/x",
        ),
        (b"a=1;Domain=corp", b"a=1;Domain=www.example.com"),
        # Domain the public host already matches: the app's own, kept
        (b"a=1; Domain=.example.com", b"a=1; Domain=.example.com"),
        (b"a=1; Domain=www.example.com", b"a=1; Domain=www.example.com"),
        # Domain of someone else, or empty: not ours to fix
        (b"a=1; Domain=other.test", b"a=1; Domain=other.test"),
        (b"a=1; Domain=", b"a=1; Domain="),
        (b"a=1; Domain=10.0.0", b"a=1; Domain=10.0.0"),  # an address matches only whole
        # Path under the prefix
        (b"a=1; Path=/", b"a=1; Path=/legacy"),
        (b"a=1; Path=/app", b"a=1; Path=/legacy/app"),
        (b"a=1; Path=/app/", b"a=1; Path=/legacy/app/"),
        (b"a=1; Path=/legacy", b"a=1; Path=/legacy"),
        (b"a=1; Path=/legacy/x", b"a=1; Path=/legacy/x"),
        (b"a=1; Path=/legacyx", b"a=1; Path=/legacy/legacyx"),
        (b"a=1; Path=relative", b"a=1; Path=relative"),  # browsers use the default path
        (b"a=1; Path=", b"a=1; Path="),
        (b"a=1; path=/; Path=/b", b"a=1; path=/legacy; Path=/legacy/b"),
        # everything else byte for byte
        (
            b"sid=x=y; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60; HttpOnly; "
            b"SameSite=Lax; Partitioned; Priority=High; Weird",
            b"sid=x=y; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60; HttpOnly; "
            b"SameSite=Lax; Partitioned; Priority=High; Weird",
        ),
        (b"a=1", b"a=1"),
        (b"a=1;", b"a=1;"),
        (b'q="a b"; Path=/', b'q="a b"; Path=/legacy'),
        (b"Domain=10.0.0.5; Path=/", b"Domain=10.0.0.5; Path=/legacy"),  # a cookie named Domain
    ],
)
def test_domain_and_path(cookie: bytes, expected: bytes) -> None:
    assert rewriter().rewrite(cookie) == expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b"a=1", b"a=1; Secure"),
        (b"a=1; Path=/", b"a=1; Path=/legacy; Secure"),
        (b"a=1; secure", b"a=1; secure"),
        (b"a=1; Secure; HttpOnly", b"a=1; Secure; HttpOnly"),
        (b"a=1;SECURE ", b"a=1;SECURE "),
        (b"a=1; Secure-ish=1", b"a=1; Secure-ish=1; Secure"),
    ],
)
def test_secure_is_added_over_tls(cookie: bytes, expected: bytes) -> None:
    assert rewriter(secure=True).rewrite(cookie) == expected
    assert rewriter(secure=False).rewrite(b"a=1") == b"a=1"


def test_drop_removes_internal_domains_only() -> None:
    drop = rewriter(drop=True)
    assert drop.rewrite(b"a=1; Domain=10.0.0.5; Path=/") == b"a=1; Path=/legacy"
    assert drop.rewrite(b"a=1;Domain=.intranet.corp;HttpOnly") == b"a=1;HttpOnly"
    assert drop.rewrite(b"a=1; Domain=.example.com") == b"a=1; Domain=.example.com"
    assert drop.rewrite(b"a=1; Domain=other.test") == b"a=1; Domain=other.test"


def test_public_address_drops_the_domain() -> None:
    """A Domain attribute cannot name an IP address: the cookie becomes host-only."""
    by_address = rewriter(authority=b"192.0.2.1:8443")
    assert by_address.rewrite(b"a=1; Domain=10.0.0.5") == b"a=1"
    by_v6 = rewriter(authority=b"[2001:db8::1]")
    assert by_v6.rewrite(b"a=1; Domain=intranet.corp; Path=/") == b"a=1; Path=/legacy"


def test_no_prefix_keeps_paths() -> None:
    for prefix in (None, b"/"):
        assert rewriter(prefix=prefix).rewrite(b"a=1; Path=/") == b"a=1; Path=/"


def test_host_helpers() -> None:
    assert public_host(b"WWW.Example.com:8443") == b"www.example.com"
    assert public_host(b"example.com") == b"example.com"
    assert public_host(b"[::1]:8080") == b"[::1]"
    assert [is_address(h) for h in (b"10.0.0.5", b"[::1]", b"a.test", b"")] == [
        True,
        True,
        False,
        False,
    ]
    assert domain_matches(b"www.example.com", b"example.com")
    assert not domain_matches(b"www.example.com", b"ample.com")
    assert not domain_matches(b"10.0.0.5", b"0.0.5")


_COOKIE_NAME = st.binary(min_size=1, max_size=12).filter(lambda b: b";" not in b and b"=" not in b)
_COOKIE_VALUE = st.binary(max_size=20).filter(lambda b: b";" not in b)
_ATTRIBUTE = st.one_of(
    st.sampled_from(
        [
            b" Domain=10.0.0.5",
            b" domain=.intranet.corp",
            b" Domain=.example.com",
            b" Path=/",
            b"Path=/x",
            b" path = /legacy ",
            b" Secure",
            b" HttpOnly",
            b" Expires=Wed, 21 Oct 2037 07:28:00 GMT",
            b" SameSite=None",
        ]
    ),
    st.binary(max_size=20).filter(lambda b: b";" not in b),
)


@given(
    _COOKIE_NAME,
    _COOKIE_VALUE,
    st.lists(_ATTRIBUTE, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_rewriting_never_changes_the_name_value_pair(
    name: bytes, value: bytes, attributes: list[bytes], drop: bool, secure: bool
) -> None:
    cookie = b";".join([name + b"=" + value, *attributes])
    rewritten = rewriter(drop=drop, secure=secure).rewrite(cookie)
    assert rewritten.split(b";")[0] == name + b"=" + value

    # attributes other than Domain/Path/Secure survive, in order
    def others(text: bytes) -> list[bytes]:
        return [
            a
            for a in text.split(b";")[1:]
            if a.partition(b"=")[0].strip().lower() not in (b"domain", b"path", b"secure")
        ]

    assert others(rewritten) == others(cookie)
