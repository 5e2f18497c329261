"""Header rules every HTTP hop applies: hop-by-hop removal, Via, token lists.

Pure functions over `list[tuple[bytes, bytes]]` with lowercase names. Nothing here knows
sockets, routes or configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.http.events import Headers
from bastion.http.forwarded import FORWARDING_HEADERS

# RFC 9110 7.6.1 and the de-facto ones every proxy strips.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    }
)

VIA_PSEUDONYM = b"bastion"
_NOTHING: frozenset[bytes] = frozenset()
_VIA_ENTRIES = {version: version + b" " + VIA_PSEUDONYM for version in (b"1.0", b"1.1")}

# A client may not make us drop these by naming them in Connection ("hop-by-hop abuse"):
# dropping a trusted proxy's X-Forwarded-For would desynchronise it from X-Real-IP.
NEVER_HOP_BY_HOP: frozenset[bytes] = (
    frozenset({b"host", b"content-length", b"x-request-id"}) | FORWARDING_HEADERS
)


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of `name`, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def joined_values(headers: Headers, name: bytes) -> bytes:
    """All values of `name` joined with ", " (a list-valued header's full value)."""
    return b", ".join(value for key, value in headers if key == name)


def tokens(value: bytes) -> list[bytes]:
    """The lowercase, stripped, non-empty elements of a comma-separated header value."""
    return [item.strip().lower() for item in value.split(b",") if item.strip()]


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Every option named by the Connection header(s)."""
    found: set[bytes] | None = None
    for key, value in headers:
        if key == b"connection":
            if found is None:
                found = set()
            found.update(tokens(value))
    return _NOTHING if found is None else frozenset(found)


def without_hop_by_hop(
    headers: Headers, keep: Iterable[bytes] = (), drop: frozenset[bytes] = HOP_BY_HOP
) -> Headers:
    """The end-to-end headers: drops `drop` (HOP_BY_HOP) and every header Connection names.

    `keep` names hop-by-hop headers the caller forwards on purpose (Upgrade for a tunnel).
    """
    named = connection_tokens(headers)
    if named and not named <= drop:  # `Connection: keep-alive` names nothing new
        drop = drop | (named - NEVER_HOP_BY_HOP)
    if keep:
        drop = drop - frozenset(keep)
    return [(key, value) for key, value in headers if key not in drop]


def append_via(headers: Headers, http_version: bytes) -> None:
    """Add this hop to Via (RFC 9110 7.6.3), extending an existing Via in place."""
    entry = _VIA_ENTRIES.get(http_version) or http_version + b" " + VIA_PSEUDONYM
    for index, field in enumerate(headers):
        if field[0] == b"via":
            headers[index] = (b"via", field[1] + b", " + entry)
            return
    headers.append((b"via", entry))
