"""The PROXY protocol on listeners: the header an L4 balancer sends before anything else.

On a `proxy_protocol = true` listener every connection starts with a `ProxyHeaderStage`. It
reads the header (`http.proxy_protocol`) within the header timeout — one deadline for the
whole header, however slowly it trickles in — and then hands the connection over: on a plain
listener to the HTTP protocol, with the bytes that followed the header; on a TLS listener it
starts the TLS handshake on the same transport (`loop.start_tls`), feeds it the bytes that
came with the header, and hands the TLS transport over once the handshake is done, so SNI,
ALPN and client certificates work as on any TLS listener. A connection without a valid header
is closed without an answer (the balancer in front is misconfigured); the warnings saying so
are rate-limited.

The header's addresses are believed only from a TCP peer in `server.trusted_proxies`; from
any other peer the header is required and consumed all the same. LOCAL (the balancer's own
health checks), UNKNOWN and unix-socket addresses leave the TCP peer as the client.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.http.proxy_protocol import ProxyHeader, ProxyHeaderReader, ProxyProtocolError
from bastion.net.downstream import ConnectionRegistry, PipelineRef, Relayed, peer_address

log = logging.getLogger(__name__)

_WARN_INTERVAL = 10.0  # at most one warning about refused connections this often, per listener


class RefusalLog:
    """Warnings about connections refused for want of a PROXY header, rate-limited: a
    misconfigured balancer (or a scanner) must not flood the error log."""

    def __init__(self, interval: float = _WARN_INTERVAL) -> None:
        self._interval = interval
        self._next = float("-inf")
        self._suppressed = 0

    def warn(self, now: float, peer: str, reason: str) -> None:
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        more = ""
        if self._suppressed:
            more = f" (and {self._suppressed} more since the last warning)"
            self._suppressed = 0
        log.warning(
            "closed a connection from %s without a valid PROXY protocol header: %s%s; does the "
            "balancer in front send it (HAProxy send-proxy, nginx proxy_protocol on)?",
            peer,
            reason,
            more,
        )


@dataclass(frozen=True)
class ProxyProtocolListener:
    """What a `proxy_protocol` listener does after the header."""

    tls: ssl.SSLContext | None  # TLS listeners: the handshake follows the header
    refusals: RefusalLog = field(default_factory=RefusalLog)


ServeFactory = Callable[[Relayed | None], asyncio.Protocol]


class ProxyHeaderStage(asyncio.Protocol):
    """The first protocol of a connection on a `proxy_protocol` listener."""

    def __init__(
        self,
        pipeline_ref: PipelineRef,
        registry: ConnectionRegistry,
        serve: ServeFactory,
        settings: ProxyProtocolListener,
    ) -> None:
        self._pipeline_ref = pipeline_ref
        self._registry = registry
        self._serve = serve
        self._settings = settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._peer = "-"
        self._reader = ProxyHeaderReader()
        self._received = 0
        self._leftover = b""  # bytes after the header, for the protocol that follows
        self._done = False
        self._timer: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[asyncio.Transport | None] | None = None

    # -- ClientConnection (graceful stop) --------------------------------------------------

    def close_when_idle(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # no request has come yet: nothing to finish

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._peer = peer_address(transport) or "unix"
        self._registry.add(self)
        if self._registry.draining:
            transport.close()
            return
        timeout = self._pipeline_ref.pipeline.plan.limits.header_timeout
        self._timer = self.loop.call_later(timeout, self._expired, timeout)

    def data_received(self, data: bytes) -> None:
        if self._done:  # reading is paused once the header is in; kept for TLS all the same
            self._leftover += data
            return
        self._received += len(data)
        try:
            header = self._reader.feed(data)
        except ProxyProtocolError as error:
            self._refuse(str(error))
            return
        if header is not None:
            self._on_header(header)

    def eof_received(self) -> bool:
        if not self._done:
            if self._received:
                self._refuse("the connection ended inside the header")
            else:  # a balancer's TCP health check: connect, then close
                log.debug("connection from %s closed before sending anything", self._peer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._handshake is None:
            self._registry.discard(self)
        self.transport = None

    # -- the header --------------------------------------------------------------------------

    def _on_header(self, header: ProxyHeader) -> None:
        transport = self.transport
        assert transport is not None
        self._done = True
        self._stop_timer()
        relayed = self._believed(header)
        self._leftover = self._reader.remainder
        if self._settings.tls is not None:
            self._start_tls(transport, self._settings.tls, relayed)
            return
        self._registry.discard(self)
        protocol = self._serve(relayed)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        leftover, self._leftover = self._leftover, b""
        if leftover:
            protocol.data_received(leftover)

    def _believed(self, header: ProxyHeader) -> Relayed | None:
        relayed = header.relayed
        if relayed is None:
            return None  # LOCAL, UNKNOWN or unix addresses: the TCP peer is the client
        if self._peer not in self._pipeline_ref.pipeline.plan.trusted:
            log.debug(
                "PROXY header from %s, not a trusted proxy: its client %s is not believed",
                self._peer,
                relayed[0].address,
            )
            return None
        return relayed

    def _refuse(self, reason: str) -> None:
        self._done = True
        self._stop_timer()
        self._settings.refusals.warn(self.loop.time(), self._peer, reason)
        if self.transport is not None:
            self.transport.abort()

    def _expired(self, timeout: float) -> None:
        self._timer = None
        if self._done or self.transport is None:
            return
        if self._received:
            self._refuse(f"no complete header within {timeout:g}s")
            return
        log.debug("connection from %s sent nothing within %gs", self._peer, timeout)
        self._done = True
        self.transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- TLS after the header ----------------------------------------------------------------

    def _start_tls(
        self, transport: asyncio.Transport, context: ssl.SSLContext, relayed: Relayed | None
    ) -> None:
        """Start the handshake on this transport. The bytes that came with the header (the
        start of the ClientHello, often) go to the TLS protocol right after start_tls has put
        it in place: start_tls pauses reading and schedules the TLS protocol's
        connection_made and the resumed reading on its first step; the feed is scheduled one
        step later, so it runs after both and before any new bytes are read."""
        transport.pause_reading()
        hold = _HandshakeHold()
        timeout = self._pipeline_ref.pipeline.plan.limits.header_timeout
        loop = self.loop
        self._handshake = loop.create_task(
            loop.start_tls(
                transport, hold, context, server_side=True, ssl_handshake_timeout=timeout
            )
        )
        loop.call_soon(loop.call_soon, self._feed_tls, transport)
        self._handshake.add_done_callback(lambda task: self._tls_done(task, hold, relayed))

    def _feed_tls(self, transport: asyncio.Transport) -> None:
        leftover, self._leftover = self._leftover, b""
        protocol = transport.get_protocol()
        if not leftover or protocol is self or transport.is_closing():
            return  # start_tls did not take the transport (it failed at once, or it closed)
        get_buffer = getattr(protocol, "get_buffer", None)
        if get_buffer is None:
            protocol.data_received(leftover)  # type: ignore[attr-defined]
            return
        view = memoryview(leftover)
        while view:
            buffer = get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)  # type: ignore[attr-defined]
            view = view[size:]

    def _tls_done(
        self,
        task: asyncio.Task[asyncio.Transport | None],
        hold: _HandshakeHold,
        relayed: Relayed | None,
    ) -> None:
        self._registry.discard(self)
        transport, self.transport = self.transport, None
        if task.cancelled():
            if transport is not None:
                transport.abort()
            return
        error = task.exception()
        if error is not None:
            log.debug("TLS handshake with %s failed: %s", self._peer, error)
            if transport is not None:
                transport.abort()
            return
        tls_transport = task.result()
        if tls_transport is not None:
            hold.hand_over(tls_transport, self._serve(relayed))


class _HandshakeHold(asyncio.Protocol):
    """The TLS transport's protocol from the end of the handshake until the hand-over (a
    callback later): what arrives meanwhile is kept for the protocol that serves."""

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._eof = False
        self._lost = False

    def data_received(self, data: bytes) -> None:
        self._data.append(data)

    def eof_received(self) -> bool:
        self._eof = True
        return True  # the serving protocol decides, once it has the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True

    def hand_over(self, transport: asyncio.BaseTransport, protocol: asyncio.Protocol) -> None:
        if self._lost or transport.is_closing():
            transport.abort()  # type: ignore[attr-defined]
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in self._data:
            protocol.data_received(data)
        self._data.clear()
        if self._eof and not protocol.eof_received():
            transport.close()
