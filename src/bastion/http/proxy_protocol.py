"""The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4 balancer puts before a
connection's first byte to say who the client really is, read and written.

`ProxyHeaderReader` is fed the first bytes of a connection and answers "need more" (None), a
`ProxyHeader`, or raises `ProxyProtocolError`; the bytes after the header are left in
`remainder`. It tells version 1 (one text line, at most 107 bytes) from version 2 (a 12-byte
signature, then a binary block) by the first bytes, so garbage is refused at once, and a
version 2 header declaring more than `max_length` bytes is refused before it is read.
`v1_header` and `v2_header` write the header for a connection to an origin.

Sans-I/O: no sockets, no asyncio, no configuration; what the addresses are worth (whether the
peer that sent them is trusted) is for the caller to decide.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the longest v1 line, CRLF included (the specification's limit)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version and command, family and protocol, length
V2_MAX_LENGTH = 16 * 1024  # a larger v2 header (addresses and TLVs) is refused

_V2_FIXED = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_UNIX = struct.Struct("!108s108s")
_TLV_HEAD = struct.Struct("!BH")
_UNIX_PATH = 108


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header."""


class Command(enum.IntEnum):
    LOCAL = 0  # the balancer's own connection (health checks): no client behind it
    PROXY = 1  # relayed for the client the addresses name


class Family(enum.IntEnum):
    UNSPEC = 0  # unknown (v1 `UNKNOWN`): the connection's own addresses stand
    INET = 1
    INET6 = 2
    UNIX = 3


class Transport(enum.IntEnum):
    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


