"""A fast HTTP/1.1 origin for benchmarks: uvloop + httptools on an asyncio.Protocol.

Answers `GET /small` with the 13-byte body "hello, world\\n" and `GET /1m` with 1 MiB, both
from responses built once at start (Content-Length framing, no per-request formatting). It keeps
connections alive, and it is pipelining-safe: responses are written in request order, and reading
pauses while the socket's write buffer is over its high-water mark. HEAD is answered too; any
other path is a 404, any other method a 405, a parse error a 400 followed by a close.

Run: `python bench/origin.py --port 8000 [--workers N]`.
It must not know about bastion, nginx or wrk: it is a plain origin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import cast

import httptools  # type: ignore[import-untyped,unused-ignore]
import uvloop

SMALL_BODY = b"hello, world\n"
LARGE_BODY = b"x" * (1024 * 1024)
WRITE_HIGH_WATER = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    """One precomputed response: head bytes (status line + headers + blank line) and body."""

    head: bytes
    body: bytes


def build_reply(status: bytes, body: bytes, keep_alive: bool) -> Reply:
    """Format a response head once; it is reused for every request that gets this answer."""
    lines = [
        b"HTTP/1.1 " + status,
        b"Server: bench-origin",
        b"Content-Type: text/plain",
        b"Content-Length: " + str(len(body)).encode(),
    ]
    if not keep_alive:
        lines.append(b"Connection: close")
    return Reply(b"\r\n".join(lines) + b"\r\n\r\n", body)


def build_reply_table() -> dict[tuple[bytes, bool], Reply]:
    """Every (path, keep_alive) answer the origin can give, keyed for one dict lookup."""
    table: dict[tuple[bytes, bool], Reply] = {}
    for keep_alive in (True, False):
        table[(b"/small", keep_alive)] = build_reply(b"200 OK", SMALL_BODY, keep_alive)
        table[(b"/1m", keep_alive)] = build_reply(b"200 OK", LARGE_BODY, keep_alive)
        table[(b"404", keep_alive)] = build_reply(b"404 Not Found", b"not found\n", keep_alive)
        table[(b"405", keep_alive)] = build_reply(
            b"405 Method Not Allowed", b"method not allowed\n", keep_alive
        )
    table[(b"400", False)] = build_reply(b"400 Bad Request", b"bad request\n", False)
    return table


class OriginProtocol(asyncio.Protocol):
    """One client connection: feeds bytes to httptools and writes the precomputed replies."""

    def __init__(self, replies: dict[tuple[bytes, bool], Reply]) -> None:
        self._replies = replies
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._send(self._replies[(b"400", False)], head_only=False, keep_alive=False)

    # httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        if self._closing:
            return
        method = self._parser.get_method()
        keep_alive = bool(self._parser.should_keep_alive())
        path = self._url.split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            key = b"405"
        elif (path, keep_alive) in self._replies:
            key = path
        else:
            key = b"404"
        self._send(self._replies[(key, keep_alive)], method == b"HEAD", keep_alive)

    def _send(self, reply: Reply, head_only: bool, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        if head_only:
            transport.write(reply.head)
        else:
            transport.writelines((reply.head, reply.body))
        if not keep_alive:
            self._closing = True
            transport.close()


def listening_socket(port: int) -> socket.socket:
    """A 127.0.0.1 TCP socket with SO_REUSEPORT, so several worker processes can share it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    replies = build_reply_table()
    server = await loop.create_server(
        lambda: OriginProtocol(replies), sock=listening_socket(port), backlog=1024
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def run_workers(port: int, workers: int) -> None:
    """Fork `workers - 1` extra processes sharing the port via SO_REUSEPORT, then serve too."""
    children: list[int] = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve(port))
            os._exit(0)
        children.append(pid)
    try:
        uvloop.run(serve(port))
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fast benchmark origin (uvloop + httptools).")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    print(f"origin listening on 127.0.0.1:{args.port} ({args.workers} worker(s))", flush=True)
    run_workers(args.port, max(1, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
