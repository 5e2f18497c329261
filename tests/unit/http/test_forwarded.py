"""Client identity recovery and the forwarding headers sent to the origin."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.http.forwarded import (
    FORWARDING_HEADERS,
    ForwardingFacts,
    TrustedProxies,
    forwarding_headers,
    recover_client_ip,
)

Headers = list[tuple[bytes, bytes]]

PROXIES = TrustedProxies(
    [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48")]
)
MODES = ["x-forwarded", "rfc7239", "both", "none"]
SPOOFED: Headers = [
    (b"x-forwarded-for", b"6.6.6.6"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"evil.example"),
    (b"x-forwarded-port", b"443"),
    (b"x-forwarded-prefix", b"/admin"),
    (b"x-real-ip", b"6.6.6.6"),
    (b"forwarded", b"for=6.6.6.6;proto=https"),
]


def facts(
    *,
    peer_ip: str = "203.0.113.7",
    client_ip: str | None = None,
    trusted: bool = False,
    host: bytes = b"app.example:8080",
    prefix: bytes | None = None,
) -> ForwardingFacts:
    return ForwardingFacts(
        peer_ip=peer_ip,
        client_ip=peer_ip if client_ip is None else client_ip,
        peer_trusted=trusted,
        proto=b"http",
        host=host,
        port=8080,
        prefix=prefix,
    )


def xff(*values: str) -> Headers:
    return [(b"x-forwarded-for", v.encode()) for v in values]


def fwd(*values: str) -> Headers:
    return [(b"forwarded", v.encode()) for v in values]


# --- TrustedProxies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.1.2.3", True),
        ("11.1.2.3", False),
        ("2001:db8:ffff::1", True),
        ("2001:db8:fffe::1", False),
        ("::ffff:10.0.0.1", True),
        ("::FFFF:10.0.0.1", True),
        ("::ffff:11.0.0.1", False),
        ("", False),
        ("not-an-ip", False),
        ("10.0.0.1:80", False),
        ("[2001:db8:ffff::1]", False),
        ("010.0.0.1", False),
        (" 10.0.0.1", False),
        ("1" * 500, False),
    ],
)
def test_trusted_membership(ip: str, expected: bool) -> None:
    assert (ip in PROXIES) is expected
    assert (ip in PROXIES) is expected  # the cached verdict agrees


def test_empty_trusted_set_is_false_and_trusts_nobody() -> None:
    nobody = TrustedProxies([])
    assert not nobody
    assert "10.0.0.1" not in nobody
    assert PROXIES


def test_v4_mapped_network_trusts_plain_ipv4() -> None:
    mapped = TrustedProxies([ipaddress.ip_network("::ffff:192.168.0.0/112")])
    assert "192.168.3.4" in mapped
    assert "::ffff:192.168.3.4" in mapped
    assert "192.169.0.1" not in mapped


def test_whole_ipv6_space_includes_mapped_ipv4() -> None:
    everything_v6 = TrustedProxies([ipaddress.ip_network("::/0")])
    assert "::ffff:1.2.3.4" in everything_v6
    assert "1.2.3.4" in everything_v6


def test_many_networks_of_mixed_prefix_lengths() -> None:
    networks = [ipaddress.ip_network(f"172.{i}.0.0/16") for i in range(16, 32)]
    networks += [ipaddress.ip_network("192.0.2.128/25"), ipaddress.ip_network("198.51.100.9/32")]
    proxies = TrustedProxies(networks)
    assert "172.20.9.9" in proxies
    assert "172.32.0.1" not in proxies
    assert "192.0.2.200" in proxies
    assert "192.0.2.100" not in proxies
    assert "198.51.100.9" in proxies
    assert "198.51.100.10" not in proxies


def test_verdict_cache_stays_bounded() -> None:
    proxies = TrustedProxies([ipaddress.ip_network("10.0.0.0/8")])
    for i in range(5000):
        assert f"10.0.{i // 256}.{i % 256}" in proxies
    assert len(proxies._verdicts) <= 1024  # memory bound is the observable property here
    assert "10.0.0.0" in proxies


def test_classify_gives_canonical_text() -> None:
    assert PROXIES.classify("2001:DB8:FFFF:0::1") == ("2001:db8:ffff::1", True)
    assert PROXIES.classify("::ffff:10.0.0.1") == ("10.0.0.1", True)
    assert PROXIES.classify("192.0.2.1") == ("192.0.2.1", False)
    assert PROXIES.classify("nope") is None


# --- recover_client_ip ------------------------------------------------------------------------


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    assert recover_client_ip("203.0.113.7", xff("1.1.1.1"), PROXIES) == "203.0.113.7"
    assert recover_client_ip("203.0.113.7", fwd("for=1.1.1.1"), PROXIES) == "203.0.113.7"


def test_trusted_peer_without_forwarding_headers_is_the_client() -> None:
    assert recover_client_ip("10.0.0.1", [(b"host", b"a")], PROXIES) == "10.0.0.1"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["198.51.100.1"], "198.51.100.1"),
        (["198.51.100.1, 10.0.0.2, 10.0.0.3"], "198.51.100.1"),
        (["6.6.6.6, 198.51.100.1, 10.0.0.2"], "198.51.100.1"),
        (["6.6.6.6", "198.51.100.1", "10.0.0.2"], "198.51.100.1"),
        (["10.0.0.5, 10.0.0.4, 10.0.0.3"], "10.0.0.5"),
        (["198.51.100.1, garbage, 10.0.0.3"], "10.0.0.3"),
        (["198.51.100.1, 10.0.0.3, garbage"], "10.0.0.1"),
        (["unknown"], "10.0.0.1"),
        (["198.51.100.1,,10.0.0.3,"], "198.51.100.1"),
        ([""], "10.0.0.1"),
        (["198.51.100.1:5555"], "198.51.100.1"),
        (["198.51.100.1:http"], "10.0.0.1"),
        (["2001:db8::7"], "2001:db8::7"),
        (["[2001:db8::7]:443"], "2001:db8::7"),
        (["[2001:db8::7]"], "2001:db8::7"),
        (["[198.51.100.1]"], "10.0.0.1"),
        (["[2001:db8::7"], "10.0.0.1"),
        (["2001:db8::7, 2001:db8:ffff::1"], "2001:db8::7"),
        (["2001:DB8:0::7"], "2001:db8::7"),
        (["::ffff:198.51.100.1"], "198.51.100.1"),
        (["198.51.100.1, ::ffff:10.0.0.9"], "198.51.100.1"),
        (['"198.51.100.1"'], "10.0.0.1"),
    ],
)
def test_recovery_from_x_forwarded_for(lines: list[str], expected: str) -> None:
    assert recover_client_ip("10.0.0.1", xff(*lines), PROXIES) == expected


def test_v4_mapped_peer_is_trusted_as_ipv4() -> None:
    assert recover_client_ip("::ffff:10.0.0.1", xff("198.51.100.1"), PROXIES) == "198.51.100.1"


def test_x_forwarded_for_wins_over_forwarded() -> None:
    headers = fwd("for=192.0.2.60") + xff("198.51.100.1")
    assert recover_client_ip("10.0.0.1", headers, PROXIES) == "198.51.100.1"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60"),
        (["For=192.0.2.60"], "192.0.2.60"),
        (['for="192.0.2.60:4711"'], "192.0.2.60"),
        (['for="[2001:db8:cafe::17]"'], "2001:db8:cafe::17"),
        (['for="[2001:db8:cafe::17]:4711"'], "2001:db8:cafe::17"),
        (["for=192.0.2.43, for=10.0.0.8"], "192.0.2.43"),
        (["for=192.0.2.43", "for=10.0.0.8"], "192.0.2.43"),
        (["for=10.0.0.9, for=10.0.0.8"], "10.0.0.9"),
        (["for=192.0.2.43, for=unknown, for=10.0.0.8"], "10.0.0.8"),
        (["for=192.0.2.43, for=_hidden"], "10.0.0.1"),
        (["for=192.0.2.43, proto=https"], "10.0.0.1"),
        (["for=192.0.2.43, for=10.0.0.8;for=10.0.0.7"], "10.0.0.1"),
        (['for=192.0.2.43;host="a,b;c=d", for=10.0.0.8'], "192.0.2.43"),
        (['for="192.0.2.43;host=x'], "10.0.0.1"),
        (['for="\\1\\92.0.2.43"'], "192.0.2.43"),
        (["for=garbage, for=192.0.2.43"], "192.0.2.43"),
    ],
)
def test_recovery_from_forwarded_only(lines: list[str], expected: str) -> None:
    assert recover_client_ip("10.0.0.1", fwd(*lines), PROXIES) == expected


header_names = st.sampled_from([b"x-forwarded-for", b"forwarded", b"host", b"x-real-ip", b"cookie"])
chain_text = st.lists(
    st.one_of(
        st.ip_addresses().map(str),
        st.sampled_from(["10.0.0.3", "::ffff:10.0.0.4", "2001:db8:ffff::5", "unknown", ""]),
        st.text(alphabet='0123456789abcdef.:[]"=;, _for', max_size=24),
    ),
    max_size=6,
).map(lambda parts: ", ".join(parts))


def _addresses_in(headers: Headers) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address written in the header values, between delimiters or before a `:port`."""
    seen: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for _, value in headers:
        words = re.split(r'[\s,;="\[\]]+', value.decode("latin-1"))
        for word in words + [word.partition(":")[0] for word in words]:
            try:
                address = ipaddress.ip_address(word)
            except ValueError:
                continue
            seen.add(address)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                seen.add(address.ipv4_mapped)
    return seen


