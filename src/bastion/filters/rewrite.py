"""Map the origin's internal URLs to the public one on the way out (`rewrite = { ... }`).

Two filters share one `PublicUrls` per route:

- `RewriteHeaders` plugs into `response_headers`: Location, Content-Location, Refresh and
  Link (`redirects`), Set-Cookie Domain/Path/Secure (`cookies`). A response without any of
  those headers costs one pass over the header names and nothing else.
- `RewriteBody` plugs into `response_body` (`body`): a streaming rewriter for textual
  bodies (bastion.rewrite.body decides which), never for HEAD, 204, 206 or 304.

The internal origins of a request are the upstream's servers (read again when DNS changes
the set), `internal_urls`, and the Host the origin was sent, under http and https. The public
URL is the scheme and Host the client used — or, from a trusted proxy, its X-Forwarded-Proto
and X-Forwarded-Host (what the origin was told too) — plus the prefix strip_prefix removed.
The rules themselves live in bastion.rewrite; this module only gathers the request's facts.
"""

from __future__ import annotations

import time
from operator import itemgetter
from typing import TYPE_CHECKING

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import Headers, ResponseHead
from bastion.http.headers import header_value, joined_values
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import BodyTransform, Filter
from bastion.rewrite.body import BodyRewriter, body_rewriter
from bastion.rewrite.cookies import CookieRewriter
from bastion.rewrite.errors import RewriteError
from bastion.rewrite.headers import REDIRECT_HEADERS, rewrite_redirect_header
from bastion.rewrite.urls import Origin, UrlMap

if TYPE_CHECKING:
    from bastion.balance.server import ServerState
    from bastion.config.model import RewriteSettings
    from bastion.proxy.plan import UpstreamPlan

_name = itemgetter(0)  # a header field's name
_CACHE_LIMIT = 64  # distinct (public URL, Host sent) per route worth remembering
# A client's Host counts as internal (an app writes http://public-host/…), but each new one
# compiles its own patterns (~1 ms): past this many new Hosts per second (burst as much) —
# a client sending random Hosts — a request's Host stops counting until the rate drops.
_NEW_HOSTS_PER_SECOND = 16.0
_NO_BODY_REWRITE = frozenset({204, 206, 304})
_SCHEMES = frozenset({b"http", b"https"})
_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}
_NOT_IN_HOST = frozenset(b" \t/\\@?#,;\"'<>")
# Headers that describe the origin's exact bytes: wrong once the body is rewritten.
_BYTE_EXACT = frozenset({b"content-md5", b"accept-ranges"})

UrlMapKey = tuple[bytes, bytes, bytes | None, bytes, bytes | None]


