"""Client connections: the asyncio Protocol that reads requests and writes responses.

One `DownstreamConnection` per accepted client. It feeds bytes to the HTTP/1.1 request
reader, starts one `Exchange` (served by the pipeline as a task) per request, holds pipelined
requests until the current response is done (reading paused meanwhile), applies the header,
keep-alive and body timeouts, and turns into a byte tunnel after a protocol switch. Parse
errors are answered here (400/414/431/501) and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from bastion.errors import ProxyError
from bastion.http.chunked import chunk, last_chunk
from bastion.http.events import (
    BodyChunk,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    RequestHead,
    ResponseHead,
)
from bastion.http.h1_server import H1RequestReader, reason_phrase, serialize_response_head
from bastion.http.proxy_protocol import Endpoint
from bastion.net.tls import peer_chain, server_name_of
from bastion.net.tunnel import Tunnel
from bastion.net.upstream import UpstreamConnection
from bastion.proxy.context import (
    PLAIN_LISTENER,
    ClientInfo,
    ListenerInfo,
    RequestContext,
    TLSInfo,
)
from bastion.proxy.exchange import Exchange

if TYPE_CHECKING:
    from bastion.proxy.pipeline import Pipeline
    from bastion.proxy.ports import UpstreamLink

log = logging.getLogger(__name__)

# Lingering close: how long to keep reading a client that is still sending after its answer.
_LINGER_IDLE = 2.0  # close after this long without input
_LINGER_TOTAL = 10.0  # and after this long in all
# Graceful stop: how long an idle keep-alive connection still reads (and drops) a request
# that crossed our FIN, so that closing never resets it; and how long a connection that has
# sent nothing yet (accepted just before the stop) may still send its first request.
_DRAIN_LINGER = 0.25
_DRAIN_FIRST_REQUEST = 1.0
# Framing members as module globals: `Framing.X` is a slow lookup on every access (EnumType
# defines __getattr__, so CPython 3.11 cannot specialise it); a global load is cheap.
_FRAMING_CHUNKED, _FRAMING_CLOSE = Framing.CHUNKED, Framing.CLOSE


# What a believed PROXY header says of a connection: (client, the address it connected to).
Relayed = tuple[Endpoint, Endpoint]


class ClientConnection(Protocol):
    """What graceful shutdown needs of a client connection, whatever its protocol."""

    transport: asyncio.Transport | None

    def close_when_idle(self) -> None: ...


class ConnectionRegistry:
    """The open client connections of a listener set, for graceful shutdown."""

    def __init__(self) -> None:
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.drained: asyncio.Event | None = None

    def add(self, conn: ClientConnection) -> None:
        self.connections.add(conn)

    def discard(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self.draining and not self.connections and self.drained is not None:
            self.drained.set()

    def drain(self) -> asyncio.Event:
        """Close idle connections now and the busy ones after their current response."""
        self.draining = True
        self.drained = asyncio.Event()
        for conn in list(self.connections):
            conn.close_when_idle()
        if not self.connections:
            self.drained.set()
        return self.drained


class DownstreamConnection(asyncio.Protocol):
    """One client connection speaking HTTP/1.x."""

    def __init__(
        self,
        pipeline_ref: PipelineRef,
        registry: ConnectionRegistry,
        listener: ListenerInfo = PLAIN_LISTENER,
        relayed: Relayed | None = None,
    ) -> None:
        self._pipeline_ref = pipeline_ref
        self._registry = registry
        self._listener = listener
        self._relayed = relayed
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.client: ClientInfo | None = None
        self._reader: H1RequestReader | None = None
        self._exchange: Exchange | None = None
        self._backlog: deque[Event | ProxyError] | None = None
        self.write_paused = False  # the transport asked us to stop writing (DownstreamLink)
        self._read_paused = False
        self._closing = False
        self._tunnel: Tunnel | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._linger_until = 0.0
        self._fresh = True  # no request begun yet
        self._chunked_out = False  # the current response is sent chunked
        self._pending_head = b""  # a response head waiting for its first body bytes

    # -- DownstreamLink -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    # Response framing for HTTP/1.x: Content-Length kept, chunked for 1.1 clients when the
    # origin's body has no length, close-delimited for 1.0 clients; the head waits for the
    # first body bytes (or the end of the origin's read) so a small response is one write.

    def send_informational(self, head: ResponseHead, headers: Headers) -> None:
        exchange = self._exchange
        if exchange is not None and exchange.ctx.head.http_version == b"1.1":
            self.write(serialize_response_head(head.status, head.reason, headers))

    def send_response_head(
        self, exchange: Exchange, head: ResponseHead, headers: Headers, body: bytes | None
    ) -> None:
        version = exchange.ctx.head.http_version
        self._chunked_out = False
        if head.framing is _FRAMING_CHUNKED or head.framing is _FRAMING_CLOSE:
            if version == b"1.1":
                self._chunked_out = True
                headers.append((b"transfer-encoding", b"chunked"))
            else:
                exchange.close_after = True
        if exchange.close_after:
            headers.append((b"connection", b"close"))
        elif version == b"1.0":
            headers.append((b"connection", b"keep-alive"))
        out = serialize_response_head(head.status, head.reason, headers, version)
        if body is None:
            self._pending_head = out
        else:
            self.write(out + body)

    def send_body(self, data: bytes) -> None:
        out = chunk(data) if self._chunked_out else data
        if self._pending_head:
            out = self._pending_head + out
            self._pending_head = b""
        self.write(out)

    def retract_head(self) -> bool:
        """Take back a response head no byte of which was written (a body transform failed
        on the first bytes): the client can still be given an error answer instead."""
        if not self._pending_head:
            return False
        self._pending_head = b""
        return True

    def end_response(self, trailers: Headers) -> None:
        out = last_chunk(trailers) if self._chunked_out else b""
        if self._pending_head:
            out = self._pending_head + out
            self._pending_head = b""
        if out:
            self.write(out)

    def flush(self) -> None:
        if self._pending_head:
            self.write(self._pending_head)
            self._pending_head = b""

    def send_switch(self, head: ResponseHead, headers: Headers) -> None:
        self.write(serialize_response_head(101, head.reason, headers))

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._closing:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._closing:
            self._read_paused = False
            self.transport.resume_reading()

    def start_tunnel(self, upstream: UpstreamLink, first_bytes: bytes) -> None:
        assert self.transport is not None and self._reader is not None
        assert isinstance(upstream, UpstreamConnection)
        exchange = self._exchange
        idle = exchange.ctx.upstream.tunnel_idle_timeout  # type: ignore[union-attr]
        self._cancel_timer()
        self._tunnel = Tunnel(self.transport, upstream, idle, self._read_paused)
        self._read_paused = False
        self._tunnel.start(first_bytes, self._reader.accept_upgrade())

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        pipeline = self._pipeline_ref.pipeline
        limits = pipeline.plan.limits
        self._reader = H1RequestReader(limits.max_header_size, limits.max_uri_size)
        accepts = self._listener.accepts_handshake
        if accepts is not None and not accepts(transport.get_extra_info("ssl_object")):
            log.info("closing a TLS connection below its site's min_version")
            self._closing = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self.client = client_info(transport, self._listener, pipeline, self._relayed)
        self._registry.add(self)
        if self._registry.draining:  # accepted just before the stop: serve its first request
            self._arm_timer(min(limits.header_timeout, _DRAIN_FIRST_REQUEST))
            return
        self._arm_timer(limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.from_client(data)
            return
        if self._lingering:  # discard what the client still sends, for a bounded time
            remaining = self._linger_until - self.loop.time()
            if remaining <= 0 and self.transport is not None:
                self.transport.close()
            else:
                self._arm_timer(min(_LINGER_IDLE, remaining))
            return
        reader = self._reader
        assert reader is not None
        try:
            events = reader.feed(data)
        except ProxyError as error:
            self._on_event(error)
            return
        for event in events:
            self._on_event(event)
        if reader.failure is not None:
            self._on_event(reader.failure)  # answered in turn, after the requests before it

    def eof_received(self) -> bool:
        if self._tunnel is not None:
            return self._tunnel.client_eof()
        if self._exchange is not None and not self._exchange.request_complete:
            self._exchange.downstream_lost()
        # A client that half-closes after its request still gets the response.
        return self._exchange is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        self._registry.discard(self)
        self.transport = None
        if self._tunnel is not None:
            self._tunnel.client_lost()
        exchange = self._exchange
        if exchange is not None:
            exchange.downstream_lost()
        if self.client is not None:
            self.client.drop_pinned()  # an origin connection bound to this one ends with it

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._tunnel is not None:
            self._tunnel.client_write_paused(True)
        elif self._exchange is not None:
            self._exchange.downstream_write_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._tunnel is not None:
            self._tunnel.client_write_paused(False)
        elif self._exchange is not None:
            self._exchange.downstream_write_paused(False)

    # -- requests ---------------------------------------------------------------------

    def _on_event(self, event: Event | ProxyError) -> None:
        if self._closing:
            return  # an answer already ended this connection; later requests are moot
        if self._backlog is not None:
            self._backlog.append(event)
            return
        exchange = self._exchange
        if type(event) is RequestHead:
            if exchange is not None:
                self._backlog = deque([event])
                self.pause_reading()
                return
            self._begin(event)
        elif type(event) is EndOfMessage:
            if exchange is not None:
                exchange.request_end(event.trailers)
        elif type(event) is BodyChunk:
            if exchange is not None:
                exchange.request_body(event.data)
            # else: the request was answered before its body ended; we close after it.
        elif isinstance(event, ProxyError):
            self._on_error(exchange, event)

    def _on_error(self, exchange: Exchange | None, error: ProxyError) -> None:
        if exchange is None:
            self._refuse(error)
        elif not exchange.request_complete:
            exchange.close_after = True  # the error is in this request's own body
            exchange.fail(error)
        else:
            self._backlog = deque([error])  # a later pipelined request: answer in turn
            self.pause_reading()

    def _begin(self, head: RequestHead) -> None:
        assert self.client is not None
        self._cancel_timer()
        pipeline = self._pipeline_ref.pipeline
        ctx = RequestContext(head, self.client, time.monotonic())
        exchange = Exchange(ctx, self, self.loop)
        self._fresh = False
        if self._registry.draining:
            exchange.close_after = True
        self._exchange = exchange
        pipeline.serve(exchange, self._exchange_done)

    def _exchange_done(self, exchange: Exchange) -> None:
        if self._tunnel is not None or self.transport is None:
            self._exchange = None
            return
        if exchange.abort_client:
            self._exchange = None
            self.transport.abort()
            return
        if exchange.close_after or self._closing or not exchange.request_complete:
            self._exchange = None
            self._close_after_reply(lingering=not exchange.request_complete)
            return
        self._exchange = None
        reader = self._reader
        assert reader is not None
        if exchange.ctx.head.upgrade is not None:
            try:
                events = reader.decline_upgrade()
            except ProxyError as error:
                self._refuse(error)
                return
            for event in events:
                self._on_event(event)
            if reader.failure is not None:
                self._on_event(reader.failure)
        self._next_request()

    def _next_request(self) -> None:
        backlog, self._backlog = self._backlog, None
        if backlog:
            while backlog and self._backlog is None:
                self._on_event(backlog.popleft())
            if self._backlog is not None:
                self._backlog.extend(backlog)
                return
        if self._exchange is None:
            limits = self._pipeline_ref.pipeline.plan.limits
            reader = self._reader
            in_message = reader is not None and reader.in_message
            self._arm_timer(limits.header_timeout if in_message else limits.keepalive_timeout)
        if self._read_paused:
            self.resume_reading()

    def close_when_idle(self) -> None:
        """Graceful stop: close now if idle, else after the current response.

        An idle connection is half-closed and lingers briefly, so a request already on its
        way is read and dropped (the client sees our FIN and retries) instead of reset; one
        that has not sent its first request yet gets a short while to send it."""
        if self._closing:
            return
        if self._exchange is None and self._tunnel is None and self.transport is not None:
            if self._fresh:
                self._rearm_timer(_DRAIN_FIRST_REQUEST)
            else:
                self._close_after_reply(lingering=True, linger=_DRAIN_LINGER)
        elif self._exchange is not None:
            self._exchange.close_after = True

    # -- errors and timeouts -------------------------------------------------------------

    def _refuse(self, error: ProxyError) -> None:
        """Answer a request we could not parse, then close: the stream is unusable."""
        transport = self.transport
        self._closing = True
        self._cancel_timer()
        if transport is None:
            return
        status = error.status
        body = f"{status} {reason_phrase(status).decode()}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        transport.write(serialize_response_head(status, b"", headers) + body)
        log.info("refused request from %s: %s", self.client.peer_ip if self.client else "-", error)
        self._close_after_reply(lingering=True)

    def _close_after_reply(self, lingering: bool, linger: float = _LINGER_TOTAL) -> None:
        """Close once the answer is out. With `lingering`, the client may still be sending
        (a body we refused or did not wait for): closing with unread input would make the
        kernel send a reset that can destroy the answer in flight, so — like nginx's
        lingering close — we half-close, read and discard for a while, then close."""
        transport = self.transport
        self._closing = True
        if transport is None:
            return
        if not lingering or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        self._linger_until = self.loop.time() + linger
        self._rearm_timer(min(_LINGER_IDLE, linger))

    def _arm_timer(self, timeout: float) -> None:
        self._deadline = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _rearm_timer(self, timeout: float) -> None:
        """Like `_arm_timer`, also when the timer is already set for later."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._arm_timer(timeout)

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline == 0.0 or self.transport is None:
            return
        now = self.loop.time()
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._exchange is None and self._tunnel is None:
            self._closing = True
            self.transport.close()


