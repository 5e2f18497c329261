"""Node state across real processes: plain Python children attach to the region by its fd
(as workers spawned by the supervisor do) and what one writes, the others see."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from bastion.config import parse_config
from bastion.runtime.server import ProxyServer
from bastion.state import NodeState, SharedSessions
from tests.support.client import http_get
from tests.support.origins import AutonomousOrigin

WORKER = """
import sys, time
from bastion.state import NodeState, SharedSessions
node = NodeState.attach(int(sys.argv[1]))
link = node.bind("app", "10.0.0.1:80", weight=3, max_conns=5, backup=False)
link.add_in_flight(2)
link.record_check(False, "status 503", time.time())
link.eject(time.time() + 60)
SharedSessions(node, "app", "SID", ttl=60).remember(b"abc", link.slot, time.time())
print("ready", node.column, flush=True)
sys.stdin.readline()  # the parent drained the server meanwhile
print("drained" if link.drained else "not drained", flush=True)
sys.stdin.readline()  # hold the in-flight count until told to go
"""

COUNTER = """
import sys
from bastion.state import NodeState
node = NodeState.attach(int(sys.argv[1]))
link = node.bind("app", "10.0.0.1:80", weight=1, max_conns=0, backup=False)
for _ in range(20000):
    link.add_in_flight(1)
print(node.column, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def node() -> Iterator[NodeState]:
    created = NodeState.create(servers=2)
    yield created
    created.close()


def spawn(node: NodeState, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(node.fd)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=[node.fd],
    )


def test_a_worker_process_writes_and_the_supervisor_and_others_see(node: NodeState) -> None:
    child = spawn(node, WORKER)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().startswith("ready")
        [view] = node.servers()
        assert (view.upstream, view.index, view.label, view.weight) == ("app", 0, "10.0.0.1:80", 3)
        assert (view.in_flight, view.health, view.health_detail) == (2, "down", "status 503")
        assert view.ejected_until > time.time() + 50 and view.state == "down"
        peer = NodeState.attach(node.fd)  # another worker of the node
        link = peer.bind("app", "10.0.0.1:80", weight=3, max_conns=5, backup=False)
        link.add_in_flight(1)
        assert link.in_flight_total() == 3
        assert SharedSessions(peer, "app", "SID", ttl=60).lookup(b"abc", time.time()) == link.slot
        assert node.drain("app", 0)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "drained"
        child.stdin.write("exit\n")
        child.stdin.flush()
        assert child.wait(10) == 0
        node.release_worker(child.pid)  # the supervisor reaped it: its requests are gone
        assert link.in_flight_total() == 1
        peer.close()
    finally:
        child.kill()
        child.wait()


def test_workers_counting_at_once_lose_no_update(node: NodeState) -> None:
    children = [spawn(node, COUNTER) for _ in range(2)]
    try:
        columns = {child.stdout.readline().strip() for child in children if child.stdout}
        assert len(columns) == 2  # each its own column
        assert node.servers()[0].in_flight == 40000
    finally:
        for child in children:
            child.kill()
            child.wait()
    node.reap()
    assert node.servers()[0].in_flight == 0


# -- two in-process workers (ProxyServers) sharing one region, driven over sockets ----------


def two_servers_config(first: str, second: str, upstream: str = "") -> str:
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "app"
[upstream.app]
servers = [{first}, {second}]
{upstream}
"""


@asynccontextmanager
async def two_workers(node: NodeState, toml: str) -> AsyncIterator[tuple[ProxyServer, ProxyServer]]:
    """Two ProxyServers on their own ports, as workers of one node (only the first checks)."""
    config = parse_config(toml, "test.toml")
    handles = [NodeState.attach(node.fd), NodeState.attach(node.fd)]
    first = ProxyServer(config, node_state=handles[0], runs_checks=True)
    second = ProxyServer(config, node_state=handles[1], runs_checks=False)
    await first.start()
    await second.start()
    try:
        yield first, second
    finally:
        await first.stop(graceful_timeout=2.0)
        await second.stop(graceful_timeout=2.0)
        for handle in handles:
            handle.close()


async def test_a_drain_stops_new_requests_in_every_worker_and_lets_one_in_flight_finish(
    node: NodeState,
) -> None:
    async with AutonomousOrigin() as drained, AutonomousOrigin() as kept:
        toml = two_servers_config(f'"{drained.url}"', f'"{kept.url}"')
        async with two_workers(node, toml) as (first, second):
            slow = asyncio.create_task(http_get(first.ports[0], "/delay?s=0.4", timeout=5))
            async with asyncio.timeout(2):
                while not drained.requests and not kept.requests:
                    await asyncio.sleep(0.005)
            busy = drained if drained.requests else kept
            index = 0 if busy is drained else 1
            assert node.drain("app", index)
            before = len(busy.requests)
            for worker in (first, second, first, second):
                assert (await http_get(worker.ports[0], "/echo")).status == 200
            assert len(busy.requests) == before  # nothing new reached the drained server
            assert (await slow).status == 200  # the one in flight finished
            assert node.enable("app", index)
            for worker in (first, second, first, second):
                await http_get(worker.ports[0], "/echo")
            assert len(busy.requests) > before


async def test_max_conns_holds_across_workers(node: NodeState) -> None:
    async with AutonomousOrigin() as origin:
        one = f'{{ url = "{origin.url}", max_conns = 1 }}'
        backup = '{ url = "http://127.0.0.1:9", backup = true }'  # never used: primary is up
        async with two_workers(node, two_servers_config(one, backup)) as (first, second):
            held = asyncio.create_task(http_get(first.ports[0], "/delay?s=0.3", timeout=5))
            async with asyncio.timeout(2):
                while not origin.requests:
                    await asyncio.sleep(0.005)
            began = time.monotonic()
            waited = await http_get(second.ports[0], "/delay?s=0.01", timeout=5)
            took = time.monotonic() - began
            assert waited.status == 200 and (await held).status == 200
            # the second worker's request waited for the first worker's to end (~0.3s)
            assert took >= 0.2, took
            assert [seen.target for seen in origin.requests] == ["/delay?s=0.3", "/delay?s=0.01"]


async def test_only_the_checking_worker_probes_and_every_worker_sees_its_verdict(
    node: NodeState,
) -> None:
    async with AutonomousOrigin() as up:
        toml = two_servers_config(
            f'"{up.url}"',
            '"http://127.0.0.1:9"',  # refused: the checker takes it down
            upstream='health = { path = "/echo", interval = "100ms", fall = 1, rise = 1 }',
        )
        async with two_workers(node, toml) as (first, second):
            assert first.checkers and not second.checkers
            async with asyncio.timeout(3):
                while [view.health for view in node.servers()] != ["up", "down"]:
                    await asyncio.sleep(0.02)
            runtime = second.pipeline_ref.pipeline.plan.upstreams["app"].runtime
            for _ in range(4):
                assert (await http_get(second.ports[0], "/echo")).status == 200
            assert [state.usable for state in runtime.states] == [True, False]
