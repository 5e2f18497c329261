"""Routing through the proxy, over sockets: sites by Host, routes by normalised path, regex
and method, strip_prefix, redirect routes, max_body, and the 404/405/400/413 answers.

Every upstream points at its own AutonomousOrigin, so the origin that recorded the request
says which site and route the proxy chose, and its record shows the path it was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress

from tests.support.client import RawClient, RawResponse, http_get, http_request, request_bytes
from tests.support.origins import AutonomousOrigin, SeenRequest, pattern_bytes
from tests.support.proxy import running_proxy

SHORT_BODY = 200  # an error page bastion writes itself stays shorter than this


@asynccontextmanager
async def named_origins(*names: str) -> AsyncIterator[dict[str, AutonomousOrigin]]:
    """One AutonomousOrigin per name, all closed on exit."""
    async with AsyncExitStack() as stack:
        yield {name: await stack.enter_async_context(AutonomousOrigin()) for name in names}


def upstream_tables(origins: dict[str, AutonomousOrigin]) -> str:
    """`[upstream.NAME]` for every origin (NAME = its key), with short timeouts."""
    return "".join(
        f"""
[upstream.{name}]
servers = ["{origin.url}"]
timeouts = {{ connect = "1s", read = "2s" }}
"""
        for name, origin in origins.items()
    )


def config(sites: str, origins: dict[str, AutonomousOrigin], server: str = "") -> str:
    """A whole config: one listener, the `[[site]]` tables given, an upstream per origin."""
    return f"""
[server]
{server}
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
{sites}
{upstream_tables(origins)}
"""


def requests_seen(origins: dict[str, AutonomousOrigin]) -> dict[str, int]:
    return {name: len(origin.requests) for name, origin in origins.items()}


async def send_and_see(
    port: int,
    origins: dict[str, AutonomousOrigin],
    target: str,
    *,
    host: str = "test",
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[RawResponse, str | None, SeenRequest | None]:
    """Send one request; return the response, the name of the origin that received it (None
    if none did) and that origin's record of it. Fails if more than one origin was reached."""
    before = requests_seen(origins)
    response = await http_request(port, method, target, host=host, headers=headers, timeout=3.0)
    reached = [name for name, count in requests_seen(origins).items() if count > before[name]]
    assert len(reached) <= 1, f"one request reached several origins: {reached}"
    if not reached:
        return response, None, None
    return response, reached[0], origins[reached[0]].requests[-1]


async def origin_for(
    port: int, origins: dict[str, AutonomousOrigin], target: str, host: str = "test"
) -> str | None:
    response, name, _ = await send_and_see(port, origins, target, host=host)
    if name is not None:
        assert response.status == 200, (target, host, response.status)
    return name


# -- sites by Host ----------------------------------------------------------------------------

HOST_SITES = """
[[site]]
hosts = ["example.com"]
  [[site.route]]
  upstream = "exact"
[[site]]
hosts = ["*.example.com"]
  [[site.route]]
  upstream = "wild"
[[site]]
hosts = ["*.api.example.com"]
  [[site.route]]
  upstream = "deep"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "any"
"""


async def test_most_specific_host_pattern_wins_whatever_the_case_and_port() -> None:
    expected = {
        "example.com": "exact",
        "EXAMPLE.Com": "exact",
        "example.com:8080": "exact",
        "example.com.": "exact",
        "www.example.com": "wild",
        "WWW.Example.COM:443": "wild",
        "a.b.example.com": "wild",
        "api.example.com": "wild",  # "*.api.example.com" needs a label before "api"
        "v1.api.example.com": "deep",
        "x.y.API.example.com:8443": "deep",
        "example.org": "any",
        "notexample.com": "any",
        "127.0.0.1:9": "any",
    }
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
    ):
        chosen = {
            host: await origin_for(proxy.ports[0], origins, "/echo", host) for host in expected
        }
    assert chosen == expected


async def test_host_header_reaches_origin_unchanged() -> None:
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
    ):
        _, name, seen = await send_and_see(
            proxy.ports[0], origins, "/echo", host="WWW.Example.COM:443"
        )
    assert name == "wild" and seen is not None
    assert seen.header("host") == "WWW.Example.COM:443"


