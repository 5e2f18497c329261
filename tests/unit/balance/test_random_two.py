"""Power of two choices on requests in flight, with a seeded random source."""

from __future__ import annotations

import random

import pytest

from bastion.balance.random_two import RandomTwo

from .pools import pool, sequence, shares


def test_idle_servers_share_by_weight() -> None:
    got = shares(RandomTwo(pool(5, 1, 1), random.Random(7)), 20_000)
    # tolerance: ±0.02 (the standard error of 20,000 draws is about 0.003)
    assert got == {
        "a": pytest.approx(5 / 7, abs=0.02),
        "b": pytest.approx(1 / 7, abs=0.02),
        "c": pytest.approx(1 / 7, abs=0.02),
    }


def test_equal_idle_servers_share_equally() -> None:
    got = shares(RandomTwo(pool(1, 1, 1, 1), random.Random(3)), 20_000)
    assert all(share == pytest.approx(0.25, abs=0.02) for share in got.values())


def test_of_two_servers_the_less_loaded_always_wins() -> None:
    a, b = servers = pool(1, 1)
    a.in_flight = 1
    balancer = RandomTwo(servers, random.Random(1))
    assert all(balancer.pick(None) is b for _ in range(100))


def test_a_loaded_server_only_wins_when_drawn_against_a_busier_one() -> None:
    a, b, c = servers = pool(1, 1, 1)
    a.in_flight, b.in_flight, c.in_flight = 10, 2, 0
    got = shares(RandomTwo(servers, random.Random(5)), 30_000)
    # c wins every pair it is in (2/3), b wins {a, b} (1/3), a never
    assert got == {"c": pytest.approx(2 / 3, abs=0.02), "b": pytest.approx(1 / 3, abs=0.02)}


def test_load_is_relative_to_weight() -> None:
    a, b = servers = pool(4, 1)
    a.in_flight, b.in_flight = 3, 1  # 3/4 against 1/1
    balancer = RandomTwo(servers, random.Random(2))
    assert all(balancer.pick(None) is a for _ in range(100))


def test_picks_spread_load_evenly_as_requests_start() -> None:
    servers = pool(1, 1, 1, 1, 1)
    balancer = RandomTwo(servers, random.Random(11))
    for _ in range(1000):
        server = balancer.pick(None)
        assert server is not None
        server.in_flight += 1
    loads = [server.in_flight for server in servers]
    assert max(loads) - min(loads) <= 3  # tolerance: random choice alone would spread ±30


def test_same_seed_same_picks() -> None:
    first = RandomTwo(pool(3, 2, 1), random.Random(42))
    second = RandomTwo(pool(3, 2, 1), random.Random(42))
    assert sequence(first, 50) == sequence(second, 50)


def test_unusable_full_and_excluded_servers_are_skipped_even_when_most_are() -> None:
    servers = pool(*[1] * 100)
    for server in servers[1:]:
        server.usable = False
    balancer = RandomTwo(servers, random.Random(9))
    assert all(balancer.pick(None) is servers[0] for _ in range(50))
    servers[50].usable = True
    servers[50].max_conns, servers[50].in_flight = 1, 1
    assert balancer.pick(None, exclude=[servers[0]]) is None
    assert RandomTwo([], random.Random(0)).pick(None) is None
