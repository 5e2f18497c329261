"""Header rules every HTTP hop applies: hop-by-hop removal, Via, token lists.

Pure functions over `list[tuple[bytes, bytes]]` with lowercase names. Nothing here knows
sockets, routes or configuration.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter

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
_VIA = b"via"
_CONNECTION = b"connection"
_HOP_BY_HOP_OR_VIA = HOP_BY_HOP | {_VIA}
_name = itemgetter(0)  # a header field's name
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
    kept_names = frozenset(keep) if keep else _NOTHING
    if kept_names:
        drop = drop - kept_names
    kept = [field for field in headers if field[0] not in drop]
    if len(kept) == len(headers) and _CONNECTION in drop:
        return kept  # nothing dropped, so no Connection header either: the common case
    named = connection_tokens(headers)
    if named and not named <= drop:  # `Connection: keep-alive` names nothing new
        drop = drop | (named - NEVER_HOP_BY_HOP - kept_names)
        kept = [field for field in headers if field[0] not in drop]
    return kept


def via_entry(http_version: bytes) -> bytes:
    """This hop's Via element for a message received over `http_version`."""
    return _VIA_ENTRIES.get(http_version) or http_version + b" " + VIA_PSEUDONYM


def append_via(headers: Headers, http_version: bytes) -> None:
    """Add this hop to Via (RFC 9110 7.6.3), extending an existing Via in place."""
    entry = _VIA_ENTRIES.get(http_version) or via_entry(http_version)  # no call for 1.x
    if _VIA in map(_name, headers):  # a scan in C; the loop below only runs when found
        for index, field in enumerate(headers):
            if field[0] == _VIA:
                headers[index] = (_VIA, field[1] + b", " + entry)
                return
    headers.append((_VIA, entry))


def next_hop_headers(headers: Headers, http_version: bytes) -> Headers:
    """What this hop passes on: `without_hop_by_hop(headers)` with this hop added to Via,
    in one pass when the headers hold nothing hop-by-hop and no Via (the usual response)."""
    kept = [field for field in headers if field[0] not in _HOP_BY_HOP_OR_VIA]
    if len(kept) != len(headers):
        kept = without_hop_by_hop(headers)
        append_via(kept, http_version)
        return kept
    kept.append((_VIA, _VIA_ENTRIES.get(http_version) or via_entry(http_version)))
    return kept


_CONNECTION_AUTH_SCHEMES = (b"ntlm", b"negotiate")


def asks_connection_auth(headers: Headers) -> bool:
    """Whether a response asks for NTLM or Negotiate: Windows integrated authentication,
    whose handshake holds only on the TCP connection that carried it."""
    for name, value in headers:
        if name == b"www-authenticate":
            scheme = value.lstrip().split(b" ", 1)[0].split(b",", 1)[0].lower()
            if scheme in _CONNECTION_AUTH_SCHEMES:
                return True
    return False
