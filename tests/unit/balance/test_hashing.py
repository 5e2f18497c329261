"""Consistent hashing: stable mapping, about 1/(N+1) of keys move on growth, failover."""

from __future__ import annotations

import pytest

from bastion.balance.hashing import ConsistentHash, key_point, ring
from bastion.balance.server import ServerState

from .pools import labelled, pool, sequence, shares

KEYS = [f"198.51.{n // 256}.{n % 256}".encode() for n in range(10_000)]


def addresses(count: int) -> list[str]:
    return [f"10.0.0.{n}:8080" for n in range(count)]


def owners(balancer: ConsistentHash) -> list[str]:
    """The label each of KEYS goes to."""
    chosen = [balancer.pick(key) for key in KEYS]
    return [server.label if server else "-" for server in chosen]


def test_key_points_are_stable_across_processes() -> None:
    # BLAKE2b, never Python's per-process hash(): the same figure on every host and run.
    assert key_point(b"203.0.113.7") == 0x8901665CB3ECEAAF


def test_the_same_key_goes_to_the_same_server() -> None:
    balancer = ConsistentHash(labelled(*addresses(5)))
    first = owners(balancer)
    assert owners(balancer) == first
    assert owners(ConsistentHash(labelled(*reversed(addresses(5))))) == first  # order irrelevant


@pytest.mark.parametrize("count", [3, 10, 30])
def test_adding_a_server_moves_about_one_in_n_plus_one_keys(count: int) -> None:
    before = owners(ConsistentHash(labelled(*addresses(count))))
    after = owners(ConsistentHash(labelled(*addresses(count + 1))))
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    new_label = addresses(count + 1)[-1]
    assert all(new == new_label for _, new in moved)  # keys only move to the new server
    # tolerance: ±30% of 1/(N+1) (160 points per server: shares vary by ~8%)
    assert len(moved) / len(KEYS) == pytest.approx(1 / (count + 1), rel=0.3)


def test_removing_a_server_moves_only_its_own_keys() -> None:
    labels = addresses(10)
    before = owners(ConsistentHash(labelled(*labels)))
    gone = labels[4]
    after = owners(ConsistentHash(labelled(*(label for label in labels if label != gone))))
    for old, new in zip(before, after, strict=True):
        assert old in (new, gone)


def test_an_unusable_server_passes_its_keys_on_and_gets_them_back() -> None:
    servers = labelled(*addresses(10))
    balancer = ConsistentHash(servers)
    before = owners(balancer)
    servers[4].usable = False
    during = owners(balancer)
    for old, new in zip(before, during, strict=True):
        assert new == old if old != servers[4].label else new != old
    servers[4].usable = True
    assert owners(balancer) == before


def test_excluded_and_full_servers_pass_to_the_next_one_clockwise_consistently() -> None:
    servers = labelled(*addresses(4))
    balancer = ConsistentHash(servers)
    first = balancer.pick(b"session-1")
    assert first is not None
    second = balancer.pick(b"session-1", exclude=[first])
    assert second is not None and second is not first
    assert balancer.pick(b"session-1", exclude=[first]) is second
    first.max_conns, first.in_flight = 1, 1
    assert balancer.pick(b"session-1") is second


def test_keys_spread_by_weight() -> None:
    got = shares(ConsistentHash(pool(5, 1, 1)), len(KEYS), KEYS)
    # tolerance: ±0.05 (ring shares vary with the points' placement)
    assert got == {
        "a": pytest.approx(5 / 7, abs=0.05),
        "b": pytest.approx(1 / 7, abs=0.05),
        "c": pytest.approx(1 / 7, abs=0.05),
    }


def test_ring_points_follow_weight() -> None:
    counts = [0, 0]
    for index in ring([ServerState(0, "a", weight=3), ServerState(1, "b")])[1]:
        counts[index] += 1
    assert counts == [480, 160]


def test_requests_without_a_key_go_round_robin() -> None:
    assert sequence(ConsistentHash(pool(5, 1, 1)), 7) == "aabacaa"


def test_none_when_no_server_takes_the_request() -> None:
    a, b = servers = pool(1, 1)
    a.usable = False
    assert ConsistentHash(servers).pick(b"k", exclude={b}) is None
    assert ConsistentHash([]).pick(b"k") is None
