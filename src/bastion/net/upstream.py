"""Connections to origin servers: the asyncio Protocol, and the connector with its pool.

`UpstreamConnection` carries one exchange at a time: it writes what the exchange gives it and
reports the parsed response to the exchange's listener. `UpstreamConnector` hands out pooled
keep-alive connections (most recently used first, dropped when the origin closed them or when
they idled past the shorter of our idle timeout and the origin's own `Keep-Alive: timeout=`)
and opens new ones with a connect timeout. OS and timeout errors become `ProxyError` here.

Servers of an upstream with `proxy_protocol` get a PROXY header first on every connection
(before TLS), naming the request's client; such a connection is handed out again only to a
request whose header is the same (the same client connection, as HAProxy keys its reuse).
Health checks send the header without a client (v1 `UNKNOWN`, v2 `LOCAL`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from typing import TYPE_CHECKING, Protocol

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import BodyChunk, EndOfMessage, ResponseHead
from bastion.http.h1_client import H1ResponseReader
from bastion.http.proxy_protocol import Endpoint, v1_header, v2_header
from bastion.net.tls import origin_context

if TYPE_CHECKING:
    from bastion.config.model import UpstreamTLS
    from bastion.proxy.context import RequestContext
    from bastion.proxy.plan import ServerPlan, UpstreamPlan
    from bastion.proxy.ports import ResponseListener

log = logging.getLogger(__name__)

# Keep an idle connection this much less than the origin says it will (the keep-alive race).
_SAFETY_MARGIN = 1.0


class TunnelEnd(Protocol):
    """Where an upgraded origin connection's events go."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to one origin server."""

    def __init__(self, server: ServerPlan, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.reader = H1ResponseReader()
        self.listener: ResponseListener | None = None
        self.reused = False
        self.closed = False
        self.idle_deadline = 0.0
        self._got_response_bytes = False
        self._write_paused = False
        self._read_paused = False
        self.tunnel_peer: TunnelEnd | None = None
        self.proxy_header = b""  # the PROXY header this connection started with, if any

    # -- UpstreamLink ---------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        reader = self.reader
        return not self.closed and reader.done and not reader.switched and not reader.poisoned

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def start(self, listener: ResponseListener, method: bytes) -> None:
        self.listener = listener
        self._got_response_bytes = False
        self.reader.expect(method)
        if self._read_paused:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def detach(self) -> None:
        self.listener = None

    def close(self) -> None:
        self.closed = True
        self.listener = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.listener = None
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No TCP_NODELAY here: uvloop and asyncio set it on every TCP transport they make.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel_peer is not None:
            self.tunnel_peer.data_received(data)
            return
        listener = self.listener
        if listener is None:
            # Bytes nobody asked for on an idle connection: it cannot be trusted any more.
            self.close()
            return
        self._got_response_bytes = True
        try:
            events = self.reader.feed(data)
        except ProxyError as error:
            self.close()
            listener.on_upstream_failed(error)
            return
        for event in events:
            if type(event) is BodyChunk:
                listener.on_response_body(event.data)
            elif type(event) is ResponseHead:
                listener.on_response_head(event)
            elif type(event) is EndOfMessage:
                # The exchange ends here, synchronously: this connection may already be
                # back in the pool or carrying the next request. Touch nothing more.
                listener.on_response_end(event.trailers)
                return
            if self.listener is None:
                return
        if self.reader.switched:
            listener.on_switched(self.reader.tunnel_data)
        else:
            listener.flush()

    def eof_received(self) -> bool:
        if self.tunnel_peer is not None:
            return bool(self.tunnel_peer.eof_received())
        self._peer_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if self.tunnel_peer is not None:
            self.tunnel_peer.connection_lost(exc)
            return
        if not was_closed:
            self._peer_closed()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.tunnel_peer is not None:
            self.tunnel_peer.pause_writing()
        elif self.listener is not None:
            self.listener.on_upstream_write_paused(True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.tunnel_peer is not None:
            self.tunnel_peer.resume_writing()
        elif self.listener is not None:
            self.listener.on_upstream_write_paused(False)

    def _peer_closed(self) -> None:
        listener = self.listener
        self.closed = True
        if listener is None:
            return
        try:
            events = self.reader.eof()
        except ProxyError:
            if self.reader.done or self._got_response_bytes:
                if self._got_response_bytes and not self.reader.done:
                    error = ProxyError(
                        ErrorKind.UPSTREAM_ABORTED_BODY, "origin closed mid-response"
                    )
            else:
                # Nothing came back: on a reused connection this is the keep-alive race.
                error = ProxyError(
                    ErrorKind.UPSTREAM_CLOSED,
                    "origin closed the connection before answering",
                    retryable=self.reused,
                )
            listener.on_upstream_failed(error)
            return
        for event in events:
            assert type(event) is EndOfMessage
            listener.on_response_end(event.trailers)


class _ServerPool:
    """Idle keep-alive connections to one server, most recently used last."""

    __slots__ = ("idle",)

    def __init__(self) -> None:
        self.idle: deque[UpstreamConnection] = deque()


class UpstreamConnector:
    """Opens origin connections and keeps the idle ones for reuse."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pools: dict[str, _ServerPool] = {}  # by ServerPlan.pool_key
        self._tls_contexts: dict[UpstreamTLS, ssl.SSLContext] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def take_idle(
        self, server: ServerPlan, ctx: RequestContext | None = None
    ) -> UpstreamConnection | None:
        """The most recently used idle connection still fit for reuse, if any."""
        pool = self._pools.get(server.pool_key)
        if pool is None:
            return None
        if server.proxy_protocol is not None:
            return self._take_same_client(pool, proxy_header(server.proxy_protocol, ctx))
        now = self.loop.time()
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now >= conn.idle_deadline:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def _take_same_client(self, pool: _ServerPool, header: bytes) -> UpstreamConnection | None:
        """The most recent idle connection that carried this same PROXY header: another
        client's connection would make the origin take this request for theirs."""
        now = self.loop.time()
        for conn in reversed(pool.idle):
            if conn.proxy_header != header or conn.closed or conn.transport is None:
                continue
            if conn.transport.is_closing() or now >= conn.idle_deadline:
                continue  # the sweeper drops it
            pool.idle.remove(conn)
            conn.reused = True
            return conn
        return None

    async def connect(
        self, upstream: UpstreamPlan, server: ServerPlan, ctx: RequestContext | None = None
    ) -> UpstreamConnection:
        """A new connection (a timeout is the 504 kind, a refusal the 502 kind)."""
        tls = server.tls
        context = self._tls_context(tls) if tls is not None else None
        server_hostname = (
            (tls.server_name or server.tls_name or server.host) if tls is not None else None
        )
        try:
            # asyncio.timeout, not wait_for: no second task per connection (origin
            # connections are opened on the hot path whenever the pool runs dry).
            async with asyncio.timeout(upstream.connect_timeout):
                if server.proxy_protocol is not None:
                    header = proxy_header(server.proxy_protocol, ctx)
                    return await self._open_with_header(server, header, context, server_hostname)
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(server, self.loop),
                    server.host,
                    server.port,
                    ssl=context,
                    server_hostname=server_hostname,
                )
        except TimeoutError:
            raise ProxyError(
                ErrorKind.UPSTREAM_CONNECT_TIMEOUT,
                f"no connection to {server.label} within {upstream.connect_timeout:g}s",
                retryable=True,
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise ProxyError(
                ErrorKind.UPSTREAM_CONNECT_FAILED,
                f"TLS certificate of {server.label} (as {server_hostname}) rejected: "
                f"{error.verify_message or error.reason}; check upstream tls.ca / server_name",
                retryable=True,
            ) from None
        except ssl.SSLError as error:
            raise ProxyError(
                ErrorKind.UPSTREAM_CONNECT_FAILED,
                f"TLS handshake with {server.label} failed: {error.reason or error}",
                retryable=True,
            ) from None
        except OSError as error:
            raise ProxyError(
                ErrorKind.UPSTREAM_CONNECT_FAILED,
                f"cannot connect to {server.label}: {error.strerror or error}",
                retryable=True,
            ) from None
        return conn

    async def _open_with_header(
        self,
        server: ServerPlan,
        header: bytes,
        context: ssl.SSLContext | None,
        server_hostname: str | None,
    ) -> UpstreamConnection:
        """A connection that starts with a PROXY header: plain TCP, the header, then TLS."""
        loop = self.loop
        transport, conn = await loop.create_connection(
            lambda: UpstreamConnection(server, loop), server.host, server.port
        )
        conn.proxy_header = header
        transport.write(header)
        if context is None:
            return conn
        try:
            tls_transport = await loop.start_tls(
                transport, conn, context, server_hostname=server_hostname
            )
        except BaseException:
            transport.abort()
            raise
        conn.transport = tls_transport
        return conn

    def _tls_context(self, tls: UpstreamTLS) -> ssl.SSLContext:
        """One client context per upstream TLS setting, built on first use."""
        context = self._tls_contexts.get(tls)
        if context is None:
            context = self._tls_contexts[tls] = origin_context(
                verify=tls.verify, ca=tls.ca, certificate=tls.certificate, key=tls.key
            )
        return context

    def release(self, link: object, keepalive_timeout: float | None) -> None:
        assert isinstance(link, UpstreamConnection)
        server = link.server
        max_idle, idle_timeout = server.max_idle, server.idle_timeout
        if keepalive_timeout is not None:
            margin = (
                _SAFETY_MARGIN if keepalive_timeout > 2 * _SAFETY_MARGIN else keepalive_timeout / 2
            )
            idle_timeout = min(idle_timeout, keepalive_timeout - margin)
        if max_idle <= 0 or idle_timeout <= 0 or link.closed:
            link.close()
            return
        link.listener = None
        now = self.loop.time()
        link.idle_deadline = now + idle_timeout
        pool = self._pools.get(server.pool_key)
        if pool is None:
            pool = self._pools[server.pool_key] = _ServerPool()
        pool.idle.append(link)
        while len(pool.idle) > max_idle:
            pool.idle.popleft().close()
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their deadline; runs while any are idle."""
        self._sweeper = None
        now = self.loop.time()
        remaining = 0
        for pool in self._pools.values():
            keep = deque(c for c in pool.idle if not c.closed and now < c.idle_deadline)
            for conn in pool.idle:
                if conn not in keep:
                    conn.close()
            pool.idle = keep
            remaining += len(keep)
        if remaining:
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()


def proxy_header(version: str, ctx: RequestContext | None) -> bytes:
    """The PROXY header for a request's origin connection: the client as bastion knows it
    (the recovered client IP, the client connection's port) and the address it connected to;
    without a request (a health check), a header that names no client."""
    source = destination = None
    if ctx is not None:
        client = ctx.client
        source = Endpoint(ctx.client_ip, client.peer_port)
        destination = Endpoint(client.local_ip, client.local_port)
    return v1_header(source, destination) if version == "v1" else v2_header(source, destination)
