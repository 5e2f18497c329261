"""A byte tunnel between a client and an origin after a protocol switch (101).

Bytes are copied as they come, both ways, with back-pressure (a side whose peer cannot keep
up stops being read), half-close passed along, and an idle timeout after which both
connections are closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.net.upstream import UpstreamConnection


class Tunnel:
    """Splices a client transport and an upgraded origin connection."""

    def __init__(
        self,
        client: asyncio.Transport,
        origin: UpstreamConnection,
        idle_timeout: float,
        client_read_paused: bool,
    ) -> None:
        self._client = client
        self._origin = origin
        self._loop = origin.loop
        self._idle_timeout = idle_timeout
        self._last_activity = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._client_read_paused = client_read_paused
        self._closed = False
        self._eofs = 0

    def start(self, origin_bytes: bytes, client_bytes: bytes) -> None:
        self._origin.tunnel_peer = _OriginEnd(self)
        if origin_bytes:
            self._client.write(origin_bytes)
        if client_bytes:
            self.from_client(client_bytes)
        if self._client_read_paused and not self._origin.write_paused:
            self._client_read_paused = False
            self._client.resume_reading()
        self._origin.resume_reading()
        self._timer = self._loop.call_later(self._idle_timeout, self._check_idle)

    # -- client side ----------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        self._origin.write(data)

    def client_eof(self) -> bool:
        transport = self._origin.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        return self._count_eof()

    def client_lost(self) -> None:
        self.close()

    def client_write_paused(self, paused: bool) -> None:
        if paused:
            self._origin.pause_reading()
        else:
            self._origin.resume_reading()

    # -- origin side ----------------------------------------------------------------------

    def from_origin(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        self._client.write(data)

    def origin_eof(self) -> bool:
        if self._client.can_write_eof():
            self._client.write_eof()
        return self._count_eof()

    def origin_write_paused(self, paused: bool) -> None:
        if paused:
            self._client.pause_reading()
        else:
            self._client.resume_reading()

    # -- both -------------------------------------------------------------------------------

    def _count_eof(self) -> bool:
        self._eofs += 1
        if self._eofs >= 2:
            self.close()
            return False
        return True  # keep the other direction open (half-close)

    def _check_idle(self) -> None:
        self._timer = None
        if self._closed:
            return
        idle = self._loop.time() - self._last_activity
        if idle >= self._idle_timeout:
            self.close()
            return
        self._timer = self._loop.call_later(self._idle_timeout - idle, self._check_idle)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._origin.close()
        self._client.close()


class _OriginEnd:
    """Receives the upgraded origin connection's events for the tunnel."""

    __slots__ = ("_tunnel",)

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self._tunnel.from_origin(data)

    def eof_received(self) -> bool:
        return self._tunnel.origin_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.close()

    def pause_writing(self) -> None:
        self._tunnel.origin_write_paused(True)

    def resume_writing(self) -> None:
        self._tunnel.origin_write_paused(False)
