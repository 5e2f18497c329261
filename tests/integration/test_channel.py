"""The supervisor ↔ worker channel over a real socketpair: messages by type, both ways."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from bastion.runtime.channel import Channel, Message, MessageHandlers


async def pair() -> tuple[Channel, Channel, MessageHandlers]:
    left_sock, right_sock = socket.socketpair()
    shared = MessageHandlers()
    left = Channel(left_sock, shared, peer="worker 0")
    right = Channel(right_sock, peer="supervisor")
    await left.start()
    await right.start()
    return left, right, shared


async def until(condition: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_messages_reach_the_handlers_of_their_type_in_order() -> None:
    left, right, shared = await pair()
    got: list[tuple[str, Message]] = []
    shared.on("ready", lambda m, ch: got.append((ch.peer, m)))
    shared.on("metrics", lambda m, ch: got.append(("metrics", m)))
    right.send({"type": "ready", "pid": 7})
    right.send({"type": "metrics", "values": [1, 2, 3], "text": "é\n"})
    await until(lambda: len(got) == 2)
    assert got == [
        ("worker 0", {"type": "ready", "pid": 7}),
        ("metrics", {"type": "metrics", "values": [1, 2, 3], "text": "é\n"}),
    ]
    back: list[Message] = []
    right.on("reopen", lambda m, ch: back.append(m))
    left.send({"type": "reopen"})
    await until(lambda: back)
    left.close()
    await asyncio.wait_for(right.closed.wait(), 2.0)
    assert back == [{"type": "reopen"}]


async def test_a_failing_handler_or_an_unknown_type_does_not_stop_the_channel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    left, right, shared = await pair()
    got: list[Message] = []

    def broken(message: Message, channel: Channel) -> None:
        raise RuntimeError("handler bug")

    shared.on("a", broken)
    shared.on("a", lambda m, ch: got.append(m))
    with caplog.at_level(logging.WARNING, logger="bastion.runtime.channel"):
        right.send({"type": "nobody-listens"})
        right.send({"type": "a", "n": 1})
        await until(lambda: got)
    assert got == [{"type": "a", "n": 1}]
    assert "no handler for message type 'nobody-listens'" in caplog.text
    assert "handler of 'a' failed" in caplog.text
    left.close()
    right.close()


async def test_lines_split_across_reads_are_joined() -> None:
    left_sock, right_sock = socket.socketpair()
    left = Channel(left_sock)
    got: list[Message] = []
    left.on("x", lambda m, ch: got.append(m))
    await left.start()
    right_sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(right_sock, b'{"type": "x", "par')
    await asyncio.sleep(0.05)
    await loop.sock_sendall(right_sock, b't": 2}\n{"type": "x", "part": 3}\nnot json\n')
    await until(lambda: len(got) == 2)
    right_sock.close()
    await asyncio.wait_for(left.closed.wait(), 2.0)
    assert got == [{"type": "x", "part": 2}, {"type": "x", "part": 3}]
