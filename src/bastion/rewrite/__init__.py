"""Rewriting what an application behind the proxy writes with its internal address.

Pure (no sockets, no asyncio, no configuration): `urls` (internal origins and the map to the
public URL), `headers` and `cookies` (redirect headers, Set-Cookie), `body` (streaming body
rewrite, through `patterns`, `scanner`, `charset` and `codings`).
"""

from bastion.rewrite.body import BodyRewriter, body_rewriter
from bastion.rewrite.errors import RewriteError
from bastion.rewrite.urls import Origin, UrlMap

__all__ = ["BodyRewriter", "Origin", "RewriteError", "UrlMap", "body_rewriter"]
