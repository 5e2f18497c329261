"""Internal origins, and the map from URLs an application writes with its internal address to
the public URL.

An `Origin` is what an app may write in absolute URLs that point at itself (its server's
scheme://host:port, a configured internal URL, the Host it was sent). A `UrlMap` holds, for one
response, the internal origins and the public side (the scheme and Host the client used, the
prefix `strip_prefix` removed), and maps URLs and root-relative paths. The body rewriter scans
with the same patterns (`patterns.py`), so headers and bodies agree on what is internal.

Matching rules: hosts compare case-insensitively; the default port may be written or left out
(`http://app/` and `http://app:80/` are the same authority); an origin on port 80 or 443 is
also recognised under the other scheme (`https://app/` for `http://app:80`, as an app behind
TLS termination writes), which means the bare host matches whatever scheme it is written
with; an authority that merely starts with an internal one (`app:80800`, `app.evil.com`,
`app@evil.com`) is not internal. IPv6 literals are compared as written (lowercase), not in
canonical form.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.rewrite.patterns import SEGMENT_CHARS, Grammar, grammar

DEFAULT_PORTS = {b"http": 80, b"https": 443}
_HOST_NAME = re.compile(rb"[a-z0-9_](?:[a-z0-9_.\-]*[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class Origin:
    """An internal origin: what an app may write in absolute URLs that point at itself."""

    scheme: bytes  # b"http" / b"https"
    host: bytes  # lowercase; IPv6 in brackets b"[::1]"
    port: int

    @classmethod
    def parse(cls, url: str | bytes) -> Origin:
        """`http://10.0.0.5:8080` (any path, query or user info ignored; default port filled
        in). Raises ValueError for anything but an http(s) URL with a valid host and port."""
        raw = url.encode("ascii") if isinstance(url, str) else url
        scheme, sep, rest = raw.partition(b"://")
        scheme = scheme.lower()
        if not sep or scheme not in DEFAULT_PORTS:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        authority = re.split(rb"[/?#]", rest, maxsplit=1)[0].rpartition(b"@")[2]
        host, port = _split_authority(authority.lower(), DEFAULT_PORTS[scheme])
        return cls(scheme, host, port)

    @property
    def authority(self) -> bytes:
        """`host:port`, the port always written."""
        return b"%b:%d" % (self.host, self.port)


def _split_authority(authority: bytes, default_port: int) -> tuple[bytes, int]:
    if authority.startswith(b"["):
        end = authority.find(b"]")
        host, port = authority[: end + 1], authority[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1].decode("ascii"))
        except ValueError:
            raise ValueError(f"not an IPv6 literal: {host!r}") from None
    else:
        name, colon, digits = authority.partition(b":")
        host, port = name, colon + digits
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"not a host name: {host!r}")
    if port in (b"", b":"):  # RFC 3986 allows an empty port: the default
        return host, default_port
    if not port.startswith(b":") or not port[1:].isdigit() or not 0 < int(port[1:]) < 65536:
        raise ValueError(f"not a port: {port!r}")
    return host, int(port[1:])


@functools.lru_cache(maxsize=256)
def _spellings(origins: tuple[Origin, ...]) -> tuple[bytes, ...]:
    """Every way to write these origins' authorities in a URL, longest first."""
    found: set[bytes] = set()
    for origin in origins:
        found.add(origin.authority)
        if origin.port in (80, 443):
            found.add(origin.host)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


class UrlMap:
    """Maps URLs an app wrote with its internal address to the public one."""

    __slots__ = ("_bases", "_grammar", "_hosts", "_origins", "_prefix", "_prefix_escaped")

    def __init__(
        self,
        internal: Iterable[Origin],
        public_scheme: bytes,
        public_authority: bytes,
        prefix: bytes | None,
    ) -> None:
        self._origins = tuple(internal)
        self._hosts = frozenset(origin.host.lower() for origin in self._origins)
        self._prefix = (prefix.rstrip(b"/") or None) if prefix is not None else None
        self._prefix_escaped = (self._prefix or b"").replace(b"/", b"\\/")
        public = public_authority.lower()
        scheme = public_scheme.lower()
        # indexed by [scheme written][slashes escaped]
        self._bases = (
            (b"//" + public, b"\\/\\/" + public),
            (scheme + b"://" + public, scheme + b":\\/\\/" + public),
        )
        self._grammar: Grammar | None = None

    @property
    def prefix(self) -> bytes | None:
        """The mount prefix (no trailing slash), or None."""
        return self._prefix

    @property
    def authorities(self) -> tuple[bytes, ...]:
        """Every spelling of the internal authorities (host, host:port, with/without default
        port), longest first: what the body rewriter's regex searches for."""
        return _spellings(self._origins)

    @property
    def grammar(self) -> Grammar:
        """The compiled patterns for these authorities and this prefix (memoized)."""
        if self._grammar is None:
            self._grammar = grammar(self.authorities, self._prefix)
        return self._grammar

    def map_url(self, url: bytes) -> bytes | None:
        """An absolute (scheme://) or protocol-relative (//host) URL naming an internal
        origin → the public URL (public scheme, authority, prefix + path); None otherwise."""
        match = self.grammar.absolute.match(url)
        if match is None:
            return None
        return self.replace_absolute(match, with_scheme=True) + url[match.end() :]

    def map_path(self, path: bytes) -> bytes:
        """A root-relative path (starts with one "/", not "//") → prefix + path when a prefix
        is set and the path is not already under it; unchanged otherwise."""
        prefix = self._prefix
        if prefix is None or not path.startswith(b"/") or path[1:2] in (b"/", b"\\"):
            return path
        if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] not in _CONTINUES:
            return path
        return prefix + path

    def map_reference(self, ref: bytes) -> bytes:
        """map_url, else map_path for root-relative refs, else the ref unchanged."""
        mapped = self.map_url(ref)
        return self.map_path(ref) if mapped is None else mapped

    def is_internal_host(self, host: bytes) -> bool:
        """Whether `host` (a cookie Domain: a leading dot is ignored) is an internal host or
        a parent domain of one. IP addresses only match exactly."""
        name = host.strip().lower().removeprefix(b".")
        if not name:
            return False
        for internal in self._hosts:
            if internal in (name, b"[" + name + b"]"):
                return True
            if not _is_ip(internal) and internal.endswith(b"." + name):
                return True
        return False

    def replace_absolute(self, match: re.Match[bytes], *, with_scheme: bool = False) -> bytes:
        """The public replacement for an `abs` match (see patterns.py): public scheme (kept
        protocol-relative unless `with_scheme`), public authority, then the prefix unless
        the path was already under it, slashes escaped as the match had them."""
        text = match.group()
        has_scheme = text[0] in _SCHEME_START
        slashes = text.index(b":") + 1 if has_scheme else 0
        escaped = text[slashes] == _BACKSLASH
        base = self._bases[with_scheme or has_scheme][escaped]
        under = match.group("under")
        if under is not None:
            return base + under
        return base + (self._prefix_escaped if escaped else self._prefix or b"")


_SCHEME_START = b"hH"
_BACKSLASH = ord("\\")
_CONTINUES = frozenset(SEGMENT_CHARS[i : i + 1] for i in range(len(SEGMENT_CHARS)))


def _is_ip(host: bytes) -> bool:
    if host.startswith(b"["):
        return True
    try:
        ipaddress.IPv4Address(host.decode("ascii"))
    except ValueError:
        return False
    return True
