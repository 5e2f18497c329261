"""Listening sockets: binding them, and accepting from them only while a worker has room.

`bind_listener(address)` makes the sockets of one `[[listen]]` address (TCP with
SO_REUSEADDR, one socket per address the host name resolves to; or a unix socket, a stale
socket file replaced), bound but not listening yet: the first server started on one calls
listen() (backlog 1024), so the port refuses connections until someone serves it. The
supervisor binds them once and keeps them open across reloads; in-process servers bind their
own.

`AcceptGate` serves a listener's sockets through asyncio servers made on *duplicates* of the
sockets: closing such a server stops this process accepting without closing the listening
socket, whose kernel backlog keeps queueing connections (for another worker, or for this one
once it has room again). That is how `server.max_connections` pauses accepting: asyncio has no
pause for a server, but closing and re-creating one on a dup is cheap and exact.

What it must not know: HTTP, the configuration file, processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass

from bastion.units import Address

log = logging.getLogger(__name__)

BACKLOG = 1024


def bind_listener(address: Address) -> list[socket.socket]:
    """The bound sockets of `address`; raises OSError (port taken, no permission...)."""
    if address.unix_path is not None:
        return [_bind_unix(address.unix_path)]
    host = address.host or None
    infos = socket.getaddrinfo(host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.setblocking(False)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise OSError(error.errno, f"cannot listen on {address}: {error.strerror}") from None
    return sockets


def _bind_unix(path: str) -> socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)  # left by a process that is gone
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host = f"[{name[0]}]" if ":" in name[0] else name[0]
        return f"{host}:{name[1]}"
    return f"unix:{name}"


@dataclass(frozen=True, slots=True)
class ServedSocket:
    """One listening socket and how its connections are served."""

    sock: socket.socket
    factory: Callable[[], asyncio.BaseProtocol]
    ssl: ssl.SSLContext | None
    ssl_handshake_timeout: float | None


class AcceptGate:
    """Accepts on every served socket while fewer than `limit` connections are open."""

    def __init__(self, served: list[ServedSocket], limit: int) -> None:
        self.served = served
        self.limit = limit
        self.resume_below = max(1, limit - limit // 10)  # some room before accepting again
        self.paused = False
        self._servers: list[asyncio.AbstractServer] = []
        self._toggle: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for item in self.served:
            dup = item.sock.dup()
            if item.sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    item.factory, sock=dup, backlog=BACKLOG, ssl=item.ssl
                )
            else:
                server = await loop.create_server(
                    item.factory,
                    sock=dup,
                    backlog=BACKLOG,
                    ssl=item.ssl,
                    ssl_handshake_timeout=item.ssl_handshake_timeout,
                )
            self._servers.append(server)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []

    def close(self) -> None:
        """Stop accepting for good and close the listening sockets (this process's fds)."""
        self._closed = True
        if self._toggle is not None:
            self._toggle.cancel()
        self.stop_accepting()
        for item in self.served:
            item.sock.close()

    def connections_changed(self, count: int) -> None:
        """Called with the number of open connections whenever it changes."""
        if self._closed or self._toggle is not None:
            return
        if not self.paused and count >= self.limit:
            self.paused = True
            self.stop_accepting()
            log.warning("%d connections open (max_connections): not accepting for now", count)
        elif self.paused and count < self.resume_below:
            self._toggle = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        try:
            await self.open()
        except OSError:
            log.exception("cannot accept connections again")
            return
        finally:
            self._toggle = None
        self.paused = False
        if self._closed:
            self.stop_accepting()
        else:
            log.info("accepting connections again")
