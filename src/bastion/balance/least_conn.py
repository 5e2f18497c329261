"""Least connections: the server with the fewest requests in flight for its weight.

Load is `in_flight / weight`, so a server of weight 2 is as loaded with 4 requests as one of
weight 1 with 2. Equally loaded servers take turns in smooth weighted round robin (as nginx
does), so idle servers share the traffic by weight instead of the first one taking it all.
Finding the least loaded server reads every server once per pick: the counters change
outside the balancer, so there is no order to keep between picks. Knows nothing of how the
counters are kept, of configuration or of time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from operator import attrgetter

from bastion.balance.round_robin import SmoothRoundRobin
from bastion.balance.server import ServerState

_IN_FLIGHT = attrgetter("in_flight")
_SCAN_AFTER_MISS = 64


class LeastConn:
    """`balance = "least_conn"`: the least loaded server; turns among equals."""

    __slots__ = ("_next", "_position", "_rotations", "_servers", "_skip_fast", "_turns")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)
        self._turns = SmoothRoundRobin(self._servers)
        # Equal weights (the usual case): the least loaded server is a C-level `min` over the
        # servers in an order starting after the last one chosen, so ties take turns.
        equal = len({server.weight for server in self._servers}) <= 1
        count = len(self._servers)
        self._rotations = (
            tuple(self._servers[i:] + self._servers[:i] for i in range(count)) if equal else ()
        )
        self._position = {server: i for i, server in enumerate(self._servers)}
        self._next = 0
        self._skip_fast = 0  # picks left to make by scanning after the fast path missed

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The server with the least `in_flight / weight` that takes the request (`key` is not
        used); among several equally loaded ones, the next in round-robin order."""
        rotations = self._rotations
        if rotations and not self._skip_fast:
            server = min(rotations[self._next], key=_IN_FLIGHT)
            if (
                server.usable
                and not 0 < server.max_conns <= server.in_flight
                and server not in exclude
            ):
                self._next = (self._position[server] + 1) % len(rotations)
                return server
            # The least loaded cannot take it (down, full, tried): scan for a while, since
            # that server is likely to stay out for more than this pick.
            self._skip_fast = _SCAN_AFTER_MISS
        elif self._skip_fast:
            self._skip_fast -= 1
        return self._scan(exclude)

    def _scan(self, exclude: Collection[ServerState]) -> ServerState | None:
        """Every server read once: weighted loads, or when the least loaded cannot take it."""
        least = math.inf
        tied: list[ServerState] = []
        for server in self._servers:  # the hot loop: `takes_request` spelt out
            load = server.in_flight / server.weight
            if load > least or not server.usable or 0 < server.max_conns <= server.in_flight:
                continue
            if server in exclude:
                continue
            if load < least:
                least = load
                tied = [server]
            else:
                tied.append(server)
        if len(tied) <= 1:
            return tied[0] if tied else None
        return self._turns.next_among(tied)
