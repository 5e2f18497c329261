"""Client connections speaking HTTP/2: one exchange per stream, all on the same pipeline.

`H2ClientConnection` feeds bytes to the sans-I/O `H2ServerCodec` and turns its events into
exchanges; each stream's `H2Stream` is that exchange's client link. Flow control both ways:
a stream whose client window is shut holds at most one origin read and tells its exchange
to stop reading from the origin; request body bytes are acknowledged (opening the client's
window again) only while the exchange wants more. Graceful stop sends GOAWAY and closes once
the streams in flight are done. The DoS defences live in the codec.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import Headers, ResponseHead
from bastion.http.h2_server import (
    ConnectionClosed,
    H2Event,
    H2Limits,
    H2ProtocolFailure,
    H2ServerCodec,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowOpened,
)
from bastion.proxy.context import ClientInfo, ListenerInfo, RequestContext
from bastion.proxy.exchange import Exchange

if TYPE_CHECKING:
    from bastion.net.downstream import ConnectionRegistry, PipelineRef
    from bastion.proxy.ports import UpstreamLink

log = logging.getLogger(__name__)

_NO_ERROR = 0x0
_INTERNAL_ERROR = 0x2
_REFUSED_STREAM = 0x7
_HTTP_1_1_REQUIRED = 0xD


class H2Stream:
    """One request/response stream: the `DownstreamLink` of its exchange.

    A proxied response is held until the origin read that brought it is over (`flush`) or
    the response ends, then handed to the codec in one go: a small response becomes
    HEADERS and one DATA frame carrying END_STREAM (HEADERS alone when it has no body),
    not three frames.
    """

    __slots__ = (
        "_blocked",
        "_ended",
        "_ending",
        "_head",
        "_out",
        "_read_paused",
        "_request_dropped",
        "_trailers",
        "_unacknowledged",
        "connection",
        "exchange",
        "stream_id",
    )

    def __init__(self, connection: H2ClientConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.exchange: Exchange | None = None
        self._head: tuple[int, Headers] | None = None  # the final head, not yet sent
        self._out: list[bytes] = []  # body bytes not yet sent
        self._trailers: Headers | None = None
        self._ending = False  # the response is complete: end the stream after `_out`
        self._ended = False  # END_STREAM (or RST_STREAM) went to the codec
        self._blocked = False
        self._read_paused = False
        self._unacknowledged = 0
        self._request_dropped = False

    # -- DownstreamLink -------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._blocked or self.connection.transport_paused

    def send_informational(self, head: ResponseHead, headers: Headers) -> None:
        if head.status == 103:  # early hints are useful to h2 clients; other 1xx are not
            self.connection.codec.send_head(self.stream_id, head.status, headers, False)
            self.connection.flush_soon()

    def send_response_head(
        self, exchange: Exchange, head: ResponseHead, headers: Headers, body: bytes | None
    ) -> None:
        self._head = (head.status, headers)
        if body is not None:  # a local answer: the whole response at once
            if body:
                self._out.append(body)
            self._ending = True
            self._pump()

    def send_body(self, data: bytes) -> None:
        if data:
            self._out.append(data)

    def retract_head(self) -> bool:
        """Take back a response head not yet sent (nothing of the response went out)."""
        if self._head is None:
            return False
        self._head = None
        self._out.clear()
        return True

    def end_response(self, trailers: Headers) -> None:
        self._ending = True
        self._trailers = trailers or None
        self._pump()

    def flush(self) -> None:
        if self._head is not None or self._out:
            self._pump()

    def send_switch(self, head: ResponseHead, headers: Headers) -> None:
        raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, "no protocol switch on HTTP/2 streams")

    def start_tunnel(self, upstream: UpstreamLink, first_bytes: bytes) -> None:
        raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, "no tunnel on HTTP/2 streams")

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        self._read_paused = False
        if self._unacknowledged:
            self.connection.codec.acknowledge(self.stream_id, self._unacknowledged)
            self._unacknowledged = 0
            self.connection.flush_soon()

    # -- from the connection --------------------------------------------------------------

    def received(self, data: bytes, flow_len: int) -> None:
        if self._read_paused:
            self._unacknowledged += flow_len
        else:
            self.connection.codec.acknowledge(self.stream_id, flow_len)
        if self.exchange is not None and data:
            self.exchange.request_body(data)

    def window_opened(self) -> None:
        if (self._out or self._ending) and not self._ended:
            self._pump()

    def _pump(self) -> None:
        """Send the held head and what the flow-control windows allow of the body, ending
        the stream on the last DATA frame when the response is complete; tell the exchange
        when we block."""
        connection = self.connection
        codec = connection.codec
        stream_id = self.stream_id
        out = self._out
        end_with_data = self._ending and self._trailers is None
        head = self._head
        if head is not None:
            self._head = None
            if end_with_data and not out:
                codec.send_head(stream_id, head[0], head[1], True)
                self._ended = True
            else:
                codec.send_head(stream_id, head[0], head[1], False)
        if out:
            last = len(out) - 1
            for index, piece in enumerate(out):
                sent = codec.send_data(stream_id, piece, end_with_data and index == last)
                if sent < len(piece):
                    del out[:index]
                    out[0] = piece[sent:]
                    self._set_blocked(True)
                    connection.flush_soon()
                    return
            out.clear()
            if end_with_data:
                self._ended = True
        if self._blocked:
            self._set_blocked(False)
        if self._ending and not self._ended:
            self._ended = True
            if self._trailers:
                codec.send_trailers(stream_id, self._trailers)
            else:
                codec.end_stream(stream_id)
        if self._ended and self.exchange is None:
            self._finish_stream()
        connection.flush_soon()

    def _set_blocked(self, blocked: bool) -> None:
        if blocked != self._blocked:
            self._blocked = blocked
            if self.exchange is not None:
                self.exchange.downstream_write_paused(blocked)

    def exchange_done(self, exchange: Exchange) -> None:
        """The pipeline finished this request. What is still buffered goes out as the window
        allows; a response cut short is reset, so the client sees the truncation."""
        self.exchange = None
        if not exchange.request_complete and not exchange.abort_client:
            # Answered before the upload ended: stop it without an error (RFC 9113 8.1).
            self._request_dropped = True
        if exchange.abort_client and not self._ended:
            self._ending = False
            if self._head is not None or self._out:
                self._pump()  # what the origin sent goes out first, then the reset
            self._out.clear()
            self._ended = True
            error = exchange.end_error
            code = (
                _HTTP_1_1_REQUIRED
                if error is not None and error.kind is ErrorKind.HTTP_1_1_REQUIRED
                else _INTERNAL_ERROR
            )
            self.connection.codec.reset(self.stream_id, code)
            self.connection.flush_soon()
        elif self._head is not None or self._out:
            self._pump()
            return
        if self._ended and not self._out:
            self._finish_stream()

    def _finish_stream(self) -> None:
        if self._request_dropped:
            self.connection.codec.reset(self.stream_id, _NO_ERROR)
            self.connection.flush_soon()
        self.connection.stream_finished(self)

    def client_reset(self) -> None:
        self._out.clear()
        self._head = None
        self._ended = True
        if self.exchange is not None:
            self.exchange.downstream_lost()


class H2ClientConnection(asyncio.Protocol):
    """One client connection speaking HTTP/2."""

    def __init__(
        self,
        pipeline_ref: PipelineRef,
        registry: ConnectionRegistry,
        listener: ListenerInfo,
        client: ClientInfo,
        limits: H2Limits,
    ) -> None:
        self._pipeline_ref = pipeline_ref
        self._registry = registry
        self._listener = listener
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.codec = H2ServerCodec(limits, time.monotonic)
        self.transport: asyncio.Transport | None = None
        self.transport_paused = False
        self._streams: dict[int, H2Stream] = {}
        self._closing = False
        self._flush_scheduled = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._registry.add(self)
        self.codec.start()
        if self._registry.draining:
            self.close_when_idle()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.feed(data)
        except H2ProtocolFailure as failure:
            log.info("HTTP/2 connection from %s ended: %s", self.client.peer_ip, failure.reason)
            self._fail_all()
            self.flush()
            self._close()
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        self.transport = None
        self._fail_all()

    def pause_writing(self) -> None:
        self.transport_paused = True
        for stream in list(self._streams.values()):
            if stream.exchange is not None:
                stream.exchange.downstream_write_paused(True)

    def resume_writing(self) -> None:
        self.transport_paused = False
        for stream in list(self._streams.values()):
            if stream.exchange is not None and not stream.write_paused:
                stream.exchange.downstream_write_paused(False)

    # -- streams ------------------------------------------------------------------------

    def _on_event(self, event: H2Event) -> None:
        if type(event) is RequestReceived:
            self._begin(event)
        elif type(event) is StreamData:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.received(event.data, event.flow_len)
            else:
                self.codec.acknowledge(event.stream_id, event.flow_len)
        elif type(event) is StreamEnded:
            stream = self._streams.get(event.stream_id)
            if stream is not None and stream.exchange is not None:
                stream.exchange.request_end(event.trailers)
        elif type(event) is WindowOpened:
            if event.stream_id == 0:
                for stream in list(self._streams.values()):
                    stream.window_opened()
            else:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.window_opened()
        elif type(event) is StreamReset:
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream.client_reset()
        elif type(event) is ConnectionClosed:
            self._closing = True
            self._maybe_close()

    def _begin(self, event: RequestReceived) -> None:
        if self._closing:
            self.codec.reset(event.stream_id, _REFUSED_STREAM)  # we are going away
            return
        stream = H2Stream(self, event.stream_id)
        self._streams[event.stream_id] = stream
        if not event.ended and _expects_continue(event.head.headers):
            # Like nginx: the client may send its body right away (the origin still gets
            # the request as usual); waiting for the origin's 100 is not worth a round trip.
            self.codec.send_head(event.stream_id, 100, [], False)
        ctx = RequestContext(event.head, self.client, time.monotonic())
        exchange = Exchange(ctx, stream, self.loop)
        stream.exchange = exchange
        self._pipeline_ref.pipeline.serve(exchange, stream.exchange_done)

    def stream_finished(self, stream: H2Stream) -> None:
        self._streams.pop(stream.stream_id, None)  # stream ids are never reused
        if self._closing and not self._streams:
            self._close()

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.codec.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Write what the streams queued once this loop iteration is over: many streams
        answering in one iteration then cost one TLS write, not one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def close_when_idle(self) -> None:
        """Graceful stop: GOAWAY now, close once the streams in flight are done."""
        if not self._closing:
            self._closing = True
            self.codec.goaway()
            self.flush()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self._closing and not self._streams:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail_all(self) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream.client_reset()


def _expects_continue(headers: Headers) -> bool:
    for name, value in headers:
        if name == b"expect":
            return value.strip().lower() == b"100-continue"
    return False
