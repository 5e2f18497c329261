"""The upstream queue: first come first served, timeouts, a full room, cancelled waiters."""

from __future__ import annotations

import asyncio

import pytest

from bastion.errors import ErrorKind, ProxyError
from bastion.proxy.waiting_room import WaitingRoom


class Slots:
    """A server with `free` slots; choose() takes one."""

    def __init__(self, free: int = 0) -> None:
        self.free = free
        self.taken = 0

    def choose(self) -> int | None:
        if self.free == 0:
            return None
        self.free -= 1
        self.taken += 1
        return self.taken


async def test_freed_slots_go_to_the_waiters_in_arrival_order() -> None:
    room: WaitingRoom[int] = WaitingRoom(10, 5.0)
    slots = Slots()
    order: list[str] = []
    futures = {name: room.enter(slots.choose) for name in "abc"}
    for name, future in futures.items():
        future.add_done_callback(lambda _, name=name: order.append(name))
    slots.free = 2
    room.slot_freed()
    await asyncio.sleep(0)
    assert order == ["a", "b"] and len(room) == 1
    slots.free = 1
    room.slot_freed()
    await asyncio.sleep(0)
    assert order == ["a", "b", "c"] and len(room) == 0
    assert [futures[n].result() for n in "abc"] == [1, 2, 3]


async def test_a_full_room_refuses_at_once() -> None:
    room: WaitingRoom[int] = WaitingRoom(2, 5.0)
    slots = Slots()
    room.enter(slots.choose)
    room.enter(slots.choose)
    with pytest.raises(ProxyError) as refused:
        room.enter(slots.choose)
    assert refused.value.kind is ErrorKind.QUEUE_FULL
    assert refused.value.status == 503


async def test_a_waiter_times_out_and_leaves_the_queue() -> None:
    room: WaitingRoom[int] = WaitingRoom(5, 0.05)
    future = room.enter(Slots().choose)
    with pytest.raises(ProxyError) as timed_out:
        await future
    assert timed_out.value.kind is ErrorKind.QUEUE_TIMEOUT
    assert len(room) == 0
    assert room.retry_after == 1


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    room: WaitingRoom[int] = WaitingRoom(5, 5.0)
    slots = Slots()
    gone = room.enter(slots.choose)
    stays = room.enter(slots.choose)
    gone.cancel()
    await asyncio.sleep(0)
    assert len(room) == 1
    slots.free = 1
    room.slot_freed()
    assert stays.result() == 1 and slots.taken == 1


async def test_no_room_means_no_waiting() -> None:
    room: WaitingRoom[int] = WaitingRoom(0, 5.0)
    with pytest.raises(ProxyError) as refused:
        room.enter(Slots().choose)
    assert refused.value.kind is ErrorKind.QUEUE_FULL
