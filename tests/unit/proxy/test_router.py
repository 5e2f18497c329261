"""Site and route selection (bastion.proxy.router)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.proxy.router import (
    MethodMismatch,
    RouteMatch,
    Router,
    RouteRule,
    SiteRules,
    strip_prefix,
)


def site(*hosts: str, routes: tuple[RouteRule[str], ...] | None = None) -> SiteRules[str]:
    """A site whose single default route carries the site's first host as payload."""
    return SiteRules(hosts, routes or (RouteRule(hosts[0]),), hosts[0])


def routes(*rules: RouteRule[str]) -> Router[str]:
    return Router([site("example.com", routes=rules)])


def target(result: RouteMatch[str] | MethodMismatch | None) -> str | None:
    assert not isinstance(result, MethodMismatch)
    return None if result is None else result.rule.target


GET, POST, PUT = b"GET", b"POST", b"PUT"

# --- hosts -----------------------------------------------------------------------------------

HOSTS_ROUTER = Router(
    [
        site("example.com", "www.example.com"),
        site("*.example.com"),
        site("*.a.example.com"),
        site("a.a.example.com"),
        site("::1", "127.0.0.1"),
        site("Bücher.example"),
        site("*"),
    ]
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"example.com", "example.com"),
        (b"EXAMPLE.Com", "example.com"),
        (b"www.example.com", "example.com"),
        (b"example.com:8443", "example.com"),
        (b"example.com.", "example.com"),
        (b"Example.COM.:80", "example.com"),
        (b"x.example.com", "*.example.com"),
        (b"x.y.example.com", "*.example.com"),
        (b"a.example.com", "*.example.com"),
        (b"x.a.example.com", "*.a.example.com"),
        (b"x.y.a.example.com", "*.a.example.com"),
        (b"a.a.example.com", "a.a.example.com"),
        (b"b.a.example.com:1", "*.a.example.com"),
        (b"[::1]:8080", "::1"),
        (b"[::1]", "::1"),
        (b"127.0.0.1:80", "::1"),
        (b"xn--bcher-kva.example", "Bücher.example"),
        (b"xn--BCHER-kva.example:443", "Bücher.example"),
        (b"example.org", "*"),
        (b".example.com", "*"),
        (b"notexample.com", "*"),
        (b"com", "*"),
        (b"", "*"),
        (b"[::2]:80", "*"),
    ],
)
def test_host_table(host: bytes, expected: str) -> None:
    found = HOSTS_ROUTER.find_site(host)
    assert found is not None
    assert found.name == expected


def test_hosts_seen_before_find_the_same_sites_however_many_there_were() -> None:
    # The router remembers recent hosts (a bounded memo): answers never depend on it.
    router = Router([site("example.com"), site("*.example.com")])
    hosts = [b"h%d.example.com" % i for i in range(600)] + [b"example.org", b"EXAMPLE.com:1"]
    first = [router.find_site(host) for host in hosts]
    again = [router.find_site(host) for host in reversed(hosts)][::-1]
    assert first == again
    assert [found.name if found else None for found in first[-3:]] == [
        "*.example.com",
        None,
        "example.com",
    ]


def test_no_catch_all_means_no_site() -> None:
    router = Router([site("example.com"), site("*.example.com")])
    assert router.find_site(b"example.org") is None
    assert router.match(b"example.org", b"/", GET) is None


def test_wildcard_does_not_match_its_bare_domain() -> None:
    router = Router([site("*.example.com")])
    assert router.find_site(b"example.com") is None
    assert router.find_site(b"x.example.com") is not None


def test_site_order_does_not_change_precedence() -> None:
    ordered = [site("*"), site("*.example.com"), site("*.a.example.com"), site("a.example.com")]
    for sites in (ordered, ordered[::-1]):
        router = Router(sites)
        names = [
            router.find_site(h) for h in (b"a.example.com", b"b.a.example.com", b"q.example.com")
        ]
        assert [s.name for s in names if s] == ["a.example.com", "*.a.example.com", "*.example.com"]


