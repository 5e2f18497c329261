"""The PROXY protocol reader and writers: the specification's examples byte for byte, what
must be refused, and properties (writer → reader round trip, any split of the bytes, garbage
never raising anything but ProxyProtocolError)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.http.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Command,
    Endpoint,
    Family,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
    Transport,
    v1_header,
    v2_header,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
# Written by hand from the specification, not by the writers under test.
V2_INET = (
    SIG
    + bytes([0x21, 0x11, 0x00, 0x0C])
    + bytes([203, 0, 113, 7, 10, 0, 0, 1])
    + (51000).to_bytes(2, "big")
    + (443).to_bytes(2, "big")
)
V2_INET6 = (
    SIG
    + bytes([0x21, 0x21, 0x00, 0x24])
    + ipaddress.IPv6Address("2001:db8::7").packed
    + ipaddress.IPv6Address("2001:db8::1").packed
    + (4000).to_bytes(2, "big")
    + (80).to_bytes(2, "big")
)
V2_LOCAL = SIG + bytes([0x20, 0x00, 0x00, 0x00])


def read_all(data: bytes) -> tuple[ProxyHeader, bytes]:
    reader = ProxyHeaderReader()
    header = reader.feed(data)
    assert header is not None
    return header, reader.remainder


# -- what is read ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n",
            ProxyHeader(
                1,
                Command.PROXY,
                Family.INET,
                Transport.STREAM,
                Endpoint("203.0.113.7", 51000),
                Endpoint("10.0.0.1", 443),
            ),
        ),
        (
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n",
            ProxyHeader(
                1,
                Command.PROXY,
                Family.INET6,
                Transport.STREAM,
                Endpoint("2001:db8::7", 4000),
                Endpoint("2001:db8::1", 80),
            ),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC)),
        (
            b"PROXY UNKNOWN ffff:f::ffff ffff:f::ffff 65535 65535\r\n",
            ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC),
        ),
        (
            b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            ProxyHeader(
                1,
                Command.PROXY,
                Family.INET,
                Transport.STREAM,
                Endpoint("0.0.0.0", 0),
                Endpoint("255.255.255.255", 65535),
            ),
        ),
        (
            V2_INET,
            ProxyHeader(
                2,
                Command.PROXY,
                Family.INET,
                Transport.STREAM,
                Endpoint("203.0.113.7", 51000),
                Endpoint("10.0.0.1", 443),
            ),
        ),
        (
            V2_INET6,
            ProxyHeader(
                2,
                Command.PROXY,
                Family.INET6,
                Transport.STREAM,
                Endpoint("2001:db8::7", 4000),
                Endpoint("2001:db8::1", 80),
            ),
        ),
        (V2_LOCAL, ProxyHeader(2, Command.LOCAL, Family.UNSPEC, Transport.UNSPEC)),
        # LOCAL ignores whatever addresses follow (a balancer's health check)
        (V2_INET[:12] + b"\x20" + V2_INET[13:], ProxyHeader(2, Command.LOCAL, Family.UNSPEC, 0)),
        (
            SIG + bytes([0x21, 0x00, 0x00, 0x00]),
            ProxyHeader(2, Command.PROXY, Family.UNSPEC, Transport.UNSPEC),
        ),
        (
            SIG
            + bytes([0x21, 0x31, 0x00, 216])
            + b"/run/a.sock".ljust(108, b"\x00")
            + b"/run/b.sock".ljust(108, b"\x00"),
            ProxyHeader(
                2,
                Command.PROXY,
                Family.UNIX,
                Transport.STREAM,
                Endpoint("/run/a.sock"),
                Endpoint("/run/b.sock"),
            ),
        ),
    ],
)
def test_headers_are_read(data: bytes, expected: ProxyHeader) -> None:
    header, rest = read_all(data + b"GET / HTTP/1.1\r\n")
    assert header == expected
    assert rest == b"GET / HTTP/1.1\r\n"


def test_v2_tlvs_are_kept_raw_after_the_addresses() -> None:
    tlvs = bytes([0x01, 0x00, 0x02]) + b"h2" + bytes([0x04, 0x00, 0x00])
    length = 12 + len(tlvs)
    data = V2_INET[:14] + length.to_bytes(2, "big") + V2_INET[16:] + tlvs
    header, rest = read_all(data)
    assert header.tlvs == ((0x01, b"h2"), (0x04, b""))
    assert header.source == Endpoint("203.0.113.7", 51000)
    assert rest == b""


def test_v2_ipv4_mapped_source_is_read_as_ipv6_text() -> None:
    """The reader reports what the header says; the listener plains ::ffff:a.b.c.d."""
    data = v2_header(Endpoint("::ffff:192.0.2.1", 1), Endpoint("2001:db8::1", 2))
    header, _ = read_all(data)
    assert header.source is not None
    assert ipaddress.ip_address(header.source.address).ipv4_mapped == ipaddress.ip_address(
        "192.0.2.1"
    )


@pytest.mark.parametrize(
    ("data", "relayed"),
    [
        (V2_INET, (Endpoint("203.0.113.7", 51000), Endpoint("10.0.0.1", 443))),
        (V2_LOCAL, None),
        (b"PROXY UNKNOWN\r\n", None),
        (SIG + bytes([0x21, 0x00, 0x00, 0x00]), None),
        (v2_header(Endpoint("unix"), Endpoint("x")), None),
    ],
)
def test_relayed_addresses_only_for_ip_clients(
    data: bytes, relayed: tuple[Endpoint, Endpoint] | None
) -> None:
    header, _ = read_all(data)
    assert header.relayed == relayed


# -- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "not a PROXY protocol header"),  # a TLS ClientHello
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs source, destination and two ports"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "needs source"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "needs source"),
        (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "over 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "not a number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "not a number"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n", "not a number"),
        (b"PROXY UNKNOWN" + b" " * 100, "longer than 107 bytes"),
        (SIG + bytes([0x11, 0x11, 0x00, 0x0C]), "version 1"),
        (SIG + bytes([0x22, 0x11, 0x00, 0x0C]), "command 2"),
        (SIG + bytes([0x21, 0x41, 0x00, 0x0C]) + bytes(12), "family byte 0x41"),
        (SIG + bytes([0x21, 0x13, 0x00, 0x0C]) + bytes(12), "family byte 0x13"),
        (SIG + bytes([0x21, 0x10, 0x00, 0x0C]) + bytes(12), "family byte 0x10"),
        (SIG + bytes([0x21, 0x01, 0x00, 0x00]), "family byte 0x01"),
        (SIG + bytes([0x21, 0x11, 0x00, 0x08]) + bytes(8), "less than its addresses' 12"),
        (SIG + bytes([0x21, 0x21, 0x00, 0x0C]) + bytes(12), "less than its addresses' 36"),
        (SIG + bytes([0x21, 0x11, 0x00, 0x0E]) + bytes(14), "TLV cut short"),
        (SIG + bytes([0x21, 0x11, 0x00, 0x0F]) + bytes(12) + b"\x01\x00\x05", "longer than"),
        (SIG + bytes([0x21, 0x11, 0xFF, 0xFF]), "over 16384"),
        (SIG[:11] + b"X", "not a PROXY protocol header"),
    ],
)
def test_bad_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        ProxyHeaderReader().feed(data)


def test_garbage_is_refused_on_its_first_byte() -> None:
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader().feed(b"G")
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader().feed(b"\r\n\r\n\x01")


def test_a_v2_header_over_the_limit_is_refused_before_it_is_read() -> None:
    reader = ProxyHeaderReader(max_length=64)
    with pytest.raises(ProxyProtocolError, match="v2 header of 65 bytes, over 64"):
        reader.feed(SIG + bytes([0x21, 0x11, 0x00, 49]))


def test_v1_needs_more_until_its_line_ends() -> None:
    reader = ProxyHeaderReader()
    line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n"
    for i in range(len(line) - 1):
        assert reader.feed(line[i : i + 1]) is None
    assert reader.feed(line[-1:] + b"rest") is not None
    assert reader.remainder == b"rest"


def test_the_longest_v1_line_is_accepted() -> None:
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {address} {address} 65535 65535\r\n".encode()
    assert len(line) == 104
    header, _ = read_all(line)
    assert header.source == Endpoint(address, 65535)
    unknown = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(unknown) == V1_MAX_LENGTH
    assert read_all(unknown)[0].family is Family.UNSPEC


# -- what is written ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "destination", "v1", "v2"),
    [
        (
            Endpoint("203.0.113.7", 51000),
            Endpoint("10.0.0.1", 443),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n",
            V2_INET,
        ),
        (
            Endpoint("2001:db8::7", 4000),
            Endpoint("2001:db8::1", 80),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n",
            V2_INET6,
        ),
        (None, None, b"PROXY UNKNOWN\r\n", V2_LOCAL),
        (Endpoint("unix"), Endpoint(""), b"PROXY UNKNOWN\r\n", SIG + b"\x21\x00\x00\x00"),
        (Endpoint("203.0.113.7", 1), None, b"PROXY UNKNOWN\r\n", SIG + b"\x21\x00\x00\x00"),
    ],
)
def test_headers_are_written(
    source: Endpoint | None, destination: Endpoint | None, v1: bytes, v2: bytes
) -> None:
    assert v1_header(source, destination) == v1
    assert v2_header(source, destination) == v2


def test_mixed_families_are_written_as_ipv6() -> None:
    source, destination = Endpoint("192.0.2.1", 1), Endpoint("2001:db8::1", 2)
    for wire in (v1_header(source, destination), v2_header(source, destination)):
        header, _ = read_all(wire)
        assert header.family is Family.INET6
        assert header.source is not None and header.destination is not None
        mapped = ipaddress.IPv6Address(header.source.address).ipv4_mapped
        assert mapped == ipaddress.IPv4Address("192.0.2.1")
        assert header.destination == destination


def test_tlvs_are_written_after_the_addresses() -> None:
    data = v2_header(Endpoint("203.0.113.7", 1), Endpoint("10.0.0.1", 2), [(0x02, b"example")])
    header, _ = read_all(data)
    assert header.tlvs == ((0x02, b"example"),)


# -- properties -----------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[Endpoint, Endpoint]:
    addresses = draw(st.sampled_from([ipv4, ipv6]))
    return Endpoint(draw(addresses), draw(ports)), Endpoint(draw(addresses), draw(ports))


@given(endpoints(), st.sampled_from([1, 2]), st.binary(max_size=64), st.data())
def test_written_headers_read_back_whatever_the_split(
    pair: tuple[Endpoint, Endpoint], version: int, after: bytes, data: st.DataObject
) -> None:
    source, destination = pair
    wire = (v1_header if version == 1 else v2_header)(source, destination) + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    reader = ProxyHeaderReader()
    header = None
    start = 0
    for cut in [*cuts, len(wire)]:
        if header is None:
            header = reader.feed(wire[start:cut])
            start = cut
    assert header is not None
    assert header.version == version
    assert header.relayed == (source, destination)
    assert reader.remainder + wire[start:] == after


@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
        st.binary(max_size=120).map(lambda b: b"PROXY " + b),
        st.text(alphabet="PROXYTCP46UNK0123456789.:abcdef \r\n", max_size=120).map(str.encode),
    )
)
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    reader = ProxyHeaderReader()
    try:
        for i in range(0, len(data), 7):
            if reader.feed(data[i : i + 7]) is not None:
                break
    except ProxyProtocolError:
        pass
