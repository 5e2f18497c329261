"""Which protocol a new client connection speaks: HTTP/1.x or HTTP/2.

On TLS listeners ALPN decides (`h2` or not) once the handshake is done; on plain listeners
with `http2 = "h2c"` the first bytes decide (the HTTP/2 connection preface, or anything
else for HTTP/1.x). The chooser then hands the transport to the protocol object that serves
it. Listeners without HTTP/2 skip the chooser altogether. On `proxy_protocol` listeners the
PROXY header comes before all of this (net/proxy_header.py), and what it said reaches the
serving protocol as `relayed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bastion.http.h2_server import H2Limits
from bastion.net.downstream import (
    ConnectionRegistry,
    DownstreamConnection,
    PipelineRef,
    Relayed,
    client_info,
)
from bastion.net.h2_downstream import H2ClientConnection
from bastion.net.proxy_header import ProxyHeaderStage, ProxyProtocolListener
from bastion.proxy.context import ListenerInfo

log = logging.getLogger(__name__)

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ProtocolChooser(asyncio.Protocol):
    """Picks HTTP/1.x or HTTP/2 for one connection, then steps aside."""

    def __init__(
        self,
        pipeline_ref: PipelineRef,
        registry: ConnectionRegistry,
        listener: ListenerInfo,
        limits: H2Limits,
        relayed: Relayed | None = None,
    ) -> None:
        self._pipeline_ref = pipeline_ref
        self._registry = registry
        self._listener = listener
        self._limits = limits
        self._relayed = relayed
        self._transport: asyncio.BaseTransport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
            if alpn == "h2" and not self._handshake_acceptable(ssl_object):
                transport.abort()  # type: ignore[attr-defined]
                return
            self._hand_over(h2=alpn == "h2")
        # plain h2c listener: wait for the first bytes

    def _handshake_acceptable(self, ssl_object: object) -> bool:
        """The site's `min_version` (HTTP/1.x connections check it themselves)."""
        accepts = self._listener.accepts_handshake
        if accepts is None or accepts(ssl_object):
            return True
        log.info("closing an HTTP/2 connection below its site's min_version")
        return False

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        size = min(len(self._buffer), len(_PREFACE))
        if self._buffer[:size] != _PREFACE[:size]:
            self._hand_over(h2=False)
        elif size == len(_PREFACE):
            self._hand_over(h2=True)

    def eof_received(self) -> bool:
        return False

    def _hand_over(self, h2: bool) -> None:
        transport = self._transport
        assert transport is not None
        protocol: asyncio.Protocol
        if h2:
            pipeline = self._pipeline_ref.pipeline
            client = client_info(transport, self._listener, pipeline, self._relayed)
            protocol = H2ClientConnection(
                self._pipeline_ref, self._registry, self._listener, client, self._limits
            )
        else:
            protocol = DownstreamConnection(
                self._pipeline_ref, self._registry, self._listener, self._relayed
            )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        buffered, self._buffer = self._buffer, b""
        if buffered:
            protocol.data_received(buffered)


def connection_factory(
    pipeline_ref: PipelineRef,
    registry: ConnectionRegistry,
    listener: ListenerInfo,
    http2: bool,
    limits: H2Limits,
    proxy_protocol: ProxyProtocolListener | None = None,
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of one listener (a PROXY header first with `proxy_protocol`)."""

    def serve(relayed: Relayed | None = None) -> asyncio.Protocol:
        if not http2:
            return DownstreamConnection(pipeline_ref, registry, listener, relayed)
        return ProtocolChooser(pipeline_ref, registry, listener, limits, relayed)

    if proxy_protocol is None:
        return serve
    return lambda: ProxyHeaderStage(pipeline_ref, registry, serve, proxy_protocol)