@pytest.mark.parametrize(
    "sites",
    [
        [site("example.com"), site("EXAMPLE.com.")],
        [site("*.example.com"), site("*.Example.com")],
        [site("*"), site("*")],
        [site("[::1]"), site("::1")],
    ],
)
def test_a_host_claimed_twice_is_refused(sites: list[SiteRules[str]]) -> None:
    with pytest.raises(ValueError, match="claimed"):
        Router(sites)


def test_a_host_repeated_within_one_site_is_fine() -> None:
    router = Router([site("example.com", "Example.com")])
    assert router.find_site(b"example.com") is not None


@pytest.mark.parametrize(
    "pattern", ["", "a.*.com", "*example.com", "**.com", "*.", ".example.com", "a..b", "h:8080"]
)
def test_a_malformed_host_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="host pattern"):
        Router([site(pattern)])


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(
    names,
    st.data(),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.booleans(),
)
def test_exact_host_found_in_any_case_with_any_port(
    name: str, data: st.DataObject, port: int | None, trailing_dot: bool
) -> None:
    router = Router([site(name), site("*.other.test")])
    cased = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    host = cased + ("." if trailing_dot else "") + (f":{port}" if port is not None else "")
    found = router.find_site(host.encode())
    assert found is not None
    assert found.name == name


# --- routes ----------------------------------------------------------------------------------


def test_first_matching_route_in_file_order_wins() -> None:
    router = routes(RouteRule("api", b"/api"), RouteRule("api-v1", b"/api/v1"), RouteRule("all"))
    assert target(router.match(b"example.com", b"/api/v1/x", GET)) == "api"
    assert target(router.match(b"example.com", b"/other", GET)) == "all"


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        (b"/api", b"/api", True),
        (b"/api", b"/api/", True),
        (b"/api", b"/api/x/y", True),
        (b"/api", b"/apix", False),
        (b"/api", b"/ap", False),
        (b"/api", b"/", False),
        (b"/api/", b"/api", True),
        (b"/api/", b"/api/x", True),
        (b"/api/", b"/apix", False),
        (b"/a/b", b"/a/b/c", True),
        (b"/a/b", b"/a/bc", False),
        (b"/", b"/", True),
        (b"/", b"/anything/at/all", True),
        (b"/", b"*", True),
        (b"/api", b"*", False),
        (b"/%7Euser", b"/~user/x", True),
        (b"//api/./v1/", b"/api/v1", True),
        (b"/API", b"/api", False),
    ],
)
def test_prefix_matches_whole_segments(prefix: bytes, path: bytes, matches: bool) -> None:
    router = routes(RouteRule("hit", prefix))
    assert target(router.match(b"example.com", path, GET)) == ("hit" if matches else None)


@pytest.mark.parametrize("prefix", [b"api", b"/a/../..", b"/a%zz", b"/a b", b"/a?x"])
def test_a_malformed_prefix_is_refused(prefix: bytes) -> None:
    with pytest.raises(ValueError, match="route prefix"):
        routes(RouteRule("x", prefix))


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        (rb"\.php$", b"/a/index.php", True),
        (rb"\.php$", b"/a/index.php/x", False),
        (rb"/img/", b"/static/img/a.png", True),
        (rb"^/img/", b"/static/img/a.png", False),
        (rb"^/users/\d+$", b"/users/42", True),
        (rb"^/users/\d+$", b"/users/me", False),
    ],
)
def test_regex_is_searched_in_the_path(pattern: bytes, path: bytes, matches: bool) -> None:
    router = routes(RouteRule("re", None, re.compile(pattern)))
    assert target(router.match(b"example.com", path, GET)) == ("re" if matches else None)


def test_prefix_and_regex_must_both_hold() -> None:
    router = routes(RouteRule("both", b"/static", re.compile(rb"\.css$")), RouteRule("rest"))
    assert target(router.match(b"example.com", b"/static/a.css", GET)) == "both"
    assert target(router.match(b"example.com", b"/static/a.js", GET)) == "rest"
    assert target(router.match(b"example.com", b"/other/a.css", GET)) == "rest"


def test_regex_applies_under_the_default_prefix_too() -> None:
    router = routes(RouteRule("re", b"/", re.compile(rb"\.php$")), RouteRule("rest"))
    assert target(router.match(b"example.com", b"/a.php", GET)) == "re"
    assert target(router.match(b"example.com", b"/a.html", GET)) == "rest"