class PipelineRef:
    """The pipeline new requests are served by; swapped on reload, read per request."""

    __slots__ = ("pipeline",)

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline


def client_info(
    transport: asyncio.BaseTransport,
    listener: ListenerInfo,
    pipeline: Pipeline,
    relayed: Relayed | None = None,
) -> ClientInfo:
    """Who connected, read once per connection. A unix-socket client is `unix` (as in
    nginx's `unix:`); it is never a trusted proxy. `relayed` is what a believed PROXY header
    said (source, destination): the source is then the peer, and whether it is a trusted
    proxy in turn is asked again (a balancer in front of a CDN's edge)."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    tls = _tls_info(transport.get_extra_info("ssl_object"))
    if not isinstance(peer, tuple):
        return ClientInfo("unix", 0, 0, listener.scheme, False, listener, tls)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    trusted_proxies = pipeline.plan.trusted
    if relayed is not None:
        source, destination = relayed
        peer_ip, trusted = trusted_proxies.classify(source.address) or (source.address, False)
        local_ip, _ = trusted_proxies.classify(destination.address) or (destination.address, False)
        peer_port, port = source.port, destination.port
    else:
        peer_ip, peer_port = _plain_ip(str(peer[0])), int(peer[1])
        local_ip, port = ("", 0)
        if isinstance(local, tuple):
            local_ip, port = _plain_ip(str(local[0])), int(local[1])
        trusted = peer_ip in trusted_proxies
    return ClientInfo(peer_ip, peer_port, port, listener.scheme, trusted, listener, tls, local_ip)


def peer_address(transport: asyncio.BaseTransport) -> str | None:
    """The TCP peer's IP address as people write it; None on a unix socket."""
    peer = transport.get_extra_info("peername")
    return _plain_ip(str(peer[0])) if isinstance(peer, tuple) else None


def _tls_info(ssl_object: ssl.SSLObject | None) -> TLSInfo | None:
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    certificate = ssl_object.getpeercert(binary_form=True)
    return TLSInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=ssl_object.selected_alpn_protocol(),
        server_name=server_name_of(ssl_object),
        peer_certificate=certificate,
        chain=peer_chain(ssl_object) if certificate else (),
    )


def _plain_ip(ip: str) -> str:
    """Client addresses as people write them: `::ffff:10.0.0.1` is 10.0.0.1."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
