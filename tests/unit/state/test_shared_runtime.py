"""Two UpstreamRuntimes sharing one node region, as two workers would: node-wide max_conns
(and the queue that polls for slots the other frees), shared health verdicts, passive
ejections, drains, and learned sticky sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.balance.server import ServerState
from bastion.config.model import UpstreamSettings
from bastion.errors import ProxyError
from bastion.http.events import Framing, RequestHead
from bastion.proxy.context import ClientInfo, RequestContext
from bastion.proxy.upstream_runtime import UpstreamRuntime
from bastion.state import NodeState


@pytest.fixture
def node() -> Iterator[NodeState]:
    created = NodeState.create()
    yield created
    created.close()


def workers(node: NodeState, settings: dict[str, Any]) -> list[UpstreamRuntime]:
    """Two runtimes of upstream "app", each on its own handle (its own in-flight column)."""
    parsed = UpstreamSettings.model_validate(settings)
    runtimes = []
    for _ in range(2):
        runtime = UpstreamRuntime("app", parsed)
        runtime.share(NodeState.attach(node.fd))
        runtimes.append(runtime)
    return runtimes


def request(cookie: bytes | None = None) -> RequestContext:
    headers = [(b"host", b"app.test")] + ([(b"cookie", cookie)] if cookie else [])
    head = RequestHead(
        method=b"GET",
        target=b"/",
        http_version=b"1.1",
        headers=headers,
        framing=Framing.NONE,
        content_length=None,
        keep_alive=True,
        host=b"app.test",
    )
    return RequestContext(head, ClientInfo("192.0.2.7", 40000, 80, b"http", False), 0.0)


def taken(runtime: UpstreamRuntime, ctx: RequestContext | None = None) -> ServerState:
    state = runtime.acquire(ctx or request())
    assert isinstance(state, ServerState), "expected a server at once, not a queue wait"
    return state


TWO = ["http://10.0.0.1:80", "http://10.0.0.2:80"]


async def test_max_conns_counts_the_requests_of_every_worker(node: NodeState) -> None:
    servers = [{"url": url, "max_conns": 1} for url in TWO]
    first, second = workers(node, {"servers": servers, "balance": "least_conn"})
    a = taken(first)
    b = taken(second)  # its own counts are all 0: only the node-wide ones say a is full
    assert a.label != b.label
    waiting = second.acquire(request())
    assert isinstance(waiting, asyncio.Future)
    first.release(a, failed=False)  # freed in the other worker: the queue polls for it
    got = await asyncio.wait_for(waiting, 1.0)
    assert got.label == a.label
    assert [view.in_flight for view in node.servers()] == [1, 1]


async def test_a_health_verdict_of_the_checking_worker_reaches_the_others(
    node: NodeState,
) -> None:
    settings = {"servers": TWO, "health": {"path": "/h", "fall": 1, "rise": 1}}
    checker, reader = workers(node, settings)
    down = checker.states[0]
    checker.report_check(down.index, False, "status 500")
    assert [taken(reader).label for _ in range(4)] == ["10.0.0.2:80"] * 4
    assert node.servers()[0].health_detail == "status 500"
    checker.report_check(down.index, True, "status 200")
    assert {taken(reader).label for _ in range(4)} == {"10.0.0.1:80", "10.0.0.2:80"}


async def test_a_passive_ejection_by_one_worker_holds_for_all(node: NodeState) -> None:
    settings = {"servers": TWO, "passive": {"failures": 2, "window": "10s", "eject": "30s"}}
    first, second = workers(node, settings)
    bad = first.states[0]
    for _ in range(2):
        first.release(first.occupy(bad), failed=True)
    assert not bad.usable
    assert [taken(second).label for _ in range(4)] == ["10.0.0.2:80"] * 4
    assert node.servers()[0].state == "ejected"
    assert node.servers()[0].ejected_until == pytest.approx(time.time() + 30, abs=2)


async def test_a_drained_server_takes_nothing_new_and_finishes_what_it_has(
    node: NodeState,
) -> None:
    settings = {"servers": TWO, "sticky": {"learn": "SID"}}
    first, second = workers(node, settings)
    on_it = first.occupy(first.states[0])
    first.learn_session(on_it, [(b"set-cookie", b"SID=s1; Path=/")])
    assert node.drain("app", 0)
    pinned = request(b"SID=s1")
    assert taken(second, pinned).label == "10.0.0.2:80"  # not even a sticky pin goes there
    assert {taken(first).label for _ in range(4)} == {"10.0.0.2:80"}
    first.release(on_it, failed=False)  # the request in flight finishes normally
    assert node.servers()[0].in_flight == 0
    assert node.enable("app", 0)
    assert taken(second, request(b"SID=s1")).label == "10.0.0.1:80"


async def test_sessions_learnt_by_one_worker_pin_on_the_other(node: NodeState) -> None:
    first, second = workers(node, {"servers": TWO, "sticky": {"learn": "SID"}})
    chosen = first.occupy(first.states[1])
    first.learn_session(chosen, [(b"set-cookie", b"SID=abc; HttpOnly")])
    for _ in range(4):
        assert taken(second, request(b"SID=abc")).label == "10.0.0.2:80"


async def test_state_outlives_the_workers_a_new_generation_attaches(node: NodeState) -> None:
    settings = {"servers": TWO, "health": {"path": "/h", "fall": 1}}
    (old, _) = workers(node, settings)
    old.report_check(old.states[1].index, False, "refused")
    node.drain("app", 0)
    node.begin_generation()
    fresh, _ = workers(node, settings)  # as after a reload: new processes, same region
    assert [state.usable for state in fresh.states] == [False, False]
    with pytest.raises(ProxyError):
        fresh.acquire(request())


def test_without_node_state_nothing_is_shared() -> None:
    parsed = UpstreamSettings.model_validate({"servers": [{"url": TWO[0], "max_conns": 1}]})
    first, second = UpstreamRuntime("app", parsed), UpstreamRuntime("app", parsed)
    assert taken(first).label == taken(second).label  # each process on its own, as before
    assert first.states[0].shared is None
