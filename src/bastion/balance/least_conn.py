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

from bastion.balance.round_robin import SmoothRoundRobin
from bastion.balance.server import ServerState


class LeastConn:
    """`balance = "least_conn"`: the least loaded server; turns among equals."""

    __slots__ = ("_servers", "_turns")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._servers = tuple(servers)
        self._turns = SmoothRoundRobin(self._servers)

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The server with the least `in_flight / weight` that takes the request (`key` is not
        used); among several equally loaded ones, the next in round-robin order."""
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