# Address block size by family (v2); a header declaring less is refused.
_BLOCK_SIZE = {
    Family.UNSPEC: 0,
    Family.INET: _V2_INET.size,
    Family.INET6: _V2_INET6.size,
    Family.UNIX: _V2_UNIX.size,
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of the relayed connection: an IP address text and a port, or a unix path."""

    address: str
    port: int = 0


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header. TLVs (v2) are kept as (type, value) pairs, uninterpreted."""

    version: int
    command: Command
    family: Family
    transport: Transport
    source: Endpoint | None = None
    destination: Endpoint | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def relayed(self) -> tuple[Endpoint, Endpoint] | None:
        """(source, destination) when the header names an IP client; None when the
        connection's own addresses stand (LOCAL, UNKNOWN/UNSPEC, unix sockets)."""
        if self.command is not Command.PROXY or self.family not in (Family.INET, Family.INET6):
            return None
        if self.source is None or self.destination is None:
            return None
        return self.source, self.destination


class ProxyHeaderReader:
    """Reads the PROXY header at the start of one connection, fed as the bytes arrive."""

    __slots__ = ("_buffer", "_max_length", "remainder")

    def __init__(self, max_length: int = V2_MAX_LENGTH) -> None:
        self._buffer = b""
        self._max_length = max(max_length, V2_FIXED_LENGTH)
        self.remainder = b""  # the bytes after the header, once it is read

    def feed(self, data: bytes) -> ProxyHeader | None:
        """The header once it is complete, None while more bytes are needed."""
        buffer = self._buffer = self._buffer + data
        if buffer[:1] == V2_SIGNATURE[:1]:
            return self._feed_v2(buffer)
        return self._feed_v1(buffer)

    def _feed_v1(self, buffer: bytes) -> ProxyHeader | None:
        start = buffer[: len(V1_PREFIX)]
        if not V1_PREFIX.startswith(start):
            raise ProxyProtocolError("not a PROXY protocol header")
        end = buffer.find(b"\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise ProxyProtocolError(f"v1 line longer than {V1_MAX_LENGTH} bytes")
            return None
        if end == 0 or buffer[end - 1] != 0x0D:
            raise ProxyProtocolError("v1 line not ended by CRLF")
        self.remainder = buffer[end + 1 :]
        self._buffer = b""
        return parse_v1_line(buffer[: end - 1])

    def _feed_v2(self, buffer: bytes) -> ProxyHeader | None:
        if not V2_SIGNATURE.startswith(buffer[: len(V2_SIGNATURE)]):
            raise ProxyProtocolError("not a PROXY protocol header")
        if len(buffer) < V2_FIXED_LENGTH:
            return None
        _, version_command, family_byte, length = _V2_FIXED.unpack_from(buffer)
        if version_command >> 4 != 2:
            raise ProxyProtocolError(f"v2 signature with version {version_command >> 4}")
        if version_command & 0x0F > Command.PROXY:
            raise ProxyProtocolError(f"v2 command {version_command & 0x0F} is not LOCAL or PROXY")
        total = V2_FIXED_LENGTH + length
        if total > self._max_length:
            raise ProxyProtocolError(f"v2 header of {total} bytes, over {self._max_length}")
        if len(buffer) < total:
            return None
        self.remainder = buffer[total:]
        self._buffer = b""
        body = buffer[V2_FIXED_LENGTH:total]
        if version_command & 0x0F == Command.LOCAL:
            # The balancer speaking for itself: addresses and TLVs are ignored (as HAProxy).
            return ProxyHeader(2, Command.LOCAL, Family.UNSPEC, Transport.UNSPEC)
        return _parse_v2_proxy(family_byte, body)


def parse_v1_line(line: bytes) -> ProxyHeader:
    """A v1 line without its CRLF: `PROXY TCP4|TCP6 src dst sport dport` or `PROXY UNKNOWN…`."""
    fields = line.split(b" ")
    if fields[0] != b"PROXY" or len(fields) < 2:
        raise ProxyProtocolError("not a PROXY protocol header")
    protocol = fields[1]
    if protocol == b"UNKNOWN":  # whatever follows is to be ignored
        return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC)
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"v1 protocol {_shown(protocol)} is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 6:
        raise ProxyProtocolError("v1 line needs source, destination and two ports")
    family = Family.INET if protocol == b"TCP4" else Family.INET6
    source = Endpoint(_v1_address(fields[2], family), _v1_port(fields[4]))
    destination = Endpoint(_v1_address(fields[3], family), _v1_port(fields[5]))
    return ProxyHeader(1, Command.PROXY, family, Transport.STREAM, source, destination)


def _v1_address(text: bytes, family: Family) -> str:
    try:
        decoded = text.decode("ascii")
        if family is Family.INET:
            return str(ipaddress.IPv4Address(decoded))
        if "%" in decoded:
            raise ValueError("zone id")
        return str(ipaddress.IPv6Address(decoded))
    except ValueError:
        name = "IPv4" if family is Family.INET else "IPv6"
        raise ProxyProtocolError(f"v1 address {_shown(text)} is not {name}") from None


def _v1_port(text: bytes) -> int:
    if not (0 < len(text) <= 5 and text.isdigit()) or (len(text) > 1 and text[0] == 0x30):
        raise ProxyProtocolError(f"v1 port {_shown(text)} is not a number 0-65535")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"v1 port {port} is over 65535")
    return port


def _parse_v2_proxy(family_byte: int, body: bytes) -> ProxyHeader:
    try:
        family, transport = Family(family_byte >> 4), Transport(family_byte & 0x0F)
    except ValueError:
        raise ProxyProtocolError(f"v2 address family byte 0x{family_byte:02x} unknown") from None
    if (family is Family.UNSPEC) != (transport is Transport.UNSPEC):
        raise ProxyProtocolError(f"v2 address family byte 0x{family_byte:02x} unknown")
    block = _BLOCK_SIZE[family]
    if len(body) < block:
        raise ProxyProtocolError(
            f"v2 {family.name} header of {len(body)} bytes, less than its addresses' {block}"
        )
    source, destination = _v2_endpoints(family, body)
    tlvs = _parse_tlvs(body[block:])
    return ProxyHeader(2, Command.PROXY, family, transport, source, destination, tlvs)


