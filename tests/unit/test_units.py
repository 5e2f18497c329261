"""Durations, sizes, addresses and networks as users write them."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.units import (
    Address,
    describe_value,
    format_duration,
    format_size,
    parse_address,
    parse_duration,
    parse_network,
    parse_size,
)

DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
SIZE_FACTORS = {
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "kb": 1024,
    "mb": 1024**2,
    "gib": 1024**3,
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0), ("0s", 0.0)],
)
def test_duration_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "abc", "5 parsecs", "", "s", "5S", "1.s", ".5s", "5s5"])
def test_duration_without_a_known_unit_is_rejected(text: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_duration(text)
    assert str(error.value) == f'expected a duration like "5s" or "250ms", got "{text}"'


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match='a duration cannot be negative, got "-5s"'):
        parse_duration("-5s")


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(DURATION_FACTORS)))
def test_duration_of_whole_units(count: int, unit: str) -> None:
    assert parse_duration(f"{count}{unit}") == pytest.approx(count * DURATION_FACTORS[unit])


@given(st.floats(min_value=0, max_value=10**9, allow_nan=False, allow_infinity=False))
def test_duration_round_trips_through_its_spelling(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30.0, "30s"), (60.0, "60s"), (120.0, "2m"), (3600.0, "1h"), (0.25, "250ms"), (0.0, "0s")],
)
def test_duration_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("64KB", 65536),
        ("10MB", 10 * 1024**2),
        ("1GB", 1024**3),
        ("512B", 512),
        ("1kib", 1024),
        ("2MiB", 2 * 1024**2),
        ("1.5KB", 1536),
        ("100", 100),
        ("0", 0),
    ],
)
def test_size_in_bytes(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["abc", "10 parsecs", "KB", "", "1e3KB", "10XB"])
def test_size_without_a_known_unit_is_rejected(value: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_size(value)
    expected = 'expected a size like "64KB" or "10MB", or an integer of bytes'
    assert str(error.value) == f'{expected}, got "{value}"'


@pytest.mark.parametrize("value", [-1, "-5MB"])
def test_negative_size_is_rejected(value: str | int) -> None:
    with pytest.raises(ValueError, match="a size cannot be negative"):
        parse_size(value)


@pytest.mark.parametrize("value", [True, 1.5, None])
def test_size_of_another_type_is_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size like"):
        parse_size(value)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SIZE_FACTORS)))
def test_size_of_whole_units(count: int, unit: str) -> None:
    assert parse_size(f"{count}{unit}") == count * SIZE_FACTORS[unit]


@given(st.integers(min_value=0, max_value=2**50))
def test_size_round_trips_through_its_spelling(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("size", "text"), [(32768, "32KB"), (100 * 1024**2, "100MB"), (1000, "1000B"), (0, "0B")]
)
def test_size_spelling(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0.0.0.0:8080", Address("0.0.0.0", 8080)),
        ("localhost:0", Address("localhost", 0)),
        ("example.com:65535", Address("example.com", 65535)),
        ("[::1]:443", Address("::1", 443)),
        ("unix:/run/bastion.sock", Address("", 0, "/run/bastion.sock")),
    ],
)
def test_address_forms(text: str, address: Address) -> None:
    assert parse_address(text) == address
    assert str(parse_address(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", 'expected an address like "127.0.0.1:8080", "[::1]:8080" or "unix:/path"'),
        (":8080", "expected an address like"),
        ("host:port", 'expected a port from 0 to 65535, got "port"'),
        ("host:65536", 'expected a port from 0 to 65535, got "65536"'),
        ("host:-1", "expected a port from 0 to 65535"),
        ("::1:8080", 'an IPv6 address needs brackets, like "[::1]:8080"'),
        ("[nope]:80", "expected an address like"),
        ("999.1.1.1:80", '"999.1.1.1" is not an IPv4 address'),
        ("bad host:80", "expected an address like"),
        ("unix:", "a unix address needs a path"),
    ],
)
def test_bad_address_is_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_address(text)
    assert message in str(error.value)
    assert describe_value(text) in str(error.value)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_address_round_trips_through_str(ip: ipaddress.IPv4Address, port: int) -> None:
    address = Address(str(ip), port)
    assert parse_address(str(address)) == address


def test_address_is_hashable_and_frozen() -> None:
    address = parse_address("127.0.0.1:80")
    assert {address: 1}[Address("127.0.0.1", 80)] == 1
    with pytest.raises(AttributeError):
        address.port = 81  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("fd00::/8", "fd00::/8"),
        ("::1", "::1/128"),
    ],
)
def test_network_forms(text: str, network: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(network)


def test_network_with_host_bits_suggests_the_network() -> None:
    with pytest.raises(ValueError) as error:
        parse_network("10.1.2.3/8")
    assert str(error.value) == '"10.1.2.3/8" has host bits set; did you mean "10.0.0.0/8"?'


def test_bad_network_is_rejected() -> None:
    with pytest.raises(ValueError, match=r'expected a network like .*, got "nope"'):
        parse_network("nope")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a", '"a"'),
        ('say "hi"', '"say \\"hi\\""'),
        (5, "5"),
        (1.5, "1.5"),
        (True, "true"),
        ([1], "a list"),
        ({"a": 1}, "a table"),
    ],
)
def test_values_are_shown_as_toml_reads(value: object, shown: str) -> None:
    assert describe_value(value) == shown
