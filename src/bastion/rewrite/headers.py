"""Redirect-like response headers: the URLs in them that name the origin's internal address
become the public URL.

`Location` and `Content-Location` hold one URI reference; `Refresh` holds a delay and an
optional URL (`5; url=http://…`, as browsers parse it); `Link` holds a list of `<URI>`
references with parameters (RFC 8288). In each, an absolute or protocol-relative URL naming
an internal origin becomes the public URL, and under a stripped prefix a root-relative one
gets the prefix (`UrlMap.map_reference`). Everything else in the value is left byte for byte.

Pure functions over header values: no sockets, no configuration, no knowledge of the proxy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.rewrite.urls import UrlMap

REDIRECT_HEADERS: frozenset[bytes] = frozenset(
    {b"location", b"content-location", b"refresh", b"link"}
)

_SPACE = b" \t"
_DELAY = b"0123456789."
_QUOTES = b"'\""


def rewrite_reference(value: bytes, url_map: UrlMap) -> bytes:
    """A `Location` / `Content-Location` value: one URI reference."""
    return url_map.map_reference(value)


def rewrite_refresh(value: bytes, url_map: UrlMap) -> bytes:
    """A `Refresh` value, `delay[;|,] [url=]['"]URL['"]`, parsed as browsers do (the HTML
    standard's declarative refresh steps); a value with no URL part is returned as is."""
    span = _refresh_url_span(value)
    if span is None:
        return value
    start, end = span
    mapped = url_map.map_reference(value[start:end])
    return value[:start] + mapped + value[end:]


def _refresh_url_span(value: bytes) -> tuple[int, int] | None:
    """Where the URL of a `Refresh` value starts and ends, or None when it has none."""
    at = _skip(value, 0, _SPACE)
    digits = _skip(value, at, _DELAY)
    if digits == at:
        return None
    at = _skip(value, digits, _SPACE)
    if at >= len(value) or value[at] not in b";,":
        return None
    at = _skip(value, at + 1, _SPACE)
    if value[at : at + 3].lower() == b"url":
        after = _skip(value, at + 3, _SPACE)
        if value[after : after + 1] == b"=":
            at = _skip(value, after + 1, _SPACE)
    if at >= len(value):
        return None
    if value[at] in _QUOTES:
        quote = value[at : at + 1]
        start = at + 1
        end = value.find(quote, start)
        return start, end if end >= 0 else len(value)
    end = len(value)
    while end > at and value[end - 1] in _SPACE:
        end -= 1
    return at, end


def _skip(value: bytes, at: int, chars: bytes) -> int:
    while at < len(value) and value[at] in chars:
        at += 1
    return at


def rewrite_link(value: bytes, url_map: UrlMap) -> bytes:
    """A `Link` value: every `<URI-reference>` outside quoted strings is mapped."""
    if b"<" not in value:
        return value
    out: list[bytes] = []
    kept = at = 0  # value[kept:at] is copied as is
    quoted = False
    while at < len(value):
        byte = value[at]
        if quoted and byte == 0x5C:  # a backslash escapes the next byte
            at += 2
            continue
        if byte == 0x22:  # double quote
            quoted = not quoted
        elif byte == 0x3C and not quoted:  # "<" opens a target
            end = value.find(b">", at + 1)
            if end < 0:
                break
            out.append(value[kept : at + 1])
            out.append(url_map.map_reference(value[at + 1 : end]))
            kept = at = end
        at += 1
    out.append(value[kept:])
    return b"".join(out)


_REWRITERS = {
    b"location": rewrite_reference,
    b"content-location": rewrite_reference,
    b"refresh": rewrite_refresh,
    b"link": rewrite_link,
}


def rewrite_redirect_header(name: bytes, value: bytes, url_map: UrlMap) -> bytes:
    """The value of header `name` (lowercase, one of REDIRECT_HEADERS) with its URLs mapped."""
    return _REWRITERS[name](value, url_map)