def test_no_prefix_and_no_regex_matches_everything() -> None:
    router = routes(RouteRule("any", None))
    assert target(router.match(b"example.com", b"/x/y", GET)) == "any"


# --- methods ---------------------------------------------------------------------------------


def test_method_mismatch_keeps_looking_for_a_later_route() -> None:
    router = routes(
        RouteRule("read", b"/api", methods=frozenset({GET})),
        RouteRule("write", b"/api", methods=frozenset({POST})),
    )
    assert target(router.match(b"example.com", b"/api/x", GET)) == "read"
    assert target(router.match(b"example.com", b"/api/x", POST)) == "write"


def test_path_routed_for_other_methods_only_is_405_with_allow() -> None:
    router = routes(
        RouteRule("read", b"/api", methods=frozenset({GET, b"HEAD"})),
        RouteRule("write", b"/api/items", methods=frozenset({POST, GET})),
        RouteRule("elsewhere", b"/other"),
    )
    result = router.match(b"example.com", b"/api/items", PUT)
    assert result == MethodMismatch((GET, b"HEAD", POST))
    assert router.match(b"example.com", b"/api/x", PUT) == MethodMismatch((GET, b"HEAD"))


def test_no_route_for_the_path_is_none_not_405() -> None:
    router = routes(RouteRule("read", b"/api", methods=frozenset({GET})))
    assert router.match(b"example.com", b"/nothing", PUT) is None


def test_any_method_route_after_a_mismatch_wins() -> None:
    router = routes(RouteRule("read", b"/api", methods=frozenset({GET})), RouteRule("all"))
    assert target(router.match(b"example.com", b"/api", b"DELETE")) == "all"


def test_methods_are_case_sensitive() -> None:
    router = routes(RouteRule("read", b"/", methods=frozenset({GET})))
    assert router.match(b"example.com", b"/", b"get") == MethodMismatch((GET,))


def test_match_returns_the_site_and_rule() -> None:
    rule = RouteRule("api", b"/api")
    rules = SiteRules(("example.com",), (rule,), "example.com")
    assert Router([rules]).match(b"EXAMPLE.com:80", b"/api", GET) == RouteMatch(rules, rule)


def test_sites_route_independently() -> None:
    router = Router(
        [
            site("a.test", routes=(RouteRule("a-api", b"/api"),)),
            site("*", routes=(RouteRule("fallback"),)),
        ]
    )
    assert target(router.match(b"a.test", b"/api", GET)) == "a-api"
    assert router.match(b"a.test", b"/other", GET) is None  # no fall-through to another site
    assert target(router.match(b"b.test", b"/api", GET)) == "fallback"


# --- strip_prefix ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "expected"),
    [
        (b"/api/x", b"/api", b"/x"),
        (b"/api/x/", b"/api/", b"/x/"),
        (b"/api", b"/api", b"/"),
        (b"/api/", b"/api", b"/"),
        (b"/a/b/c", b"/a/b", b"/c"),
        (b"/x", b"/", b"/x"),
        (b"/", b"/", b"/"),
    ],
)
def test_strip_prefix(path: bytes, prefix: bytes, expected: bytes) -> None:
    assert strip_prefix(path, prefix) == expected


@pytest.mark.parametrize(("path", "prefix"), [(b"/apix", b"/api"), (b"/x", b"/api"), (b"/", b"/a")])
def test_strip_prefix_refuses_a_prefix_that_does_not_match(path: bytes, prefix: bytes) -> None:
    with pytest.raises(ValueError, match="does not match"):
        strip_prefix(path, prefix)


@given(st.lists(labels, min_size=1, max_size=3), st.lists(labels, max_size=3), st.booleans())
def test_strip_prefix_leaves_what_follows_the_prefix(
    prefix_segments: list[str], rest_segments: list[str], trailing: bool
) -> None:
    prefix = ("/" + "/".join(prefix_segments)).encode()
    rest = ("/" + "/".join(rest_segments) + ("/" if trailing and rest_segments else "")).encode()
    path = prefix + rest if rest != b"/" else prefix
    assert strip_prefix(path, prefix) == rest
    assert target(routes(RouteRule("hit", prefix)).match(b"example.com", path, GET)) == "hit"
