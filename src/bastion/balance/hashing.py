"""Consistent hashing: the same key goes to the same server, and few keys move when the pool
changes.

Each server owns points on a ring of 64-bit numbers — `VNODES_PER_WEIGHT` per unit of weight,
placed by a stable hash (BLAKE2b) of its label, as ketama does — and a key goes to the owner
of the first point clockwise from the key's own hash. Points depend only on the server's own
label and weight, so every worker and every node builds the same ring, and adding a server to
a pool of N only takes over about 1/(N+1) of the keys. A server that is down, full or already
tried is passed over for the next point clockwise: only its own keys move, and they come back
when it does. Python's `hash()` is never used (it differs per process).

Rings are capped at `MAX_POINTS`; heavier pools get fewer points per weight (all scaled
alike). A request without a key (no such header or cookie) is balanced round robin. Knows
nothing of where keys come from, of configuration or of time.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Collection, Sequence
from hashlib import blake2b

from bastion.balance.balancer import takes_request
from bastion.balance.cycle import Cycle
from bastion.balance.round_robin import SmoothRoundRobin
from bastion.balance.server import ServerState

VNODES_PER_WEIGHT = 160
MAX_POINTS = 1 << 16  # the ring's size at most; beyond, points per weight are scaled down
_POINT_BYTES = 8
_POINTS_PER_DIGEST = 4  # one 32-byte BLAKE2b digest gives four 64-bit points
_DIGEST = struct.Struct(">4Q")


def key_point(key: bytes) -> int:
    """Where `key` falls on the ring: the first 64 bits of its BLAKE2b hash."""
    return int.from_bytes(blake2b(key, digest_size=_POINT_BYTES).digest(), "big")


def server_points(label: str, count: int) -> list[int]:
    """The first `count` ring points of the server called `label`: the same on every run and
    every host, and a server's points for a smaller weight are a prefix of those for a larger
    one (a weight change only moves keys to or from that server)."""
    points: list[int] = []
    for block in range((count + _POINTS_PER_DIGEST - 1) // _POINTS_PER_DIGEST):
        digest = blake2b(f"{label}-{block}".encode(), digest_size=_DIGEST.size).digest()
        points.extend(_DIGEST.unpack(digest))
    return points[:count]


def ring(servers: Sequence[ServerState]) -> tuple[list[int], list[int]]:
    """The ring: its points in order, and the index in `servers` of each point's owner."""
    total_weight = sum(server.weight for server in servers)
    scale = min(1.0, MAX_POINTS / (VNODES_PER_WEIGHT * max(total_weight, 1)))
    points: list[int] = []
    owners: list[int] = []
    for index, server in enumerate(servers):
        count = max(1, round(VNODES_PER_WEIGHT * server.weight * scale))
        points += server_points(server.label, count)
        owners += [index] * count
    ranked = sorted(range(len(points)), key=points.__getitem__)
    return [points[at] for at in ranked], [owners[at] for at in ranked]


class ConsistentHash:
    """`balance = "hash"`: the server owning the key's place on the ring."""

    __slots__ = ("_cycle", "_keyless", "_points")

    def __init__(self, servers: Sequence[ServerState]) -> None:
        self._points, owners = ring(servers)
        self._cycle = Cycle(servers, owners)
        self._keyless = SmoothRoundRobin(servers)

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The first server clockwise from `key` that takes the request; round robin when the
        request has no key."""
        if key is None:
            return self._keyless.pick(None, exclude)
        points = self._points
        if not points:
            return None
        position = bisect_right(points, key_point(key))
        if position == len(points):
            position = 0
        server = self._cycle.order[position]
        if takes_request(server, exclude):
            return server
        found = self._cycle.first_from(
            position, lambda candidate: takes_request(candidate, exclude)
        )
        return None if found is None else self._cycle.order[found]
