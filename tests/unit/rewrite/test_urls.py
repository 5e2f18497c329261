"""Internal origins and the URL map (bastion.rewrite.urls)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.rewrite.urls import Origin, UrlMap

APP = Origin.parse("http://10.0.0.5:8080")
PUBLIC = b"https://www.example.com"


def url_map(*origins: str, prefix: bytes | None = b"/legacy") -> UrlMap:
    internal = [Origin.parse(o) for o in origins] or [APP]
    return UrlMap(internal, b"https", b"www.example.com", prefix)


# --- Origin.parse -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://10.0.0.5:8080", Origin(b"http", b"10.0.0.5", 8080)),
        ("http://10.0.0.5:8080/some/path?q#f", Origin(b"http", b"10.0.0.5", 8080)),
        ("HTTP://App.Internal", Origin(b"http", b"app.internal", 80)),
        ("https://app.internal", Origin(b"https", b"app.internal", 443)),
        ("https://app.internal:8443/", Origin(b"https", b"app.internal", 8443)),
        ("http://user:pw@app:81", Origin(b"http", b"app", 81)),
        ("http://[::1]:8080", Origin(b"http", b"[::1]", 8080)),
        ("http://[FE80::1]", Origin(b"http", b"[fe80::1]", 80)),
        (b"http://app_1:80", Origin(b"http", b"app_1", 80)),
        ("http://app:", Origin(b"http", b"app", 80)),
    ],
)
def test_origin_parse(url: str | bytes, expected: Origin) -> None:
    assert Origin.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://app",
        "app:8080",
        "//app:8080",
        "http://",
        "http://app:0",
        "http://app:65536",
        "http://app:80x",
        "http://[::zz]:80",
        "http://[::1",
        "http://ap p",
        "http://app.:80",
        "http://héllo",
    ],
)
def test_origin_parse_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        Origin.parse(url)


def test_authorities_every_spelling_longest_first() -> None:
    m = url_map("http://10.0.0.5:8080", "http://app", "https://secure:443", "http://[::1]:80")
    assert m.authorities == (
        b"10.0.0.5:8080",
        b"secure:443",
        b"[::1]:80",
        b"app:80",
        b"secure",
        b"[::1]",
        b"app",
    )


# --- map_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"http://10.0.0.5:8080/x", PUBLIC + b"/legacy/x"),
        (b"http://10.0.0.5:8080", PUBLIC + b"/legacy"),
        (b"http://10.0.0.5:8080?q=1", PUBLIC + b"/legacy?q=1"),
        (b"http://10.0.0.5:8080#top", PUBLIC + b"/legacy#top"),
        (b"HTTP://10.0.0.5:8080/X", PUBLIC + b"/legacy/X"),
        (b"https://10.0.0.5:8080/x", PUBLIC + b"/legacy/x"),  # either scheme
        (b"//10.0.0.5:8080/x", PUBLIC + b"/legacy/x"),  # protocol-relative
        (b"http://10.0.0.5:8080/legacy", PUBLIC + b"/legacy"),  # already under the prefix
        (b"http://10.0.0.5:8080/legacy/x", PUBLIC + b"/legacy/x"),
        (b"http://10.0.0.5:8080/legacy?x", PUBLIC + b"/legacy?x"),
        (b"http://10.0.0.5:8080/legacyfoo", PUBLIC + b"/legacy/legacyfoo"),
        (b"http://10.0.0.5:8080/legacy;v=1", PUBLIC + b"/legacy/legacy;v=1"),
    ],
)
def test_map_url_internal(url: bytes, expected: bytes) -> None:
    assert url_map().map_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        b"http://10.0.0.5:80800/",  # a longer port
        b"http://10.0.0.5:808/",
        b"http://10.0.0.5/",  # another port (80)
        b"http://10.0.0.50:8080/",
        b"http://10.0.0.5:8080.evil.com/",
        b"http://10.0.0.5:8080@evil.com/",  # user info, host evil.com
        b"http://x10.0.0.5:8080/",
        b"ftp://10.0.0.5:8080/",
        b"/10.0.0.5:8080/x",
        b"http:/10.0.0.5:8080/x",
        b"///10.0.0.5:8080/x",
        b" http://10.0.0.5:8080/x",
        b"/x",
        b"",
    ],
)
def test_map_url_not_internal(url: bytes) -> None:
    assert url_map().map_url(url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"http://app/x", b"/x"),
        (b"http://app:80/x", b"/x"),
        (b"http://APP:80/x", b"/x"),
        (b"https://app/x", b"/x"),  # behind TLS termination the app writes https://
        (b"//App/x", b"/x"),
    ],
)
def test_default_port_written_or_not(url: bytes, expected: bytes) -> None:
    assert url_map("http://app", prefix=None).map_url(url) == PUBLIC + expected


@pytest.mark.parametrize(
    "url", [b"http://app:8080/", b"http://app:443/", b"http://app.evil.com/", b"http://app-2/"]
)
def test_default_port_origin_other_authorities(url: bytes) -> None:
    assert url_map("http://app", prefix=None).map_url(url) is None


def test_ipv6_literals() -> None:
    m = url_map("http://[fe80::1]:8080", "http://[::1]", prefix=None)
    assert m.map_url(b"http://[FE80::1]:8080/x") == PUBLIC + b"/x"
    assert m.map_url(b"http://[::1]/x") == PUBLIC + b"/x"
    assert m.map_url(b"http://[::1]:80/x") == PUBLIC + b"/x"
    assert m.map_url(b"http://[::1]:8080/x") is None
    assert m.map_url(b"http://[::10]/x") is None


def test_public_authority_with_port_and_no_prefix() -> None:
    m = UrlMap([APP], b"http", b"example.com:8443", None)
    assert m.map_url(b"http://10.0.0.5:8080/a?b") == b"http://example.com:8443/a?b"
    assert m.prefix is None


def test_prefix_trailing_slash_and_root() -> None:
    assert UrlMap([APP], b"https", b"h", b"/legacy/").prefix == b"/legacy"
    assert UrlMap([APP], b"https", b"h", b"/").prefix is None
    assert UrlMap([APP], b"https", b"h", b"/a/b").map_path(b"/x") == b"/a/b/x"


# --- map_path / map_reference -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/x", b"/legacy/x"),
        (b"/", b"/legacy/"),
        (b"/legacy", b"/legacy"),
        (b"/legacy/", b"/legacy/"),
        (b"/legacy/x", b"/legacy/x"),
        (b"/legacy?x=1", b"/legacy?x=1"),
        (b"/legacy#x", b"/legacy#x"),
        (b"/legacyfoo", b"/legacy/legacyfoo"),
        (b"/legacy.html", b"/legacy/legacy.html"),
        (b"//cdn.example/x", b"//cdn.example/x"),
        (b"/\\evil.example/x", b"/\\evil.example/x"),
        (b"x/y", b"x/y"),
        (b"../y", b"../y"),
        (b"", b""),
    ],
)
def test_map_path(path: bytes, expected: bytes) -> None:
    assert url_map().map_path(path) == expected


def test_map_path_without_prefix_is_identity() -> None:
    assert url_map(prefix=None).map_path(b"/x") == b"/x"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (b"http://10.0.0.5:8080/a", PUBLIC + b"/legacy/a"),
        (b"/a", b"/legacy/a"),
        (b"a", b"a"),
        (b"https://other.example/a", b"https://other.example/a"),
        (b"//other.example/a", b"//other.example/a"),
    ],
)
def test_map_reference(ref: bytes, expected: bytes) -> None:
    assert url_map().map_reference(ref) == expected


@given(st.binary(max_size=40))
def test_map_reference_is_idempotent(ref: bytes) -> None:
    m = url_map("http://10.0.0.5:8080", "http://app")
    once = m.map_reference(ref)
    assert m.map_reference(once) == once


# --- is_internal_host ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "internal"),
    [
        (b"app.corp.internal", True),
        (b"APP.corp.internal", True),
        (b".app.corp.internal", True),
        (b"corp.internal", True),  # a parent domain of an internal host
        (b".corp.internal", True),
        (b"internal", True),
        (b"other.corp.internal", False),
        (b"pp.corp.internal", False),
        (b"10.0.0.5", True),
        (b"0.0.5", False),  # IP addresses match exactly, never as a "parent"
        (b"0.5", False),
        (b"::1", True),
        (b"[::1]", True),
        (b"", False),
        (b".", False),
    ],
)
def test_is_internal_host(host: bytes, internal: bool) -> None:
    m = url_map("http://app.corp.internal:8080", "http://10.0.0.5", "http://[::1]:81")
    assert m.is_internal_host(host) is internal


def test_no_internal_origins_maps_paths_only() -> None:
    m = UrlMap([], b"https", b"www.example.com", b"/legacy")
    assert m.authorities == ()
    assert m.map_url(b"http://10.0.0.5:8080/x") is None
    assert m.map_reference(b"/x") == b"/legacy/x"
    assert not m.is_internal_host(b"10.0.0.5")


def test_building_a_map_is_cheap_once_its_patterns_are_compiled() -> None:
    """The filter builds one per response: the compiled patterns are shared."""
    first = url_map("http://10.0.0.5:8080", "http://app")
    second = url_map("http://10.0.0.5:8080", "http://app")
    assert first.grammar is second.grammar
    other = url_map("http://10.0.0.5:8080", "http://app", prefix=b"/other")
    assert other.grammar is not first.grammar
