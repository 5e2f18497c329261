"""Power of two choices: draw two servers at random, send the request to the cheaper one.

Reading two servers instead of all of them keeps a pick cheap with any number of servers,
and avoids the herd effect of least connections across many workers (each worker's view of
the "least loaded" server is the same, and stale). The first candidate is drawn in proportion
to weight, the second uniformly among the others; the cheaper wins and a tie goes to the
first, so with no load at all the servers share the traffic by weight.

`TwoChoices` is the drawing and duelling; what "cheaper" means is a subclass's `cheaper`:
`RandomTwo` (here) compares requests in flight per weight, `ewma.PeakEwma` latency. The
random source is passed in, so tests are repeatable. Knows nothing of how server state is
kept, of configuration or of a clock.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Collection, Sequence
from itertools import accumulate

from bastion.balance.balancer import takes_request
from bastion.balance.server import ServerState

# Draws tried for each candidate before looking at every server (many down, full or tried).
DRAWS = 3


class TwoChoices:
    """The draw-two-and-compare pick; subclasses say which of two servers is cheaper."""

    __slots__ = ("_cumulative", "_random", "_servers", "_total")

    def __init__(self, servers: Sequence[ServerState], rng: random.Random) -> None:
        self._servers = tuple(servers)
        self._random = rng.random
        weights = [server.weight for server in self._servers]
        equal = len(set(weights)) <= 1
        self._cumulative: tuple[int, ...] = () if equal else tuple(accumulate(weights))
        self._total = sum(weights)

    def cheaper(self, first: ServerState, second: ServerState) -> ServerState:
        """The one of two servers to send the request to; `first` on a tie."""
        raise NotImplementedError

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The cheaper of two random servers that take the request (`key` is not used)."""
        servers = self._servers
        if len(servers) < 2:
            return self._duel_among_all(exclude)
        first = self._draw_weighted()
        second = self._draw_other(first)
        if takes_request(servers[first], exclude) and takes_request(servers[second], exclude):
            return self.cheaper(servers[first], servers[second])
        return self._pick_again(exclude)

    def _draw_weighted(self) -> int:
        """The index of a server drawn in proportion to weight."""
        if self._cumulative:
            return bisect_right(self._cumulative, self._random() * self._total)
        return int(self._random() * len(self._servers))

    def _draw_other(self, first: int) -> int:
        """The index of a server other than `first`, drawn uniformly."""
        index = int(self._random() * (len(self._servers) - 1))
        return index + 1 if index >= first else index

    def _pick_again(self, exclude: Collection[ServerState]) -> ServerState | None:
        """A drawn server refused the request: draw each candidate up to DRAWS times, then
        read every server."""
        servers = self._servers
        first = second = -1
        for _ in range(DRAWS):
            index = self._draw_weighted()
            if takes_request(servers[index], exclude):
                first = index
                break
        for _ in range(DRAWS if first >= 0 else 0):
            index = self._draw_other(first)
            if takes_request(servers[index], exclude):
                second = index
                break
        if second < 0:
            return self._duel_among_all(exclude)
        return self.cheaper(servers[first], servers[second])

    def _duel_among_all(self, exclude: Collection[ServerState]) -> ServerState | None:
        """The same duel among the servers that take the request, found by reading them all."""
        willing = [server for server in self._servers if takes_request(server, exclude)]
        if len(willing) <= 1:
            return willing[0] if willing else None
        cumulative = list(accumulate(server.weight for server in willing))
        first = bisect_right(cumulative, self._random() * cumulative[-1])
        second = int(self._random() * (len(willing) - 1))
        second += 1 if second >= first else 0
        return self.cheaper(willing[first], willing[second])


class RandomTwo(TwoChoices):
    """`balance = "random_two"`: of two random servers, the one with fewer requests in flight
    for its weight."""

    __slots__ = ()

    def cheaper(self, first: ServerState, second: ServerState) -> ServerState:
        """The one with fewer requests in flight per unit of weight; `first` on a tie."""
        if second.in_flight / second.weight < first.in_flight / first.weight:
            return second
        return first