def _v2_endpoints(family: Family, body: bytes) -> tuple[Endpoint | None, Endpoint | None]:
    if family is Family.INET:
        src, dst, sport, dport = _V2_INET.unpack_from(body)
        return (
            Endpoint(str(ipaddress.IPv4Address(src)), sport),
            Endpoint(str(ipaddress.IPv4Address(dst)), dport),
        )
    if family is Family.INET6:
        src, dst, sport, dport = _V2_INET6.unpack_from(body)
        return (
            Endpoint(str(ipaddress.IPv6Address(src)), sport),
            Endpoint(str(ipaddress.IPv6Address(dst)), dport),
        )
    if family is Family.UNIX:
        src, dst = _V2_UNIX.unpack_from(body)
        return Endpoint(_unix_path(src)), Endpoint(_unix_path(dst))
    return None, None


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _TLV_HEAD.size:
            raise ProxyProtocolError("v2 TLV cut short")
        kind, length = _TLV_HEAD.unpack_from(data, offset)
        offset += _TLV_HEAD.size
        if len(data) - offset < length:
            raise ProxyProtocolError(f"v2 TLV 0x{kind:02x} longer than the header")
        tlvs.append((kind, data[offset : offset + length]))
        offset += length
    return tuple(tlvs)


def _shown(raw: bytes) -> str:
    return repr(raw[:40].decode("ascii", "replace"))


# -- writing ---------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip_pair(
    source: Endpoint | None, destination: Endpoint | None
) -> tuple[IPAddress, IPAddress] | None:
    """Both addresses in one family (IPv4 mapped into IPv6 when they differ), or None when
    either is missing or not an IP address."""
    if source is None or destination is None:
        return None
    try:
        src = ipaddress.ip_address(source.address)
        dst = ipaddress.ip_address(destination.address)
    except ValueError:
        return None
    if src.version != dst.version:
        src, dst = _as_v6(src), _as_v6(dst)
    return src, dst


def _as_v6(address: IPAddress) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)


def v1_header(source: Endpoint | None, destination: Endpoint | None) -> bytes:
    """`PROXY TCP4|TCP6 …` for an IP client, `PROXY UNKNOWN` otherwise (and without one)."""
    pair = _ip_pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    assert source is not None and destination is not None
    src, dst = pair
    protocol = "TCP4" if src.version == 4 else "TCP6"
    line = f"PROXY {protocol} {src} {dst} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def v2_header(
    source: Endpoint | None,
    destination: Endpoint | None,
    tlvs: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """The binary header: PROXY with the IP addresses; with no endpoints at all, LOCAL (a
    connection of bastion's own, e.g. a health check); PROXY UNSPEC for a client that has no
    IP address (a unix socket client)."""
    tlv_bytes = b"".join(_TLV_HEAD.pack(kind, len(value)) + value for kind, value in tlvs)
    if source is None and destination is None:
        return _v2_fixed(Command.LOCAL, 0x00, len(tlv_bytes)) + tlv_bytes
    pair = _ip_pair(source, destination)
    if pair is None:
        return _v2_fixed(Command.PROXY, 0x00, len(tlv_bytes)) + tlv_bytes
    assert source is not None and destination is not None
    src, dst = pair
    if isinstance(src, ipaddress.IPv4Address):
        block = _V2_INET.pack(src.packed, dst.packed, source.port, destination.port)
        family_byte = Family.INET << 4 | Transport.STREAM
    else:
        block = _V2_INET6.pack(src.packed, dst.packed, source.port, destination.port)
        family_byte = Family.INET6 << 4 | Transport.STREAM
    return _v2_fixed(Command.PROXY, family_byte, len(block) + len(tlv_bytes)) + block + tlv_bytes


def _v2_fixed(command: Command, family_byte: int, length: int) -> bytes:
    return _V2_FIXED.pack(V2_SIGNATURE, 0x20 | command, family_byte, length)