async def test_absolute_form_target_is_routed_by_its_authority() -> None:
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
    ):
        _, name, seen = await send_and_see(
            proxy.ports[0], origins, "http://www.example.com/echo?x=1", host="example.com"
        )
    assert name == "wild" and seen is not None
    assert seen.target == "/echo?x=1"
    assert seen.headers_named("host") == ["www.example.com"]


async def test_http10_request_without_host_goes_to_the_catch_all_site() -> None:
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(b"GET /echo HTTP/1.0\r\n\r\n")
        response = await client.read_response(timeout=3.0)
    assert response.status == 200
    assert [name for name, o in origins.items() if o.requests] == ["any"]


async def test_invalid_host_header_is_400_and_reaches_no_site() -> None:
    # RFC 9112 3.2: a Host that is not `host[:port]` (RFC 3986 authority) must get a 400.
    invalid = (
        "example.com:abc",
        "example.com:-1",
        "example.com:80:80",
        "::1",
        "[::1",
        'exa"mple.com',
        "<x>",
    )
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
    ):
        statuses = {}
        for host in invalid:
            response, name, _ = await send_and_see(proxy.ports[0], origins, "/echo", host=host)
            statuses[host] = (response.status, name)
    assert statuses == {host: (400, None) for host in invalid}


async def test_two_host_headers_are_400() -> None:
    async with (
        named_origins("exact", "wild", "deep", "any") as origins,
        running_proxy(config(HOST_SITES, origins)) as proxy,
    ):
        response, name, _ = await send_and_see(
            proxy.ports[0], origins, "/echo", host="example.com", headers=[("Host", "other.org")]
        )
    assert (response.status, name) == (400, None)


async def test_no_matching_site_is_404_with_short_body_and_origin_untouched() -> None:
    sites = """
[[site]]
hosts = ["example.com", "*.example.net"]
  [[site.route]]
  upstream = "app"
"""
    async with named_origins("app") as origins, running_proxy(config(sites, origins)) as proxy:
        for host in ("other.test", "example.net", "example.com.evil", "www.example.com"):
            response, name, _ = await send_and_see(proxy.ports[0], origins, "/echo", host=host)
            assert response.status == 404, host
            assert name is None, host
            assert 0 < len(response.body) < SHORT_BODY
            assert b"example" not in response.body  # nothing about the configured sites
        assert origins["app"].connections_opened == 0


async def test_no_matching_route_within_a_site_is_404() -> None:
    sites = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/api"
  upstream = "app"
"""
    async with named_origins("app") as origins, running_proxy(config(sites, origins)) as proxy:
        for target in ("/", "/apix", "/other/api", "/API"):
            response, name, _ = await send_and_see(proxy.ports[0], origins, target)
            assert (response.status, name) == (404, None), target
            assert len(response.body) < SHORT_BODY
        assert origins["app"].connections_opened == 0


# -- routes by path ---------------------------------------------------------------------------

ORDERED_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/api/v2"
  upstream = "v2"
  [[site.route]]
  path = "/api/"
  upstream = "api"
  [[site.route]]
  path = "/"
  upstream = "root"
  [[site.route]]
  path = "/api/v3"
  upstream = "v3"
"""


async def test_first_route_in_file_order_wins() -> None:
    expected = {
        "/api/v2": "v2",
        "/api/v2/users?id=1": "v2",
        "/api/v3/users": "api",  # "/api/v3" comes after "/api/" and "/": never reached
        "/api/v1": "api",
        "/elsewhere": "root",
    }
    async with (
        named_origins("v2", "api", "root", "v3") as origins,
        running_proxy(config(ORDERED_ROUTES, origins)) as proxy,
    ):
        chosen = {t: await origin_for(proxy.ports[0], origins, t) for t in expected}
    assert chosen == expected
    assert origins["v3"].connections_opened == 0


async def test_prefix_matches_whole_segments_only() -> None:
    expected = {
        "/api": "api",
        "/api/": "api",
        "/api/x/y": "api",
        "/api?x=1": "api",
        "/apix": "root",
        "/api.json": "root",
        "/API/x": "root",  # paths are case-sensitive
        "/api%2Fx": "root",  # an encoded slash is not a separator
        "/api/v2x": "api",
        "/api/v2/": "v2",
    }
    async with (
        named_origins("v2", "api", "root", "v3") as origins,
        running_proxy(config(ORDERED_ROUTES, origins)) as proxy,
    ):
        chosen = {t: await origin_for(proxy.ports[0], origins, t) for t in expected}
    assert chosen == expected


