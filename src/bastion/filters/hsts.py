"""HTTP Strict Transport Security: tell browsers to use https for this site from now on.

Plugs into `response_headers`, only on responses to clients that came over TLS (RFC 6797
7.2: never over plain HTTP). The site's value replaces any the origin sent.
"""

from __future__ import annotations

from bastion.http.events import ResponseHead
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter


class StrictTransportSecurity(Filter):
    name = "hsts"

    def __init__(self, value: str) -> None:
        self.value = value.encode("ascii")

    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        if ctx.client.scheme != b"https":
            return
        headers = [field for field in head.headers if field[0] != b"strict-transport-security"]
        headers.append((b"strict-transport-security", self.value))
        head.headers = headers
