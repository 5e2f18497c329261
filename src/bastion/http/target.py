"""Request-target parsing and path normalisation, on bytes (RFC 9112 3.2, RFC 3986).

`parse_target` turns the request-target of a request line (or an HTTP/2 `:path`) into a
`RequestTarget`: a normalised path, the query kept byte for byte, and the authority of an
absolute-form target. `normalize_path` is the one definition of "the same path" that routing,
prefix stripping and caching rely on, so that `/a/%2e%2e/b`, `//b` and `/b` cannot be told
apart downstream of it, while `%2F` never turns into a separator.

Anything ambiguous is refused with `TargetError` (a 400) instead of being guessed at: a `..`
above the root, a fragment, a byte that has no place in a URI, an invalid percent-escape.

This module is pure: no I/O, no configuration, no knowledge of routes or of HTTP versions.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["RequestTarget", "TargetError", "normalize_path", "parse_target"]


class TargetError(ValueError):
    """A request-target that must be refused with 400 (message for logs)."""


_UNRESERVED = (string.ascii_letters + string.digits + "-._~").encode("ascii")
_SUB_DELIMS = b"!$&'()*+,;="
# Every byte a request-target may hold ('#' is not one: a fragment is never sent).
_TARGET_BYTES = _UNRESERVED + _SUB_DELIMS + b":/?[]@%"
# `raw.translate(_TARGET_FLAGS)` holds a 0 exactly where raw holds a byte to refuse; a
# translate plus a byte search is several times faster than `translate(None, delete)`.
_TARGET_FLAGS = bytes(1 if byte in _TARGET_BYTES else 0 for byte in range(256))
# Bytes of an absolute-form authority: host (reg-name, IPv4, [IPv6]) and port; no userinfo.
_AUTHORITY_BYTES = _UNRESERVED + _SUB_DELIMS + b":[]%"
# Single bytes as ints: `int in bytes` is a memchr, `bytes in bytes` is much slower.
_PERCENT = ord("%")
_DOT = ord(".")
_QUESTION = ord("?")


def _escape_table() -> MappingProxyType[bytes, bytes]:
    """Map every two-hex-digit escape body (any case) to what normalisation makes of it."""
    table: dict[bytes, bytes] = {}
    hexdigits = b"0123456789abcdefABCDEF"
    for high in hexdigits:
        for low in hexdigits:
            body = bytes((high, low))
            value = int(body, 16)
            if value in _UNRESERVED:
                table[body] = bytes((value,))
            else:
                table[body] = b"%" + body.upper()
    return MappingProxyType(table)


_ESCAPES = _escape_table()


@dataclass(frozen=True, slots=True, init=False)
class RequestTarget:
    """A parsed request-target.

    `path` is normalised and starts with `/` (it is `*` for `OPTIONS *`); `query` is the raw
    query without its `?` (empty when absent); `authority` is `host[:port]` of an
    absolute-form target (`http://h:1/x`), else None. `uri` is path and query, as sent to an
    origin in origin-form.
    """

    path: bytes
    query: bytes
    authority: bytes | None
    uri: bytes = field(init=False, repr=False, compare=False)

    def __init__(self, path: bytes, query: bytes, authority: bytes | None) -> None:
        # One is built per request: set the slots directly, not through the generic
        # object.__setattr__ that a frozen dataclass's own __init__ calls (twice as slow).
        _set_path(self, path)
        _set_query(self, query)
        _set_authority(self, authority)
        _set_uri(self, path + b"?" + query if query else path)


_set_path = vars(RequestTarget)["path"].__set__
_set_query = vars(RequestTarget)["query"].__set__
_set_authority = vars(RequestTarget)["authority"].__set__
_set_uri = vars(RequestTarget)["uri"].__set__


def parse_target(raw: bytes, method: bytes) -> RequestTarget:
    """Parse and normalise a request-target; raises TargetError for anything to refuse.

    Accepted: origin-form (`/p?q`), absolute-form (`http://host[:port]/p?q`, also https, the
    path defaulting to `/`) and asterisk-form (`*`, for OPTIONS only). Authority-form (the
    target of a proxy CONNECT) and every other shape are refused. The method only matters
    for `*`: an HTTP/2 extended CONNECT carries an origin-form `:path` and is accepted.
    """
    if 0 in raw.translate(_TARGET_FLAGS):
        raise _refusal("request-target", raw)
    if raw[:1] == b"/":
        if _QUESTION not in raw:
            return RequestTarget(_normalize_checked(raw), b"", None)
        return _origin_form(raw, None)
    if raw == b"*":
        if method != b"OPTIONS":
            raise TargetError(f"asterisk-form target with method {method!r}, only OPTIONS")
        return RequestTarget(path=b"*", query=b"", authority=None)
    lowered = raw[:8].lower()
    if lowered.startswith(b"http://"):
        return _absolute_form(raw[7:])
    if lowered == b"https://":
        return _absolute_form(raw[8:])
    if not raw:
        raise TargetError("empty request-target")
    raise TargetError(f"request-target is not origin-form or absolute-form: {raw[:64]!r}")


def _refusal(what: str, raw: bytes) -> TargetError:
    """The error for a target or path holding a byte that has no place in a URI."""
    leftover = raw.translate(None, _TARGET_BYTES)
    if b"#" in leftover:
        return TargetError(f"{what} has a fragment ('#')")
    return TargetError(f"{what} holds a byte not allowed in a URI: {leftover[:1]!r}")


def _origin_form(raw: bytes, authority: bytes | None) -> RequestTarget:
    """Split `/path?query` (raw starts with '/') and normalise the path."""
    path, _, query = raw.partition(b"?")
    return RequestTarget(_normalize_checked(path), query, authority)


def _absolute_form(rest: bytes) -> RequestTarget:
    """Parse what follows `scheme://`: the authority, then an optional path and query."""
    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter, 0, end)
        if found != -1:
            end = found
    authority = rest[:end]
    if not authority:
        raise TargetError("absolute-form target with an empty authority")
    bad = authority.translate(None, _AUTHORITY_BYTES)
    if bad:
        if b"@" in bad:
            raise TargetError("absolute-form target with userinfo ('user@host')")
        raise TargetError(f"absolute-form authority holds {bad[:1]!r}")
    remainder = rest[end:]
    if remainder[:1] != b"/":
        remainder = b"/" + remainder
    return _origin_form(remainder, authority)


def normalize_path(path: bytes) -> bytes:
    """Return the normalised form of an absolute path; raises TargetError if it is refused.

    1. Percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) are decoded, every
       other escape is kept with uppercase hex (`%2f` -> `%2F`, never a separator); an
       invalid escape is refused. 2. Runs of `/` collapse into one. 3. Dot-segments are
       resolved (RFC 3986 5.2.4); a `..` that would climb above the root is refused.
    A trailing slash is kept (`/a/.` -> `/a/`). Bytes not allowed in a URI are refused.
    """
    if 0 in path.translate(_TARGET_FLAGS):
        raise _refusal("path", path)
    if _QUESTION in path:
        raise TargetError("path holds a '?'; split the query off first")
    if path[:1] != b"/":
        raise TargetError(f"path does not start with '/': {path[:64]!r}")
    return _normalize_checked(path)


def _normalize_checked(path: bytes) -> bytes:
    """normalize_path for a path known to start with '/' and to hold only allowed bytes."""
    has_percent = _PERCENT in path
    if not has_percent and path.find(b"//") == -1 and (_DOT not in path or path.find(b"/.") == -1):
        return path  # the common case: nothing to decode, collapse or resolve
    if has_percent:
        path = _decode_unreserved(path)
    return _resolve_segments(path)


def _decode_unreserved(path: bytes) -> bytes:
    """Decode escapes of unreserved characters, uppercase the hex of the others."""
    pieces = path.split(b"%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        replacement = _ESCAPES.get(piece[:2])
        if replacement is None:
            raise TargetError(f"invalid percent-escape in path: {b'%' + piece[:2]!r}")
        out.append(replacement)
        out.append(piece[2:])
    return b"".join(out)


def _resolve_segments(path: bytes) -> bytes:
    """Collapse empty segments and resolve `.` / `..`; `path` starts with `/`."""
    kept: list[bytes] = []
    segments = path.split(b"/")
    for segment in segments[1:]:
        if segment == b"" or segment == b".":
            continue
        if segment == b"..":
            if not kept:
                raise TargetError("path climbs above the root with '..'")
            kept.pop()
            continue
        kept.append(segment)
    if not kept:
        return b"/"
    trailing = b"/" if segments[-1] in (b"", b".", b"..") else b""
    return b"/" + b"/".join(kept) + trailing