@given(
    peer=st.sampled_from(["10.0.0.1", "203.0.113.7", "::ffff:10.0.0.2", "2001:db8:ffff::1"]),
    headers=st.lists(st.tuples(header_names, chain_text.map(str.encode)), max_size=4),
)
def test_recovered_ip_is_the_peer_or_came_from_the_headers(peer: str, headers: Headers) -> None:
    client = recover_client_ip(peer, headers, PROXIES)
    assert client == peer or ipaddress.ip_address(client) in _addresses_in(headers)


# --- forwarding_headers: untrusted peer -------------------------------------------------------


def test_untrusted_x_forwarded_replaces_every_spoofed_header() -> None:
    incoming = [(b"host", b"app.example:8080"), *SPOOFED, (b"accept", b"*/*")]
    assert forwarding_headers(incoming, facts(), "x-forwarded") == [
        (b"host", b"app.example:8080"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"app.example:8080"),
        (b"x-forwarded-port", b"8080"),
        (b"x-real-ip", b"203.0.113.7"),
    ]


def test_untrusted_rfc7239_sends_only_forwarded() -> None:
    out = forwarding_headers([*SPOOFED, (b"accept", b"*/*")], facts(), "rfc7239")
    assert out == [
        (b"accept", b"*/*"),
        (b"forwarded", b'for=203.0.113.7;host="app.example:8080";proto=http'),
    ]