class PublicUrls:
    """A route's internal origins and its recent `UrlMap`s, by public URL and Host sent.

    Built once per route; the maps depend on the upstream's current servers, so the cache
    starts afresh whenever the server set changes (a new `states` tuple).
    """

    __slots__ = ("_allowance", "_allowance_at", "_configured", "_maps", "_servers", "_states")

    def __init__(self, internal_urls: tuple[str, ...]) -> None:
        self._configured = tuple(Origin.parse(url) for url in internal_urls)
        self._states: tuple[ServerState, ...] | None = None
        self._servers: tuple[Origin, ...] = ()
        self._maps: dict[UrlMapKey, UrlMap] = {}
        self._allowance = _NEW_HOSTS_PER_SECOND  # new Hosts that may be compiled now
        self._allowance_at = 0.0

    @property
    def cached_maps(self) -> int:
        """How many maps are cached now."""
        return len(self._maps)

    def url_map(self, ctx: RequestContext) -> UrlMap | None:
        """The map for this request; None when it cannot be known (no Host, no upstream)."""
        sent_host = ctx.head.host
        upstream = ctx.upstream or (ctx.route.upstream if ctx.route is not None else None)
        if not sent_host or upstream is None:
            return None
        scheme, authority = public_origin(ctx)
        prefix = ctx.prefix if ctx.prefix != b"/" else None
        states = upstream.runtime.states
        if states is not self._states:
            self._servers = _server_origins(upstream)
            self._states = states
            self._maps = {}
        other_host = ctx.sent_host  # a Host a header policy or a hook chose instead
        key = (scheme, authority, prefix, sent_host, other_host)
        found = self._maps.get(key)
        if found is not None:
            return found
        if not self._may_add_host():
            sent_host = b""  # a flood of new Hosts: this one's names do not count
            key = (scheme, authority, prefix, sent_host, other_host)
            found = self._maps.get(key)
            if found is not None:
                return found
        internal = (*self._servers, *self._configured)
        for host in (sent_host, other_host):
            if host:
                internal += _host_origins(host)
        found = UrlMap(internal, scheme, authority, prefix)
        if len(self._maps) >= _CACHE_LIMIT:
            del self._maps[next(iter(self._maps))]
        self._maps[key] = found
        return found

    def _may_add_host(self) -> bool:
        """Whether one more new Host may have its patterns compiled (a token bucket)."""
        now = time.monotonic()
        elapsed = now - self._allowance_at
        self._allowance_at = now
        allowance = min(_NEW_HOSTS_PER_SECOND, self._allowance + elapsed * _NEW_HOSTS_PER_SECOND)
        if allowance < 1.0:
            self._allowance = allowance
            return False
        self._allowance = allowance - 1.0
        return True


def _server_origins(upstream: UpstreamPlan) -> tuple[Origin, ...]:
    """Every spelling of the upstream's servers: the names configured (resolved or not yet),
    and each current server's address and the name it was resolved from."""
    origins = [
        Origin(entry.scheme.encode(), entry.name.lower().encode(), entry.port)
        for entry in upstream.runtime.named
        if not entry.srv
    ]
    for server in upstream.servers:
        scheme = b"https" if server.tls is not None else b"http"
        host = server.host.lower().encode()
        origins.append(Origin(scheme, b"[" + host + b"]" if b":" in host else host, server.port))
        if server.tls_name:
            origins.append(Origin(scheme, server.tls_name.lower().encode(), server.port))
    return tuple(dict.fromkeys(origins))


def _host_origins(host: bytes) -> tuple[Origin, ...]:
    """The Host the origin was sent, as an app behind TLS termination may write it: with
    http or https (and the default port of each when the Host names none)."""
    try:
        return (Origin.parse(b"http://" + host), Origin.parse(b"https://" + host))
    except ValueError:
        return ()


def public_origin(ctx: RequestContext) -> tuple[bytes, bytes]:
    """(scheme, authority) the client used; from a trusted proxy, what it says it used."""
    client = ctx.client
    scheme, authority = client.scheme, ctx.head.host
    if not client.peer_trusted:
        return scheme, authority
    headers = ctx.head.headers
    claimed_scheme = _first_element(headers, b"x-forwarded-proto").lower()
    if claimed_scheme in _SCHEMES:
        scheme = claimed_scheme
    claimed_host = _first_element(headers, b"x-forwarded-host")
    if claimed_host and claimed_host.isascii() and _NOT_IN_HOST.isdisjoint(claimed_host):
        authority = claimed_host
        port = _first_element(headers, b"x-forwarded-port")
        has_port = b":" in authority.rpartition(b"]")[2]
        if not has_port and port.isdigit() and port != _DEFAULT_PORTS[scheme]:
            authority += b":" + port
    return scheme, authority


def _first_element(headers: Headers, name: bytes) -> bytes:
    value = header_value(headers, name)
    return value.partition(b",")[0].strip() if value else b""


