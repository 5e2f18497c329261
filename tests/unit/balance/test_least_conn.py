"""Least connections: follows requests in flight per weight; equals take turns."""

from __future__ import annotations

import pytest

from bastion.balance.least_conn import LeastConn

from .pools import pool, sequence, shares


def test_the_server_with_fewest_requests_in_flight_wins() -> None:
    a, b, c = servers = pool(1, 1, 1)
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert LeastConn(servers).pick(None) is b


def test_load_is_relative_to_weight() -> None:
    a, b = servers = pool(3, 1)
    a.in_flight, b.in_flight = 2, 1  # 2/3 against 1/1
    assert LeastConn(servers).pick(None) is a


def test_idle_servers_share_by_weight_in_smooth_turns() -> None:
    balancer = LeastConn(pool(5, 1, 1))
    assert sequence(balancer, 7) == "aabacaa"
    assert shares(balancer, 7000) == {
        "a": pytest.approx(5 / 7),  # tolerance: none, whole rounds
        "b": pytest.approx(1 / 7),
        "c": pytest.approx(1 / 7),
    }


def test_equally_loaded_servers_take_turns() -> None:
    servers = pool(1, 1, 1)
    servers[0].in_flight = 5
    assert sequence(LeastConn(servers), 4) == "bcbc"


def test_picks_follow_in_flight_as_requests_start() -> None:
    servers = pool(1, 1, 1)
    balancer = LeastConn(servers)
    for _ in range(30):
        server = balancer.pick(None)
        assert server is not None
        server.in_flight += 1
    assert [server.in_flight for server in servers] == [10, 10, 10]


def test_unusable_full_and_excluded_servers_are_skipped() -> None:
    a, b, c, d = servers = pool(1, 1, 1, 1)
    a.usable = False
    b.max_conns = 1
    b.in_flight = 1
    d.in_flight = 4
    balancer = LeastConn(servers)
    assert balancer.pick(None) is c
    assert balancer.pick(None, exclude={c}) is d
    assert balancer.pick(None, exclude={c, d}) is None
    assert LeastConn([]).pick(None) is None


def test_few_equals_far_apart_in_the_turns_still_alternate() -> None:
    servers = pool(*[1] * 40)
    for server in servers:
        server.in_flight = 1
    servers[30].in_flight = servers[35].in_flight = 0
    balancer = LeastConn(servers)
    assert sequence(balancer, 4) == "".join(servers[i].label for i in (30, 35, 30, 35))
