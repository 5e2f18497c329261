"""The queue of an upstream: requests wait here while every server is at `max_conns`.

First come, first served: a request that arrives while others wait queues behind them even
if a slot is free at that instant, and a freed slot goes straight to the oldest waiter (its
server is chosen and counted before it wakes), so nobody overtakes and no slot is handed out
twice. A waiter leaves with a server, with QUEUE_TIMEOUT after `timeout`, or by being
cancelled (its client went away). Past `max_waiting`, requests are refused at once
(QUEUE_FULL). Both refusals are 503s with Retry-After.

When other processes free slots too (workers sharing node state), nothing here hears of it:
with `poll` set, the queue retries its oldest waiters every `poll` seconds while any wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from bastion.errors import ErrorKind, ProxyError

Slot = TypeVar("Slot")


class _Waiter(Generic[Slot]):
    __slots__ = ("choose", "future", "timer")

    def __init__(self, choose: Callable[[], Slot | None], future: asyncio.Future[Slot]) -> None:
        self.choose = choose
        self.future = future
        self.timer: asyncio.TimerHandle | None = None


class WaitingRoom(Generic[Slot]):
    """The FIFO queue of one upstream.

    `choose()` (given per waiter) takes a free slot when there is one — the caller's balancer
    pick, which also counts the request in flight — and returns None when all are taken.
    """

    def __init__(self, max_waiting: int, timeout: float, *, poll: float | None = None) -> None:
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.poll = poll  # seconds between retries while requests wait; None: only when told
        self._waiters: deque[_Waiter[Slot]] = deque()
        self._poller: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    @property
    def retry_after(self) -> int:
        """Seconds a refused client is told to wait (Retry-After)."""
        return max(1, min(60, round(self.timeout)))

    def enter(self, choose: Callable[[], Slot | None]) -> asyncio.Future[Slot]:
        """Wait for a slot; the future ends with it, or fails with a 503 ProxyError.

        Raises QUEUE_FULL at once when `max_waiting` requests already wait.
        """
        if len(self._waiters) >= self.max_waiting:
            raise ProxyError(
                ErrorKind.QUEUE_FULL, f"{len(self._waiters)} requests already wait for a server"
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(choose, loop.create_future())
        waiter.timer = loop.call_later(self.timeout, self._expire, waiter)
        waiter.future.add_done_callback(lambda _: self._leave(waiter))
        self._waiters.append(waiter)
        if self.poll is not None and self._poller is None:
            self._poller = loop.call_later(self.poll, self._poll)
        return waiter.future

    def _poll(self) -> None:
        """Retry the oldest waiters (slots freed elsewhere); again later while some wait."""
        self._poller = None
        self.slot_freed()
        if self._waiters and self.poll is not None:
            self._poller = asyncio.get_running_loop().call_later(self.poll, self._poll)

    def slot_freed(self) -> None:
        """A slot may be free: hand it to the oldest waiters that can use one."""
        waiters = self._waiters
        while waiters:
            waiter = waiters[0]
            if waiter.future.done():
                waiters.popleft()
                continue
            slot = waiter.choose()
            if slot is None:
                return
            waiters.popleft()
            waiter.future.set_result(slot)

    def _expire(self, waiter: _Waiter[Slot]) -> None:
        waiter.timer = None
        if not waiter.future.done():
            waiter.future.set_exception(
                ProxyError(ErrorKind.QUEUE_TIMEOUT, f"no server free within {self.timeout:g}s")
            )

    def _leave(self, waiter: _Waiter[Slot]) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        with contextlib.suppress(ValueError):  # already taken off the front
            self._waiters.remove(waiter)

    def fail_all(self, error: ProxyError) -> None:
        """End every wait with `error` (the configuration is being replaced)."""
        for waiter in list(self._waiters):
            if not waiter.future.done():
                waiter.future.set_exception(error)
