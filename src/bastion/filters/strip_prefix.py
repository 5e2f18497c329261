"""Mount an application under a path prefix it does not know about.

Plugs into `request_headers`: the origin sees the path without the route's prefix; the
prefix is recorded on the context so forwarding headers send `X-Forwarded-Prefix`.
"""

from __future__ import annotations

from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter, LocalReply
from bastion.proxy.router import strip_prefix


class StripPrefix(Filter):
    name = "strip_prefix"

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix.rstrip(b"/") or b"/"

    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        target = ctx.target
        assert target is not None
        path = strip_prefix(target.path, self.prefix)
        ctx.upstream_target = path + (b"?" + target.query if target.query else b"")
        ctx.prefix = self.prefix
        return None
