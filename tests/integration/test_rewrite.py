"""Rewriting the origin's internal URLs (route `rewrite`), over real sockets.

The legacy app (tests/support/legacy_app.py) believes it lives at http://127.0.0.1:PORT/
and also writes http://intranet-app:8080; bastion mounts it at https://public.test:PORT/legacy/
with strip_prefix. A browser-like client navigates the whole app and must never see the
internal address, while the app's session cookie keeps working.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bastion.runtime.server import ProxyServer
from tests.support.browser import Browser, name_pinned_client
from tests.support.certs import TestPKI
from tests.support.client import RawClient, RawResponse, request_bytes
from tests.support.legacy_app import (
    SECOND_NAME,
    SITE_PAGES,
    LegacyApp,
    api_json,
    gate_parts,
    home_html,
    site_css,
)
from tests.support.proxy import running_proxy

PUBLIC = "public.test"


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path)


def legacy_config(pki: TestPKI, app: LegacyApp, rewrite: str = "", server: str = "") -> str:
    """A TLS listener (ports[0]) and a plain one (ports[1]) serving public.test, with the
    legacy app mounted at /legacy; `rewrite` adds keys to the route's rewrite table."""
    cert = pki.server_cert(PUBLIC)
    keys = f'internal_urls = ["{SECOND_NAME}"]' + (f", {rewrite}" if rewrite else "")
    return f"""
[server]
{server}
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
tls = true
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["{PUBLIC}"]
tls = {{ certificate = "{cert.certificate}", key = "{cert.key}" }}
  [[site.route]]
  path = "/legacy"
  upstream = "legacy"
  strip_prefix = true
  rewrite = {{ {keys} }}
[upstream.legacy]
servers = ["http://{app.address}"]
"""


@asynccontextmanager
async def legacy_behind_bastion(
    pki: TestPKI, rewrite: str = "", server: str = ""
) -> AsyncIterator[tuple[LegacyApp, ProxyServer]]:
    async with (
        LegacyApp() as app,
        running_proxy(legacy_config(pki, app, rewrite, server)) as proxy,
    ):
        yield app, proxy
    assert not app.errors


def leaks(app: LegacyApp, text: str) -> list[str]:
    return [mark for mark in app.internal_marks if mark in text]


async def tls_get(
    pki: TestPKI, port: int, target: str, headers: tuple[tuple[str, str], ...] = ()
) -> RawResponse:
    """One raw HTTP/1.1 request over TLS to public.test; the response as it came."""
    async with RawClient(port, ssl=pki.client_context(), server_hostname=PUBLIC) as client:
        host = f"{PUBLIC}:{port}"
        await client.send(request_bytes("GET", target, host=host, headers=headers))
        return await client.read_response()


def respond_target(status: int, *headers: str, body: str = "") -> str:
    query = "&".join("h=" + quote(header, safe="") for header in headers)
    return f"/legacy/t/respond?status={status}&{query}&body={quote(body)}"


# -- the whole app, navigated like a browser -------------------------------------------------


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
async def test_browser_navigates_the_legacy_app_without_seeing_internal_urls(
    pki: TestPKI, http2: bool
) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (app, proxy):
        port = proxy.ports[0]
        start = f"https://{PUBLIC}:{port}/legacy/"
        async with name_pinned_client(pki.client_context(), http2=http2) as client:
            browser = Browser(client)
            await browser.crawl(start)
            jar = list(client.cookies.jar)
    expected_version = "HTTP/2" if http2 else "HTTP/1.1"
    assert {visit.http_version for visit in browser.visits} == {expected_version}
    # Every page of the app was reached through the proxy, none refused for want of cookies.
    assert set(app.reached) == SITE_PAGES
    assert not app.refused
    assert browser.paths_visited() == {"/legacy" + path for path in SITE_PAGES}
    assert all(visit.status in (200, 302) for visit in browser.visits)
    # No URL, header or text body the client got names the internal origin.
    for url in browser.seen_urls:
        assert not leaks(app, url), url
    for visit in browser.visits:
        for name, value in visit.headers.multi_items():
            assert not leaks(app, value), (visit.url, name, value)
        if visit.textual:
            assert not leaks(app, visit.content.decode()), visit.url
        else:
            assert visit.content == app.png()  # binary: byte for byte, internal URL and all
    # The app wrote every kind of URL, and the client got them public.
    public = f"https://{PUBLIC}:{port}/legacy"
    assert f"{public}/login" in browser.seen_urls  # absolute internal redirect
    assert "/legacy/home" in browser.seen_urls  # root-relative redirect
    assert f"{public}/static/app.js" in browser.seen_urls  # the second internal name
    assert "http://example.org/elsewhere" in browser.seen_urls  # foreign: untouched
    assert "relative/page" in browser.seen_urls  # relative: untouched
    encodings = {visit.headers.get("content-encoding") for visit in browser.visits}
    assert {"gzip", "br"} <= encodings
    # Cookies: public domain, prefixed path, Secure (TLS), everything else as the app set it.
    cookies = {cookie.name: cookie for cookie in jar}
    assert set(cookies) == {"session", "theme"}
    assert {cookie.domain.lstrip(".") for cookie in jar} == {PUBLIC}
    assert {cookie.path for cookie in jar} == {"/legacy"}
    assert all(cookie.secure for cookie in jar)
    assert sorted(browser.set_cookies) == [
        f"session=s3cr3t-value; Domain={PUBLIC}; Path=/legacy; HttpOnly; SameSite=Lax; Secure",
        f"theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Domain={PUBLIC}; Path=/legacy; Secure",
    ]


