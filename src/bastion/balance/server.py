"""What balancers know of one origin server while bastion runs.

`ServerState` is the live record behind one configured server: its weight and limits from
the configuration, and the counters the proxy keeps up to date — requests in flight, whether
health checks and passive failure tracking let it take requests (`usable`), its response
latency (a "peak EWMA", as Finagle's and Linkerd's balancers keep). Balancers only read it; the
proxy core and the health checkers write it. Pure data: no sockets, no asyncio, no clock of its
own (times are passed in).
"""

from __future__ import annotations

import math
from typing import Protocol

# Time constant of the latency average (seconds): a sample this old weighs 1/e of a new one,
# and an estimate not refreshed for this long has decayed to 1/e of its value.
LATENCY_DECAY = 10.0


class NodeCounts(Protocol):
    """The server's cells in the node's shared state (bastion.state), when workers share it."""

    def add_in_flight(self, delta: int) -> None:
        """This process's count moved by `delta`."""

    def in_flight_total(self) -> int:
        """Requests on the server across the node's processes."""

    def set_latency(self, seconds: float) -> None:
        """The latest latency average, for the admin view."""


class ServerState:
    """One origin server of an upstream, as the balancers see it.

    `in_flight` is this process's count (what balancers weigh); with `shared` set (workers
    sharing node state), `full` judges `max_conns` by the node-wide count instead.
    """

    __slots__ = (
        "backup",
        "in_flight",
        "index",
        "label",
        "latency",
        "latency_at",
        "max_conns",
        "shared",
        "usable",
        "weight",
    )

    def __init__(
        self,
        index: int,
        label: str,
        *,
        weight: int = 1,
        max_conns: int = 0,
        backup: bool = False,
    ) -> None:
        if weight < 1:
            raise ValueError("a server's weight is at least 1")
        self.index = index  # position among the upstream's servers, as configured
        self.label = label  # "host:port", for logs
        self.weight = weight
        self.max_conns = max_conns  # 0: no limit
        self.backup = backup  # used only when no primary server is usable
        self.in_flight = 0  # requests sent to it and not finished
        self.usable = True  # health checks and passive tracking let it take requests
        self.latency = 0.0  # seconds, moving average of response times (0: none seen)
        self.latency_at = 0.0  # when `latency` was last updated (monotonic seconds)
        self.shared: NodeCounts | None = None  # the node-wide counts, when workers share them

    @property
    def full(self) -> bool:
        """At `max_conns` (node-wide when shared): the next request must wait."""
        if self.max_conns <= 0:
            return False
        shared = self.shared
        in_flight = self.in_flight if shared is None else shared.in_flight_total()
        return self.max_conns <= in_flight

    def observe_latency(self, seconds: float, now: float) -> None:
        """Fold one response time into the latency average, a "peak EWMA".

        A response slower than the average replaces it at once, so a server that turns slow
        is avoided from its first slow answer; a faster one pulls the average down by a weight
        that grows with the time since the last sample (time-decayed, so how often the server
        answers does not change how fast it is forgiven).
        """
        if self.latency == 0.0 or seconds >= self.latency:
            self.latency = seconds
        else:
            keep = math.exp(-max(now - self.latency_at, 0.0) / LATENCY_DECAY)
            self.latency = self.latency * keep + seconds * (1.0 - keep)
        self.latency_at = now

    def latency_estimate(self, now: float) -> float:
        """The latency to expect at `now`: the average, decayed towards zero for the time that
        passed without a sample, so a server avoided after a slow spell is tried again and
        measured afresh (0.0: no response seen yet, or none for a very long time)."""
        if self.latency == 0.0:
            return 0.0
        return self.latency * math.exp(-max(now - self.latency_at, 0.0) / LATENCY_DECAY)

    def __repr__(self) -> str:
        return f"ServerState({self.label}, in_flight={self.in_flight}, usable={self.usable})"
