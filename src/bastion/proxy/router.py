"""Which site and which route a request belongs to: host lookup, then routes in file order.

`Router` is built once per Plan from `SiteRules` and answers `match(host, path, method)` with
a `RouteMatch`, a `MethodMismatch` (the path is routed but not for this method: 405 with
`Allow`) or None (404). It is generic over the route payload `T`, so it knows nothing of the
configuration model or of filters; paths it is given must already be normalised by
`bastion.http.target.normalize_path`, which it also applies to the configured prefixes.

Hosts: case-insensitive, the port and a trailing dot ignored. An exact name wins over a
wildcard, a longer wildcard suffix over a shorter one, and `*` catches the rest; the lookup
is a dict hit per label, never a scan over the sites.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from bastion.http.target import normalize_path

__all__ = ["MethodMismatch", "RouteMatch", "RouteRule", "Router", "SiteRules", "strip_prefix"]

T = TypeVar("T")

CATCH_ALL = "*"
_WILDCARD_LEAD = "*."
_COLON = ord(":")  # `int in bytes` is a memchr; `bytes in bytes` is much slower
_HOST_MEMO_SIZE = 256  # distinct Host values whose site is remembered, per Router


@dataclass(frozen=True, slots=True)
class RouteRule(Generic[T]):
    """One route: a path prefix and/or a regex, an optional method set, and its payload.

    The rule matches when every condition that is set holds: `prefix` matches on whole
    segments (`/api` matches `/api`, `/api/` and `/api/x`, not `/apix`; `/` matches every
    path); `regex` is searched anywhere in the path (`re.search`, like nginx `~`; anchor it
    with `^` to match from the start); `methods` (None = any) holds the request method,
    compared case-sensitively. With both `prefix` and `regex` None, every path matches.
    """

    target: T
    prefix: bytes | None = b"/"
    regex: re.Pattern[bytes] | None = None
    methods: frozenset[bytes] | None = None


@dataclass(frozen=True, slots=True)
class SiteRules(Generic[T]):
    """A virtual host: its names (`example.com`, `*.example.com`, `*`) and ordered routes."""

    hosts: tuple[str, ...]
    routes: tuple[RouteRule[T], ...]
    name: str


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[T]):
    """The site and the first route that matched host, path and method."""

    site: SiteRules[T]
    rule: RouteRule[T]


@dataclass(frozen=True, slots=True)
class MethodMismatch:
    """Some route matched the path but none the method: answer 405 with these in `Allow`."""

    allowed: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _CompiledRoute(Generic[T]):
    """A RouteRule with its prefix normalised, its segment boundary and its answer built."""

    rule: RouteRule[T]
    prefix: bytes | None  # None: no prefix condition (also for "/")
    prefix_dir: bytes  # prefix + b"/"
    found: RouteMatch[T]  # built once, so a match allocates nothing
    checks_path: bool  # False: every path matches (no prefix but "/", no regex)

    def matches_path(self, path: bytes) -> bool:
        if self.prefix is not None and not (
            path == self.prefix or path.startswith(self.prefix_dir)
        ):
            return False
        regex = self.rule.regex
        return regex is None or regex.search(path) is not None


@dataclass(frozen=True, slots=True)
class _CompiledSite(Generic[T]):
    site: SiteRules[T]
    routes: tuple[_CompiledRoute[T], ...]


class Router(Generic[T]):
    """Finds the site for a Host and the first route for a path and method.

    Raises ValueError at construction for a malformed host pattern, a host (exact,
    wildcard or `*`) claimed by two sites, or a prefix that is not a clean absolute path.
    """

    __slots__ = ("_catch_all", "_exact", "_sites_by_host", "_wildcards")

    def __init__(self, sites: Sequence[SiteRules[T]]) -> None:
        self._exact: dict[bytes, _CompiledSite[T]] = {}
        self._wildcards: dict[bytes, _CompiledSite[T]] = {}
        self._catch_all: _CompiledSite[T] | None = None
        # The site of recently seen Host values, exactly as sent: the lookup is a pure
        # function of the Host and of this (immutable) router, so remembering it is exact.
        self._sites_by_host: dict[bytes, _CompiledSite[T] | None] = {}
        owners: dict[str, str] = {}
        for site in sites:
            compiled = _CompiledSite(site, tuple(_compile_route(site, r) for r in site.routes))
            for pattern in dict.fromkeys(_host_pattern(h) for h in site.hosts):
                if pattern in owners:
                    raise ValueError(
                        f"host {pattern!r} is claimed by site {owners[pattern]!r} "
                        f"and by site {site.name!r}"
                    )
                owners[pattern] = site.name
                self._add_pattern(pattern, compiled)

    def _add_pattern(self, pattern: str, compiled: _CompiledSite[T]) -> None:
        if pattern == CATCH_ALL:
            self._catch_all = compiled
        elif pattern.startswith(_WILDCARD_LEAD):
            self._wildcards[pattern[2:].encode("ascii")] = compiled
        else:
            self._exact[pattern.encode("ascii")] = compiled

    def find_site(self, host: bytes) -> SiteRules[T] | None:
        """The site serving a Host header value or authority (`name[:port]`, `[v6]:port`)."""
        compiled = self._find_compiled(host)
        return compiled.site if compiled is not None else None

    def match(
        self, host: bytes, path: bytes, method: bytes
    ) -> RouteMatch[T] | MethodMismatch | None:
        """The first route of the host's site matching path and method, in file order."""
        compiled = self._find_compiled(host)
        if compiled is None:
            return None
        allowed: set[bytes] | None = None
        for route in compiled.routes:
            if route.checks_path and not route.matches_path(path):
                continue
            methods = route.rule.methods
            if methods is None or method in methods:
                return route.found
            allowed = set(methods) if allowed is None else allowed | methods
        if allowed is None:
            return None
        return MethodMismatch(tuple(sorted(allowed)))

    def _find_compiled(self, host: bytes) -> _CompiledSite[T] | None:
        memo = self._sites_by_host
        if host in memo:
            return memo[host]
        found = self._lookup(host)
        if len(memo) >= _HOST_MEMO_SIZE:
            del memo[next(iter(memo))]  # the oldest entry
        memo[host] = found
        return found

    def _lookup(self, host: bytes) -> _CompiledSite[T] | None:
        found = self._exact.get(host)  # a Host already in normal form: the usual case
        if found is not None:
            return found
        name = _host_name(host)
        found = self._exact.get(name)
        if found is not None:
            return found
        if self._wildcards:
            dot = name.find(b".", 1)  # a wildcard stands for at least one character
            while dot != -1:
                found = self._wildcards.get(name[dot + 1 :])
                if found is not None:
                    return found
                dot = name.find(b".", dot + 1)
        return self._catch_all