def test_untrusted_both_sends_both_families() -> None:
    out = forwarding_headers(SPOOFED, facts(prefix=b"/shop"), "both")
    assert out == [
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"app.example:8080"),
        (b"x-forwarded-port", b"8080"),
        (b"x-forwarded-prefix", b"/shop"),
        (b"x-real-ip", b"203.0.113.7"),
        (b"forwarded", b'for=203.0.113.7;host="app.example:8080";proto=http'),
    ]


def test_untrusted_none_still_strips_spoofed_headers() -> None:
    assert forwarding_headers([*SPOOFED, (b"accept", b"*/*")], facts(), "none") == [
        (b"accept", b"*/*")
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spoofed", SPOOFED, ids=lambda field: field[0].decode())
def test_no_spoofed_value_survives(mode: str, spoofed: tuple[bytes, bytes]) -> None:
    out = forwarding_headers([spoofed, spoofed], facts(), mode)
    assert spoofed not in out
    assert out == forwarding_headers([], facts(), mode)


def test_rfc7239_with_prefix_also_sends_x_forwarded_prefix() -> None:
    out = forwarding_headers([], facts(host=b"app.example", prefix=b"/shop"), "rfc7239")
    assert out == [
        (b"x-forwarded-prefix", b"/shop"),
        (b"forwarded", b"for=203.0.113.7;host=app.example;proto=http"),
    ]


def test_ipv6_client_is_bracketed_and_quoted_in_forwarded() -> None:
    out = forwarding_headers([], facts(peer_ip="2001:db8::1"), "both")
    assert (b"x-forwarded-for", b"2001:db8::1") in out
    assert (b"forwarded", b'for="[2001:db8::1]";host="app.example:8080";proto=http') in out


def test_host_with_quote_and_backslash_is_escaped_in_forwarded() -> None:
    out = forwarding_headers([], facts(host=b'a"b\\c'), "rfc7239")
    assert out == [(b"forwarded", b'for=203.0.113.7;host="a\\"b\\\\c";proto=http')]


def test_missing_host_is_left_out() -> None:
    out = forwarding_headers([], facts(host=b""), "both")
    assert [name for name, _ in out if name == b"x-forwarded-host"] == []
    assert (b"forwarded", b"for=203.0.113.7;proto=http") in out


def test_input_list_is_not_modified() -> None:
    incoming = list(SPOOFED)
    forwarding_headers(incoming, facts(), "both")
    forwarding_headers(incoming, facts(trusted=True, peer_ip="10.0.0.1"), "both")
    assert incoming == SPOOFED


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="x-forwarded"):
        forwarding_headers([], facts(), "X-Forwarded")


