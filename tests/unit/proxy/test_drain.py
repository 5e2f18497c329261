"""Draining a server in one process's upstream runtime (`UpstreamRuntime.set_drained`): no
new request reaches it, by balancer or sticky pin; in-flight ones end normally; a reload
keeps it drained; enabling brings it back."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bastion.balance.server import ServerState
from bastion.config.model import UpstreamSettings
from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import Framing, RequestHead
from bastion.proxy.context import ClientInfo, RequestContext
from bastion.proxy.upstream_runtime import UpstreamRuntime

TWO = ["http://10.0.0.1:80", "http://10.0.0.2:80"]


def runtime(**settings: Any) -> UpstreamRuntime:
    return UpstreamRuntime("app", UpstreamSettings.model_validate({"servers": TWO, **settings}))


def request(cookie: bytes | None = None) -> RequestContext:
    headers = [(b"host", b"app.test")] + ([(b"cookie", cookie)] if cookie else [])
    head = RequestHead(b"GET", b"/", b"1.1", headers, Framing.NONE, None, True, b"app.test")
    return RequestContext(head, ClientInfo("192.0.2.7", 40000, 80, b"http", False), 0.0)


def taken(upstream: UpstreamRuntime, ctx: RequestContext | None = None) -> ServerState:
    state = upstream.acquire(ctx or request())
    assert isinstance(state, ServerState)
    return state


def test_a_drained_server_gets_no_new_requests_and_finishes_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = runtime()
    in_flight = taken(upstream)
    assert in_flight.index == 0
    with caplog.at_level(logging.INFO):
        assert upstream.set_drained(0, True) is True
    assert "server 10.0.0.1:80 drained: at an operator's request" in caplog.text
    picks = [taken(upstream) for _ in range(6)]
    assert {state.index for state in picks} == {1}
    upstream.release(in_flight, failed=False, latency=0.01)
    assert in_flight.in_flight == 0
    assert upstream.set_drained(0, True) is True  # idempotent
    assert upstream.set_drained(0, False) is True
    assert {taken(upstream).index for _ in range(4)} == {0, 1}


def test_unknown_servers() -> None:
    assert runtime().set_drained(7, True) is False


def test_every_server_drained_is_no_server() -> None:
    upstream = runtime()
    upstream.set_drained(0, True)
    upstream.set_drained(1, True)
    with pytest.raises(ProxyError) as caught:
        upstream.acquire(request())
    assert caught.value.kind is ErrorKind.NO_SERVER


def test_a_sticky_pin_to_a_drained_server_moves() -> None:
    upstream = runtime(sticky={"cookie": "AFFINITY"})
    first = request()
    pinned = taken(upstream, first)
    cookie = upstream.sticky_set_cookie(first, pinned)
    assert cookie is not None
    pair = cookie.split(b";", 1)[0]
    assert taken(upstream, request(pair)) is pinned
    upstream.set_drained(pinned.index, True)
    assert taken(upstream, request(pair)) is not pinned


def test_a_drain_survives_a_reload() -> None:
    old = runtime()
    old.set_drained(1, True)
    new = runtime()
    new.inherit(old)
    assert [state.usable for state in new.states] == [True, False]
    assert new.healths[1].drained
