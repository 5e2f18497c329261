"""A browser-like client for navigating a site through the proxy.

`name_pinned_client` is an httpx client (cookie jar, gzip/br/zstd decoding, TLS, HTTP/1.1
or HTTP/2) that connects to 127.0.0.1 whatever host name a URL has, so a test can speak to
`https://public.test:PORT/` with that name in SNI, in Host and in the cookie jar.

`Browser.crawl` starts at a URL and, like a browser, follows redirects one by one, reads
the links of every HTML page (href, src, srcset candidates, form actions, meta refresh),
CSS `url()`, URL strings in JavaScript and JSON, and the Link / Refresh / Content-Location
headers, and fetches every URL on the start URL's origin once. It records everything it saw
so the test can check no URL leaks an internal address. What it must not know: bastion.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

_URL_ATTRIBUTES = frozenset({"href", "src", "action", "poster", "data", "cite", "background"})
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""")
_JS_URL = re.compile(r"""["']((?:https?:)?//[^"'\s]+)["']""")
_LINK_TARGET = re.compile(r"<([^>]*)>")
_REFRESH_URL = re.compile(r"""^\s*[\d.]+\s*[;,]\s*(?:url\s*=\s*)?['"]?([^'"]*)""", re.IGNORECASE)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens every TCP connection to `address`, whatever the host name asked for."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[object] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(self._address, port, timeout, local_address)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, context: ssl.SSLContext | None, *, http2: bool, address: str) -> None:
        super().__init__(verify=context or False, http2=http2, retries=0)
        if context is not None and http2:
            context.set_alpn_protocols(["h2", "http/1.1"])
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            http1=True,
            http2=http2,
            network_backend=_PinnedBackend(address),
        )


def name_pinned_client(
    context: ssl.SSLContext | None = None, *, http2: bool = False, address: str = "127.0.0.1"
) -> httpx.AsyncClient:
    """A client with a cookie jar whose connections all go to `address`."""
    return httpx.AsyncClient(
        transport=_PinnedTransport(context, http2=http2, address=address),
        trust_env=False,
        timeout=10.0,
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if value is None:
                continue
            if name in _URL_ATTRIBUTES:
                self.links.append(value)
            elif name == "srcset":
                self.links.extend(c.split()[0] for c in value.split(",") if c.strip())
        if tag == "meta" and (values.get("http-equiv") or "").lower() == "refresh":
            url = _refresh_url(values.get("content") or "")
            if url:
                self.links.append(url)


def _refresh_url(value: str) -> str | None:
    match = _REFRESH_URL.match(value)
    return match.group(1).strip() if match and match.group(1).strip() else None


def _json_strings(document: object) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for value in document.values():
            yield from _json_strings(value)
    elif isinstance(document, list):
        for value in document:
            yield from _json_strings(value)


def links_in(content_type: str, text: str) -> list[str]:
    """The URLs a browser would find in a body of this type."""
    if "html" in content_type:
        parser = _Links()
        parser.feed(text)
        return parser.links
    if "css" in content_type:
        return _CSS_URL.findall(text)
    if "javascript" in content_type:
        return _JS_URL.findall(text)
    if "json" in content_type:
        return [s for s in _json_strings(json.loads(text)) if s.startswith(("http", "/"))]
    return []


def links_in_headers(headers: httpx.Headers) -> list[str]:
    found = [value for name in ("location", "content-location") for value in headers.get_list(name)]
    for value in headers.get_list("link"):
        found.extend(_LINK_TARGET.findall(value))
    for value in headers.get_list("refresh"):
        url = _refresh_url(value)
        if url:
            found.append(url)
    return found


@dataclass
class Visit:
    url: str
    status: int
    headers: httpx.Headers
    content: bytes  # decoded (no content coding left)
    http_version: str

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def textual(self) -> bool:
        return not self.content_type.startswith(("image/", "application/octet-stream"))


@dataclass
class Browser:
    client: httpx.AsyncClient
    visits: list[Visit] = field(default_factory=list)
    seen_urls: list[str] = field(default_factory=list)  # every URL as written, in order
    set_cookies: list[str] = field(default_factory=list)  # every Set-Cookie received

    async def crawl(self, start: str, limit: int = 100) -> None:
        """Fetch `start` and everything on its origin it leads to, each URL once."""
        origin = _origin(start)
        queue = [start]
        done: set[str] = set()
        while queue and len(done) < limit:
            url = queue.pop(0).partition("#")[0]
            if url in done:
                continue
            done.add(url)
            visit = await self.get(url)
            for link in links_in_headers(visit.headers) + self._links_of(visit):
                self.seen_urls.append(link)
                absolute = urljoin(visit.url, link)
                if _origin(absolute) == origin and absolute.partition("#")[0] not in done:
                    queue.append(absolute)

    async def get(self, url: str) -> Visit:
        response = await self.client.get(url, follow_redirects=False)
        self.set_cookies.extend(response.headers.get_list("set-cookie"))
        visit = Visit(
            str(response.url),
            response.status_code,
            response.headers,
            response.content,
            response.http_version,
        )
        self.visits.append(visit)
        return visit

    @staticmethod
    def _links_of(visit: Visit) -> list[str]:
        if visit.status != 200 or not visit.textual:
            return []
        return links_in(visit.content_type, visit.content.decode("utf-8"))

    def paths_visited(self) -> set[str]:
        return {urlsplit(visit.url).path for visit in self.visits}


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
