"""The downstream (server) side of HTTP/2: client bytes in, stream events out; responses out.

`H2ServerCodec` wraps the `h2` library. Inbound bytes first pass `FrameGate`
(bastion.http.h2_defence), which cuts them into whole frames and refuses the floods; each
frame then goes to h2 alone, so that the codec acts between two frames: a stream over
`max_concurrent_streams` is refused with REFUSED_STREAM before the next frame (h2 would end
the connection). Request heads are mapped by bastion.http.h2_request to the RequestHead the
HTTP/1.1 reader produces; a malformed one is a stream error (RST_STREAM, RFC 9113 8.1.1) and
the connection goes on, which is why h2's header validation runs there, per stream, and why a
body disagreeing with Content-Length is caught here before h2 sees the DATA frame (h2 would
make both connection errors). Refused and malformed streams count as resets for the
rapid-reset limit. GOAWAY is graceful both ways: after ours (`goaway()`) or the client's,
new streams are refused and those in flight can finish; h2 itself would send nothing more
after either, so the codec writes ours and keeps the client's from h2.

Sans-I/O: no sockets, no asyncio; the clock of the flood limits is injected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame, SettingsFrame

from bastion.http.events import Headers, RequestHead
from bastion.http.h2_defence import (
    DATA,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    FloodError,
    FrameGate,
    InboundFrame,
    RateMeter,
)
from bastion.http.h2_defence import H2Limits as H2Limits  # re-exported: part of this API
from bastion.http.h2_request import (
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    MalformedRequestError,
    request_head,
    request_trailers,
)

NO_ERROR = 0x0
CANCEL = 0x8

_DEFAULT_WINDOW = 65535  # every flow-control window before SETTINGS / WINDOW_UPDATE
# RFC 9113 8.2.2, plus TE: nothing connection-specific goes out on HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    head: RequestHead
    ended: bool  # END_STREAM on the HEADERS: no body, and no StreamEnded follows


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes
    flow_len: int  # flow-controlled length: pass to acknowledge() once consumed


@dataclass(frozen=True, slots=True)
class StreamEnded:
    stream_id: int
    trailers: Headers  # the end of the request body, with its trailers if any


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: the client reset it, or the codec did (malformed body/trailers)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    stream_id: int  # 0: the connection window (or every stream's): retry all blocked streams


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client sent GOAWAY: it opens no more streams; those in flight may still finish."""

    error_code: int


H2Event = RequestReceived | StreamData | StreamEnded | StreamReset | WindowOpened | ConnectionClosed