any_name = st.one_of(
    st.sampled_from(sorted(FORWARDING_HEADERS)),
    st.binary(min_size=1, max_size=12).map(bytes.lower),
)
any_headers = st.lists(st.tuples(any_name, st.binary(max_size=40)), max_size=12)


@given(headers=any_headers, mode=st.sampled_from(MODES), prefix=st.none() | st.just(b"/p"))
def test_untrusted_output_is_ours_plus_the_rest_in_order(
    headers: Headers, mode: str, prefix: bytes | None
) -> None:
    hop = facts(prefix=prefix)
    out = forwarding_headers(headers, hop, mode)
    others = [field for field in headers if field[0] not in FORWARDING_HEADERS]
    assert out == others + forwarding_headers([], hop, mode)


@given(
    client=st.ip_addresses().map(str),
    host=st.binary(min_size=1, max_size=30).filter(lambda h: b"\r" not in h and b"\n" not in h),
)
def test_forwarded_we_write_is_read_back_by_the_next_hop(client: str, host: bytes) -> None:
    """Whatever the Host, our element parses back to the client at a trusting next hop."""
    ours = forwarding_headers([], facts(peer_ip=client, host=host), "rfc7239")
    canonical = PROXIES.classify(client)
    assert canonical is not None
    assert recover_client_ip("10.0.0.1", ours, PROXIES) == canonical[0]


# --- forwarding_headers: trusted peer ---------------------------------------------------------


TRUSTED_HOP = facts(peer_ip="10.0.0.1", client_ip="198.51.100.1", trusted=True, prefix=b"/shop")
FROM_PROXY: Headers = [
    (b"host", b"app.example"),
    (b"x-forwarded-for", b"198.51.100.1"),
    (b"x-forwarded-proto", b"https"),
    (b"forwarded", b"for=198.51.100.1;proto=https"),
    (b"x-forwarded-for", b"10.9.9.9"),
    (b"x-real-ip", b"10.9.9.9"),
    (b"accept", b"*/*"),
]


