"""Latency-aware balancing: prefers the fast server, tries unmeasured ones, forgives."""

from __future__ import annotations

import random

import pytest

from bastion.balance.ewma import PeakEwma
from bastion.balance.server import LATENCY_DECAY

from .pools import pool, shares


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_fast_server_gets_the_traffic() -> None:
    clock = FakeClock()
    fast, slow = servers = pool(1, 1)
    fast.observe_latency(0.010, clock.now)
    slow.observe_latency(0.200, clock.now)
    got = shares(PeakEwma(servers, random.Random(1), clock), 1000)
    assert got == {"a": 1.0}


def test_of_three_the_fast_one_wins_every_pair_it_is_in() -> None:
    clock = FakeClock()
    servers = pool(1, 1, 1)
    for server, latency in zip(servers, (0.01, 0.05, 0.2), strict=True):
        server.observe_latency(latency, clock.now)
    got = shares(PeakEwma(servers, random.Random(4), clock), 30_000)
    # tolerance ±0.02: a wins 2 of the 3 pairs, b one, c none
    assert got == {"a": pytest.approx(2 / 3, abs=0.02), "b": pytest.approx(1 / 3, abs=0.02)}


def test_requests_in_flight_make_a_fast_server_dearer() -> None:
    clock = FakeClock()
    fast, slow = servers = pool(1, 1)
    fast.observe_latency(0.010, clock.now)
    slow.observe_latency(0.050, clock.now)
    fast.in_flight = 5  # 0.010 * 6 > 0.050 * 1
    assert PeakEwma(servers, random.Random(1), clock).pick(None) is slow


def test_an_unmeasured_idle_server_is_tried_first() -> None:
    clock = FakeClock()
    measured, new = servers = pool(1, 1)
    measured.observe_latency(0.001, clock.now)
    assert PeakEwma(servers, random.Random(1), clock).pick(None) is new


def test_an_unmeasured_server_with_requests_in_flight_is_avoided() -> None:
    clock = FakeClock()
    measured, hanging = servers = pool(1, 1)
    measured.observe_latency(2.0, clock.now)
    measured.in_flight = 10
    hanging.in_flight = 1  # sent one request, no answer yet
    assert PeakEwma(servers, random.Random(1), clock).pick(None) is measured


def test_a_slow_spell_is_forgiven_after_a_while() -> None:
    clock = FakeClock()
    fast, spiked = servers = pool(1, 1)
    fast.observe_latency(0.010, clock.now)
    spiked.observe_latency(2.0, clock.now)
    balancer = PeakEwma(servers, random.Random(1), clock)
    assert balancer.pick(None) is fast
    fast.observe_latency(0.010, clock.now + 6 * LATENCY_DECAY)  # fast keeps answering
    clock.now += 6 * LATENCY_DECAY  # 2.0 s decays to 0.005 s
    assert balancer.pick(None) is spiked


def test_weights_share_idle_unmeasured_servers() -> None:
    got = shares(PeakEwma(pool(5, 1, 1), random.Random(3), FakeClock()), 20_000)
    assert got["a"] == pytest.approx(5 / 7, abs=0.02)  # tolerance ±0.02


def test_unusable_full_and_excluded_servers_are_skipped() -> None:
    clock = FakeClock()
    a, b, c = servers = pool(1, 1, 1)
    for server in servers:
        server.observe_latency(0.01 if server is a else 1.0, clock.now)
    balancer = PeakEwma(servers, random.Random(1), clock)
    a.usable = False
    b.max_conns, b.in_flight = 1, 1
    assert all(balancer.pick(None) is c for _ in range(20))
    assert balancer.pick(None, exclude=(c,)) is None
