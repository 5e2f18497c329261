"""Latency-aware balancing: power of two choices on expected latency times requests in flight.

The cost of a server is its peak-EWMA latency (`ServerState.latency_estimate`) times its
requests in flight plus one, per unit of weight — Finagle's and Linkerd's "peak EWMA"
balancer. A server that turns slow is avoided from its first slow answer; one avoided for a
while has its estimate decay, is tried again and measured afresh.

A server with no latency sample yet is the cheapest while it has nothing in flight, so new
and recovered servers are tried at once; once it has requests in flight but still no answer,
it costs more than any measured server, so a server that hangs from the start does not pull
in every request. The clock is passed in. Knows nothing of how latencies are measured, of
configuration or of sockets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from bastion.balance.random_two import TwoChoices
from bastion.balance.server import ServerState

# Cost of an unmeasured server with requests in flight, above any measured one (seconds).
UNMEASURED_PENALTY = 1.0e6


class PeakEwma(TwoChoices):
    """`balance = "ewma"`: of two random servers, the one expected to answer sooner."""

    __slots__ = ("_clock",)

    def __init__(
        self, servers: Sequence[ServerState], rng: random.Random, clock: Callable[[], float]
    ) -> None:
        super().__init__(servers, rng)
        self._clock = clock

    def cheaper(self, first: ServerState, second: ServerState) -> ServerState:
        """The one expected to answer sooner; `first` on a tie."""
        now = self._clock()
        return second if cost(second, now) < cost(first, now) else first


def cost(server: ServerState, now: float) -> float:
    """Expected latency * (requests in flight + 1) / weight; see the module's docstring for
    servers never measured."""
    latency = server.latency_estimate(now)
    if latency == 0.0:
        if server.in_flight == 0:
            return 0.0
        return (UNMEASURED_PENALTY + server.in_flight) / server.weight
    return latency * (server.in_flight + 1) / server.weight
