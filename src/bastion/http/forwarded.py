"""Who the client is, and the forwarding headers that tell the origin.

Two pure pieces live here. `recover_client_ip` finds the real client behind a chain of
trusted proxies from X-Forwarded-For (or RFC 7239 Forwarded), the way nginx does with
`real_ip_recursive on`. `forwarding_headers` rewrites a request's header list for the origin:
from an untrusted peer every forwarding header is dropped (they are spoofable) and fresh ones
are generated; from a trusted peer the chain is extended.

This module knows IP addresses and header bytes only: no sockets, no asyncio, no configuration
model. The caller turns configuration into a `TrustedProxies` and a mode string.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS: frozenset[bytes] = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
        # Other spellings of the same claims that frameworks read (Rack checks
        # X-Forwarded-Ssl before X-Forwarded-Proto): spoofable, so never passed from clients.
        b"x-forwarded-ssl",
        b"x-forwarded-scheme",
        b"x-url-scheme",
        b"front-end-https",
        b"x-forwarded-server",
        b"x-client-ip",
        b"true-client-ip",
    }
)
MODES: frozenset[str] = frozenset({"x-forwarded", "rfc7239", "both", "none"})

_X_FORWARDED_MODES = frozenset({"x-forwarded", "both"})
_RFC7239_MODES = frozenset({"rfc7239", "both"})

# RFC 9110 tchar: a header value made only of these needs no quoting in Forwarded.
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Longest text worth parsing as an address: a v4-mapped IPv6 is 45 characters, plus a zone id.
_MAX_ADDRESS_TEXT = 64
_VERDICT_CACHE_SIZE = 1024
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

# A prefix-length table: (bits to shift right, network numbers shifted by as much).
_PrefixTable = tuple[tuple[int, frozenset[int]], ...]


def _prefix_table(networks: Sequence[Network], bits: int) -> _PrefixTable:
    by_shift: dict[int, set[int]] = {}
    for network in networks:
        shift = bits - network.prefixlen
        by_shift.setdefault(shift, set()).add(int(network.network_address) >> shift)
    return tuple((shift, frozenset(numbers)) for shift, numbers in sorted(by_shift.items()))


def _in_table(number: int, table: _PrefixTable) -> bool:
    return any((number >> shift) in numbers for shift, numbers in table)


def _split_families(
    networks: Sequence[Network],
) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]]:
    """Split by family; v4-mapped IPv6 networks become the IPv4 networks they map."""
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for network in networks:
        if isinstance(network, ipaddress.IPv4Network):
            v4.append(network)
            continue
        v6.append(network)
        if network.subnet_of(_V4_MAPPED):
            low32 = int(network.network_address) & 0xFFFFFFFF
            v4.append(ipaddress.IPv4Network((low32, network.prefixlen - 96)))
        elif _V4_MAPPED.subnet_of(network):
            v4.append(ipaddress.IPv4Network("0.0.0.0/0"))
    return v4, v6


class TrustedProxies:
    """The networks whose X-Forwarded-For / Forwarded we believe, with a per-instance cache.

    Membership is a set lookup per distinct prefix length, so long lists (a CDN's ranges) stay
    cheap; verdicts for recently seen address texts are kept in a small bounded dict.
    """

    __slots__ = ("_any", "_v4", "_v6", "_verdicts")

    def __init__(self, networks: Sequence[Network]) -> None:
        v4, v6 = _split_families(networks)
        self._any = bool(networks)
        self._v4 = _prefix_table(v4, 32)
        self._v6 = _prefix_table(v6, 128)
        self._verdicts: dict[str, tuple[str, bool] | None] = {}

    def __bool__(self) -> bool:
        return self._any

    def __contains__(self, ip: str) -> bool:
        if not self._any:
            return False
        verdict = self.classify(ip)
        return verdict is not None and verdict[1]

    def classify(self, ip: str) -> tuple[str, bool] | None:
        """`(canonical text, trusted)` for an IP address text, None if it is not one.

        The canonical text is what `str(ipaddress.ip_address(ip))` gives, except that an
        IPv4-mapped IPv6 address becomes its IPv4 address.
        """
        verdicts = self._verdicts
        try:
            return verdicts[ip]
        except KeyError:
            pass
        verdict = self._judge(ip)
        if len(verdicts) >= _VERDICT_CACHE_SIZE:
            del verdicts[next(iter(verdicts))]
        verdicts[ip] = verdict
        return verdict

    def _judge(self, ip: str) -> tuple[str, bool] | None:
        if not ip or len(ip) > _MAX_ADDRESS_TEXT:
            return None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is None:
                return str(address), _in_table(int(address), self._v6)
            address = mapped
        return str(address), _in_table(int(address), self._v4)


# --- recovering the client address ------------------------------------------------------------


def _address_text(entry: str) -> str | None:
    """The address part of an `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port` entry."""
    if entry.startswith("["):
        end = entry.find("]")
        rest = entry[end + 1 :]
        if end < 0 or ":" not in entry[1:end]:
            return None
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        return entry[1:end]
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host if _is_port(port) else None
    return entry


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on `separator` outside RFC 9110 quoted strings (backslash escapes honoured)."""
    if '"' not in text:
        return text.split(separator)
    if "\\" not in text:
        return _split_between_quotes(text, separator)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _split_between_quotes(text: str, separator: str) -> list[str]:
    """`_split_unquoted` for text without escapes: odd pieces between quotes are quoted."""
    parts = [""]
    for index, piece in enumerate(text.split('"')):
        if index:
            parts[-1] += '"'
        if index % 2:
            parts[-1] += piece
        else:
            first, *rest = piece.split(separator)
            parts[-1] += first
            parts.extend(rest)
    return parts


def _unquote(value: str) -> str | None:
    """A Forwarded parameter value as text: a token as is, a quoted string unescaped."""
    if not value.startswith('"'):
        return value if '"' not in value else None
    if len(value) < 2 or not value.endswith('"'):
        return None
    inner = value[1:-1]
    if "\\" not in inner:
        return None if '"' in inner else inner
    chars: list[str] = []
    escaped = False
    for char in inner:
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            chars.append(char)
    return None if escaped else "".join(chars)


def _forwarded_for_nodes(value: str) -> list[str | None]:
    """The `for=` node of each Forwarded element, None where it is missing or malformed."""
    nodes: list[str | None] = []
    for element in _split_unquoted(value, ","):
        if not element.strip():
            continue
        found: list[str | None] = []
        for pair in _split_unquoted(element, ";"):
            name, _, raw = pair.partition("=")
            if name.strip().lower() == "for":
                found.append(_unquote(raw.strip()))
        nodes.append(found[0] if len(found) == 1 else None)
    return nodes


def _walk_right_to_left(peer_ip: str, entries: list[str | None], trusted: TrustedProxies) -> str:
    client = peer_ip
    for entry in reversed(entries):
        address = _address_text(entry) if entry is not None else None
        verdict = trusted.classify(address) if address is not None else None
        if verdict is None:
            return client
        text, is_trusted = verdict
        if not is_trusted:
            return text
        client = text
    return client


def recover_client_ip(
    peer_ip: str, headers: Sequence[tuple[bytes, bytes]], trusted: TrustedProxies
) -> str:
    """The real client: `peer_ip`, or from X-Forwarded-For / Forwarded if the peer is trusted.

    Entries are walked right to left, skipping trusted proxies; the first untrusted address is
    the client, the leftmost if all are trusted. An entry that is not an address stops the walk
    at the last address seen. X-Forwarded-For wins when present; Forwarded `for=` otherwise.
    Addresses come back canonical (IPv6 compressed, no brackets, v4-mapped as IPv4).
    """
    if peer_ip not in trusted:
        return peer_ip
    x_forwarded_for = [value for name, value in headers if name == b"x-forwarded-for"]
    if x_forwarded_for:
        joined = b",".join(x_forwarded_for).decode("latin-1")
        entries: list[str | None] = [e.strip() for e in joined.split(",") if e.strip()]
    else:
        forwarded = [value for name, value in headers if name == b"forwarded"]
        if not forwarded:
            return peer_ip
        entries = _forwarded_for_nodes(b",".join(forwarded).decode("latin-1"))
    return _walk_right_to_left(peer_ip, entries, trusted)


# --- writing the headers for the origin -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardingFacts:
    """What this hop knows about the request it is forwarding."""

    peer_ip: str  # TCP peer of this hop
    client_ip: str  # recovered real client (= peer_ip when the peer is untrusted)
    peer_trusted: bool
    proto: bytes  # b"http" / b"https" as the client reached us
    host: bytes  # the Host the client sent, port included if present
    port: int  # our listener port the client connected to
    prefix: bytes | None  # the stripped mount prefix to send as X-Forwarded-Prefix, else None


def _quoted_if_needed(value: bytes) -> bytes:
    if value and not value.translate(None, _TOKEN_BYTES):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _forwarded_node(ip: str) -> bytes:
    if not ip:
        return b"unknown"
    if ":" in ip:
        return b'"[' + ip.encode("latin-1") + b']"'
    return _quoted_if_needed(ip.encode("latin-1"))


def _forwarded_element(facts: ForwardingFacts) -> bytes:
    """This hop's RFC 7239 element: who connected to us, the Host they asked for, the scheme."""
    element = b"for=" + _forwarded_node(facts.peer_ip)
    if facts.host:
        element += b";host=" + _quoted_if_needed(facts.host)
    return element + b";proto=" + _quoted_if_needed(facts.proto)


def _x_forwarded_defaults(facts: ForwardingFacts) -> list[tuple[bytes, bytes]]:
    """X-Forwarded-Proto/-Host/-Port/-Prefix as this hop sees the request, in that order."""
    fields = [(b"x-forwarded-proto", facts.proto)]
    if facts.host:
        fields.append((b"x-forwarded-host", facts.host))
    fields.append((b"x-forwarded-port", str(facts.port).encode("ascii")))
    if facts.prefix is not None:
        fields.append((b"x-forwarded-prefix", facts.prefix))
    return fields


def fresh_fields(facts: ForwardingFacts, mode: str) -> list[tuple[bytes, bytes]]:
    """The forwarding headers for a request whose incoming ones were all discarded."""
    fields: list[tuple[bytes, bytes]] = []
    if mode in _X_FORWARDED_MODES:
        client = facts.client_ip.encode("latin-1")
        fields.append((b"x-forwarded-for", client))
        fields.extend(_x_forwarded_defaults(facts))
        fields.append((b"x-real-ip", client))
    if mode in _RFC7239_MODES:
        if mode == "rfc7239" and facts.prefix is not None:
            fields.append((b"x-forwarded-prefix", facts.prefix))
        fields.append((b"forwarded", _forwarded_element(facts)))
    return fields


def _chain_value(incoming: list[bytes], ours: bytes) -> bytes:
    kept = [stripped for value in incoming if (stripped := value.strip())]
    return b", ".join([*kept, ours])


def _extended_fields(
    headers: list[tuple[bytes, bytes]], facts: ForwardingFacts, mode: str
) -> list[tuple[bytes, bytes]]:
    """A trusted peer's headers with this hop added to the chains that `mode` manages."""
    sends_x = mode in _X_FORWARDED_MODES
    sends_rfc = mode in _RFC7239_MODES
    out: list[tuple[bytes, bytes]] = []
    x_forwarded_for: list[bytes] = []
    forwarded: list[bytes] = []
    outer_prefix: bytes | None = None
    present: set[bytes] = set()
    for name, value in headers:
        if name in FORWARDING_HEADERS:
            present.add(name)
            if name == b"x-forwarded-prefix" and facts.prefix is not None:
                outer_prefix = value.strip().rstrip(b"/")  # stacked below: outer + ours
                continue
            if sends_x and name == b"x-forwarded-for":
                x_forwarded_for.append(value)
                continue
            if sends_x and name == b"x-real-ip":
                continue
            if sends_rfc and name == b"forwarded":
                forwarded.append(value)
                continue
        out.append((name, value))
    if outer_prefix is not None and facts.prefix is not None:
        # The app is mounted at our prefix below the prefix the outer proxy mounted us at.
        present.discard(b"x-forwarded-prefix")
        facts = replace(
            facts,
            prefix=outer_prefix + facts.prefix if facts.prefix != b"/" else outer_prefix or b"/",
        )
    if sends_x:
        peer = facts.peer_ip.encode("latin-1")
        out.append((b"x-forwarded-for", _chain_value(x_forwarded_for, peer)))
        out.extend(field for field in _x_forwarded_defaults(facts) if field[0] not in present)
        out.append((b"x-real-ip", facts.client_ip.encode("latin-1")))
    if sends_rfc:
        if not sends_x and facts.prefix is not None and b"x-forwarded-prefix" not in present:
            out.append((b"x-forwarded-prefix", facts.prefix))
        out.append((b"forwarded", _chain_value(forwarded, _forwarded_element(facts))))
    return out


def forwarding_headers(
    headers: list[tuple[bytes, bytes]], facts: ForwardingFacts, mode: str
) -> list[tuple[bytes, bytes]]:
    """A new header list for the origin: `headers` with the forwarding headers of `mode`.

    From an untrusted peer every header in FORWARDING_HEADERS is removed, whatever the mode,
    and fresh ones are appended. From a trusted peer the chains it sent are extended with this
    hop (mode "none" passes everything unchanged). Other headers keep their order.
    """
    if mode not in MODES:
        raise ValueError(f"unknown forwarding mode {mode!r}; expected one of {sorted(MODES)}")
    if facts.peer_trusted:
        if mode == "none":
            return list(headers)
        return _extended_fields(headers, facts, mode)
    out = [field for field in headers if field[0] not in FORWARDING_HEADERS]
    out.extend(fresh_fields(facts, mode))
    return out