def _host_name(host: bytes) -> bytes:
    """`Example.COM.:8443` -> `example.com`, `[::1]:80` -> `::1`; bytes stay bytes."""
    name = host
    if _COLON in host:
        if host[:1] == b"[":
            name = host[1:].partition(b"]")[0]
        else:
            before_port = host.rpartition(b":")[0]
            if _COLON not in before_port:  # else a bare IPv6 address: no port to drop
                name = before_port
    if name[-1:] == b".":
        name = name[:-1]
    return name.lower()


def _host_pattern(host: str) -> str:
    """Normalise a configured host name or pattern; raises ValueError if it is malformed."""
    pattern = host.strip().lower()
    if pattern == CATCH_ALL:
        return pattern
    lead = _WILDCARD_LEAD if pattern.startswith(_WILDCARD_LEAD) else ""
    name = pattern[len(lead) :]
    if not lead and name.startswith("[") and name.endswith("]"):
        name = name[1:-1]  # an IPv6 literal
    name = name.removesuffix(".")
    if not name or "*" in name or name.startswith(".") or ".." in name or "/" in name:
        raise ValueError(f"host pattern {host!r} is not a name, '*.name' or '*'")
    if name.count(":") == 1 or (lead and ":" in name):
        raise ValueError(f"host pattern {host!r} has a port; hosts match on the name only")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"host pattern {host!r} is not a valid host name: {exc}") from None
    return lead + ascii_name


def _compile_route(site: SiteRules[T], rule: RouteRule[T]) -> _CompiledRoute[T]:
    found = RouteMatch(site, rule)
    prefix = None if rule.prefix is None else _clean_prefix(rule.prefix)
    if prefix is None or prefix == b"/":
        return _CompiledRoute(rule, None, b"", found, rule.regex is not None)
    return _CompiledRoute(rule, prefix, prefix + b"/", found, True)


def _clean_prefix(prefix: bytes) -> bytes:
    """Normalise a configured prefix and drop its trailing slash (except for `/`)."""
    try:
        normal = normalize_path(prefix)
    except ValueError as exc:
        raise ValueError(f"route prefix {prefix!r}: {exc}") from None
    return normal if normal == b"/" else normal.rstrip(b"/")


def strip_prefix(path: bytes, prefix: bytes) -> bytes:
    """Remove a route prefix from a path it matched: `/api/x`, `/api` -> `/x`; `/api` -> `/`.

    Raises ValueError if `prefix` does not match `path` on whole segments.
    """
    if prefix != b"/":
        prefix = prefix.rstrip(b"/")
    if prefix in (b"", b"/"):
        return path
    if path == prefix:
        return b"/"
    if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] == b"/":
        return path[len(prefix) :]
    raise ValueError(f"prefix {prefix!r} does not match path {path!r}")
