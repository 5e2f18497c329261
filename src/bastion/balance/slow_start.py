"""Slow start: a server that just became usable again takes a growing share of its traffic.

For `duration` seconds after it recovers, the balancer's pick of the server is accepted with
probability `elapsed / duration` (at least `floor`); a refused pick is made again without it.
This works the same on top of every balancing algorithm, none of which needs to know about it.
With N equal servers a ramping server then gets about `share / N` of the requests.

Pure: no clock (`now` and the time of recovery are passed in), no random source of its own
(`random_value`, or a callable, is passed in). Knows nothing of health checks or config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")  # a server, as the balancer names it (ServerState, or an index)


@dataclass(frozen=True, slots=True)
class SlowStart:
    """`slow_start = "30s"`: ramp over `duration` seconds, never below `floor` of the traffic."""

    duration: float
    floor: float = 0.1

    def __post_init__(self) -> None:
        if self.duration < 0:
            raise ValueError("slow_start is not negative")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError("slow start floor is in (0, 1]")

    def share(self, since: float | None, now: float) -> float:
        """The fraction of its traffic a server usable since `since` may take at `now`
        (None: usable from the start, no ramp)."""
        if since is None or self.duration <= 0.0:
            return 1.0
        elapsed = now - since
        if elapsed >= self.duration:
            return 1.0
        return max(self.floor, elapsed / self.duration)

    def admit(self, since: float | None, now: float, random_value: float) -> bool:
        """Accept a pick of the server? `random_value` is uniform in [0, 1)."""
        return random_value < self.share(since, now)


def choose(
    pick: Callable[[Set[T]], T | None],
    share: Callable[[T], float],
    random: Callable[[], float],
    tried: Iterable[T] = (),
) -> T | None:
    """Pick a server, letting ramping ones refuse part of their picks.

    `pick(excluded)` is the balancer: a usable server not in `excluded`, or None when there is
    none (e.g. `lambda excluded: balancer.pick(key, excluded)`). `share(server)` is its
    slow-start share, 1.0 when not ramping (`ServerHealth.share`). `tried`: servers this request
    already failed on, never picked. A refused server is excluded and the balancer asked again;
    when every candidate refused, the one with the largest share takes the request, so a
    ramping server is never left idle while it is the only one up.
    """
    excluded: set[T] = set(tried)
    fallback: T | None = None
    fallback_share = -1.0
    while True:
        server = pick(excluded)
        if server is None or server in excluded:  # (a balancer ignoring `excluded`: stop)
            return fallback if server is None else server
        fraction = share(server)
        if fraction >= 1.0 or random() < fraction:
            return server
        excluded.add(server)
        if fraction > fallback_share:
            fallback, fallback_share = server, fraction