# -- redirect headers ------------------------------------------------------------------------


async def test_location_refresh_link_and_content_location(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki) as (app, proxy):
        port = proxy.ports[0]
        public = f"https://{PUBLIC}:{port}/legacy"
        response = await tls_get(
            pki,
            port,
            respond_target(
                301,
                f"Location: {app.base}/next?a=1#frag",
                f"Content-Location: {SECOND_NAME}/doc",
                f"Refresh: 5; url={app.base}/later",
                f'Link: <{app.base}/a.css>; rel=preload, </b.js>; rel="preload"; '
                'title="<not a target>", <https://cdn.example/c>; rel=preconnect',
            ),
        )
        quoted = await tls_get(pki, port, respond_target(200, f"Refresh: 0;URL='{app.base}/q'"))
        relative = await tls_get(pki, port, respond_target(302, "Location: /home?x=1"))
        untouched = await tls_get(pki, port, respond_target(302, "Location: login", "Refresh: 10"))
        foreign = await tls_get(pki, port, respond_target(302, "Location: http://other.test/"))
    assert response.status == 301
    head = response.header
    assert head("location") == f"{public}/next?a=1#frag".encode()
    assert head("content-location") == f"{public}/doc".encode()
    assert head("refresh") == f"5; url={public}/later".encode()
    assert (
        head("link")
        == (
            f'<{public}/a.css>; rel=preload, </legacy/b.js>; rel="preload"; '
            'title="<not a target>", <https://cdn.example/c>; rel=preconnect'
        ).encode()
    )
    assert quoted.header("refresh") == f"0;URL='{public}/q'".encode()
    assert relative.header("location") == b"/legacy/home?x=1"
    assert untouched.header("location") == b"login"
    assert untouched.header("refresh") == b"10"
    assert foreign.header("location") == b"http://other.test/"


async def test_redirects_off_leaves_location_alone(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "redirects = false") as (app, proxy):
        response = await tls_get(
            pki, proxy.ports[0], respond_target(302, f"Location: {app.base}/x")
        )
    assert response.header("location") == f"{app.base}/x".encode()


async def test_http_url_of_the_public_host_becomes_https(pki: TestPKI) -> None:
    """An app behind TLS termination that builds URLs from Host writes http://public/…"""
    async with legacy_behind_bastion(pki) as (_, proxy):
        port = proxy.ports[0]
        response = await tls_get(
            pki, port, respond_target(302, f"Location: http://{PUBLIC}:{port}/next")
        )
    expected = f"https://{PUBLIC}:{port}/legacy/next".encode()
    assert response.header("location") == expected


async def test_a_trusted_proxy_names_the_public_url(pki: TestPKI) -> None:
    """Behind another proxy that terminated TLS: its X-Forwarded-Proto/Host are believed for
    the public URL, as they are passed on to the origin."""
    trusted = 'trusted_proxies = ["127.0.0.1/32"]'
    async with legacy_behind_bastion(pki, server=trusted) as (app, proxy):
        async with RawClient(proxy.ports[1]) as client:
            target = respond_target(302, f"Location: {app.base}/next", "Set-Cookie: a=1; Path=/")
            forwarded = (("x-forwarded-proto", "https"), ("x-forwarded-host", "www.example.com"))
            await client.send(request_bytes("GET", target, host=PUBLIC, headers=forwarded))
            response = await client.read_response()
    assert response.header("location") == b"https://www.example.com/legacy/next"
    assert response.header("set-cookie") == b"a=1; Path=/legacy; Secure"
    told = app.requests[-1].headers
    assert (told["x-forwarded-proto"], told["x-forwarded-host"]) == ("https", "www.example.com")


# -- cookies ---------------------------------------------------------------------------------


COOKIE = "id=a,b; Domain=127.0.0.1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Priority=High"


