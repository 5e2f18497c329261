"""The downstream (server) side of HTTP/2: client bytes in, stream events out; responses out.

`H2ServerCodec` is bastion's own HTTP/2 server connection (RFC 9113), written for the one
role it plays: it parses only what clients send, writes only what a server sends, and keeps
per stream just the two flow-control windows and which side may still send. Inbound bytes
first pass `FrameGate` (bastion.http.h2_defence), which cuts them into whole frames and
refuses the floods; each frame is then checked against RFC 9113 (sizes, stream identifiers,
stream states, flow control) and turned into events. Header blocks are decoded by
bastion.http.h2_hpack (the `hpack` library, with a memo of repeated blocks) and mapped by
bastion.http.h2_request to the RequestHead the HTTP/1.1 reader produces; a request repeating
an earlier block byte for byte reuses that earlier mapping.

Errors follow RFC 9113 5.4: a malformed request, a body disagreeing with Content-Length or
an error confined to one stream resets that stream (RST_STREAM) and the connection goes on;
anything else queues GOAWAY and raises H2ProtocolFailure. Refused and malformed streams count
as resets for the rapid-reset limit. GOAWAY is graceful both ways: after ours (`goaway()`)
or the client's, new streams are refused and those in flight can finish.

Sans-I/O: no sockets, no asyncio; the clock of the flood limits is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bastion.http import h2_frames as wire
from bastion.http.events import Headers
from bastion.http.h2_defence import (
    PREFACE,
    FloodError,
    FrameGate,
    InboundFrame,
    RateMeter,
)
from bastion.http.h2_defence import H2Limits as H2Limits  # re-exported: part of this API
from bastion.http.h2_events import (
    ConnectionClosed,
    H2Event,
    H2ProtocolFailure,
    RequestReceived,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowOpened,
)
from bastion.http.h2_frames import (
    CANCEL,
    CLIENT_PREFACE,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
)
from bastion.http.h2_hpack import (
    TABLE_SIZE_ZERO,
    HeaderBlockDecoder,
    HeaderBlockError,
    encode_block,
)
from bastion.http.h2_request import MalformedRequestError, RequestHeadMemo, request_trailers

__all__ = [
    "CANCEL",
    "NO_ERROR",
    "ConnectionClosed",
    "H2Event",
    "H2Limits",
    "H2ProtocolFailure",
    "H2ServerCodec",
    "RequestReceived",
    "StreamData",
    "StreamEnded",
    "StreamReset",
    "WindowOpened",
]

# RFC 9113 8.2.2, plus TE: nothing connection-specific goes out on HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_RECENTLY_CLOSED = 256  # closed streams remembered, to tell them from idle ones


class _ConnectionError(Exception):
    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason


@dataclass(slots=True)
class _Stream:
    """A stream that is not closed: what each side may still send, and its windows."""

    send_window: int  # what we may send before the client's WINDOW_UPDATE
    receive_window: int  # what the client may send before ours
    expected_length: int | None  # the body length Content-Length promises
    remote_open: bool = True  # the client may still send (no END_STREAM yet)
    local_open: bool = True  # we may still send
    received: int = 0
    unacknowledged: int = 0  # flow-controlled bytes handed out, not yet acknowledged
    consumed: int = 0  # acknowledged, not yet advertised in a WINDOW_UPDATE


@dataclass(slots=True)
class _HeaderBlock:
    """A header block whose CONTINUATION frames are still arriving."""

    stream_id: int
    end_stream: bool
    fragments: list[bytes]
    priority_error: bool  # the stream depends on itself: reset once decoded


class H2ServerCodec:
    """One HTTP/2 client connection, server side.

    Sending on a stream that is no longer open (the client reset it, or the connection
    failed) does nothing: the event or exception that says why came out of `feed`. The bytes
    a reset or finished stream left unacknowledged go back to the connection window.
    """

    def __init__(self, limits: H2Limits, clock: Callable[[], float]) -> None:
        self._limits = limits
        self._resets = RateMeter(limits.max_resets_per_window, limits.window, clock)
        self._gate = FrameGate(
            max_frame_size=limits.max_frame_size,
            max_header_block=limits.max_continuation_bytes,
            resets=self._resets,
            control=RateMeter(limits.max_control_frames_per_window, limits.window, clock),
        )
        self._decoder = HeaderBlockDecoder(limits.max_header_list_size)
        self._heads = RequestHeadMemo()
        self._streams: dict[int, _Stream] = {}
        self._closed: dict[int, bool] = {}  # recently closed stream -> we reset it
        self._block: _HeaderBlock | None = None
        self._out = bytearray()
        self._failure: H2ProtocolFailure | None = None
        self._preface_seen = 0
        self._settings_seen = False
        self._peer_goaway = False  # the client sent GOAWAY
        self._last_stream_id: int | None = None  # set by goaway()
        self._highest_stream_id = 0
        self._send_window = wire.DEFAULT_WINDOW  # connection: what we may send
        self._receive_window = wire.DEFAULT_WINDOW  # connection: what the client may send
        self._consumed = 0  # connection: acknowledged, not yet advertised
        self._peer_initial_window = wire.DEFAULT_WINDOW
        self._peer_max_frame = wire.DEFAULT_MAX_FRAME_SIZE
        self._table_size_sent = False

    # -- inbound ----------------------------------------------------------------------

    def start(self) -> None:
        """Queue the server preface: our SETTINGS, then the connection window's increment."""
        limits = self._limits
        self._out += wire.settings_frame(
            {
                wire.ENABLE_PUSH: 0,
                wire.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                wire.MAX_FRAME_SIZE: limits.max_frame_size,
                wire.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                wire.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            }
        )
        extra = limits.initial_window_size - wire.DEFAULT_WINDOW
        if extra > 0:
            self._out += wire.window_update_frame(0, extra)
            self._receive_window += extra

    def feed(self, data: bytes) -> list[H2Event]:
        """Handle client bytes; the events they complete, in order.

        Raises H2ProtocolFailure when the connection must end (events of the same call
        are dropped with it), and again on every later call.
        """
        if self._failure is not None:
            raise self._failure
        out: list[H2Event] = []
        try:
            for frame in self._gate.frames(data):
                self._on_frame(frame, out)
        except FloodError as flood:
            raise self._fail(flood.reason, flood.error_code) from None
        except _ConnectionError as error:
            raise self._fail(error.reason, error.error_code) from None
        return out

    def _on_frame(self, frame: InboundFrame, out: list[H2Event]) -> None:
        kind = frame.kind
        if self._block is not None and kind != wire.CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted by another frame")
        if not self._settings_seen and kind != wire.SETTINGS:
            if kind != PREFACE:
                raise _ConnectionError(PROTOCOL_ERROR, "the client preface must end with SETTINGS")
            self._on_preface(frame.raw)
        elif kind == wire.DATA:
            self._on_data(frame, out)
        elif kind == wire.HEADERS:
            self._on_headers(frame, out)
        elif kind == wire.CONTINUATION:
            self._on_continuation(frame, out)
        elif kind == wire.WINDOW_UPDATE:
            self._on_window_update(frame, out)
        elif kind == wire.RST_STREAM:
            self._on_rst_stream(frame, out)
        elif kind == wire.SETTINGS:
            self._on_settings(frame, out)
        elif kind == wire.PING:
            self._on_ping(frame)
        elif kind == wire.PRIORITY:
            self._on_priority(frame, out)
        elif kind == wire.GOAWAY:
            self._on_goaway(frame, out)
        elif kind == wire.PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # Unknown frame types are ignored (RFC 9113 5.5); the gate rations them.

    def _on_preface(self, piece: bytes) -> None:
        start = self._preface_seen
        if piece != CLIENT_PREFACE[start : start + len(piece)]:
            raise _ConnectionError(PROTOCOL_ERROR, "invalid client connection preface")
        self._preface_seen += len(piece)

    # -- header blocks ------------------------------------------------------------------

    def _on_headers(self, frame: InboundFrame, out: list[H2Event]) -> None:
        stream_id = frame.stream_id
        if stream_id == 0 or not stream_id & 1:
            raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        flags = frame.flags
        payload = _unpadded_payload(frame)
        priority_error = False
        if flags & wire.PRIORITY_FLAG:
            if len(payload) < 5:
                raise _ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            priority_error = wire.uint31(payload) == stream_id
            payload = payload[5:]
        block = _HeaderBlock(stream_id, bool(flags & wire.END_STREAM), [payload], priority_error)
        if flags & wire.END_HEADERS:
            self._on_header_block(block, out)
        else:
            self._block = block

    def _on_continuation(self, frame: InboundFrame, out: list[H2Event]) -> None:
        block = self._block
        if block is None or frame.stream_id != block.stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block.fragments.append(frame.raw[wire.FRAME_HEADER_SIZE :])
        if frame.flags & wire.END_HEADERS:
            self._block = None
            self._on_header_block(block, out)

    def _on_header_block(self, block: _HeaderBlock, out: list[H2Event]) -> None:
        data = block.fragments[0] if len(block.fragments) == 1 else b"".join(block.fragments)
        try:
            fields = self._decoder.decode(data)
        except HeaderBlockError as error:
            if error.oversized:
                raise _ConnectionError(ENHANCE_YOUR_CALM, error.reason) from None
            raise _ConnectionError(COMPRESSION_ERROR, error.reason) from None
        stream_id = block.stream_id
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._on_trailers(stream_id, stream, block, fields, out)
        elif stream_id <= self._highest_stream_id:
            self._on_closed_stream_frame(stream_id, "HEADERS", out)
        else:
            self._highest_stream_id = stream_id
            if block.priority_error:
                self._refuse(stream_id, PROTOCOL_ERROR)
            else:
                self._on_request(stream_id, data, fields, block.end_stream, out)

    def _on_request(
        self,
        stream_id: int,
        block: bytes,
        fields: list[tuple[bytes, bytes]],
        ended: bool,
        out: list[H2Event],
    ) -> None:
        if (
            self._peer_goaway
            or (self._last_stream_id is not None and stream_id > self._last_stream_id)
            or len(self._streams) >= self._limits.max_concurrent_streams
        ):
            self._refuse(stream_id, REFUSED_STREAM)
            return
        try:
            head, expected_length = self._heads.request_head(
                block, fields, ended, self._decoder.generation
            )
        except MalformedRequestError as malformed:
            self._refuse(stream_id, malformed.error_code)
            return
        self._streams[stream_id] = _Stream(
            self._peer_initial_window,
            self._limits.initial_window_size,
            expected_length,
            remote_open=not ended,
        )
        out.append(RequestReceived(stream_id, head, ended))

    def _on_trailers(
        self,
        stream_id: int,
        stream: _Stream,
        block: _HeaderBlock,
        fields: list[tuple[bytes, bytes]],
        out: list[H2Event],
    ) -> None:
        if not stream.remote_open:
            self._reset_known(stream_id, STREAM_CLOSED, out)
            return
        if not block.end_stream:
            self._reset_known(stream_id, PROTOCOL_ERROR, out)  # a second head, not trailers
            return
        try:
            trailers = request_trailers(fields)
        except MalformedRequestError as malformed:
            self._reset_known(stream_id, malformed.error_code, out)
            return
        if stream.expected_length is not None and stream.received != stream.expected_length:
            self._reset_known(stream_id, PROTOCOL_ERROR, out)
            return
        stream.remote_open = False
        out.append(StreamEnded(stream_id, trailers))
        self._close_if_done(stream_id, stream)

    # -- DATA and flow control ----------------------------------------------------------

    def _on_data(self, frame: InboundFrame, out: list[H2Event]) -> None:
        stream_id = frame.stream_id
        if stream_id == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        if frame.content_size < 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA padding longer than the frame")
        flow_len = len(frame.raw) - wire.FRAME_HEADER_SIZE
        self._receive_window -= flow_len
        if self._receive_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open:
            self._credit_connection(flow_len)
            if stream is None and stream_id > self._highest_stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream is None:
                self._on_closed_stream_frame(stream_id, "DATA", out)
            else:
                self._reset_known(stream_id, STREAM_CLOSED, out)
            return
        stream.receive_window -= flow_len
        size = frame.content_size
        ended = bool(frame.flags & wire.END_STREAM)
        total = stream.received + size
        expected = stream.expected_length
        if stream.receive_window < 0:
            self._credit_connection(flow_len)
            self._reset_known(stream_id, FLOW_CONTROL_ERROR, out)
            return
        if expected is not None and (total > expected or (ended and total != expected)):
            self._credit_connection(flow_len)
            self._reset_known(stream_id, PROTOCOL_ERROR, out)
            return
        stream.received = total
        if size:
            start = wire.FRAME_HEADER_SIZE + (1 if frame.flags & wire.PADDED else 0)
            stream.unacknowledged += flow_len
            out.append(StreamData(stream_id, frame.raw[start : start + size], flow_len))
        elif flow_len:
            self._credit(stream_id, stream, flow_len)  # padding only: nothing to wait for
        if ended:
            stream.remote_open = False
            out.append(StreamEnded(stream_id, []))
            self._close_if_done(stream_id, stream)

    def _on_window_update(self, frame: InboundFrame, out: list[H2Event]) -> None:
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = wire.uint31(payload)
        stream_id = frame.stream_id
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > wire.MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            out.append(WindowOpened(0))
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id > self._highest_stream_id:
                raise _ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: the update may have crossed our END_STREAM
        if increment == 0:
            self._reset_known(stream_id, PROTOCOL_ERROR, out)
            return
        stream.send_window += increment
        if stream.send_window > wire.MAX_WINDOW:
            self._reset_known(stream_id, FLOW_CONTROL_ERROR, out)
        elif stream.local_open:
            out.append(WindowOpened(stream_id))

    def _credit(self, stream_id: int, stream: _Stream, size: int) -> None:
        """`size` flow-controlled bytes of this stream are consumed: open both windows."""
        self._credit_connection(size)
        if not stream.remote_open:
            return
        stream.consumed += size
        if stream.consumed >= self._limits.initial_window_size // 2:
            self._out += wire.window_update_frame(stream_id, stream.consumed)
            stream.receive_window += stream.consumed
            stream.consumed = 0

    def _credit_connection(self, size: int) -> None:
        self._consumed += size
        if self._consumed >= self._limits.initial_window_size // 2:
            self._out += wire.window_update_frame(0, self._consumed)
            self._receive_window += self._consumed
            self._consumed = 0

    # -- control frames -----------------------------------------------------------------

    def _on_settings(self, frame: InboundFrame, out: list[H2Event]) -> None:
        if frame.stream_id != 0:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if frame.flags & wire.ACK:
            if payload:
                raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self._settings_seen = True
        for code, value in wire.parse_settings(payload):
            if code == wire.INITIAL_WINDOW_SIZE:
                self._set_initial_window(value, out)
            elif code == wire.MAX_FRAME_SIZE:
                if not wire.DEFAULT_MAX_FRAME_SIZE <= value <= wire.MAX_FRAME_SIZE_LIMIT:
                    raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif code == wire.ENABLE_PUSH and value > 1:
                raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1")
            # HEADER_TABLE_SIZE: our blocks use no dynamic table (see h2_hpack); the rest
            # (MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE, unknown codes) asks nothing of us.
        self._out += wire.SETTINGS_ACK

    def _set_initial_window(self, value: int, out: list[H2Event]) -> None:
        if value > wire.MAX_WINDOW:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
        delta = value - self._peer_initial_window
        self._peer_initial_window = value
        if not delta:
            return
        for stream in self._streams.values():
            stream.send_window += delta
            if stream.send_window > wire.MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "stream window over 2^31-1")
        if delta > 0:
            out.append(WindowOpened(0))

    def _on_ping(self, frame: InboundFrame) -> None:
        if frame.stream_id != 0:
            raise _ConnectionError(PROTOCOL_ERROR, "PING on a stream")
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if len(payload) != 8:
            raise _ConnectionError(FRAME_SIZE_ERROR, "PING of the wrong size")
        if not frame.flags & wire.ACK:
            self._out += wire.ping_ack_frame(payload)

    def _on_rst_stream(self, frame: InboundFrame, out: list[H2Event]) -> None:
        stream_id = frame.stream_id
        if stream_id == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if stream_id > self._highest_stream_id:
            raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if self._forget(stream_id, reset_by_us=False):
            out.append(StreamReset(stream_id, wire.uint32(payload)))

    def _on_priority(self, frame: InboundFrame, out: list[H2Event]) -> None:
        """Priorities are deprecated (RFC 9113 5.3.2) and ignored, once checked."""
        stream_id = frame.stream_id
        if stream_id == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if len(payload) != 5:
            self._stream_error(stream_id, FRAME_SIZE_ERROR, out)
        elif wire.uint31(payload) == stream_id:
            self._stream_error(stream_id, PROTOCOL_ERROR, out)

    def _on_goaway(self, frame: InboundFrame, out: list[H2Event]) -> None:
        if frame.stream_id != 0:
            raise _ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
        payload = frame.raw[wire.FRAME_HEADER_SIZE :]
        if len(payload) < 8:
            raise _ConnectionError(FRAME_SIZE_ERROR, "GOAWAY too short")
        if not self._peer_goaway:
            self._peer_goaway = True
            out.append(ConnectionClosed(wire.uint32(payload, 4)))

    # -- stream errors and closing ------------------------------------------------------

    def _on_closed_stream_frame(self, stream_id: int, what: str, out: list[H2Event]) -> None:
        """A frame on a stream that was open once and is closed now (RFC 9113 5.1)."""
        reset_by_us = self._closed.get(stream_id)
        if reset_by_us is None:
            # Long closed, or never opened (a lower identifier than the last new stream).
            raise _ConnectionError(PROTOCOL_ERROR, f"{what} on closed stream {stream_id}")
        if not reset_by_us:
            raise _ConnectionError(STREAM_CLOSED, f"{what} on closed stream {stream_id}")
        # Frames the client sent before our RST_STREAM arrived: ignored.

    def _stream_error(self, stream_id: int, error_code: int, out: list[H2Event]) -> None:
        if stream_id in self._streams:
            self._reset_known(stream_id, error_code, out)
        else:
            self._out += wire.rst_stream_frame(stream_id, error_code)

    def _refuse(self, stream_id: int, error_code: int) -> None:
        """Reset a stream the proxy core never saw; it counts as a reset."""
        self._out += wire.rst_stream_frame(stream_id, error_code)
        self._remember_closed(stream_id, reset_by_us=True)
        self._count_reset()

    def _reset_known(self, stream_id: int, error_code: int, out: list[H2Event]) -> None:
        self._out += wire.rst_stream_frame(stream_id, error_code)
        self._forget(stream_id, reset_by_us=True)
        out.append(StreamReset(stream_id, error_code))
        self._count_reset()

    def _count_reset(self) -> None:
        if self._resets.hit():
            raise FloodError(ENHANCE_YOUR_CALM, "too many refused or malformed streams")

    def _fail(self, reason: str, error_code: int) -> H2ProtocolFailure:
        """Queue GOAWAY `error_code`; the failure to raise."""
        last = self._highest_stream_id
        if self._last_stream_id is not None:
            last = min(last, self._last_stream_id)
        self._out += wire.goaway_frame(last, error_code)
        self._failure = H2ProtocolFailure(reason, error_code)
        return self._failure

    def _forget(self, stream_id: int, *, reset_by_us: bool) -> bool:
        """Stop tracking a stream; its unacknowledged bytes go back to the connection."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        self._remember_closed(stream_id, reset_by_us=reset_by_us)
        if stream.unacknowledged and self._failure is None:
            self._credit_connection(stream.unacknowledged)
        return True

    def _remember_closed(self, stream_id: int, *, reset_by_us: bool) -> None:
        closed = self._closed
        closed[stream_id] = reset_by_us
        if len(closed) > _RECENTLY_CLOSED:
            del closed[next(iter(closed))]

    def _close_if_done(self, stream_id: int, stream: _Stream) -> None:
        if not stream.remote_open and not stream.local_open:
            self._forget(stream_id, reset_by_us=False)

    def _sendable(self, stream_id: int) -> _Stream | None:
        if self._failure is not None:
            return None
        stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.local_open else None

    # -- outbound ---------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Every byte queued for the client since the last call."""
        if not self._out:
            return b""
        data = bytes(self._out)
        self._out.clear()
        return data

    def send_head(self, stream_id: int, status: int, headers: Headers, end_stream: bool) -> None:
        """The response head (or a 1xx); connection-specific fields are dropped."""
        fields = [(b":status", b"%d" % status)]
        fields += [field for field in headers if field[0] not in _CONNECTION_SPECIFIC]
        self._send_headers(stream_id, fields, end_stream)

    def send_trailers(self, stream_id: int, trailers: Headers) -> None:
        """Trailers, ending the stream."""
        fields = [
            field
            for field in trailers
            if field[0] not in _CONNECTION_SPECIFIC and not field[0].startswith(b":")
        ]
        self._send_headers(stream_id, fields, True)

    def _send_headers(self, stream_id: int, fields: Headers, end_stream: bool) -> None:
        stream = self._sendable(stream_id)
        if stream is None:
            return
        block = encode_block(fields)
        if not self._table_size_sent:
            self._table_size_sent = True
            block = TABLE_SIZE_ZERO + block
        wire.write_header_block(self._out, stream_id, block, end_stream, self._peer_max_frame)
        if end_stream:
            stream.local_open = False
            self._close_if_done(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send what the windows allow, in frames of the client's maximum; the bytes sent.

        `end_stream` applies only when all of `data` went out; the caller keeps the rest
        for a WindowOpened event.
        """
        stream = self._sendable(stream_id)
        if stream is None:
            return 0
        window = min(stream.send_window, self._send_window)
        size = len(data) if len(data) <= window else max(window, 0)
        finish = end_stream and size == len(data)
        if size or finish:
            wire.write_data(self._out, stream_id, data, size, finish, self._peer_max_frame)
        stream.send_window -= size
        self._send_window -= size
        if finish:
            stream.local_open = False
            self._close_if_done(stream_id, stream)
        return size

    def end_stream(self, stream_id: int) -> None:
        """End the response with an empty DATA frame."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """Abort a stream with RST_STREAM (CANCEL by default)."""
        if self._failure is None and stream_id in self._streams:
            self._out += wire.rst_stream_frame(stream_id, error_code)
        self._forget(stream_id, reset_by_us=True)

    def acknowledge(self, stream_id: int, flow_len: int) -> None:
        """The proxy consumed `flow_len` of a StreamData: let the client send as much again."""
        stream = self._streams.get(stream_id)
        if stream is None or self._failure is not None:
            return
        size = min(flow_len, stream.unacknowledged)
        if size > 0:
            stream.unacknowledged -= size
            self._credit(stream_id, stream, size)

    def goaway(self, error_code: int = NO_ERROR) -> None:
        """Tell the client to open no more streams; those already open can still finish."""
        if self._failure is not None:
            return
        last = self._highest_stream_id
        if self._last_stream_id is not None:
            last = min(last, self._last_stream_id)
        self._last_stream_id = last
        self._out += wire.goaway_frame(last, error_code)

    def window_for(self, stream_id: int) -> int:
        """How many bytes send_data could send on `stream_id` now."""
        stream = self._sendable(stream_id)
        if stream is None:
            return 0
        return max(0, min(stream.send_window, self._send_window))

    @property
    def open_streams(self) -> int:
        """Streams not yet closed in both directions."""
        return len(self._streams)


def _unpadded_payload(frame: InboundFrame) -> bytes:
    """A HEADERS payload without its padding; raises when the padding does not fit."""
    payload = frame.raw[wire.FRAME_HEADER_SIZE :]
    if not frame.flags & wire.PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]
