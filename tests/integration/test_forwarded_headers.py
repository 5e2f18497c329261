"""Client identity through the proxy, over sockets: X-Forwarded-* and RFC 7239 Forwarded per
the route's `forwarded` mode, spoofed headers from untrusted clients replaced, a trusted
proxy's chain extended, and the real client IP recovered (X-Real-IP, access log).

The origin's /echo returns the headers it received; every test here reads them from there.
All clients connect from 127.0.0.1, which is untrusted unless `server.trusted_proxies` says
otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tests.support.client import http_get
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy, single_route_config

CLIENT = "127.0.0.1"
HOST = "app.test"

FORWARDING_NAMES = (
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "forwarded",
)

SPOOFED = [
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Real-IP", "6.6.6.6"),
    ("Forwarded", 'for=6.6.6.6;proto=https;host="evil.test"'),
    ("X-Forwarded-Host", "evil.test"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/evil"),
]


def forwarding_headers_seen(response_json: dict[str, object]) -> dict[str, list[str]]:
    """The forwarding headers the origin received: name -> every value, in order."""
    seen: dict[str, list[str]] = {}
    pairs = response_json["headers"]
    assert isinstance(pairs, list)
    for name, value in pairs:
        if name in FORWARDING_NAMES:
            seen.setdefault(name, []).append(value)
    return seen


def forwarded_elements(value: str) -> list[dict[str, str]]:
    """Parse an RFC 7239 Forwarded value (no commas or semicolons inside quotes expected)."""
    elements = []
    for element in value.split(","):
        pairs = {}
        for pair in element.strip().split(";"):
            name, _, raw = pair.partition("=")
            pairs[name.strip().lower()] = raw.strip().strip('"')
        elements.append(pairs)
    return elements


async def echo_through_proxy(
    toml: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    path: str = "/echo",
    host: str = HOST,
) -> tuple[dict[str, list[str]], int]:
    """Forwarding headers the origin saw for one GET through a proxy running `toml`, and
    the proxy's listener port."""
    async with running_proxy(toml) as proxy:
        response = await http_get(proxy.ports[0], path, host=host, headers=headers, timeout=3.0)
        assert response.status == 200
        return forwarding_headers_seen(response.json()), proxy.ports[0]


def x_forwarded_expected(port: int) -> dict[str, list[str]]:
    return {
        "x-forwarded-for": [CLIENT],
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": [HOST],
        "x-forwarded-port": [str(port)],
        "x-real-ip": [CLIENT],
    }


# -- modes, from an untrusted client ----------------------------------------------------------


async def test_default_mode_is_both_x_forwarded_and_rfc7239() -> None:
    async with AutonomousOrigin() as origin:
        seen, port = await echo_through_proxy(single_route_config(origin.address))
    forwarded = seen.pop("forwarded")
    assert seen == x_forwarded_expected(port)
    assert len(forwarded) == 1
    assert forwarded_elements(forwarded[0]) == [{"for": CLIENT, "host": HOST, "proto": "http"}]


async def test_mode_x_forwarded_sends_no_forwarded_header() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route='forwarded = "x-forwarded"')
        seen, port = await echo_through_proxy(toml)
    assert seen == x_forwarded_expected(port)


async def test_mode_rfc7239_sends_only_forwarded() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route='forwarded = "rfc7239"')
        seen, _ = await echo_through_proxy(toml)
    assert list(seen) == ["forwarded"]
    assert forwarded_elements(seen["forwarded"][0]) == [
        {"for": CLIENT, "host": HOST, "proto": "http"}
    ]


async def test_mode_none_sends_no_forwarding_headers() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route='forwarded = "none"')
        seen, _ = await echo_through_proxy(toml)
    assert seen == {}


async def test_forwarded_quotes_a_host_with_a_port() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route='forwarded = "rfc7239"')
        seen, _ = await echo_through_proxy(toml, host="app.test:8080")
    value = seen["forwarded"][0]
    assert 'host="app.test:8080"' in value  # ":" is not a token character (RFC 7239 4)
    assert forwarded_elements(value)[0]["host"] == "app.test:8080"


# -- spoofing from an untrusted client --------------------------------------------------------


