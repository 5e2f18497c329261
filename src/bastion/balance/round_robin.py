"""Smooth weighted round robin, as nginx does it, from a schedule computed once.

nginx's algorithm: every server's "current weight" grows by its weight at each pick, the
largest is chosen (the first on a tie) and lowered by the sum of all weights. Weights 5, 1, 1
give a a b a c a a: the heavy server's turns are spread out instead of bunched. The sequence
repeats after sum(weights) / gcd(weights) picks, so it is computed once here (`schedule`) and
a pick only steps along it, skipping servers that are down, full or already tried; over each
round every remaining server keeps exactly its share.

Also used by `least_conn` to take turns among equally loaded servers. Knows nothing of how
server state is updated, of configuration or of time.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence

from bastion.balance.balancer import takes_request
from bastion.balance.cycle import Cycle
from bastion.balance.server import ServerState

# Longest schedule computed (computing costs about 0.1 µs times servers per entry): heavier weights
# are scaled down in proportion, each keeping at least 1, which changes shares by < 1/MAX.
MAX_SCHEDULE = 8192
# Turns looked at one by one among equals before searching exactly (`next_among`).
SHORT_WALK = 16


def schedule(weights: Sequence[int]) -> list[int]:
    """One round of nginx's smooth weighted round robin: the index of each pick in turn."""
    count = len(weights)
    if count == 0:
        return []
    divisor = math.gcd(*weights)
    reduced = [weight // divisor for weight in weights]
    total = sum(reduced)
    if total > MAX_SCHEDULE:
        reduced = [max(1, round(weight * MAX_SCHEDULE / total)) for weight in reduced]
        total = sum(reduced)
    current = [0] * count
    picks: list[int] = []
    for _ in range(total):
        current = list(map(operator.add, current, reduced))
        best = current.index(max(current))
        current[best] -= total
        picks.append(best)
    return picks


class SmoothRoundRobin:
    """`balance = "round_robin"`: every server in turn, as often as its weight says."""

    __slots__ = ("_cycle", "_next")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._cycle = Cycle(servers, schedule([server.weight for server in servers]))
        self._next = 0  # position in the schedule of the next pick

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The next server in the schedule that takes the request (`key` is not used)."""
        order = self._cycle.order
        if not order:
            return None
        position = self._next
        server = order[position]
        if takes_request(server, exclude):
            self._next = position + 1 if position + 1 < len(order) else 0
            return server
        return self._take(
            self._cycle.first_from(position, lambda candidate: takes_request(candidate, exclude))
        )

    def next_among(self, candidates: Sequence[ServerState]) -> ServerState | None:
        """The first of `candidates` (all willing to take the request) in schedule order from
        the current turn, and move past it: turns among equals, for `least_conn`."""
        if not len(self._cycle):
            return None
        return self._take(
            self._cycle.first_from(
                self._next, set(candidates).__contains__, walk=SHORT_WALK, among=candidates
            )
        )

    def _take(self, position: int | None) -> ServerState | None:
        """The server at `position`, the next turn starting after it."""
        if position is None:
            return None
        self._next = position + 1 if position + 1 < len(self._cycle) else 0
        return self._cycle.order[position]
