"""Upstream DNS against a real UDP name server on 127.0.0.1 (tests/support/dns_server.py).

SRV names resolve to every address of every SRV target, with the record's port, weight and
priority; host names go through getaddrinfo (/etc/hosts). The watcher follows record changes
and keeps the last good set when the server fails, stays silent or answers empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bastion.net.resolver import (
    DnsTarget,
    Resolve,
    ResolvedServer,
    ResolveError,
    ServerSetWatcher,
    make_srv_resolver,
    resolve_target,
)
from tests.support.dns_server import DnsTestServer

SRV = DnsTarget.for_srv("_http._tcp.app.internal", "http")
SRV_KEY = ("_http._tcp.app.internal", "SRV")
TIMEOUT = 0.3
INTERVAL = 0.05


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsTestServer]:
    records = {
        SRV_KEY: ["10 60 8080 app1.internal.", "10 40 8081 app2.internal."],
        ("app1.internal", "A"): ["10.0.0.2", "10.0.0.1"],
        ("app1.internal", "AAAA"): ["fd00::1"],
        ("app2.internal", "A"): ["10.0.0.3"],
        ("spare.internal", "A"): ["10.0.0.9"],
    }
    async with DnsTestServer(records) as server:
        yield server


def resolver_for(server: DnsTestServer) -> Resolve:
    """`resolve_target` asking the test server, with a short timeout."""
    srv_resolver = make_srv_resolver("127.0.0.1", server.port, timeout=TIMEOUT)

    async def resolve(target: DnsTarget) -> list[ResolvedServer]:
        return await resolve_target(target, srv_resolver=srv_resolver, timeout=TIMEOUT)

    return resolve


def app(address: str, port: int, host: str, weight: int, priority: int = 10) -> ResolvedServer:
    return ResolvedServer("http", address, port, host, weight, priority)


FIRST_SET = [
    app("10.0.0.1", 8080, "app1.internal", 60),
    app("10.0.0.2", 8080, "app1.internal", 60),
    app("10.0.0.3", 8081, "app2.internal", 40),
    app("fd00::1", 8080, "app1.internal", 60),
]


async def test_srv_gives_every_address_with_its_port_weight_and_priority(
    dns_server: DnsTestServer,
) -> None:
    dns_server.records[SRV_KEY].append("20 5 9000 spare.internal.")
    servers = await resolver_for(dns_server)(SRV)
    assert servers == [*FIRST_SET, app("10.0.0.9", 9000, "spare.internal", 5, priority=20)]


async def test_an_srv_target_that_does_not_exist_is_skipped(dns_server: DnsTestServer) -> None:
    dns_server.records[SRV_KEY].append("10 1 8082 gone.internal.")
    assert await resolver_for(dns_server)(SRV) == FIRST_SET


@pytest.mark.parametrize("mode", ["servfail", "silent"])
async def test_a_failing_server_or_an_unknown_name_is_an_error(
    dns_server: DnsTestServer, mode: str
) -> None:
    with pytest.raises(ResolveError, match="no such name"):
        await resolver_for(dns_server)(DnsTarget.for_srv("_http._tcp.nope.internal", "http"))
    dns_server.mode = mode  # type: ignore[assignment]
    with pytest.raises(ResolveError):
        await resolver_for(dns_server)(SRV)


async def test_localhost_resolves_through_getaddrinfo() -> None:
    servers = await resolve_target(DnsTarget("https", "localhost", 8443), timeout=2.0)
    assert servers[0] == ResolvedServer("https", "127.0.0.1", 8443, "localhost")
    assert {s.address for s in servers} <= {"127.0.0.1", "::1"}  # ::1 only where hosts say so


@pytest.fixture
async def watched(
    dns_server: DnsTestServer,
) -> AsyncIterator[tuple[ServerSetWatcher, list[list[ResolvedServer]]]]:
    changes: list[list[ResolvedServer]] = []
    watcher = ServerSetWatcher([SRV], INTERVAL, changes.append, resolve=resolver_for(dns_server))
    assert await watcher.start() == {}
    assert changes == [FIRST_SET]
    yield watcher, changes
    await watcher.stop()


async def rounds(server: DnsTestServer, n: int) -> None:
    """Wait until the watcher asked the server for the SRV name `n` more times."""
    goal = server.queries.count(SRV_KEY) + n
    async with asyncio.timeout(5.0):
        while server.queries.count(SRV_KEY) < goal:
            await asyncio.sleep(0.01)
    await asyncio.sleep(TIMEOUT + 0.05)  # let that round finish (a silent server times out)


async def test_changed_records_are_reported(
    dns_server: DnsTestServer, watched: tuple[ServerSetWatcher, list[list[ResolvedServer]]]
) -> None:
    _, changes = watched
    dns_server.records[SRV_KEY] = ["10 60 8080 app1.internal.", "10 40 9090 app2.internal."]
    del dns_server.records[("app1.internal", "AAAA")]
    await rounds(dns_server, 1)
    assert changes[1:] == [
        [
            app("10.0.0.1", 8080, "app1.internal", 60),
            app("10.0.0.2", 8080, "app1.internal", 60),
            app("10.0.0.3", 9090, "app2.internal", 40),
        ]
    ]


@pytest.mark.parametrize("trouble", ["servfail", "silent", "empty", "unchanged"])
async def test_trouble_or_no_change_keeps_the_set_without_reporting(
    dns_server: DnsTestServer,
    watched: tuple[ServerSetWatcher, list[list[ResolvedServer]]],
    trouble: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher, changes = watched
    if trouble == "empty":
        dns_server.records[SRV_KEY] = []
    elif trouble != "unchanged":
        dns_server.mode = trouble  # type: ignore[assignment]
    await rounds(dns_server, 2)
    assert changes == [FIRST_SET]
    assert watcher.servers == FIRST_SET
    kept = "keeping 4 last known servers" in caplog.text
    assert kept == (trouble != "unchanged")
