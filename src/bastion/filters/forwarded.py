"""Tell the origin who the client is: X-Forwarded-* / Forwarded per the route's mode.

Plugs into `upstream_request`. Spoofable headers from untrusted clients are replaced; a
trusted proxy's chain is kept and extended. The rules live in `bastion.http.forwarded`.
For an untrusted client the headers to add depend only on the connection, the Host and the
prefix, so they are computed once per connection and Host and reused.
"""

from __future__ import annotations

from operator import itemgetter

from bastion.http.events import Headers
from bastion.http.forwarded import (
    FORWARDING_HEADERS,
    ForwardingFacts,
    forwarding_headers,
    fresh_fields,
)
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter

_CACHE_LIMIT = 16  # distinct (mode, Host, prefix) per connection worth remembering
_name = itemgetter(0)  # a header field's name


class ForwardedHeaders(Filter):
    name = "forwarded"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        client = ctx.client
        if client.peer_trusted:
            headers[:] = forwarding_headers(headers, self._facts(ctx), self.mode)
            return
        key = (self.mode, ctx.head.host, ctx.prefix)
        cache = client.forwarding_cache
        fresh = cache.get(key)
        if fresh is None:
            fresh = fresh_fields(self._facts(ctx), self.mode)
            if len(cache) < _CACHE_LIMIT:
                cache[key] = fresh
        if not FORWARDING_HEADERS.isdisjoint(map(_name, headers)):
            headers[:] = [field for field in headers if field[0] not in FORWARDING_HEADERS]
        headers.extend(fresh)

    @staticmethod
    def _facts(ctx: RequestContext) -> ForwardingFacts:
        client = ctx.client
        return ForwardingFacts(
            peer_ip=client.peer_ip,
            client_ip=ctx.client_ip,
            peer_trusted=client.peer_trusted,
            proto=client.scheme,
            host=ctx.head.host,
            port=client.local_port,
            prefix=ctx.prefix,
        )