class RewriteHeaders(Filter):
    """Redirect headers and cookies of every response on the route."""

    name = "rewrite"

    def __init__(
        self, urls: PublicUrls, *, redirects: bool, cookies: bool, drop_domain: bool
    ) -> None:
        self.urls = urls
        self.redirects = redirects
        self.cookies = cookies
        self.drop_domain = drop_domain
        watched = set(REDIRECT_HEADERS) if redirects else set()
        if cookies:
            watched.add(b"set-cookie")
        self.watched = frozenset(watched)

    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        headers = head.headers
        if self.watched.isdisjoint(map(_name, headers)):
            return
        url_map = self.urls.url_map(ctx)
        if url_map is None:
            return
        cookies: CookieRewriter | None = None
        for index, (name, value) in enumerate(headers):
            if name == b"set-cookie":
                if not self.cookies:
                    continue
                if cookies is None:
                    cookies = self._cookie_rewriter(ctx, url_map)
                fixed = cookies.rewrite(value)
            elif name in self.watched:
                fixed = rewrite_redirect_header(name, value, url_map)
            else:
                continue
            if fixed is not value:
                headers[index] = (name, fixed)

    def _cookie_rewriter(self, ctx: RequestContext, url_map: UrlMap) -> CookieRewriter:
        scheme, authority = public_origin(ctx)
        return CookieRewriter(
            url_map,
            authority,
            ctx.prefix,
            drop_domain=self.drop_domain,
            secure=scheme == b"https",
        )


class RewriteBody(Filter):
    """Internal URLs in the textual bodies of proxied responses."""

    name = "rewrite_body"

    def __init__(self, urls: PublicUrls) -> None:
        self.urls = urls

    def response_body(self, ctx: RequestContext, head: ResponseHead) -> BodyTransform | None:
        if head.status in _NO_BODY_REWRITE or head.status < 200 or ctx.head.method == b"HEAD":
            return None
        headers = head.headers
        content_type = header_value(headers, b"content-type")
        if content_type is None:
            return None
        url_map = self.urls.url_map(ctx)
        if url_map is None:
            return None
        coding = joined_values(headers, b"content-encoding") or None
        rewriter = body_rewriter(url_map, content_type, coding)
        if rewriter is None:
            return None
        head.headers = [_weak_etag(field) for field in headers if field[0] not in _BYTE_EXACT]
        return _UpstreamBody(rewriter)


def _weak_etag(field: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """A strong ETag names the origin's bytes: the rewritten body is only equivalent."""
    name, value = field
    if name == b"etag" and value.startswith(b'"'):
        return name, b"W/" + value
    return field


class _UpstreamBody:
    """A body rewriter whose failures (a corrupt compressed body) blame the origin."""

    __slots__ = ("_rewriter",)

    def __init__(self, rewriter: BodyRewriter) -> None:
        self._rewriter = rewriter

    def feed(self, data: bytes) -> bytes:
        try:
            return self._rewriter.feed(data)
        except RewriteError as failure:
            raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, f"response body: {failure}") from None

    def end(self) -> bytes:
        try:
            return self._rewriter.end()
        except RewriteError as failure:
            raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, f"response body: {failure}") from None


class SentHost(Filter):
    """Last of a rewriting route's `upstream_request` filters: notes the Host the origin is
    sent when it is not the client's (a header policy or a hook set it), since the app
    writes that name into its URLs too."""

    name = "rewrite sent host"

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        host = header_value(headers, b"host")
        ctx.sent_host = host if host and host != ctx.head.host else None


def rewrite_filters(settings: RewriteSettings) -> tuple[Filter, ...]:
    """The route's rewrite filters (none when every part is off)."""
    if not (settings.redirects or settings.cookies or settings.body):
        return ()
    urls = PublicUrls(settings.internal_urls)
    filters: list[Filter] = []
    if settings.redirects or settings.cookies:
        filters.append(
            RewriteHeaders(
                urls,
                redirects=settings.redirects,
                cookies=settings.cookies,
                drop_domain=settings.cookie_domain == "drop",
            )
        )
    if settings.body:
        filters.append(RewriteBody(urls))
    return tuple(filters)
