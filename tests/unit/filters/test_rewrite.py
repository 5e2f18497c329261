"""The rewrite filters on a compiled route: which routes get them, the public URL and the
internal origins of a request, redirect headers and cookies, and when a body is rewritten."""

from __future__ import annotations

import gzip

import pytest

from bastion.config import parse_config
from bastion.errors import ErrorKind, ProxyError
from bastion.filters.chain import compile_plan
from bastion.filters.rewrite import PublicUrls, RewriteBody, RewriteHeaders, public_origin
from bastion.http.events import Framing, RequestHead, ResponseHead
from bastion.http.target import parse_target
from bastion.proxy.context import ClientInfo, RequestContext
from bastion.proxy.plan import CompiledRoute
from bastion.proxy.router import RouteMatch
from bastion.proxy.server_set import ServerSpec

CONFIG = """\
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/legacy"
  upstream = "app"
  strip_prefix = true
  rewrite = {{ {rewrite} }}
  [[site.route]]
  path = "/moved"
  redirect = {{ to = "https://elsewhere.test{{uri}}" }}
[upstream.app]
servers = ["http://10.0.0.5:8080", "https://app.internal:8443"]
"""


def route_for(rewrite: str = "", path: bytes = b"/legacy/x") -> CompiledRoute:
    plan = compile_plan(parse_config(CONFIG.format(rewrite=rewrite), "t.toml"))
    match = plan.router.match(b"www.example.com", path, b"GET")
    assert isinstance(match, RouteMatch)
    return match.rule.target


def context(
    route: CompiledRoute,
    *,
    host: bytes = b"www.example.com",
    scheme: bytes = b"https",
    trusted: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    method: bytes = b"GET",
) -> RequestContext:
    target = b"/legacy/x"
    head = RequestHead(
        method=method,
        target=target,
        http_version=b"1.1",
        headers=[(b"host", host), *headers],
        framing=Framing.NONE,
        content_length=None,
        keep_alive=True,
        host=host,
    )
    ctx = RequestContext(head, ClientInfo("192.0.2.7", 50000, 443, scheme, trusted), 0.0)
    ctx.target = parse_target(target, method)
    ctx.route = route
    ctx.upstream = route.upstream
    for request_filter in route.request_filters:
        assert request_filter.request_headers(ctx) is None
    return ctx


def respond(
    route: CompiledRoute, ctx: RequestContext, *headers: tuple[bytes, bytes], status: int = 302
) -> ResponseHead:
    head = ResponseHead(status=status, reason=b"", headers=list(headers))
    for response_filter in route.response_filters:
        response_filter.response_headers(ctx, head)
    return head


def rewrite_filters(route: CompiledRoute) -> list[object]:
    every = route.response_filters + route.body_filters
    return [f for f in every if isinstance(f, RewriteHeaders | RewriteBody)]


# -- which routes get which filter -------------------------------------------------------------


def test_defaults_give_the_header_filter_only() -> None:
    route = route_for()
    assert [type(f) for f in rewrite_filters(route)] == [RewriteHeaders]


def test_body_adds_the_body_filter_sharing_the_urls() -> None:
    route = route_for("body = true")
    headers, body = rewrite_filters(route)
    assert isinstance(headers, RewriteHeaders) and isinstance(body, RewriteBody)
    assert headers.urls is body.urls


def test_everything_off_means_no_filter() -> None:
    assert rewrite_filters(route_for("redirects = false, cookies = false")) == []
    assert [type(f) for f in rewrite_filters(route_for("redirects = false, body = true"))] == [
        RewriteHeaders,
        RewriteBody,
    ]
    assert rewrite_filters(route_for(path=b"/moved")) == []  # a redirect route: no upstream


# -- redirect headers and cookies ------------------------------------------------------------


def test_every_server_spelling_and_the_sent_host_are_internal() -> None:
    route = route_for()
    ctx = context(route)
    locations = [
        b"http://10.0.0.5:8080/a",
        b"https://app.internal:8443/b",  # the configured name of a resolved server
        b"http://www.example.com/c",  # the Host the origin was sent, written with http
        b"/d",
        b"http://elsewhere.test/e",
    ]
    heads = [respond(route, ctx, (b"location", location)) for location in locations]
    assert [head.headers[0][1] for head in heads] == [
        b"https://www.example.com/legacy/a",
        b"https://www.example.com/legacy/b",
        b"https://www.example.com/legacy/c",
        b"/legacy/d",
        b"http://elsewhere.test/e",
    ]


