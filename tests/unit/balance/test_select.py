"""Balancers by name, and the rule every one of them keeps whatever the servers' state."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.balance.balancer import takes_request
from bastion.balance.round_robin import SmoothRoundRobin
from bastion.balance.select import BALANCE_NAMES, RoundRobin, build_balancer
from bastion.balance.server import ServerState


def test_every_name_builds_a_balancer() -> None:
    servers = [ServerState(0, "a"), ServerState(1, "b")]
    for name in BALANCE_NAMES:
        assert build_balancer(name, servers, rng=random.Random(0)).pick(b"key") in servers
    assert isinstance(build_balancer("round_robin", servers), SmoothRoundRobin)


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="least_conn"):
        build_balancer("fastest", [])


def test_plain_round_robin_by_index_still_works() -> None:
    balancer = RoundRobin(3)
    assert [balancer.pick() for _ in range(4)] == [0, 1, 2, 0]


server_states = st.builds(
    lambda weight, usable, max_conns, in_flight, latency: _server(
        weight, usable, max_conns, in_flight, latency
    ),
    st.integers(1, 6),
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 4),
    st.sampled_from([0.0, 0.001, 0.05, 1.0]),
)


def _server(
    weight: int, usable: bool, max_conns: int, in_flight: int, latency: float
) -> ServerState:
    server = ServerState(0, "", weight=weight, max_conns=max_conns)
    server.usable, server.in_flight = usable, in_flight
    if latency:
        server.observe_latency(latency, now=0.0)
    return server


@given(
    name=st.sampled_from(BALANCE_NAMES),
    servers=st.lists(server_states, max_size=12),
    excluded=st.sets(st.integers(0, 11)),
    keys=st.lists(st.one_of(st.none(), st.binary(max_size=16)), min_size=1, max_size=5),
    seed=st.integers(0, 2**32),
)
def test_pick_never_returns_a_server_that_cannot_take_the_request(
    name: str,
    servers: list[ServerState],
    excluded: set[int],
    keys: list[bytes | None],
    seed: int,
) -> None:
    for index, server in enumerate(servers):
        server.index, server.label = index, f"10.0.0.{index}:80"
    exclude = [servers[index] for index in excluded if index < len(servers)]
    balancer = build_balancer(name, servers, rng=random.Random(seed), clock=lambda: 1.0)
    anyone = any(takes_request(server, exclude) for server in servers)
    for key in keys:
        chosen = balancer.pick(key, exclude)
        assert (chosen is not None) == anyone
        assert chosen is None or takes_request(chosen, exclude)
