"""The supervisor-side admin: supervisor facts translated, server state read from (and
drains written to) a real node state region, as a worker would share it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest

from bastion.admin import SupervisedAdmin, supervised_admin_server
from bastion.admin.api import AdminApi
from bastion.admin.messages import Request
from bastion.admin.openapi import openapi_document
from bastion.admin.server import AdminServer
from bastion.config import BastionConfig, parse_config
from bastion.state import NodeState

CONFIG = """
[admin]
listen = "127.0.0.1:0"
[[listen]]
address = "127.0.0.1:8080"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "app"
[upstream.app]
servers = ["http://10.0.0.5:80", "http://10.0.0.6:80"]
balance = "least_conn"
"""
RELOAD = {"time": 5.0, "ok": False, "error": "x.toml: bad", "sha256": "ab", "generation": 1}


@dataclass
class Generation:
    config: BastionConfig


class FakeSupervisor:
    """runtime.supervisor.Supervisor's admin interface, with its dict shapes."""

    def __init__(self, config: BastionConfig) -> None:
        self.generation = Generation(config)
        self.reloads = 0

    def status(self) -> dict[str, Any]:
        return {
            "version": "0.1.0",
            "pid": 10,
            "started": 1.0,
            "uptime": 2.5,
            "config": {"path": "/etc/bastion.toml", "sha256": "cd"},
            "generation": 1,
            "workers": [
                {
                    "index": 0,
                    "pid": 11,
                    "generation": 1,
                    "started": 1.0,
                    "restarts": 0,
                    "ready": True,
                },
                {
                    "index": 1,
                    "pid": 12,
                    "generation": 1,
                    "started": 1.0,
                    "restarts": 0,
                    "ready": False,
                },
            ],
            "last_reload": RELOAD if self.reloads else None,
        }

    async def reload(self) -> dict[str, Any]:
        self.reloads += 1
        return RELOAD


@pytest.fixture
def node() -> Iterator[NodeState]:
    supervisor_side = NodeState.create(servers=8)
    worker = NodeState.attach(supervisor_side.fd)
    zero = worker.bind("app", "10.0.0.5:80", weight=1, max_conns=0, backup=False)
    worker.bind("app", "10.0.0.6:80", weight=3, max_conns=10, backup=True)
    zero.add_in_flight(2)
    zero.record_check(False, "status 500", 1.0)
    try:
        yield supervisor_side
    finally:
        worker.close()
        supervisor_side.close()


def validate(document: Any, name: str) -> None:
    jsonschema.validate(document, {"$ref": f"#/components/schemas/{name}", **openapi_document()})


async def test_views_and_drain_through_the_node(node: NodeState) -> None:
    supervisor = FakeSupervisor(parse_config(CONFIG, "x.toml"))
    admin = SupervisedAdmin(supervisor, node)
    status = admin.status()
    validate(status, "Status")
    assert [w["state"] for w in status["workers"]] == ["serving", "starting"]
    assert (status["config_hash"], status["uptime_s"], status["last_reload"]) == ("cd", 2.5, None)

    [upstream] = admin.upstreams()
    validate({"upstreams": [upstream]}, "Upstreams")
    assert upstream["balance"] == "least_conn"
    first, second = upstream["servers"]
    assert (first["index"], first["state"], first["health"], first["in_flight"]) == (
        0,
        "down",
        "down",
        2,
    )
    assert first["health_detail"] == "status 500"
    assert (second["index"], second["weight"], second["backup"]) == (1, 3, True)

    assert admin.drain("app", 1) is True
    assert admin.drain("app", 5) is False and admin.drain("db", 0) is False
    assert [view.drained for view in node.servers()] == [False, True]
    assert admin.upstreams()[0]["servers"][1]["state"] == "drained"
    assert admin.enable("app", 1) is True
    assert admin.upstreams()[0]["servers"][1]["state"] == "up"

    result = await admin.reload()
    assert result == {
        "ok": False,
        "time": 5.0,
        "error": "x.toml: bad",
        "config_hash": "ab",
        "generation": 1,
    }
    assert admin.status()["last_reload"] == result
    assert admin.sites()[0]["routes"][0]["upstream"] == "app"


async def test_the_api_over_it(node: NodeState) -> None:
    supervisor = FakeSupervisor(parse_config(CONFIG, "x.toml"))
    admin = SupervisedAdmin(supervisor, node)
    api = AdminApi(admin, admin, lambda: None)
    local = {"host": "127.0.0.1:9901"}
    drained = await api.handle(
        Request("POST", "/api/upstreams/app/servers/0/drain", local, "127.0.0.1")
    )
    assert drained.status == 200 and json.loads(drained.body)["state"] == "drained"
    reload = await api.handle(Request("POST", "/api/reload", local, "127.0.0.1"))
    assert reload.status == 422


def test_the_listener_follows_admin_listen(node: NodeState) -> None:
    on = FakeSupervisor(parse_config(CONFIG, "x.toml"))
    assert isinstance(supervised_admin_server(on, node), AdminServer)
    off = FakeSupervisor(parse_config(CONFIG.replace('"127.0.0.1:0"', '"off"'), "x.toml"))
    assert supervised_admin_server(off, node) is None