async def test_spoofed_headers_from_untrusted_client_are_replaced_in_every_mode() -> None:
    async with AutonomousOrigin() as origin:
        for mode in ("both", "x-forwarded", "rfc7239", "none"):
            toml = single_route_config(origin.address, route=f'forwarded = "{mode}"')
            seen, port = await echo_through_proxy(toml, SPOOFED)
            every_value = " ".join(v for values in seen.values() for v in values)
            assert "6.6.6.6" not in every_value, mode
            assert "evil" not in every_value, mode
            assert "https" not in every_value and "443" not in every_value, mode
            if mode in ("both", "x-forwarded"):
                assert {k: v for k, v in seen.items() if k != "forwarded"} == x_forwarded_expected(
                    port
                ), mode
            if mode in ("both", "rfc7239"):
                assert [forwarded_elements(v) for v in seen["forwarded"]] == [
                    [{"for": CLIENT, "host": HOST, "proto": "http"}]
                ], mode
            if mode == "none":
                assert seen == {}, mode


async def test_spoofed_headers_in_odd_case_and_repeated_are_all_removed() -> None:
    headers = [
        ("x-FORWARDED-for", "6.6.6.6"),
        ("X-Forwarded-For", "7.7.7.7"),
        ("x-real-ip", "6.6.6.6"),
        ("FORWARDED", "for=6.6.6.6"),
        ("forwarded", "for=7.7.7.7"),
    ]
    async with AutonomousOrigin() as origin:
        seen, _ = await echo_through_proxy(single_route_config(origin.address), headers)
    assert seen["x-forwarded-for"] == [CLIENT]
    assert seen["x-real-ip"] == [CLIENT]
    assert [forwarded_elements(v)[0]["for"] for v in seen["forwarded"]] == [CLIENT]


async def test_connection_header_cannot_make_bastion_drop_its_own_forwarding_headers() -> None:
    headers = [
        ("Connection", "X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto"),
        ("X-Forwarded-For", "6.6.6.6"),
    ]
    async with AutonomousOrigin() as origin:
        seen, port = await echo_through_proxy(single_route_config(origin.address), headers)
    forwarded = seen.pop("forwarded")
    assert seen == x_forwarded_expected(port)
    assert forwarded_elements(forwarded[0])[0]["for"] == CLIENT


# -- a trusted proxy in front -----------------------------------------------------------------

TRUST_LOCALHOST = 'trusted_proxies = ["127.0.0.1"]'


async def test_trusted_proxy_chain_is_extended_and_real_ip_recovered() -> None:
    headers = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "public.example"),
        ("X-Forwarded-Port", "443"),
        ("X-Real-IP", "6.6.6.6"),
        ("Forwarded", "for=203.0.113.9;proto=https;host=public.example"),
    ]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, server=TRUST_LOCALHOST)
        seen, _ = await echo_through_proxy(toml, headers)
    assert seen["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert seen["x-real-ip"] == ["203.0.113.9"]
    # What the proxy in front saw is kept: it is closer to the client than we are.
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == ["public.example"]
    assert seen["x-forwarded-port"] == ["443"]
    assert len(seen["forwarded"]) == 1
    assert forwarded_elements(seen["forwarded"][0]) == [
        {"for": "203.0.113.9", "proto": "https", "host": "public.example"},
        {"for": CLIENT, "host": HOST, "proto": "http"},
    ]


async def test_trusted_chain_in_several_fields_is_joined_in_order() -> None:
    headers = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.9")]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(
            origin.address, server=TRUST_LOCALHOST, route='forwarded = "x-forwarded"'
        )
        seen, _ = await echo_through_proxy(toml, headers)
    assert seen["x-forwarded-for"] == ["198.51.100.1, 203.0.113.9, 127.0.0.1"]
    assert seen["x-real-ip"] == ["203.0.113.9"]


async def test_real_ip_skips_every_trusted_hop_like_real_ip_recursive() -> None:
    headers = [("X-Forwarded-For", "198.51.100.7, 203.0.113.9, 10.1.2.3, 10.9.9.9")]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(
            origin.address, server='trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]'
        )
        seen, _ = await echo_through_proxy(toml, headers)
    assert seen["x-forwarded-for"] == ["198.51.100.7, 203.0.113.9, 10.1.2.3, 10.9.9.9, 127.0.0.1"]
    assert seen["x-real-ip"] == ["203.0.113.9"]  # not the spoofable leftmost entry


