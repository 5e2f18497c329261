"""A fixed circular order of servers, and the first acceptable server from a point on it.

Both the smooth round-robin schedule and the consistent-hash ring are such circles: a server
may appear many times, and a pick starts at some position and takes the first server that
may take the request. `Cycle` makes that search cheap in every case: it walks a few positions
(almost always the first one qualifies), and when that fails — many servers down or full —
finds the nearest qualifying occurrence exactly, by binary search in each server's sorted
positions, instead of walking the whole circle. Knows nothing of weights, hashing or why a
server is refused.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from bastion.balance.server import ServerState

# Positions walked one by one before the exact search, at least; else one per server.
MIN_WALK = 8


class Cycle:
    """Positions 0..len-1 in a circle, each holding one of `servers`."""

    __slots__ = ("_occurrences", "_walk", "order", "servers")

    def __init__(self, servers: Sequence[ServerState], order: Sequence[int]) -> None:
        """`order[p]` is the index in `servers` of the server at position p."""
        self.servers = tuple(servers)
        self.order = tuple(self.servers[i] for i in order)
        positions: dict[ServerState, list[int]] = {server: [] for server in self.servers}
        for position, server in enumerate(self.order):
            positions[server].append(position)
        self._occurrences = {server: tuple(found) for server, found in positions.items()}
        self._walk = max(MIN_WALK, len(self.servers))

    def __len__(self) -> int:
        return len(self.order)

    def first_from(
        self,
        start: int,
        accept: Callable[[ServerState], bool],
        *,
        walk: int | None = None,
        among: Iterable[ServerState] | None = None,
    ) -> int | None:
        """The first position at or after `start`, going round, whose server is accepted;
        None when no server is (or the circle is empty).

        Walks `walk` positions (default: one per server, at least MIN_WALK) before searching
        exactly; `among`, when given, holds every server that may be accepted, and the exact
        search only looks at those.
        """
        order = self.order
        period = len(order)
        steps = min(period, self._walk if walk is None else walk)
        position = start
        for _ in range(steps):
            if accept(order[position]):
                return position
            position = position + 1 if position + 1 < period else 0
        if steps == period:
            return None
        return self._nearest(start, accept, self.servers if among is None else among)

    def _nearest(
        self, start: int, accept: Callable[[ServerState], bool], among: Iterable[ServerState]
    ) -> int | None:
        """`first_from` without walking: each accepted server's next occurrence, nearest wins."""
        period = len(self.order)
        best: int | None = None
        best_distance = period
        for server in among:
            positions = self._occurrences.get(server)
            if not positions or not accept(server):
                continue
            at = bisect_left(positions, start)
            position = positions[at] if at < len(positions) else positions[0]
            distance = (position - start) % period
            if distance < best_distance:
                best, best_distance = position, distance
        return best
