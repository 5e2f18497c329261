"""A route's `rewrite = { ... }` table: which internal URLs of the origin are mapped to the
public URL on the way out (redirect headers, cookies, bodies).

Like every model, it is frozen and forbids unknown keys. `internal_urls` arrive normalised
(`scheme://host:port`, lowercase, IPv6 in brackets). This module must not know how the
rewriting is done (bastion.rewrite) nor the filter that runs it (bastion.filters.rewrite).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from bastion.config.values import DocType, parse_server_url
from bastion.units import describe_value

INTERNAL_URL_EXPECTED = (
    'expected an internal URL like "http://intranet-app:8080" '
    "(http or https, a host, an optional port, no path)"
)


def _internal_url(url: str) -> str:
    try:
        scheme, host, port = parse_server_url(url)
    except ValueError:
        raise ValueError(f"{INTERNAL_URL_EXPECTED}, got {describe_value(url)}") from None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


InternalUrl = Annotated[str, AfterValidator(_internal_url), DocType("URL")]


class RewriteSettings(BaseModel):
    """A route's `rewrite = { ... }`: map the URLs an application writes with its internal
    address (its servers, `internal_urls`, the Host it was sent) to the public URL the client
    used — scheme, host and port, plus the mount prefix under `strip_prefix`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redirects: StrictBool = Field(
        default=True,
        description="Rewrite internal URLs in `Location`, `Content-Location`, `Refresh` and "
        "`Link`; under `strip_prefix`, root-relative ones (`/login`) get the prefix back.",
    )
    cookies: StrictBool = Field(
        default=True,
        description="Rewrite `Set-Cookie`: a `Domain` naming an internal host (see "
        "`cookie_domain`), a `Path` under `strip_prefix` (prefixed), and add `Secure` when the "
        "client came over TLS. Name, value and other attributes stay as they are.",
    )
    body: StrictBool = Field(
        default=False,
        description="Rewrite internal absolute URLs (also `//host` and JSON-escaped "
        "`http:\\/\\/host`) in HTML, CSS, JavaScript, JSON and XML bodies as they stream, "
        "compressed or not; under `strip_prefix`, root-relative URLs in HTML attributes and "
        "CSS `url()` get the prefix. Other types pass untouched.",
    )
    internal_urls: tuple[InternalUrl, ...] = Field(
        default=(),
        description="More origins the application writes in its URLs, besides the upstream's "
        'servers and the Host it was sent, like `"http://intranet-app:8080"`.',
    )
    cookie_domain: Literal["public", "drop"] = Field(
        default="public",
        description="A cookie `Domain` naming an internal host becomes the public host name "
        '(`"public"`), or is removed so the cookie is host-only (`"drop"`).',
    )