def test_trusted_x_forwarded_extends_the_chain() -> None:
    assert forwarding_headers(FROM_PROXY, TRUSTED_HOP, "x-forwarded") == [
        (b"host", b"app.example"),
        (b"x-forwarded-proto", b"https"),
        (b"forwarded", b"for=198.51.100.1;proto=https"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"198.51.100.1, 10.9.9.9, 10.0.0.1"),
        (b"x-forwarded-host", b"app.example:8080"),
        (b"x-forwarded-port", b"8080"),
        (b"x-forwarded-prefix", b"/shop"),
        (b"x-real-ip", b"198.51.100.1"),
    ]


def test_trusted_rfc7239_extends_forwarded_and_passes_x_headers() -> None:
    assert forwarding_headers(FROM_PROXY, TRUSTED_HOP, "rfc7239") == [
        (b"host", b"app.example"),
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-for", b"10.9.9.9"),
        (b"x-real-ip", b"10.9.9.9"),
        (b"accept", b"*/*"),
        (b"x-forwarded-prefix", b"/shop"),
        (
            b"forwarded",
            b'for=198.51.100.1;proto=https, for=10.0.0.1;host="app.example:8080";proto=http',
        ),
    ]


def test_trusted_both_extends_both_chains() -> None:
    out = forwarding_headers(FROM_PROXY, TRUSTED_HOP, "both")
    assert out[:3] == [
        (b"host", b"app.example"),
        (b"x-forwarded-proto", b"https"),
        (b"accept", b"*/*"),
    ]
    assert out[3] == (b"x-forwarded-for", b"198.51.100.1, 10.9.9.9, 10.0.0.1")
    assert out[-1] == (
        b"forwarded",
        b'for=198.51.100.1;proto=https, for=10.0.0.1;host="app.example:8080";proto=http',
    )
    assert [name for name, _ in out].count(b"x-forwarded-prefix") == 1


def test_trusted_none_passes_everything_unchanged() -> None:
    out = forwarding_headers(FROM_PROXY, TRUSTED_HOP, "none")
    assert out == FROM_PROXY
    assert out is not FROM_PROXY


def test_trusted_incoming_prefix_is_stacked_above_ours() -> None:
    # An outer proxy mounted us at /outer, we mount the app at /shop: its public base is both.
    incoming = [(b"x-forwarded-prefix", b"/outer/")]
    for mode in ("x-forwarded", "rfc7239", "both"):
        out = forwarding_headers(incoming, TRUSTED_HOP, mode)
        assert [v for n, v in out if n == b"x-forwarded-prefix"] == [b"/outer/shop"]


def test_trusted_incoming_prefix_passes_when_we_strip_none() -> None:
    incoming = [(b"x-forwarded-prefix", b"/outer")]
    hop = dataclasses.replace(TRUSTED_HOP, prefix=None)
    for mode in ("x-forwarded", "rfc7239", "both"):
        out = forwarding_headers(incoming, hop, mode)
        assert [v for n, v in out if n == b"x-forwarded-prefix"] == [b"/outer"]


def test_trusted_peer_without_headers_gets_fresh_ones_naming_the_peer() -> None:
    out = forwarding_headers([], TRUSTED_HOP, "x-forwarded")
    assert out == [
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"app.example:8080"),
        (b"x-forwarded-port", b"8080"),
        (b"x-forwarded-prefix", b"/shop"),
        (b"x-real-ip", b"198.51.100.1"),
    ]


def test_trusted_blank_chain_lines_are_dropped_when_extending() -> None:
    out = forwarding_headers(xff(" ", "198.51.100.1 "), TRUSTED_HOP, "x-forwarded")
    assert (b"x-forwarded-for", b"198.51.100.1, 10.0.0.1") in out
