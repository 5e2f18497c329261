"""The circle search: the walk and the exact search agree with walking all the way."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.balance.cycle import Cycle
from bastion.balance.server import ServerState

from .pools import pool


def walked(cycle: Cycle, start: int, accepted: set[int]) -> int | None:
    """The answer by brute force: every position from `start` round."""
    for step in range(len(cycle)):
        position = (start + step) % len(cycle)
        if cycle.order[position].index in accepted:
            return position
    return None


@given(
    order=st.lists(st.integers(0, 11), min_size=1, max_size=200),
    accepted=st.sets(st.integers(0, 11)),
    start=st.integers(0, 10_000),
)
def test_first_from_is_the_first_accepted_position(
    order: list[int], accepted: set[int], start: int
) -> None:
    servers = pool(*[1] * 12)
    cycle = Cycle(servers, order)
    start %= len(order)

    def accept(server: ServerState) -> bool:
        return server.index in accepted

    assert cycle.first_from(start, accept) == walked(cycle, start, accepted)


def test_long_runs_of_refused_servers_are_jumped_not_walked() -> None:
    servers = pool(1, 1)
    cycle = Cycle(servers, [0] * 5000 + [1])
    seen: list[str] = []

    def accept(server: ServerState) -> bool:
        seen.append(server.label)
        return server.label == "b"

    assert cycle.first_from(0, accept) == 5000
    assert len(seen) < 20


def test_empty_circle_has_nothing() -> None:
    assert Cycle([], []).first_from(0, lambda server: True) is None