def test_only_the_watched_headers_change_and_order_is_kept() -> None:
    route = route_for()
    ctx = context(route)
    head = respond(
        route,
        ctx,
        (b"content-type", b"text/html"),
        (b"set-cookie", b"a=1; Domain=10.0.0.5; Path=/"),
        (b"x-location", b"http://10.0.0.5:8080/kept"),
        (b"link", b"</style.css>; rel=preload"),
        (b"set-cookie", b"b=2"),
    )
    assert head.headers == [
        (b"content-type", b"text/html"),
        (b"set-cookie", b"a=1; Domain=www.example.com; Path=/legacy; Secure"),
        (b"x-location", b"http://10.0.0.5:8080/kept"),
        (b"link", b"</legacy/style.css>; rel=preload"),
        (b"set-cookie", b"b=2; Secure"),
    ]


def test_a_response_without_watched_headers_builds_no_map() -> None:
    route = route_for()
    (rewriter,) = rewrite_filters(route)
    assert isinstance(rewriter, RewriteHeaders)
    ctx = context(route)
    respond(route, ctx, (b"content-type", b"text/html"), (b"content-length", b"5"), status=200)
    assert rewriter.urls.cached_maps == 0
    respond(route, ctx, (b"location", b"/x"))
    respond(route, context(route), (b"location", b"/y"))
    assert rewriter.urls.cached_maps == 1  # one map per public URL, reused


def test_parts_turned_off_are_left_alone() -> None:
    cookie = (b"set-cookie", b"a=1; Path=/")
    location = (b"location", b"/x")
    no_cookies = route_for("cookies = false")
    head = respond(no_cookies, context(no_cookies), cookie, location)
    assert head.headers == [cookie, (b"location", b"/legacy/x")]
    no_redirects = route_for("redirects = false")
    head = respond(no_redirects, context(no_redirects), cookie, location)
    assert head.headers == [(b"set-cookie", b"a=1; Path=/legacy; Secure"), location]


def test_cookie_domain_drop() -> None:
    route = route_for('cookie_domain = "drop"')
    head = respond(route, context(route), (b"set-cookie", b"a=1; Domain=10.0.0.5"))
    assert head.headers == [(b"set-cookie", b"a=1; Secure")]


def test_a_request_without_host_is_not_rewritten() -> None:
    route = route_for()
    ctx = context(route, host=b"")
    head = respond(route, ctx, (b"location", b"http://10.0.0.5:8080/a"), (b"set-cookie", b"a=1"))
    assert head.headers == [(b"location", b"http://10.0.0.5:8080/a"), (b"set-cookie", b"a=1")]


def test_servers_changed_by_dns_are_picked_up() -> None:
    route = route_for()
    upstream = route.upstream
    assert upstream is not None
    location = (b"location", b"http://10.0.0.9:8080/a")
    assert respond(route, context(route), location).headers == [location]
    upstream.runtime.replace_servers(
        [ServerSpec("http", "10.0.0.9", 8080, identity="http://10.0.0.9:8080")]
    )
    head = respond(route, context(route), location)
    assert head.headers == [(b"location", b"https://www.example.com/legacy/a")]


# -- the public URL -----------------------------------------------------------------------


FORWARDED = (
    (b"x-forwarded-proto", b"https, http"),
    (b"x-forwarded-host", b"www.example.com"),
    (b"x-forwarded-port", b"8443"),
)


def test_a_trusted_proxy_says_what_the_client_used() -> None:
    route = route_for()
    ctx = context(route, host=b"10.1.1.1:8080", scheme=b"http", trusted=True, headers=FORWARDED)
    assert public_origin(ctx) == (b"https", b"www.example.com:8443")
    head = respond(route, ctx, (b"location", b"http://10.1.1.1:8080/a"), (b"set-cookie", b"a=1"))
    assert head.headers == [
        (b"location", b"https://www.example.com:8443/legacy/a"),
        (b"set-cookie", b"a=1; Secure"),
    ]


def test_an_untrusted_client_cannot_claim_a_public_url() -> None:
    ctx = context(route_for(), host=b"app.test", scheme=b"http", headers=FORWARDED)
    assert public_origin(ctx) == (b"http", b"app.test")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (((b"x-forwarded-proto", b"gopher"),), (b"http", b"app.test")),
        (((b"x-forwarded-host", b"evil.test/path"),), (b"http", b"app.test")),
        (((b"x-forwarded-host", b"a b"),), (b"http", b"app.test")),
        (
            ((b"x-forwarded-host", b"pub.test:81"), (b"x-forwarded-port", b"82")),
            (b"http", b"pub.test:81"),
        ),
        (
            ((b"x-forwarded-host", b"pub.test"), (b"x-forwarded-port", b"80")),
            (b"http", b"pub.test"),
        ),
        (((b"x-forwarded-host", b"[2001:db8::1]"),), (b"http", b"[2001:db8::1]")),
    ],
)
def test_implausible_claims_are_ignored(
    headers: tuple[tuple[bytes, bytes], ...], expected: tuple[bytes, bytes]
) -> None:
    ctx = context(route_for(), host=b"app.test", scheme=b"http", trusted=True, headers=headers)
    assert public_origin(ctx) == expected


