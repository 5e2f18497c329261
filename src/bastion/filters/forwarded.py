"""Tell the origin who the client is: X-Forwarded-* / Forwarded per the route's mode.

Plugs into `upstream_request`. Spoofable headers from untrusted clients are replaced; a
trusted proxy's chain is kept and extended. The rules live in `bastion.http.forwarded`.
"""

from __future__ import annotations

from bastion.http.events import Headers
from bastion.http.forwarded import ForwardingFacts, forwarding_headers
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter


class ForwardedHeaders(Filter):
    name = "forwarded"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        client = ctx.client
        facts = ForwardingFacts(
            peer_ip=client.peer_ip,
            client_ip=ctx.client_ip,
            peer_trusted=client.peer_trusted,
            proto=client.scheme,
            host=ctx.head.host,
            port=client.local_port,
            prefix=ctx.prefix,
        )
        headers[:] = forwarding_headers(headers, facts, self.mode)