TWO_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/api"
  upstream = "api"
  [[site.route]]
  path = "/"
  upstream = "root"
"""


async def test_normalised_path_picks_the_route_and_is_what_the_origin_receives() -> None:
    expected = {
        "/a/./b/../c//d": ("root", "/a/c/d"),
        "/%61pi/x": ("api", "/api/x"),
        "/%61%70%69/x": ("api", "/api/x"),
        "//api//x": ("api", "/api/x"),
        "/x/../api/y": ("api", "/api/y"),
        "/api/./x/.": ("api", "/api/x/"),
        "/%7Euser/%2e/a": ("root", "/~user/a"),
        "/api/a%2fb": ("api", "/api/a%2Fb"),  # kept encoded, hex uppercased
        "/%61pi/x?q=%61&r=/../": ("api", "/api/x?q=%61&r=/../"),  # the query is left alone
    }
    async with (
        named_origins("api", "root") as origins,
        running_proxy(config(TWO_ROUTES, origins)) as proxy,
    ):
        got = {}
        for target in expected:
            response, name, seen = await send_and_see(proxy.ports[0], origins, target)
            assert response.status == 200, target
            got[target] = (name, seen.target if seen is not None else None)
    assert got == expected


async def test_path_climbing_above_root_is_400_and_origin_sees_nothing() -> None:
    targets = ("/../etc/passwd", "/api/../../etc/passwd", "/%2e%2e/etc/passwd", "/a/%2E%2E/..")
    async with (
        named_origins("api", "root") as origins,
        running_proxy(config(TWO_ROUTES, origins)) as proxy,
    ):
        for target in targets:
            response, name, _ = await send_and_see(proxy.ports[0], origins, target)
            assert (response.status, name) == (400, None), target
            assert len(response.body) < SHORT_BODY
            assert b"passwd" not in response.body
    assert all(origin.connections_opened == 0 for origin in origins.values())


async def test_path_regex_matches_the_normalised_path() -> None:
    sites = r"""
[[site]]
hosts = ["*"]
  [[site.route]]
  path_regex = '^/img/[^/]+\.(png|jpe?g)$'
  upstream = "images"
  [[site.route]]
  path_regex = '\.php$'
  upstream = "php"
  [[site.route]]
  path = "/"
  upstream = "root"
"""
    expected = {
        "/img/cat.png": "images",
        "/img/cat.jpeg?size=2": "images",
        "/img/%63at.png": "images",
        "/img/x/../cat.jpg": "images",
        "/img/sub/cat.png": "root",
        "/img/cat.gif": "root",
        "/blog/index.php": "php",  # unanchored: searched anywhere
        "/index.php/x": "root",
        "/index.ph%70": "php",
    }
    async with (
        named_origins("images", "php", "root") as origins,
        running_proxy(config(sites, origins)) as proxy,
    ):
        chosen = {t: await origin_for(proxy.ports[0], origins, t) for t in expected}
    assert chosen == expected


# -- methods ----------------------------------------------------------------------------------

METHOD_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/api"
  methods = ["GET", "head"]
  upstream = "read"
  [[site.route]]
  path = "/api"
  methods = ["POST"]
  upstream = "write"
  [[site.route]]
  path = "/open"
  upstream = "open"
"""


async def test_methods_choose_among_routes_with_the_same_path() -> None:
    async with (
        named_origins("read", "write", "open") as origins,
        running_proxy(config(METHOD_ROUTES, origins)) as proxy,
    ):
        port = proxy.ports[0]
        chosen = [
            (await send_and_see(port, origins, "/api/x", method=method))[1]
            for method in ("GET", "HEAD", "POST")
        ]
        _, open_route, _ = await send_and_see(port, origins, "/open", method="DELETE")
    assert chosen == ["read", "read", "write"]
    assert open_route == "open"


