"""Redirect-like headers: Location, Content-Location, Refresh and Link values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.rewrite.headers import (
    REDIRECT_HEADERS,
    rewrite_link,
    rewrite_redirect_header,
    rewrite_reference,
    rewrite_refresh,
)
from bastion.rewrite.urls import Origin, UrlMap

INTERNAL = (Origin.parse("http://10.0.0.5:8080"), Origin.parse("http://intranet-app:8080"))
PUBLIC = b"https://www.example.com/legacy"


def url_map(prefix: bytes | None = b"/legacy") -> UrlMap:
    return UrlMap(INTERNAL, b"https", b"www.example.com", prefix)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"http://10.0.0.5:8080/login", PUBLIC + b"/login"),
        (b"http://10.0.0.5:8080/login?next=/a#top", PUBLIC + b"/login?next=/a#top"),
        (b"HTTP://Intranet-App:8080/x", PUBLIC + b"/x"),
        (b"https://10.0.0.5:8080/x", PUBLIC + b"/x"),  # http or https: the same origin
        (b"//10.0.0.5:8080/x", PUBLIC + b"/x"),
        (b"http://10.0.0.5:8080", PUBLIC),
        (b"http://10.0.0.5:8080/legacy/x", PUBLIC + b"/x"),  # already under the prefix
        (b"/home", b"/legacy/home"),
        (b"/home?x=1", b"/legacy/home?x=1"),
        (b"/legacy/home", b"/legacy/home"),
        (b"/legacy", b"/legacy"),
        (b"/legacyx", b"/legacy/legacyx"),
        (b"home", b"home"),
        (b"../up", b"../up"),
        (b"http://10.0.0.5:80801/", b"http://10.0.0.5:80801/"),  # another port
        (b"http://10.0.0.5:8080.evil.test/", b"http://10.0.0.5:8080.evil.test/"),
        (b"http://other.test/x", b"http://other.test/x"),
        (b"", b""),
    ],
)
def test_location(value: bytes, expected: bytes) -> None:
    assert rewrite_reference(value, url_map()) == expected
    assert rewrite_redirect_header(b"location", value, url_map()) == expected
    assert rewrite_redirect_header(b"content-location", value, url_map()) == expected


def test_root_relative_is_left_alone_without_a_prefix() -> None:
    assert rewrite_reference(b"/home", url_map(None)) == b"/home"
    expected = b"https://www.example.com/home"
    assert rewrite_reference(b"http://10.0.0.5:8080/home", url_map(None)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"5; url=http://10.0.0.5:8080/x", b"5; url=" + PUBLIC + b"/x"),
        (b"5;URL='http://10.0.0.5:8080/x'", b"5;URL='" + PUBLIC + b"/x'"),
        (b'0; Url = "/x" ', b'0; Url = "/legacy/x" '),
        (b"0;url='/x", b"0;url='/legacy/x"),  # an unclosed quote runs to the end
        (b"1.5, /x", b"1.5, /legacy/x"),  # a comma, no url=
        (b"3;http://10.0.0.5:8080/y  ", b"3;" + PUBLIC + b"/y  "),
        (b"  7 ; url=urlish", b"  7 ; url=urlish"),  # relative: untouched
        (b"10", b"10"),
        (b"10;", b"10;"),
        (b"x; url=/y", b"x; url=/y"),  # no delay: not a refresh a browser follows
        (b"", b""),
    ],
)
def test_refresh(value: bytes, expected: bytes) -> None:
    assert rewrite_refresh(value, url_map()) == expected
    assert rewrite_redirect_header(b"refresh", value, url_map()) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            b'<http://10.0.0.5:8080/a.css>; rel="preload"; as=style',
            b"<" + PUBLIC + b'/a.css>; rel="preload"; as=style',
        ),
        (
            b'</a.css>; rel=preload, <http://intranet-app:8080/b>; rel="next",'
            b"<https://cdn.test/c>; rel=preconnect",
            b"</legacy/a.css>; rel=preload, <" + PUBLIC + b'/b>; rel="next",'
            b"<https://cdn.test/c>; rel=preconnect",
        ),
        (  # a "<" inside a quoted parameter is not a target; escaped quotes stay quoted
            b'</a>; title="<http://10.0.0.5:8080/no> \\" <still quoted>", </b>',
            b'</legacy/a>; title="<http://10.0.0.5:8080/no> \\" <still quoted>", </legacy/b>',
        ),
        (b"<http://10.0.0.5:8080/x", b"<http://10.0.0.5:8080/x"),  # unclosed: left alone
        (b"no targets; rel=x", b"no targets; rel=x"),
        (b"<>; rel=x", b"<>; rel=x"),
    ],
)
def test_link(value: bytes, expected: bytes) -> None:
    assert rewrite_link(value, url_map()) == expected
    assert rewrite_redirect_header(b"link", value, url_map()) == expected


def test_every_redirect_header_has_a_rewriter() -> None:
    values = {
        b"location": (b"/x", b"/legacy/x"),
        b"content-location": (b"/x", b"/legacy/x"),
        b"refresh": (b"0; url=/x", b"0; url=/legacy/x"),
        b"link": (b"</x>", b"</legacy/x>"),
    }
    assert set(values) == REDIRECT_HEADERS
    for name, (value, expected) in values.items():
        assert rewrite_redirect_header(name, value, url_map()) == expected


_NOT_INTERNAL = st.binary(max_size=60).filter(
    lambda value: b"10.0.0.5" not in value.lower() and b"intranet-app" not in value.lower()
)


@given(_NOT_INTERNAL)
def test_values_without_internal_urls_or_prefixable_paths_are_kept(value: bytes) -> None:
    """Without a prefix, only internal URLs change: anything else stays byte for byte."""
    no_prefix = url_map(None)
    assert rewrite_reference(value, no_prefix) == value
    assert rewrite_refresh(value, no_prefix) == value
    assert rewrite_link(value, no_prefix) == value
