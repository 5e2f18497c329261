"""Upstream servers named by DNS, over sockets: an SRV name answered by a UDP name server on
127.0.0.1 (`server.resolver`), and a host name resolved by the system (/etc/hosts).

Each origin says who it is; the SRV records name them by port, every target resolving to
127.0.0.1. Record changes reach the proxy within the upstream's `resolve` interval; a failing
name server leaves the last good set serving; sticky pins survive a re-resolution.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.dns_server import DnsTestServer
from tests.support.pool import PoolOrigin, client, eventually, origin_pool, served_by
from tests.support.proxy import running_proxy

SRV_NAME = "_http._tcp.app.internal"
SRV_KEY = (SRV_NAME, "SRV")
COOKIE = "BASTION_AFFINITY"


def dns_config(resolver_port: int, entries: str, upstream: str = "") -> str:
    return f"""
[server]
resolver = "127.0.0.1:{resolver_port}"
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{entries}]
resolve = "50ms"
{upstream}
"""


def srv_records(*origins: PoolOrigin) -> list[str]:
    return [f"10 10 {origin.port} {origin.name}.internal." for origin in origins]


def name_server(origins: list[PoolOrigin], listed: list[PoolOrigin]) -> DnsTestServer:
    records: dict[tuple[str, str], list[str]] = {SRV_KEY: srv_records(*listed)}
    for origin in origins:
        records[(f"{origin.name}.internal", "A")] = ["127.0.0.1"]
    return DnsTestServer(records)


async def served(port: int, count: int) -> Counter[str]:
    async with client(port) as http:
        counts: Counter[str] = Counter()
        for _ in range(count):
            response = await http.get("/")
            assert response.status_code == 200, (response.status_code, response.text)
            counts[served_by(response)] += 1
    return counts


SRV_ENTRY = f'{{ srv = "{SRV_NAME}", scheme = "http" }}'


async def test_srv_upstream_serves_every_target() -> None:
    async with origin_pool("a", "b") as (a, b), name_server([a, b], [a, b]) as dns:
        async with running_proxy(dns_config(dns.port, SRV_ENTRY)) as proxy:
            counts = await served(proxy.ports[0], 20)
    assert counts == {"a": 10, "b": 10}


async def test_srv_record_change_moves_requests_to_the_new_set() -> None:
    async with (
        origin_pool("a", "b", "c") as (a, b, c),
        name_server([a, b, c], [a, b]) as dns,
        running_proxy(dns_config(dns.port, SRV_ENTRY)) as proxy,
    ):
        assert set(await served(proxy.ports[0], 10)) == {"a", "b"}
        dns.records[SRV_KEY] = srv_records(b, c)
        runtime = proxy.pipeline_ref.pipeline.plan.upstreams["app"].runtime
        assert await eventually(
            lambda: (
                {s.label for s in runtime.states}
                == {
                    b.address,
                    c.address,
                }
            )
        )
        counts = await served(proxy.ports[0], 20)
    assert counts == {"b": 10, "c": 10}


@pytest.mark.parametrize("failure", ["servfail", "silent"])
async def test_failing_name_server_keeps_the_last_good_set(failure: str) -> None:
    async with (
        origin_pool("a", "b") as (a, b),
        name_server([a, b], [a, b]) as dns,
        running_proxy(dns_config(dns.port, SRV_ENTRY)) as proxy,
    ):
        dns.mode = "servfail" if failure == "servfail" else "silent"
        asked = len(dns.queries)
        assert await eventually(lambda: len(dns.queries) > asked)  # re-resolution under way
        counts = await served(proxy.ports[0], 20)
    assert counts == {"a": 10, "b": 10}


async def test_srv_name_unknown_at_start_gives_503_until_it_resolves() -> None:
    async with origin_pool("a") as (a,), name_server([a], []) as dns:
        del dns.records[SRV_KEY]
        async with running_proxy(dns_config(dns.port, SRV_ENTRY)) as proxy:
            async with client(proxy.ports[0]) as http:
                assert (await http.get("/")).status_code == 503
                dns.records[SRV_KEY] = srv_records(a)
                runtime = proxy.pipeline_ref.pipeline.plan.upstreams["app"].runtime
                assert await eventually(lambda: len(runtime.states) == 1)
                assert served_by(await http.get("/")) == "a"


async def test_localhost_url_resolves_and_serves() -> None:
    async with origin_pool("a") as (a,), DnsTestServer() as dns:
        config = dns_config(dns.port, f'"http://localhost:{a.port}"')
        async with running_proxy(config) as proxy:
            runtime = proxy.pipeline_ref.pipeline.plan.upstreams["app"].runtime
            assert [s.label for s in runtime.states] == [a.address]
            assert runtime.server_plan(runtime.states[0]).tls_name == "localhost"
            assert await served(proxy.ports[0], 3) == {"a": 3}
    assert dns.queries == []  # host names go through the system's resolver


async def test_sticky_pin_survives_a_re_resolution_that_keeps_the_server() -> None:
    sticky = f'sticky = {{ cookie = "{COOKIE}", secret = "0123456789abcdef0123456789abcdef" }}'
    async with (
        origin_pool("a", "b", "c") as (a, b, c),
        name_server([a, b, c], [a, b]) as dns,
        running_proxy(dns_config(dns.port, SRV_ENTRY, sticky)) as proxy,
        client(proxy.ports[0]) as http,
    ):
        first = await http.get("/")
        pinned = served_by(first)
        assert COOKIE in http.cookies
        stays = a if pinned == "a" else b
        other = b if stays is a else a
        dns.records[SRV_KEY] = srv_records(stays, c)  # `other` leaves, c comes
        runtime = proxy.pipeline_ref.pipeline.plan.upstreams["app"].runtime
        assert await eventually(
            lambda: (
                {s.label for s in runtime.states}
                == {
                    stays.address,
                    c.address,
                }
            )
        )
        later = [await http.get("/") for _ in range(10)]
    assert {served_by(response) for response in later} == {pinned}
    assert not any(r.headers.get_list("set-cookie") for r in later)  # the same pin
    assert other.name != pinned


async def test_reload_keeps_serving_by_the_known_addresses(tmp_path: Path) -> None:
    async with (
        origin_pool("a", "b") as (a, b),
        name_server([a, b], [a]) as dns,
        running_proxy(dns_config(dns.port, SRV_ENTRY)) as proxy,
    ):
        path = tmp_path / "bastion.toml"
        path.write_text(dns_config(dns.port, SRV_ENTRY))
        dns.mode = "silent"  # the new plan starts from the old addresses, not from nothing
        assert proxy.reload(path)
        assert await served(proxy.ports[0], 3) == {"a": 3}
        dns.mode = "answer"
        dns.records[SRV_KEY] = srv_records(b)
        runtime = proxy.pipeline_ref.pipeline.plan.upstreams["app"].runtime
        assert await eventually(lambda: [s.label for s in runtime.states] == [b.address], 8.0)
        assert await served(proxy.ports[0], 3) == {"b": 3}