async def test_method_mismatch_is_405_with_allow_and_origin_untouched() -> None:
    async with (
        named_origins("read", "write", "open") as origins,
        running_proxy(config(METHOD_ROUTES, origins)) as proxy,
    ):
        for method in ("DELETE", "PUT", "PATCH"):
            response, name, _ = await send_and_see(proxy.ports[0], origins, "/api/x", method=method)
            assert (response.status, name) == (405, None), method
            allowed = {m.strip() for m in response.header("allow").split(b",")}  # type: ignore[union-attr]
            assert allowed == {b"GET", b"HEAD", b"POST"}
            assert len(response.body) < SHORT_BODY
    assert all(origin.connections_opened == 0 for origin in origins.values())


async def test_a_later_route_without_methods_takes_what_an_earlier_one_refuses() -> None:
    sites = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/api"
  methods = ["GET"]
  upstream = "read"
  [[site.route]]
  path = "/"
  upstream = "open"
"""
    async with (
        named_origins("read", "open") as origins,
        running_proxy(config(sites, origins)) as proxy,
    ):
        response, name, _ = await send_and_see(proxy.ports[0], origins, "/api/x", method="DELETE")
    assert (response.status, name) == (200, "open")


# -- strip_prefix -----------------------------------------------------------------------------

STRIP_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/app/"
  strip_prefix = true
  upstream = "app"
  [[site.route]]
  path = "/"
  upstream = "root"
"""


async def test_strip_prefix_sends_path_without_prefix_and_keeps_query() -> None:
    expected = {
        "/app/x/y?q=1&r=%2F": "/x/y?q=1&r=%2F",
        "/app": "/",
        "/app/": "/",
        "/app?q=1": "/?q=1",
        "/./app//x/../y": "/y",
        "/%61pp/z": "/z",
    }
    async with (
        named_origins("app", "root") as origins,
        running_proxy(config(STRIP_ROUTES, origins)) as proxy,
    ):
        got = {}
        for target in expected:
            response, name, seen = await send_and_see(proxy.ports[0], origins, target)
            assert (response.status, name) == (200, "app"), target
            assert seen is not None
            assert seen.header("x-forwarded-prefix") == "/app", target
            got[target] = seen.target
    assert got == expected


async def test_strip_prefix_replaces_a_client_supplied_prefix_and_other_routes_send_none() -> None:
    spoof = [("X-Forwarded-Prefix", "/evil")]
    async with (
        named_origins("app", "root") as origins,
        running_proxy(config(STRIP_ROUTES, origins)) as proxy,
    ):
        _, name, stripped = await send_and_see(proxy.ports[0], origins, "/app/x", headers=spoof)
        _, other, unstripped = await send_and_see(proxy.ports[0], origins, "/appx", headers=spoof)
    assert name == "app" and stripped is not None
    assert stripped.headers_named("x-forwarded-prefix") == ["/app"]
    assert other == "root" and unstripped is not None
    assert unstripped.target == "/appx"
    assert unstripped.headers_named("x-forwarded-prefix") == []


# -- redirect routes --------------------------------------------------------------------------

REDIRECT_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/old"
  redirect = { to = "https://new.example{uri}", status = 308 }
  [[site.route]]
  path = "/moved"
  redirect = { to = "{scheme}://{host}/new{path}?from={query}" }
  [[site.route]]
  path = "/braces"
  redirect = { to = "https://x.example/{{literal}}{path}", status = 302 }
  [[site.route]]
  path = "/"
  upstream = "app"
"""


async def test_redirect_routes_build_location_from_template_without_origin() -> None:
    cases = [
        ("GET", "/old/a?b=1", "h.test", 308, b"https://new.example/old/a?b=1"),
        ("POST", "/old", "h.test", 308, b"https://new.example/old"),
        ("GET", "/old/./x//y", "h.test", 308, b"https://new.example/old/x/y"),
        (
            "GET",
            "/moved/p?k=v",
            "Site.Test:8080",
            301,
            b"http://Site.Test:8080/new/moved/p?from=k=v",
        ),
        ("GET", "/braces/q", "h.test", 302, b"https://x.example/{literal}/braces/q"),
    ]
    async with (
        named_origins("app") as origins,
        running_proxy(config(REDIRECT_ROUTES, origins)) as proxy,
    ):
        for method, target, host, status, location in cases:
            response, name, _ = await send_and_see(
                proxy.ports[0], origins, target, host=host, method=method
            )
            assert (response.status, name) == (status, None), target
            assert response.header("location") == location, target
            assert len(response.body) < SHORT_BODY
        response, name, _ = await send_and_see(proxy.ports[0], origins, "/oldx")
        assert (response.status, name) == (200, "app")
    assert origins["app"].connections_opened == 1  # only for /oldx


async def test_redirect_answer_keeps_the_connection_usable() -> None:
    async with (
        named_origins("app") as origins,
        running_proxy(config(REDIRECT_ROUTES, origins)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_bytes("GET", "/old/1") + request_bytes("GET", "/echo"))
        first = await client.read_response(timeout=3.0)
        second = await client.read_response(timeout=3.0)
    assert first.status == 308
    assert second.status == 200
    assert second.json()["target"] == "/echo"


# -- max_body ---------------------------------------------------------------------------------

LIMITED_ROUTES = """
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/small"
  max_body = 1000
  upstream = "app"
  [[site.route]]
  path = "/"
  upstream = "app"
