"""Public URLs in a legacy application's own redirect header.

Some applications do not redirect with `Location` but with a header of their own that a
front-end script follows (`X-Redirect-To`, `X-Backend-Location`...), and they write their
internal address in it: `X-Redirect-To: http://10.0.0.5:8080/app/orders/42`. bastion maps
internal URLs in the standard headers itself (`rewrite.redirects`), but cannot guess an
application's private ones. This hook rewrites the one you name, so the browser is sent to
`https://shop.example.com/orders/42` instead of an address it cannot reach.

    [[site.route]]
    path = "/"
    upstream = "shop"
    hooks = ["legacy_location:PublicLocationHeader"]
    hook_options = { header = "X-Redirect-To", internal = "http://10.0.0.5:8080/app" }

Options: `header` (required), `internal` (required: the internal base URL, scheme, host,
port and optionally a path), `public` (the public base URL; by default the scheme and host
the client used). A value under `internal` gets `public` in its place, the rest of the URL
kept; any other value is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bastion.hooks import Hook, Request, Response


class PublicLocationHeader(Hook):
    """Rewrites internal URLs in one response header to the public URL."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        header = options.get("header")
        if not isinstance(header, str) or not header:
            raise ValueError('the "header" option is required: the header to rewrite')
        self.header = header
        self.internal = _base_url(options.get("internal"), "internal")
        public = options.get("public")
        self.public = None if public is None else _base_url(public, "public")

    def on_response(self, request: Request, response: Response) -> None:
        values = response.headers.get_all(self.header)
        if not values:
            return
        public = self.public or f"{request.scheme}://{request.host}"
        response.headers.remove(self.header)
        for value in values:
            response.headers.add(self.header, self._public(value, public))

    def _public(self, value: str, public: str) -> str:
        """`value` with the internal base replaced by `public`, if it starts with it."""
        base = self.internal
        head, rest = value[: len(base)], value[len(base) :]
        if not _same_base(head, base) or (rest and rest[0] not in "/?#"):
            return value  # another URL, or "/app" against "/application"
        return public + rest


def _base_url(value: object, option: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f'the "{option}" option is required: a URL like "http://10.0.0.5:8080"')
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(f'"{option}" must be an http(s) URL without a query, got {value!r}')
    return value.rstrip("/")


def _same_base(head: str, base: str) -> bool:
    """Equal scheme and host (in any case) and an equal path (in the same case)."""
    one, two = urlsplit(head), urlsplit(base)
    return (one.scheme, one.netloc.lower(), one.path) == (two.scheme, two.netloc.lower(), two.path)