async def test_secure_is_added_only_over_tls(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki) as (_, proxy):
        over_tls = await tls_get(pki, proxy.ports[0], respond_target(200, f"Set-Cookie: {COOKIE}"))
        async with RawClient(proxy.ports[1]) as client:
            target = respond_target(200, f"Set-Cookie: {COOKIE}")
            await client.send(request_bytes("GET", target, host=PUBLIC))
            plain = await client.read_response()
    rewritten = f"id=a,b; Domain={PUBLIC}; Path=/legacy; Expires=Wed, 21 Oct 2037 07:28:00 GMT; "
    assert over_tls.header("set-cookie") == (rewritten + "Priority=High; Secure").encode()
    assert plain.header("set-cookie") == (rewritten + "Priority=High").encode()


async def test_cookie_domain_drop_makes_host_only_cookies(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, 'cookie_domain = "drop"') as (_, proxy):
        response = await tls_get(
            pki,
            proxy.ports[0],
            respond_target(
                200,
                f"Set-Cookie: {COOKIE}",
                "Set-Cookie: other=1; domain=.intranet-app; secure",
                f"Set-Cookie: mine=2; Domain=.{PUBLIC}",  # the public host's own: kept
            ),
        )
    assert response.headers_named("set-cookie") == [
        b"id=a,b; Path=/legacy; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Priority=High; Secure",
        b"other=1; secure",
        f"mine=2; Domain=.{PUBLIC}; Secure".encode(),
    ]


async def test_cookies_off_leaves_set_cookie_alone(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "cookies = false") as (_, proxy):
        response = await tls_get(pki, proxy.ports[0], respond_target(200, f"Set-Cookie: {COOKIE}"))
    assert response.header("set-cookie") == COOKIE.encode()


# -- bodies ----------------------------------------------------------------------------------


async def test_bodies_are_untouched_by_default(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki) as (app, proxy):
        plain = await tls_get(pki, proxy.ports[0], "/legacy/t/page?coding=identity")
        zipped = await tls_get(
            pki, proxy.ports[0], "/legacy/t/page?coding=gzip", (("accept-encoding", "gzip"),)
        )
    assert plain.body == home_html(app)
    assert plain.header("content-length") == str(len(home_html(app))).encode()
    assert plain.header("etag") == b'"page-v1"'
    assert gzip.decompress(zipped.body) == home_html(app)


