"""Smooth weighted round robin: nginx's sequence, shares by weight, skipping servers."""

from __future__ import annotations

import pytest

from bastion.balance.round_robin import MAX_SCHEDULE, SmoothRoundRobin, schedule

from .pools import pool, sequence, shares


def test_weights_5_1_1_interleave_as_nginx_does() -> None:
    assert sequence(SmoothRoundRobin(pool(5, 1, 1)), 14) == "aabacaa" * 2


def test_equal_weights_take_turns() -> None:
    assert sequence(SmoothRoundRobin(pool(1, 1, 1)), 7) == "abcabca"


def test_common_factors_give_the_same_sequence() -> None:
    assert schedule([10, 2, 2]) == schedule([5, 1, 1])
    assert len(schedule([300, 200])) == 5


@pytest.mark.parametrize("weights", [(5, 1, 1), (3, 2), (1, 1, 1, 1), (7, 3, 1, 1)])
def test_shares_follow_weights_exactly_over_whole_rounds(weights: tuple[int, ...]) -> None:
    total = sum(weights)
    got = shares(SmoothRoundRobin(pool(*weights)), 100 * total)
    for index, weight in enumerate(weights):
        assert got[chr(ord("a") + index)] == pytest.approx(weight / total)  # tolerance: none


def test_huge_schedules_are_scaled_down_keeping_shares() -> None:
    weights = [997, 991, 983, 977, 971, 967, 953, 947, 941, 937]  # primes: gcd 1
    picks = schedule(weights)
    assert len(picks) <= MAX_SCHEDULE + len(weights)
    for index, weight in enumerate(weights):
        assert picks.count(index) / len(picks) == pytest.approx(weight / sum(weights), abs=0.001)


def test_unusable_full_and_excluded_servers_are_skipped() -> None:
    a, b, c, d = servers = pool(1, 1, 1, 1)
    balancer = SmoothRoundRobin(servers)
    b.usable = False
    c.max_conns, c.in_flight = 1, 1
    assert [balancer.pick(None, exclude=(d,)) for _ in range(3)] == [a, a, a]
    assert balancer.pick(None) is d


def test_remaining_servers_keep_their_shares_when_one_is_down() -> None:
    servers = pool(5, 1, 1)
    servers[1].usable = False
    got = shares(SmoothRoundRobin(servers), 6000)
    assert got == {"a": pytest.approx(5 / 6), "c": pytest.approx(1 / 6)}  # tolerance: none


def test_a_heavy_server_down_costs_no_long_walk() -> None:
    servers = pool(1000, 1)
    servers[0].usable = False
    balancer = SmoothRoundRobin(servers)
    assert [balancer.pick(None) for _ in range(3)] == [servers[1]] * 3


def test_none_when_no_server_takes_the_request() -> None:
    a, b = servers = pool(2, 1)
    balancer = SmoothRoundRobin(servers)
    a.usable = False
    assert balancer.pick(None, exclude=[b]) is None
    assert SmoothRoundRobin([]).pick(None) is None
