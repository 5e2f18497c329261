"""runtime/node_host.py: the node-state region and the admin component a supervisor gets."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from bastion.config import parse_config
from bastion.filters.chain import compile_plan
from bastion.observe.metrics_export import MetricsAggregate
from bastion.runtime.node_host import SharedNode, admin_component, region_sizes
from bastion.runtime.supervisor import Supervisor

CONFIG = """
[admin]
listen = "127.0.0.1:{admin_port}"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
sticky = {{ learn = "JSESSIONID" }}
"""


@dataclass
class FakeGeneration:
    """What node_host reads of a runtime.generation.Generation."""

    config: Any
    plan: Any


@dataclass
class FakeSupervisor:
    """The seams of runtime.supervisor.Supervisor that node_host plugs into."""

    generation: FakeGeneration
    shared_fds: dict[str, int] = field(default_factory=dict)
    exit_listeners: list[Any] = field(default_factory=list)
    generation_listeners: list[Any] = field(default_factory=list)
    metrics: MetricsAggregate = field(default_factory=lambda: MetricsAggregate(lambda c: False))


def generation(admin_port: int) -> FakeGeneration:
    config = parse_config(CONFIG.format(admin_port=admin_port), "t.toml")
    return FakeGeneration(config, compile_plan(config))


def test_the_region_is_sized_and_plugged_into_the_supervisor() -> None:
    first = generation(9901)
    assert region_sizes(first.config)[0] == 2
    shared = SharedNode(first.config)
    supervisor = FakeSupervisor(first)
    shared.plug_into(cast(Supervisor, supervisor))
    try:
        assert supervisor.shared_fds["state"] == shared.node.fd
        for listener in supervisor.generation_listeners:
            listener(first)
        assert [view.label for view in shared.node.servers(shared.node.generation)] == [
            "10.0.0.5:8080",
            "10.0.0.6:8080",
        ]
    finally:
        shared.close()


def test_a_reload_that_moves_the_admin_listener_says_it_needs_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = FakeSupervisor(generation(9901))
    shared = SharedNode(supervisor.generation.config)
    try:
        admin_component(cast(Supervisor, supervisor), shared)
        (warn,) = supervisor.generation_listeners
        with caplog.at_level(logging.WARNING, logger="bastion.runtime.node_host"):
            warn(generation(9901))
            assert not caplog.records
            warn(generation(9902))
        assert "admin.listen changes take effect after a restart" in caplog.text
    finally:
        shared.close()