class H2ProtocolFailure(Exception):  # noqa: N818 (the name the server side uses)
    """The connection must end; its GOAWAY is already queued in `data_to_send()`."""

    def __init__(self, reason: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


@dataclass(slots=True)
class _InboundStream:
    """What the codec tracks of a request the proxy core was handed."""

    expected_length: int | None  # the body length Content-Length promises
    ended: bool
    received: int = 0
    unacknowledged: int = 0  # flow-controlled bytes handed out, not yet acknowledged


class H2ServerCodec:
    """One HTTP/2 client connection, server side.

    Sending on a stream that is no longer open (the client reset it, or the connection
    failed) does nothing: the event or exception that says why came out of `feed`. The bytes
    a reset or finished stream left unacknowledged go back to the connection window.
    """

    def __init__(self, limits: H2Limits, clock: Callable[[], float]) -> None:
        self._limits = limits
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,  # run per stream by request_head, see above
            normalize_inbound_headers=True,
            # What we send was parsed by llhttp (valid names and values), lowercased, and
            # stripped of connection-specific fields by send_head: h2's own pass would only
            # repeat that work on every response.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config)
        # No MAX_CONCURRENT_STREAMS for h2 itself: over it, h2 ends the connection.
        conn.local_settings = Settings(client=False, initial_values=_own_settings(limits))
        conn.max_inbound_frame_size = limits.max_frame_size
        conn.decoder.max_header_list_size = limits.max_header_list_size
        self._conn = conn
        self._resets = RateMeter(limits.max_resets_per_window, limits.window, clock)
        self._gate = FrameGate(
            max_frame_size=limits.max_frame_size,
            max_header_block=limits.max_continuation_bytes,
            resets=self._resets,
            control=RateMeter(limits.max_control_frames_per_window, limits.window, clock),
        )
        self._streams: dict[int, _InboundStream] = {}
        self._outbound = bytearray()  # frames built here, ahead of h2's buffer
        self._failure: H2ProtocolFailure | None = None
        self._peer_goaway = False  # the client sent GOAWAY
        self._last_stream_id: int | None = None  # set by goaway()

    # -- inbound ----------------------------------------------------------------------

    def start(self) -> None:
        """Queue the server preface: our SETTINGS, then the connection window's increment."""
        self._conn.initiate_connection()
        self._conn.data_to_send()  # h2's SETTINGS, without our stream limit: replaced
        settings = {int(code): value for code, value in _own_settings(self._limits).items()}
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = self._limits.max_concurrent_streams
        self._outbound += SettingsFrame(0, settings=settings).serialize()
        extra = self._limits.initial_window_size - _DEFAULT_WINDOW
        if extra > 0:
            self._conn.increment_flow_control_window(extra)

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
                if frame.kind == DATA:
                    self._check_body_length(frame, out)
                elif frame.kind == GOAWAY and self._take_goaway(frame, out):
                    continue
                self._dispatch(self._conn.receive_data(frame.raw), out)
        except FloodError as flood:
            raise self._fail(flood.reason, flood.error_code) from None
        except h2.exceptions.ProtocolError as error:
            raise self._fail(str(error), int(error.error_code)) from None
        return out

    def _dispatch(self, events: list[h2.events.Event], out: list[H2Event]) -> None:
        for event in events:
            match event:
                case h2.events.DataReceived():
                    self._on_data(event, out)
                case h2.events.WindowUpdated():
                    out.append(WindowOpened(event.stream_id))
                case h2.events.RequestReceived():
                    self._on_request(event, out)
                case h2.events.StreamEnded():
                    self._on_stream_ended(event.stream_id, [], out)
                case h2.events.TrailersReceived():
                    self._on_trailers(event, out)
                case h2.events.StreamReset():
                    if self._forget(event.stream_id):
                        out.append(StreamReset(event.stream_id, int(event.error_code)))
                case h2.events.RemoteSettingsChanged():
                    change = event.changed_settings.get(SettingCodes.INITIAL_WINDOW_SIZE)
                    if change is not None and change.new_value > (change.original_value or 0):
                        out.append(WindowOpened(0))
                case _:
                    pass  # pings, settings acks, priorities, unknown frames: h2 has answered

    def _take_goaway(self, frame: InboundFrame, out: list[H2Event]) -> bool:
        """Keep a well-formed GOAWAY from h2, which would then send nothing more."""
        if frame.stream_id != 0 or len(frame.raw) < 17 or self._gate.in_header_block:
            return False  # h2 refuses it
        if not self._peer_goaway:
            self._peer_goaway = True
            out.append(ConnectionClosed(int.from_bytes(frame.raw[13:17], "big")))
        return True

    def _on_request(self, event: h2.events.RequestReceived, out: list[H2Event]) -> None:
        stream_id = event.stream_id
        ended = event.stream_ended is not None
        if (
            self._peer_goaway
            or (self._last_stream_id is not None and stream_id > self._last_stream_id)
            or self._too_many_streams()
        ):
            self._refuse(stream_id, REFUSED_STREAM)
            return
        try:
            head, expected_length = request_head(event.headers, ended)
        except MalformedRequestError as malformed:
            self._refuse(stream_id, malformed.error_code)
            return
        self._streams[stream_id] = _InboundStream(expected_length, ended)
        out.append(RequestReceived(stream_id, head, ended))

    def _too_many_streams(self) -> bool:
        limit = self._limits.max_concurrent_streams
        # h2 keeps closed streams a while: counting open ones walks them all, so only
        # when there may be too many.
        return len(self._conn.streams) > limit and self._conn.open_inbound_streams > limit

    def _on_data(self, event: h2.events.DataReceived, out: list[H2Event]) -> None:
        stream = self._streams.get(event.stream_id)
        flow_len = event.flow_controlled_length
        if stream is None or not event.data:
            if flow_len:  # padding only: nothing to hand out, nothing to wait for
                self._conn.acknowledge_received_data(flow_len, event.stream_id)
            return
        stream.received += len(event.data)
        stream.unacknowledged += flow_len
        out.append(StreamData(event.stream_id, event.data, flow_len))

    def _on_trailers(self, event: h2.events.TrailersReceived, out: list[H2Event]) -> None:
        if event.stream_id not in self._streams:
            return
        try:
            trailers = request_trailers(event.headers)
        except MalformedRequestError as malformed:
            self._reset_known(event.stream_id, malformed.error_code, out)
            return
        self._on_stream_ended(event.stream_id, trailers, out)

    def _on_stream_ended(self, stream_id: int, trailers: Headers, out: list[H2Event]) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended:
            return
        stream.ended = True
        out.append(StreamEnded(stream_id, trailers))
        self._forget_if_closed(stream_id)

    def _check_body_length(self, frame: InboundFrame, out: list[H2Event]) -> None:
        """A body longer or shorter than Content-Length: a stream error, before h2 sees it."""
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.expected_length is None or frame.content_size < 0:
            return
        total = stream.received + frame.content_size
        if total > stream.expected_length or (
            frame.flags & END_STREAM and total != stream.expected_length
        ):
            self._reset_known(frame.stream_id, PROTOCOL_ERROR, out)

    def _refuse(self, stream_id: int, error_code: int) -> None:
        """Reset a stream the proxy core never saw; it counts as a reset."""
        self._conn.reset_stream(stream_id, error_code)
        self._count_reset()

    def _reset_known(self, stream_id: int, error_code: int, out: list[H2Event]) -> None:
        self._conn.reset_stream(stream_id, error_code)
        self._forget(stream_id)
        out.append(StreamReset(stream_id, error_code))
        self._count_reset()

    def _count_reset(self) -> None:
        if self._resets.hit():
            raise FloodError(ENHANCE_YOUR_CALM, "too many refused or malformed streams")

    def _fail(self, reason: str, error_code: int) -> H2ProtocolFailure:
        """Queue GOAWAY `error_code` unless h2 already did; the failure to raise."""
        if self._conn.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            last = self._conn.highest_inbound_stream_id
            if self._last_stream_id is not None:
                last = min(last, self._last_stream_id)
            self._conn.close_connection(error_code, last_stream_id=last)
        self._failure = H2ProtocolFailure(reason, error_code)
        return self._failure

    def _forget(self, stream_id: int) -> bool:
        """Stop tracking a stream; its unacknowledged bytes go back to the connection."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        if stream.unacknowledged and self._open():
            self._conn.acknowledge_received_data(stream.unacknowledged, stream_id)
        return True

    def _forget_if_closed(self, stream_id: int) -> None:
        h2_stream = self._conn.streams.get(stream_id)
        if h2_stream is None or h2_stream.closed:
            self._forget(stream_id)

    def _open(self) -> bool:
        return self._failure is None

    # -- outbound ---------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Every byte queued for the client since the last call."""
        data = self._conn.data_to_send()
        if self._outbound:
            data = bytes(self._outbound) + data
            self._outbound.clear()
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
        if not self._open():
            return
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            return
        if end_stream:
            self._forget_if_closed(stream_id)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send what the windows allow, in frames of the client's maximum; the bytes sent.

        `end_stream` applies only when all of `data` went out; the caller keeps the rest
        for a WindowOpened event.
        """
        if not self._open():
            return 0
        size = min(len(data), self.window_for(stream_id))
        finish = end_stream and size == len(data)
        step = self._conn.max_outbound_frame_size
        try:
            if size == len(data) and size <= step:
                if data or finish:
                    self._conn.send_data(stream_id, data, end_stream=finish)
            else:
                view = memoryview(data)
                for start in range(0, size, step):
                    last = finish and start + step >= size
                    piece = bytes(view[start : min(start + step, size)])
                    self._conn.send_data(stream_id, piece, end_stream=last)
        except h2.exceptions.StreamClosedError:
            return 0
        if finish:
            self._forget_if_closed(stream_id)
        return size

    def end_stream(self, stream_id: int) -> None:
        """End the response with an empty DATA frame."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """Abort a stream with RST_STREAM (CANCEL by default)."""
        if self._open():
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self._conn.reset_stream(stream_id, error_code)
        self._forget(stream_id)

    def acknowledge(self, stream_id: int, flow_len: int) -> None:
        """The proxy consumed `flow_len` of a StreamData: let the client send as much again."""
        stream = self._streams.get(stream_id)
        if stream is None or not self._open():
            return
        size = min(flow_len, stream.unacknowledged)
        if size > 0:
            stream.unacknowledged -= size
            self._conn.acknowledge_received_data(size, stream_id)

    def goaway(self, error_code: int = NO_ERROR) -> None:
        """Tell the client to open no more streams; those already open can still finish."""
        if not self._open():
            return
        last = self._conn.highest_inbound_stream_id
        if self._last_stream_id is not None:
            last = min(last, self._last_stream_id)
        self._last_stream_id = last
        self._outbound += self._conn.data_to_send()
        self._outbound += GoAwayFrame(0, last_stream_id=last, error_code=error_code).serialize()

    def window_for(self, stream_id: int) -> int:
        """How many bytes send_data could send on `stream_id` now."""
        h2_stream = self._conn.streams.get(stream_id)
        if h2_stream is None or h2_stream.closed or not self._open():
            return 0
        return max(0, self._conn.local_flow_control_window(stream_id))

    @property
    def open_streams(self) -> int:
        """Streams not yet closed in both directions."""
        return self._conn.open_inbound_streams


def _own_settings(limits: H2Limits) -> dict[SettingCodes, int]:
    return {
        SettingCodes.ENABLE_PUSH: 0,
        SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
        SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
        SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
    }
