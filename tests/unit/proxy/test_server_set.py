"""UpstreamRuntime.replace_servers: servers that stay keep their state, health and sticky
token; new ones start fresh; one that left still ends its requests in flight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.model import ServerSettings, UpstreamServer, UpstreamSettings
from bastion.net.resolver import ResolvedServer
from bastion.net.upstream_dns import entry_specs
from bastion.proxy.server_set import NamedEntry, ServerSpec
from bastion.proxy.upstream_runtime import UpstreamRuntime
from bastion.units import Address

SETTINGS = UpstreamSettings.model_validate(
    {
        "servers": ["http://10.0.0.1:80", {"url": "http://app.internal:8080", "weight": 2}],
        "sticky": {"cookie": "PIN", "secret": "s" * 32},
    }
)


def spec(address: str, port: int = 8080, backup: bool = False) -> ServerSpec:
    entry = NamedEntry("http", "app.internal", port, False, 2, 0, backup)
    return entry.spec(address, port, "app.internal")


def test_names_start_without_servers_and_ip_literals_are_static() -> None:
    runtime = UpstreamRuntime("app", SETTINGS)
    assert [state.label for state in runtime.states] == ["10.0.0.1:80"]
    assert [entry.name for entry in runtime.named] == ["app.internal"]


def test_replace_keeps_servers_that_stay_and_drops_those_that_leave() -> None:
    runtime = UpstreamRuntime("app", SETTINGS)
    runtime.replace_servers([*runtime.static, spec("10.0.1.1"), spec("10.0.1.2")])
    static, kept, leaving = runtime.states
    assert kept.weight == 2 and runtime.server_plan(kept).tls_name == "app.internal"
    assert runtime.cookie is not None
    kept_token = runtime.cookie.token(1)
    leaving.in_flight += 1
    kept_health = runtime.healths[kept.index]

    runtime.replace_servers([*runtime.static, spec("10.0.1.1"), spec("10.0.1.3")])

    assert runtime.states[:2] == (static, kept)
    assert runtime.healths[kept.index] is kept_health
    assert leaving.index not in runtime.healths
    assert runtime.states[2].index not in (static.index, kept.index, leaving.index)
    assert runtime.cookie.token(1) == kept_token  # a pin to a server that stays holds
    runtime.release(leaving, failed=True)  # a request in flight on it ends quietly
    runtime.report_check(leaving.index, False, "gone")
    assert leaving.in_flight == 0
    assert runtime.state_of(leaving.index) is leaving  # a pinned connection still finds it
    assert runtime.server_plan(leaving).host == "10.0.1.2"


def test_srv_lowest_priority_is_primary_and_weights_multiply() -> None:
    entry = NamedEntry("https", "_https._tcp.app", 0, True, 3, 5, False)
    found = [
        ResolvedServer("https", "10.0.0.1", 8443, "a.app", weight=10, priority=1),
        ResolvedServer("https", "10.0.0.2", 8443, "b.app", weight=0, priority=2),
    ]
    first, second = entry_specs(entry, found)
    assert (first.backup, first.weight, first.max_conns, first.tls_name) == (False, 30, 5, "a.app")
    assert (second.backup, second.weight) == (True, 3)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"srv": "_http._tcp.app", "url": "http://10.0.0.1"}, 'exactly one of "url" or "srv"'),
        ({"weight": 2}, 'exactly one of "url" or "srv"'),
        ({"url": "http://10.0.0.1", "scheme": "https"}, "differs from the URL"),
        ({"srv": "not a name"}, "expected an SRV name"),
        ({"srv": "app.internal"}, "expected an SRV name"),  # no _service._proto labels
    ],
)
def test_server_entry_needs_one_of_url_or_srv(entry: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        UpstreamServer.model_validate(entry)


def test_srv_entry_and_resolver_settings() -> None:
    server = UpstreamServer.model_validate({"srv": "_HTTPS._tcp.App.", "scheme": "https"})
    assert (server.srv, server.scheme, server.is_name, server.port) == (
        "_https._tcp.app",
        "https",
        True,
        0,
    )
    assert ServerSettings.model_validate({"resolver": "127.0.0.1:5353"}).resolver == Address(
        "127.0.0.1", 5353
    )
    with pytest.raises(ValidationError, match="ip:port"):
        ServerSettings.model_validate({"resolver": "dns.internal:53"})
