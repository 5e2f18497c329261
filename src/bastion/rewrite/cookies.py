"""Set-Cookie values: the attributes that tie a cookie to the origin's internal address.

Three edits, nothing else (name, value, Expires, SameSite, HttpOnly, unknown attributes,
their order and spelling stay byte for byte):

- `Domain` naming an internal host, or a parent domain of one, that the public host does
  not domain-match (a browser would reject the cookie) becomes the public host name, or is
  removed (`drop_domain`) so the cookie is host-only. When the public host is an IP address
  it is removed too: a Domain attribute cannot name an address (RFC 6265 5.1.3). A Domain
  the public host already matches (the app's own `Domain=.example.com`) is left alone.
- `Path` under a stripped prefix gets the prefix: `/` becomes the prefix itself (`/legacy`,
  which path-matches `/legacy` and `/legacy/…` but not `/legacyx`, RFC 6265 5.1.4: exactly
  what the route serves); `/app` becomes `/legacy/app`; a path already under the prefix and
  a value not starting with `/` (the browser then uses the request's directory, which is
  already public) are left alone.
- `Secure` is added when the client came over TLS and the cookie lacks it.

Attributes are split on `;` as browsers do (RFC 6265 5.2). Pure: no sockets, no config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.rewrite.urls import UrlMap

_SPACE = b" \t"


class CookieRewriter:
    """Rewrites the Set-Cookie values of one response (one public URL)."""

    __slots__ = ("_drop_domain", "_prefix", "_public_host", "_secure", "_url_map")

    def __init__(
        self,
        url_map: UrlMap,
        public_authority: bytes,
        prefix: bytes | None,
        *,
        drop_domain: bool = False,
        secure: bool = False,
    ) -> None:
        self._url_map = url_map
        host = public_host(public_authority)
        # Where a Domain attribute must go away rather than name the public host.
        self._drop_domain = drop_domain or is_address(host)
        self._public_host = host
        self._prefix = prefix if prefix and prefix != b"/" else None
        self._secure = secure

    def rewrite(self, value: bytes) -> bytes:
        """One Set-Cookie value with Domain, Path and Secure fixed as the module says."""
        pair, *attributes = value.split(b";")
        if not attributes and not self._secure:
            return value
        kept = [pair]
        has_secure = False
        for attribute in attributes:
            name = attribute.partition(b"=")[0].strip(_SPACE).lower()
            if name == b"domain":
                fixed = self._domain(attribute)
                if fixed is None:
                    continue
                attribute = fixed
            elif name == b"path" and self._prefix is not None:
                attribute = self._path(attribute, self._prefix)
            elif name == b"secure":
                has_secure = True
            kept.append(attribute)
        if self._secure and not has_secure:
            kept.append(b" Secure")
        return b";".join(kept)

    def _domain(self, attribute: bytes) -> bytes | None:
        """The Domain attribute as it should be sent, None to remove it."""
        start, end = _value_span(attribute)
        domain = attribute[start:end].lower().removeprefix(b".")
        if not domain or domain_matches(self._public_host, domain):
            return attribute
        if not self._url_map.is_internal_host(domain):
            return attribute
        if self._drop_domain:
            return None
        return attribute[:start] + self._public_host + attribute[end:]

    @staticmethod
    def _path(attribute: bytes, prefix: bytes) -> bytes:
        start, end = _value_span(attribute)
        path = attribute[start:end]
        if not path.startswith(b"/"):
            return attribute
        if path == prefix or path.startswith(prefix + b"/"):
            return attribute
        public = prefix if path == b"/" else prefix + path
        return attribute[:start] + public + attribute[end:]


def _value_span(attribute: bytes) -> tuple[int, int]:
    """Where the value of `name=value` starts and ends, surrounding whitespace excluded."""
    start = attribute.find(b"=") + 1
    if start == 0:
        return len(attribute), len(attribute)
    while start < len(attribute) and attribute[start] in _SPACE:
        start += 1
    end = len(attribute)
    while end > start and attribute[end - 1] in _SPACE:
        end -= 1
    return start, end


def public_host(authority: bytes) -> bytes:
    """The host name of a Host value (`example.com:8443` → `example.com`), lowercase;
    an IPv6 literal keeps its brackets."""
    authority = authority.lower()
    if authority.startswith(b"["):
        return authority[: authority.find(b"]") + 1]
    host, colon, port = authority.rpartition(b":")
    return host if colon and port.isdigit() else authority


def is_address(host: bytes) -> bool:
    """Whether a host name is an IP literal (IPv6 in brackets, or dotted IPv4)."""
    return host.startswith(b"[") or (bool(host) and not host.strip(b"0123456789."))


def domain_matches(host: bytes, domain: bytes) -> bool:
    """RFC 6265 5.1.3 domain-match of a lowercase host by a lowercase domain (no dot)."""
    if host == domain:
        return True
    return host.endswith(b"." + domain) and not is_address(host)
