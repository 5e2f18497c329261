"""Redirect routes: answer with a redirect built from a template, never reach an origin.

Plugs into `request_headers`. Placeholders: {scheme} {host} {uri} {path} {query}.
"""

from __future__ import annotations

from bastion.http.h1_server import reason_phrase
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter, LocalReply


class Redirect(Filter):
    name = "redirect"

    def __init__(self, to: str, status: int) -> None:
        self.to = to
        self.status = status

    def request_headers(self, ctx: RequestContext) -> LocalReply:
        target = ctx.target
        assert target is not None
        values = {
            "scheme": ctx.client.scheme.decode(),
            "host": ctx.head.host.decode("latin-1"),
            "uri": target.uri.decode("latin-1"),
            "path": target.path.decode("latin-1"),
            "query": target.query.decode("latin-1"),
        }
        location = self.to.format_map(values).encode("latin-1")
        body = b"%d %s\n" % (self.status, reason_phrase(self.status))
        return LocalReply(self.status, [(b"location", location)], body, "redirect")