async def test_binary_passes_untouched_with_body_rewriting_on(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (app, proxy):
        response = await tls_get(pki, proxy.ports[0], "/legacy/t/image")
    assert response.body == app.png()
    assert response.header("content-length") == str(len(app.png())).encode()


async def test_rewritten_body_goes_chunked_on_http11_with_a_weak_etag(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (app, proxy):
        port = proxy.ports[0]
        response = await tls_get(pki, port, "/legacy/t/page?coding=identity")
        head = await _head_request(pki, port, "/legacy/t/page?coding=identity")
    public = f"https://{PUBLIC}:{port}/legacy"
    expected = (
        home_html(app)
        .replace(app.base.encode(), public.encode())
        .replace(b"//" + app.address.encode(), public.removeprefix("https:").encode())
        .replace(SECOND_NAME.encode(), public.encode())
    )
    assert response.chunked
    assert response.header("content-length") is None
    assert response.header("etag") == b'W/"page-v1"'
    assert b'href="/legacy/static/site.css"' in response.body
    assert b'srcset="/legacy/img/logo.png 1x, ' in response.body
    assert b'action="/legacy/search"' in response.body
    assert not leaks(app, response.text)
    assert _without_prefixing(response.body) == _without_prefixing(expected)
    # HEAD is never rewritten: the origin's head as it is
    assert head.header("content-length") == str(len(home_html(app))).encode()
    assert head.header("etag") == b'"page-v1"'


def _without_prefixing(body: bytes) -> bytes:
    """Compare bodies but for the /legacy prefix of root-relative references."""
    for quote_mark in (b'"', b"'", b" "):
        body = body.replace(quote_mark + b"/legacy/", quote_mark + b"/")
    return body


async def _head_request(pki: TestPKI, port: int, target: str) -> RawResponse:
    async with RawClient(port, ssl=pki.client_context(), server_hostname=PUBLIC) as client:
        await client.send(request_bytes("HEAD", target, host=f"{PUBLIC}:{port}"))
        return await client.read_response(head_request=True)


@pytest.mark.parametrize("coding", ["gzip", "br", "identity"])
async def test_rewritten_bodies_over_http2(pki: TestPKI, coding: str) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (app, proxy):
        port = proxy.ports[0]
        async with name_pinned_client(pki.client_context(), http2=True) as client:
            response = await client.get(
                f"https://{PUBLIC}:{port}/legacy/t/page?coding={coding}",
                headers={"accept-encoding": coding},
            )
            css = await client.get(
                f"https://{PUBLIC}:{port}/legacy/static/site.css",
                headers={"cookie": "session=s3cr3t-value"},
            )
            api = await client.get(
                f"https://{PUBLIC}:{port}/legacy/api/items",
                headers={"cookie": "session=s3cr3t-value"},
            )
    public = f"https://{PUBLIC}:{port}/legacy"
    assert response.http_version == "HTTP/2"
    assert response.headers.get("content-encoding") == (None if coding == "identity" else coding)
    length = response.headers.get("content-length")
    assert length is None or int(length) == len(response.content)
    assert f'<a href="{public}/about">'.encode() in response.content
    assert not leaks(app, response.text)
    assert css.content == site_css(app).replace(app.base.encode(), public.encode()).replace(
        b'url("/img/x.png")', b'url("/legacy/img/x.png")'
    )
    escaped = public.replace("/", "\\/").encode()
    assert api.content == api_json(app).replace(app.base.replace("/", "\\/").encode(), escaped)


async def test_url_split_across_two_origin_writes_is_rewritten(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (_, proxy):
        port = proxy.ports[0]
        response = await tls_get(pki, port, "/legacy/t/split")
    assert (
        response.body == f'<a href="https://{PUBLIC}:{port}/legacy/products/1">split</a>\n'.encode()
    )


@pytest.mark.parametrize("coding", ["identity", "gzip"])
async def test_first_bytes_reach_the_client_before_the_origin_finished(
    pki: TestPKI, coding: str
) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (app, proxy):
        port = proxy.ports[0]
        public = f"https://{PUBLIC}:{port}/legacy"
        async with name_pinned_client(pki.client_context()) as client:
            url = f"https://{PUBLIC}:{port}/legacy/t/gate?coding={coding}"
            async with client.stream("GET", url) as response:
                pieces = response.aiter_bytes()
                first = b""
                while f'href="{public}/one"'.encode() not in first:
                    first += await asyncio.wait_for(anext(pieces), 5)  # the origin waits
                assert not app.gate.is_set()
                app.gate.set()
                rest = b"".join([piece async for piece in pieces])
    part1, part2 = gate_parts(app)
    assert first + rest == (part1 + part2).replace(app.base.encode(), public.encode())


async def test_corrupt_gzip_over_http2_resets_the_stream(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (_, proxy):
        port = proxy.ports[0]
        async with name_pinned_client(pki.client_context(), http2=True) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"https://{PUBLIC}:{port}/legacy/t/corrupt")


async def test_corrupt_gzip_from_the_origin_cuts_the_client_connection(pki: TestPKI) -> None:
    async with legacy_behind_bastion(pki, "body = true") as (_, proxy):
        port = proxy.ports[0]
        async with RawClient(port, ssl=pki.client_context(), server_hostname=PUBLIC) as client:
            await client.send(request_bytes("GET", "/legacy/t/corrupt", host=PUBLIC))
            response = await client.read_response()
            assert await client.wait_closed()
    assert response.status == 200  # the head was out before the body went bad
    assert response.chunked
    assert not response.complete  # no last chunk: the client can tell it is truncated


@pytest.mark.parametrize("http2", [False, True])
async def test_a_body_that_fails_before_any_byte_went_out_is_answered_502(
    pki: TestPKI, http2: bool
) -> None:
    # "gzip" that is not: the rewriter fails on the first read, while the head is still
    # held back, so the client gets a clean 502 instead of a cut connection.
    async with legacy_behind_bastion(pki, "body = true") as (_, proxy):
        port = proxy.ports[0]
        async with name_pinned_client(pki.client_context(), http2=http2) as client:
            response = await client.get(f"https://{PUBLIC}:{port}/legacy/t/mislabelled")
            assert response.status_code == 502
            assert b"request id" in response.content
            again = await client.get(f"https://{PUBLIC}:{port}/legacy/t/image")
            assert again.status_code == 200


@pytest.mark.parametrize("fixed_host", [True, False])
async def test_the_host_a_header_policy_sends_counts_as_internal(
    pki: TestPKI, fixed_host: bool
) -> None:
    """An app given a fixed vhost name (nginx's `proxy_set_header Host`) writes that name."""
    async with LegacyApp() as app:
        config = legacy_config(pki, app)
        if fixed_host:
            policy = 'headers = { request = { set = { Host = "intranet.test:8080" } } }'
            config = config.replace("strip_prefix = true", f"strip_prefix = true\n  {policy}")
        async with running_proxy(config) as proxy:
            port = proxy.ports[0]
            target = respond_target(302, "Location: http://intranet.test:8080/next")
            response = await tls_get(pki, port, target)
    rewritten = f"https://{PUBLIC}:{port}/legacy/next".encode()
    untouched = b"http://intranet.test:8080/next"
    assert response.header("location") == (rewritten if fixed_host else untouched)
