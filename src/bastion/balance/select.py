"""Choosing a server of an upstream for a request.

Pure: no sockets, no asyncio. Each balancer holds only its own small counter state.
"""

from __future__ import annotations


class RoundRobin:
    """Every server in turn."""

    __slots__ = ("_count", "_next")

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("an upstream needs at least one server")
        self._count = count
        self._next = 0

    def pick(self) -> int:
        """The index of the server for the next request."""
        index = self._next
        self._next = (index + 1) % self._count
        return index