"""


def complete_bodies_over(origin: AutonomousOrigin, limit: int) -> list[int]:
    return [r.body_len for r in origin.requests if r.body_complete and r.body_len > limit]


async def test_body_at_the_limit_is_forwarded_and_other_routes_are_unaffected() -> None:
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
    ):
        port = proxy.ports[0]
        at_limit = await http_request(port, "POST", "/small/upload", body=pattern_bytes(1000))
        elsewhere = await http_request(port, "POST", "/upload", body=pattern_bytes(5000))
    assert at_limit.status == 200 and at_limit.json()["body_len"] == 1000
    assert elsewhere.status == 200 and elsewhere.json()["body_len"] == 5000


async def test_declared_content_length_over_max_body_is_413_before_the_origin() -> None:
    body = pattern_bytes(5000)
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
    ):
        response = await http_request(
            proxy.ports[0], "POST", "/small/upload", body=body, timeout=3.0
        )
        await asyncio.sleep(0.05)
    assert response.status == 413
    assert len(response.body) < SHORT_BODY
    assert complete_bodies_over(origins["app"], 1000) == []
    assert origins["app"].requests == [], "bastion sent an oversize request to the origin"


async def test_huge_declared_content_length_is_refused_without_waiting_for_the_body() -> None:
    head = b"POST /small/upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10000000\r\n\r\n"
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(head + pattern_bytes(100))
        response = await client.read_response(timeout=1.0)
        assert response.status == 413
        assert await client.wait_closed(timeout=1.0)
    assert origins["app"].requests == [], "bastion sent an oversize request to the origin"


async def test_chunked_body_growing_over_max_body_is_cut_and_never_reaches_origin_whole() -> None:
    head = b"POST /small/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = pattern_bytes(400)
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(head)
            # 2000 bytes in all, sent while the request is in flight; bastion may close first.
            pieces = [b"%x\r\n%b\r\n" % (len(piece), piece)] * 5 + [b"0\r\n\r\n"]
            with suppress(ConnectionError):
                for data in pieces:
                    await asyncio.sleep(0.02)
                    await client.send(data)
            response = await client.read_response(timeout=2.0)
            assert response.status == 413
            assert await client.wait_closed(timeout=1.0)
        await asyncio.sleep(0.05)
    app = origins["app"]
    assert complete_bodies_over(app, 1000) == []
    assert all(r.body_len <= 1000 for r in app.requests), [r.body_len for r in app.requests]


async def test_oversize_chunked_body_sent_at_once_never_reaches_origin_whole() -> None:
    piece = pattern_bytes(1500)
    request = (
        b"POST /small/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n0\r\n\r\n" % (len(piece), piece)
    )
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request)
            response = await client.read_response(timeout=2.0)
        await asyncio.sleep(0.05)
    assert response.status == 413
    assert complete_bodies_over(origins["app"], 1000) == []


async def test_proxy_keeps_serving_after_a_413() -> None:
    async with (
        named_origins("app") as origins,
        running_proxy(config(LIMITED_ROUTES, origins)) as proxy,
    ):
        refused = await http_request(
            proxy.ports[0], "POST", "/small/x", body=pattern_bytes(2000), timeout=3.0
        )
        after = await http_get(proxy.ports[0], "/echo", timeout=3.0)
    assert refused.status == 413
    assert after.status == 200
