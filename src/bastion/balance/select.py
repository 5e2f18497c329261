"""Choosing a server of an upstream for a request: the balancers by their configured name.

`build_balancer(name, servers)` gives the `Balancer` for `balance = "..."` over one tier of an
upstream's servers (the caller builds one over the primaries and one over the backups). Each
algorithm lives in its own module; this one only maps names to them. Pure: no sockets, no
asyncio; the random source and the clock can be passed in (tests do).

`RoundRobin` is the plain index rotation the proxy plan used before balancers took
`ServerState`s; it stays until the plan is switched over.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from bastion.balance.balancer import Balancer
from bastion.balance.ewma import PeakEwma
from bastion.balance.hashing import ConsistentHash
from bastion.balance.least_conn import LeastConn
from bastion.balance.random_two import RandomTwo
from bastion.balance.round_robin import SmoothRoundRobin
from bastion.balance.server import ServerState

BALANCE_NAMES = ("round_robin", "least_conn", "random_two", "ewma", "hash")


def build_balancer(
    name: str,
    servers: Sequence[ServerState],
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Balancer:
    """The balancer called `name` (one of `BALANCE_NAMES`) over `servers`.

    `rng` feeds `random_two` and `ewma` (a new `random.Random()` by default); `clock`, in
    monotonic seconds like the times given to `ServerState.observe_latency`, feeds `ewma`.
    """
    match name:
        case "round_robin":
            return SmoothRoundRobin(servers)
        case "least_conn":
            return LeastConn(servers)
        case "random_two":
            return RandomTwo(servers, rng or random.Random())
        case "ewma":
            return PeakEwma(servers, rng or random.Random(), clock)
        case "hash":
            return ConsistentHash(servers)
        case _:
            expected = ", ".join(BALANCE_NAMES)
            raise ValueError(f"unknown balance {name!r}: expected one of {expected}")


class RoundRobin:
    """Every server in turn, by index (the plan's balancer until it takes `build_balancer`)."""

    __slots__ = ("_count", "_next")

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("an upstream needs at least one server")
        self._count = count
        self._next = 0

    def pick(self) -> int:
        """The index of the server for the next request."""
        index = self._next
        self._next = (index + 1) % self._count
        return index