async def test_trusted_proxy_with_mode_none_passes_its_headers_through() -> None:
    headers = [("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=203.0.113.9")]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(
            origin.address, server=TRUST_LOCALHOST, route='forwarded = "none"'
        )
        seen, _ = await echo_through_proxy(toml, headers)
    assert seen == {"x-forwarded-for": ["203.0.113.9"], "forwarded": ["for=203.0.113.9"]}


async def test_connection_header_from_a_trusted_proxy_keeps_real_ip_and_chain_in_step() -> None:
    # Whatever bastion makes of `Connection: X-Forwarded-For`, the origin must not be told a
    # client (X-Real-IP) that the chain it receives (X-Forwarded-For) does not contain.
    headers = [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "203.0.113.9")]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, server=TRUST_LOCALHOST)
        seen, _ = await echo_through_proxy(toml, headers)
    chain = [entry.strip() for entry in seen["x-forwarded-for"][0].split(",")]
    assert chain[-1] == CLIENT
    assert seen["x-real-ip"][0] in chain, (seen["x-real-ip"], chain)


async def test_strip_prefix_behind_a_trusted_proxy_stacks_the_prefixes() -> None:
    # The proxy in front mounted us at /outer and we strip /app: the application's public
    # base is /outer/app, and dropping either part breaks the links it generates.
    async with AutonomousOrigin() as origin:
        toml = single_route_config(
            origin.address, server=TRUST_LOCALHOST, path="/app", route="strip_prefix = true"
        )
        seen, _ = await echo_through_proxy(toml, [("X-Forwarded-Prefix", "/outer")], path="/app/x")
    assert seen["x-forwarded-prefix"] == ["/outer/app"]


async def test_peer_outside_trusted_proxies_is_not_believed() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, server='trusted_proxies = ["10.0.0.0/8"]')
        seen, _ = await echo_through_proxy(toml, [("X-Forwarded-For", "203.0.113.9")])
    assert seen["x-forwarded-for"] == [CLIENT]
    assert seen["x-real-ip"] == [CLIENT]


# -- the recovered client IP in the access log ------------------------------------------------


def json_log(path: Path) -> str:
    return f'access = "{path}"\nformat = "json"'


async def logged_client_ips(
    tmp_path: Path, server: str, requests: Sequence[Sequence[tuple[str, str]]]
) -> list[str]:
    """Send one GET per header list through a proxy logging JSON to a file; return each
    line's client_ip (the proxy is stopped first, which flushes the log)."""
    access = tmp_path / "access.log"
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, server=server, log=json_log(access))
        async with running_proxy(toml) as proxy:
            for headers in requests:
                response = await http_get(proxy.ports[0], "/echo", host=HOST, headers=headers)
                assert response.status == 200
    lines = access.read_text().splitlines()
    return [json.loads(line)["client_ip"] for line in lines]


async def test_access_log_has_the_recovered_client_ip_from_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    chains = [
        [("X-Forwarded-For", "203.0.113.9")],
        [("X-Forwarded-For", "198.51.100.7, 203.0.113.9")],
        [("Forwarded", 'for="[2001:db8::1]:4711";proto=https')],
        [],
    ]
    ips = await logged_client_ips(tmp_path, TRUST_LOCALHOST, chains)
    assert ips == ["203.0.113.9", "203.0.113.9", "2001:db8::1", CLIENT]


async def test_access_log_ignores_forwarding_headers_from_an_untrusted_client(
    tmp_path: Path,
) -> None:
    spoofed = [[("X-Forwarded-For", "203.0.113.9")], [("X-Real-IP", "203.0.113.9")]]
    assert await logged_client_ips(tmp_path, "", spoofed) == [CLIENT, CLIENT]


async def test_real_ip_from_forwarded_alone_when_trusted() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, server=TRUST_LOCALHOST)
        seen, _ = await echo_through_proxy(toml, [("Forwarded", "for=203.0.113.9")])
    assert seen["x-real-ip"] == ["203.0.113.9"]
    assert [e["for"] for e in forwarded_elements(seen["forwarded"][0])] == ["203.0.113.9", CLIENT]