def test_a_prefix_of_slash_is_no_prefix() -> None:
    urls = PublicUrls(())
    route = route_for()
    ctx = context(route)
    ctx.prefix = b"/"
    url_map = urls.url_map(ctx)
    assert url_map is not None and url_map.prefix is None


# -- bodies ------------------------------------------------------------------------------------


def body_head(status: int = 200, *extra: tuple[bytes, bytes]) -> ResponseHead:
    return ResponseHead(
        status=status,
        reason=b"",
        headers=[(b"content-type", b"text/html; charset=utf-8"), *extra],
    )


def body_filter(rewrite: str = "body = true") -> tuple[CompiledRoute, RewriteBody]:
    route = route_for(rewrite)
    (found,) = [f for f in route.body_filters if isinstance(f, RewriteBody)]
    return route, found


def test_textual_bodies_get_a_transform_and_a_weak_etag() -> None:
    route, rewriter = body_filter()
    head = body_head(
        200,
        (b"etag", b'"v1"'),
        (b"content-md5", b"Q2hlY2sgSW50ZWdyaXR5IQ=="),
        (b"accept-ranges", b"bytes"),
        (b"cache-control", b"max-age=60"),
    )
    transform = rewriter.response_body(context(route), head)
    assert transform is not None
    assert head.headers == [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"etag", b'W/"v1"'),
        (b"cache-control", b"max-age=60"),
    ]
    out = transform.feed(b'<a href="http://10.0.0.5:8080/a">') + transform.end()
    assert out == b'<a href="https://www.example.com/legacy/a">'


def test_a_weak_etag_stays_as_it_is() -> None:
    route, rewriter = body_filter()
    head = body_head(200, (b"etag", b'W/"v1"'))
    assert rewriter.response_body(context(route), head) is not None
    assert (b"etag", b'W/"v1"') in head.headers


@pytest.mark.parametrize("status", [204, 206, 304, 101, 103])
def test_statuses_never_rewritten(status: int) -> None:
    route, rewriter = body_filter()
    head = body_head(status, (b"etag", b'"v1"'))
    assert rewriter.response_body(context(route), head) is None
    assert (b"etag", b'"v1"') in head.headers


def test_head_requests_and_other_types_are_not_rewritten() -> None:
    route, rewriter = body_filter()
    assert rewriter.response_body(context(route, method=b"HEAD"), body_head()) is None
    png = ResponseHead(status=200, reason=b"", headers=[(b"content-type", b"image/png")])
    assert rewriter.response_body(context(route), png) is None
    untyped = ResponseHead(status=200, reason=b"", headers=[])
    assert rewriter.response_body(context(route), untyped) is None
    stacked = body_head(200, (b"content-encoding", b"gzip"), (b"content-encoding", b"br"))
    assert rewriter.response_body(context(route), stacked) is None


def test_a_corrupt_compressed_body_blames_the_origin() -> None:
    route, rewriter = body_filter()
    head = body_head(200, (b"content-encoding", b"gzip"))
    transform = rewriter.response_body(context(route), head)
    assert transform is not None
    good = gzip.compress(b"<p>fine</p>")
    with pytest.raises(ProxyError) as failure:
        transform.feed(good[:20] + b"\x00garbage, not deflate\xff" * 8)
        transform.end()
    assert failure.value.kind is ErrorKind.UPSTREAM_PROTOCOL


def test_a_flood_of_new_hosts_stops_counting_them_as_internal() -> None:
    # Each new Host compiles its own patterns: a client sending random Hosts must not make
    # every request pay for that. Past a burst, a new Host's names stop counting (the
    # servers' still do) until the rate drops.
    urls = PublicUrls(())
    route = route_for()
    counted = []
    for n in range(100):
        host = b"h%d.example.com" % n
        url_map = urls.url_map(context(route, host=host))
        assert url_map is not None
        assert url_map.map_url(b"http://10.0.0.5:8080/a") == b"https://" + host + b"/legacy/a"
        counted.append(url_map.is_internal_host(host))
    assert all(counted[:10]) and counted.count(True) <= 20
    flooded = [urls.url_map(context(route, host=b"x%d.example.com" % n)) for n in range(5)]
    # ... and share one compiled grammar: no compile per request.
    assert len({id(m.grammar) for m in flooded if m is not None}) == 1
