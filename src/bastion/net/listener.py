"""Which protocol a new client connection speaks: HTTP/1.x or HTTP/2.

On TLS listeners ALPN decides (`h2` or not) once the handshake is done; on plain listeners
with `http2 = "h2c"` the first bytes decide (the HTTP/2 connection preface, or anything
else for HTTP/1.x). The chooser then hands the transport to the protocol object that serves
it. Listeners without HTTP/2 skip the chooser altogether.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bastion.http.h2_server import H2Limits
from bastion.net.downstream import (
    ConnectionRegistry,
    DownstreamConnection,
    PipelineRef,
    client_info,
)
from bastion.net.h2_downstream import H2ClientConnection
from bastion.proxy.context import ListenerInfo

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class ProtocolChooser(asyncio.Protocol):
    """Picks HTTP/1.x or HTTP/2 for one connection, then steps aside."""

    def __init__(
        self,
        pipeline_ref: PipelineRef,
        registry: ConnectionRegistry,
        listener: ListenerInfo,
        limits: H2Limits,
    ) -> None:
        self._pipeline_ref = pipeline_ref
        self._registry = registry
        self._listener = listener
        self._limits = limits
        self._transport: asyncio.BaseTransport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            alpn = ssl_object.selected_alpn_protocol()
            self._hand_over(h2=alpn == "h2")
        # plain h2c listener: wait for the first bytes

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
            client = client_info(transport, self._listener, self._pipeline_ref.pipeline)
            protocol = H2ClientConnection(
                self._pipeline_ref, self._registry, self._listener, client, self._limits
            )
        else:
            protocol = DownstreamConnection(self._pipeline_ref, self._registry, self._listener)
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
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of one listener."""
    if not http2:
        return lambda: DownstreamConnection(pipeline_ref, registry, listener)
    return lambda: ProtocolChooser(pipeline_ref, registry, listener, limits)
