"""What every balancing algorithm offers, and which servers may take a request.

A balancer is built over the servers of one tier of an upstream (its primaries; the caller
builds a second one over the backups) and answers one question per attempt: which server
next? `takes_request` is the single rule all of them apply. Knows nothing of how a server's
state is kept up to date, of configuration, sockets or time.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from bastion.balance.server import ServerState


class Balancer(Protocol):
    """Chooses a server of an upstream for each attempt of a request."""

    def pick(self, key: bytes | None, exclude: Collection[ServerState] = ()) -> ServerState | None:
        """The server for the next attempt: usable, not full, not in `exclude` (the servers
        already tried for this request); None when no server qualifies. `key` is the request's
        hash key (client address, URI, header or cookie value); only `hash` uses it, and a
        request without one is balanced round robin there."""
        ...


def takes_request(server: ServerState, exclude: Collection[ServerState]) -> bool:
    """May `server` take this attempt: usable, below `max_conns`, not already tried?

    (`ServerState.full` spelt out: this runs on every pick, a property call costs more.)"""
    return server.usable and not 0 < server.max_conns <= server.in_flight and server not in exclude
