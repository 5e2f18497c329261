"""H2ServerCodec against RFC 9113 and RFC 7541, in the spirit of h2spec: frames in, frames out.

A client made of hand-built frames talks to the codec; every check reads what the codec wrote
(GOAWAY and its code, RST_STREAM and its code, ACKs, WINDOW_UPDATEs, how HEADERS and DATA are
cut) and the events or the H2ProtocolFailure `feed` gave back, never the codec's internals:
the same tests must pass whatever implements the codec.

Where the RFC lets an endpoint answer a stream error with a connection error (RFC 9113 5.4.1:
"An endpoint MAY choose to treat a stream error as a connection error"), the check accepts
both and says so. Malformed request heads, trailers and bodies are the exception: the codec
promises a stream error and a connection that goes on (RFC 9113 8.1.1), and that is what is
checked, but for the two cases marked where a connection error is accepted too.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from bastion.http.events import Headers
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

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types, flags, error codes and settings of RFC 9113 (6, 7, 6.5.2).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0x0, 0x1, 0x2, 0x3, 0x4, 0x5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x6, 0x7, 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9

HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x4, 0x5

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535


def request(method: bytes = b"GET", path: bytes = b"/", *extra: tuple[bytes, bytes]) -> Headers:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"example.test"),
        (b":path", path),
        *extra,
    ]


# -- building and reading frames --------------------------------------------------------------


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame as it goes on the wire; `stream_id` may carry the reserved bit."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def settings(*pairs: tuple[int, int], flags: int = 0) -> bytes:
    payload = b"".join(code.to_bytes(2, "big") + value.to_bytes(4, "big") for code, value in pairs)
    return frame(SETTINGS, flags, 0, payload)


SETTINGS_ACK = settings(flags=ACK)


def ping(payload: bytes = b"pingpong", flags: int = 0, stream_id: int = 0) -> bytes:
    return frame(PING, flags, stream_id, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def priority(stream_id: int, depends_on: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, stream_id, depends_on.to_bytes(4, "big") + bytes((weight,)))


def goaway(last_stream_id: int = 0, code: int = NO_ERROR, stream_id: int = 0) -> bytes:
    payload = last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big")
    return frame(GOAWAY, 0, stream_id, payload)


def data(stream_id: int, body: bytes, flags: int = 0) -> bytes:
    return frame(DATA, flags, stream_id, body)


def padded(body: bytes, pad_length: int) -> bytes:
    """A PADDED frame's payload: Pad Length, the content, that many zero octets."""
    return bytes((pad_length,)) + body + bytes(pad_length)


def hpack_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: `value` on a `prefix_bits` prefix, the first octet's high bits `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def frames_of(wire: bytes) -> list[Frame]:
    """The frames in `wire`, parsed with hyperframe."""
    frames: list[Frame] = []
    view = memoryview(wire)
    while view:
        parsed, length = Frame.parse_frame_header(view[:9])
        parsed.parse_body(view[9 : 9 + length])
        frames.append(parsed)
        view = view[9 + length :]
    return frames


class Client:
    """Hand-built frames into the codec; the codec's frames parsed, its header blocks decoded."""

    def __init__(
        self,
        limits: H2Limits | None = None,
        *,
        client_settings: bytes | None = None,
        handshake: bool = True,
    ) -> None:
        self.codec = H2ServerCodec(limits or H2Limits(), lambda: 0.0)
        self.codec.start()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.handshake_events: list[H2Event] = []
        self.server_preface = self.read()
        if handshake:
            first = settings() if client_settings is None else client_settings
            self.handshake_events = self.feed(PREFACE, first, SETTINGS_ACK)
            assert [type(f) for f in self.read()] == [SettingsFrame]  # the ACK of `first`

    def feed(self, *frames: bytes) -> list[H2Event]:
        return self.codec.feed(b"".join(frames))

    def read(self) -> list[Frame]:
        return frames_of(self.codec.data_to_send())

    def block(self, fields: Headers) -> bytes:
        return self.encoder.encode(fields)

    def headers(self, stream_id: int, fields: Headers, *, end_stream: bool = True) -> bytes:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream_id, self.block(fields))

    def open(self, stream_id: int, fields: Headers | None = None, end: bool = True) -> None:
        """Open a stream with a well-formed request; the codec must hand it over."""
        events = self.feed(self.headers(stream_id, fields or request(), end_stream=end))
        assert [(type(e), e.stream_id) for e in events] == [(RequestReceived, stream_id)]

    def decode(self, frames: Iterable[Frame]) -> list[tuple[int, Headers]]:
        """The header blocks in `frames`, decoded in order; checks their CONTINUATIONs."""
        blocks: list[tuple[int, Headers]] = []
        pending: tuple[int, bytes] | None = None
        for item in frames:
            if pending is not None:
                # RFC 9113 6.10: only the block's own CONTINUATIONs until END_HEADERS.
                assert isinstance(item, ContinuationFrame) and item.stream_id == pending[0]
                pending = (pending[0], pending[1] + item.data)
            elif isinstance(item, HeadersFrame):
                pending = (item.stream_id, item.data)
            else:
                assert not isinstance(item, ContinuationFrame)
                continue
            if "END_HEADERS" in item.flags:
                fields = self.decoder.decode(pending[1], raw=True)
                blocks.append((pending[0], [(bytes(n), bytes(v)) for n, v in fields]))
                pending = None
        assert pending is None
        return blocks

    def assert_alive(self, stream_id: int) -> None:
        """The connection still serves: a new request is handed over, a PING answered."""
        self.open(stream_id)
        assert self.feed(ping(b"stillup!")) == []
        assert [f.opaque_data for f in self.read() if isinstance(f, PingFrame)] == [b"stillup!"]


def goaway_codes(frames: Iterable[Frame]) -> list[int]:
    return [f.error_code for f in frames if isinstance(f, GoAwayFrame)]


def resets(frames: Iterable[Frame]) -> list[tuple[int, int]]:
    return [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)]


def connection_error(
    client: Client, wire: bytes, code: int, *, goaway_optional: bool = False
) -> None:
    """`wire` ends the connection with `code`: raised, and in the GOAWAY queued for the client."""
    with pytest.raises(H2ProtocolFailure) as caught:
        client.codec.feed(wire)
    assert caught.value.error_code == code
    codes = goaway_codes(client.read())
    if not (goaway_optional and not codes):
        assert codes == [code]
    with pytest.raises(H2ProtocolFailure):  # and the connection stays failed
        client.codec.feed(ping())


def stream_or_connection_error(client: Client, wire: bytes, stream_id: int, code: int) -> str:
    """A stream error `code` on `stream_id`, or the connection error RFC 9113 5.4.1 allows.

    Returns which one it was; nothing of the stream reaches the proxy core either way.
    """
    try:
        events = client.codec.feed(wire)
    except H2ProtocolFailure as failure:
        assert failure.error_code == code
        assert goaway_codes(client.read()) == [code]
        return "connection"
    assert resets(client.read()) == [(stream_id, code)]
    assert not [e for e in events if isinstance(e, (RequestReceived, StreamData, StreamEnded))]
    return "stream"


def assert_reset_once(frames: Iterable[Frame], stream_id: int, code: int) -> None:
    """One RST_STREAM `code` for the stream; at most a STREAM_CLOSED one more.

    RFC 9113 5.4.2: an endpoint SHOULD NOT send more than one RST_STREAM for a stream, but may
    answer the frame that broke the stream again once it has reset it (a SHOULD, tolerated).
    """
    sent = resets(frames)
    assert sent[:1] == [(stream_id, code)]
    assert set(sent[1:]) <= {(stream_id, STREAM_CLOSED)}


def sent_data(frames: Iterable[Frame]) -> list[tuple[int, int, bool]]:
    """(stream, length, END_STREAM) of each DATA frame."""
    return [
        (f.stream_id, len(f.data), "END_STREAM" in f.flags)
        for f in frames
        if isinstance(f, DataFrame)
    ]


# -- 3.4 connection preface ------------------------------------------------------------------


def test_server_preface_is_a_settings_frame_first() -> None:
    client = Client(handshake=False)
    first = client.server_preface[0]
    assert isinstance(first, SettingsFrame)
    assert first.stream_id == 0 and "ACK" not in first.flags


@pytest.mark.parametrize(
    "preface",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n", id="http1-request"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", id="garbled"),
        pytest.param(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n", id="wrong-version"),
    ],
)
def test_wrong_client_preface_is_a_protocol_error(preface: bytes) -> None:
    # RFC 9113 3.4: a connection error PROTOCOL_ERROR; its GOAWAY MAY be omitted.
    client = Client(handshake=False)
    connection_error(client, preface + settings(), PROTOCOL_ERROR, goaway_optional=True)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(ping(), id="ping"),
        pytest.param(window_update(0, 1024), id="window-update"),
    ],
)
def test_first_client_frame_not_settings_is_a_protocol_error(first: bytes) -> None:
    client = Client(handshake=False)
    connection_error(client, PREFACE + first, PROTOCOL_ERROR)


def test_preface_split_byte_by_byte_is_accepted() -> None:
    client = Client(handshake=False)
    for byte in PREFACE + settings():
        assert client.feed(bytes((byte,))) == []
    assert [type(f) for f in client.read()] == [SettingsFrame]


# -- 4.1, 4.2 frame format and sizes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        pytest.param(frame(SETTINGS, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="settings-len-7"),
        pytest.param(frame(SETTINGS, 0, 0, bytes(5)), FRAME_SIZE_ERROR, id="settings-len-5"),
        pytest.param(frame(PING, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="ping-len-7"),
        pytest.param(frame(PING, 0, 0, bytes(9)), FRAME_SIZE_ERROR, id="ping-len-9"),
        pytest.param(frame(PING, ACK, 0, bytes(6)), FRAME_SIZE_ERROR, id="ping-ack-len-6"),
        pytest.param(frame(WINDOW_UPDATE, 0, 0, b"\x00\x04\x00"), FRAME_SIZE_ERROR, id="wu-len-3"),
        pytest.param(
            frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x04\x00\x00"), FRAME_SIZE_ERROR, id="wu-len-5"
        ),
        # RFC 9113 6.9: a connection error whatever the stream.
        pytest.param(
            frame(WINDOW_UPDATE, 0, 1, b"\x00\x00\x04"), FRAME_SIZE_ERROR, id="wu-stream-len-3"
        ),
        pytest.param(frame(RST_STREAM, 0, 1, bytes(3)), FRAME_SIZE_ERROR, id="rst-len-3"),
        pytest.param(frame(RST_STREAM, 0, 1, bytes(5)), FRAME_SIZE_ERROR, id="rst-len-5"),
        pytest.param(frame(GOAWAY, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="goaway-len-7"),
    ],
)
def test_control_frame_of_a_wrong_length_is_a_frame_size_error(wire: bytes, code: int) -> None:
    client = Client()
    client.open(1, end=False)
    connection_error(client, wire, code)


def test_settings_ack_with_a_payload_is_a_frame_size_error() -> None:
    connection_error(Client(), settings((MAX_FRAME_SIZE, 16384), flags=ACK), FRAME_SIZE_ERROR)


@pytest.mark.parametrize("length", [4, 6])
def test_priority_of_a_wrong_length_is_a_frame_size_error(length: int) -> None:
    # RFC 9113 6.3: a stream error FRAME_SIZE_ERROR; 5.4.1 allows a connection error.
    client = Client()
    client.open(1, end=False)
    stream_or_connection_error(client, frame(PRIORITY, 0, 1, bytes(length)), 1, FRAME_SIZE_ERROR)


@pytest.mark.parametrize("kind", [HEADERS, PING, 0xEE])
def test_frame_over_our_max_frame_size_is_a_frame_size_error(kind: int) -> None:
    # RFC 9113 4.2: over SETTINGS_MAX_FRAME_SIZE; a connection error for a frame carrying a
    # field block and for any frame on stream 0.
    client = Client()
    client.open(1, end=False)
    stream_id = 3 if kind == HEADERS else 0
    connection_error(client, frame(kind, END_HEADERS, stream_id, bytes(16385)), FRAME_SIZE_ERROR)


def test_data_over_our_max_frame_size_is_a_frame_size_error() -> None:
    # RFC 9113 4.2: FRAME_SIZE_ERROR; for DATA on a stream a stream error would do (and so,
    # by 5.4.1, does a connection error).
    client = Client()
    client.open(1, request(b"POST"), end=False)
    if stream_or_connection_error(client, data(1, bytes(16385)), 1, FRAME_SIZE_ERROR) == "stream":
        client.assert_alive(3)


def test_frames_up_to_our_advertised_max_frame_size_are_accepted() -> None:
    client = Client(H2Limits(max_frame_size=32768))
    client.open(1, request(b"POST"), end=False)
    events = client.feed(data(1, b"d" * 32768, END_STREAM))
    assert events == [StreamData(1, b"d" * 32768, 32768), StreamEnded(1, [])]


def test_unknown_frame_types_are_ignored() -> None:
    # RFC 9113 5.5: on stream 0, an open stream, or a stream never used.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    unknown = [frame(0xEE, 0, 0, b"ext"), frame(0x7F, 0xFF, 1, b"x" * 40), frame(0x20, 0, 9)]
    assert client.feed(*unknown) == []
    assert client.read() == []
    assert client.feed(data(1, b"ok", END_STREAM)) == [StreamData(1, b"ok", 2), StreamEnded(1, [])]
    client.assert_alive(3)


def test_unknown_flags_are_ignored() -> None:
    # RFC 9113 4.1: flags with no meaning for the frame type MUST be ignored.
    client = Client()
    assert client.feed(ping(b"flagged!", flags=0xFE)) == []
    (pong,) = client.read()
    assert isinstance(pong, PingFrame) and "ACK" in pong.flags
    assert pong.opaque_data == b"flagged!"
    head_flags = END_HEADERS | 0x02 | 0x10 | 0x40 | 0x80
    (event,) = client.feed(frame(HEADERS, head_flags, 1, client.block(request(b"POST"))))
    assert isinstance(event, RequestReceived) and not event.ended
    assert client.feed(data(1, b"body", 0xF6)) == [StreamData(1, b"body", 4)]
    assert client.feed(settings(flags=0xFE)) == []
    (ack,) = client.read()
    assert isinstance(ack, SettingsFrame) and "ACK" in ack.flags


def test_reserved_bit_of_the_stream_identifier_is_ignored() -> None:
    # RFC 9113 4.1: the R bit MUST be ignored when receiving.
    client = Client()
    assert client.feed(ping(b"reserved", stream_id=1 << 31)) == []
    (pong,) = client.read()
    assert isinstance(pong, PingFrame) and pong.opaque_data == b"reserved"
    wire = frame(HEADERS, END_HEADERS | END_STREAM, (1 << 31) | 1, client.block(request()))
    (event,) = client.feed(wire)
    assert isinstance(event, RequestReceived) and event.stream_id == 1


# -- 5.1 stream states and identifiers -------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(
            frame(SETTINGS, 0, 1, MAX_FRAME_SIZE.to_bytes(2, "big") + (16384).to_bytes(4, "big")),
            id="settings",
        ),
        pytest.param(ping(stream_id=1), id="ping"),
        pytest.param(goaway(stream_id=1), id="goaway"),
    ],
)
def test_connection_frame_on_a_stream_is_a_protocol_error(wire: bytes) -> None:
    client = Client()
    client.open(1, end=False)
    connection_error(client, wire, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(
            frame(HEADERS, END_HEADERS | END_STREAM, 0, Encoder().encode(request())), id="headers"
        ),
        pytest.param(data(0, b"body"), id="data"),
        pytest.param(rst_stream(0), id="rst-stream"),
        pytest.param(priority(0, 1), id="priority"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 0, b"\x82"), id="continuation"),
    ],
)
def test_stream_frame_on_stream_zero_is_a_protocol_error(wire: bytes) -> None:
    client = Client()
    client.open(1, end=False)
    connection_error(client, wire, PROTOCOL_ERROR)


def test_even_stream_identifier_from_the_client_is_a_protocol_error() -> None:
    # RFC 9113 5.1.1: client streams are odd-numbered.
    client = Client()
    connection_error(client, client.headers(2, request()), PROTOCOL_ERROR)


def test_stream_identifier_lower_than_a_previous_one_is_a_protocol_error() -> None:
    # RFC 9113 5.1.1: opening stream 5 closed the idle stream 3 for good.
    client = Client()
    client.open(5)
    connection_error(client, client.headers(3, request()), PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(data(3, b"body", END_STREAM), id="data"),
        pytest.param(rst_stream(3), id="rst-stream"),
        pytest.param(window_update(3, 4096), id="window-update"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 3, b"\x82"), id="continuation"),
    ],
)
def test_frame_on_an_idle_stream_is_a_protocol_error(wire: bytes) -> None:
    # RFC 9113 5.1 idle: anything but HEADERS or PRIORITY is a connection error PROTOCOL_ERROR.
    client = Client()
    client.open(1, end=False)
    connection_error(client, wire, PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", ["data", "headers"])
def test_frame_on_a_half_closed_remote_stream_is_stream_closed(kind: str) -> None:
    # RFC 9113 5.1 half-closed (remote): a stream error STREAM_CLOSED (5.4.1: or connection).
    client = Client()
    client.open(1, request(b"GET"), end=True)
    wire = (
        data(1, b"late", END_STREAM)
        if kind == "data"
        else client.headers(1, [(b"x-late", b"1")], end_stream=True)
    )
    if stream_or_connection_error(client, wire, 1, STREAM_CLOSED) == "stream":
        client.assert_alive(3)


def test_window_update_rst_stream_and_priority_on_a_half_closed_remote_stream_are_fine() -> None:
    # RFC 9113 5.1 half-closed (remote): WINDOW_UPDATE, PRIORITY and RST_STREAM are allowed.
    client = Client()
    client.open(1)
    assert client.feed(window_update(1, 4096), priority(1, 0)) == [WindowOpened(1)]
    assert client.feed(rst_stream(1, CANCEL)) == [StreamReset(1, CANCEL)]
    assert client.read() == []
    client.assert_alive(3)


@pytest.mark.parametrize("kind", ["data", "headers", "window-update"])
def test_frames_after_the_client_reset_the_stream_never_reach_the_core(kind: str) -> None:
    # RFC 9113 5.1 closed: nothing but PRIORITY may follow; receiving anything else MAY be a
    # connection error STREAM_CLOSED, RFC 7540 made it a stream error: either, or ignoring it.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    assert client.feed(rst_stream(1, CANCEL)) == [StreamReset(1, CANCEL)]
    assert client.feed(priority(1, 0)) == []
    if kind == "headers":
        wire = client.headers(1, [(b"x-late", b"1")], end_stream=True)
    else:
        wire = data(1, b"late") if kind == "data" else window_update(1, 4096)
    try:
        events = client.feed(wire)
    except H2ProtocolFailure as failure:
        assert failure.error_code == STREAM_CLOSED
        assert goaway_codes(client.read()) == [STREAM_CLOSED]
        return
    assert not [e for e in events if not isinstance(e, WindowOpened)]
    assert set(resets(client.read())) <= {(1, STREAM_CLOSED)}
    client.assert_alive(3)


def test_frames_after_our_reset_are_discarded() -> None:
    # RFC 9113 5.1 closed: frames the client sent before it saw our RST_STREAM are
    # "minimally processed and discarded": no connection error, nothing for the core; the
    # field block still updates the HPACK state and DATA still counts for flow control.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    client.codec.reset(1, CANCEL)
    assert resets(client.read()) == [(1, CANCEL)]
    assert client.feed(data(1, b"x" * 1000), window_update(1, 100)) == []
    assert client.feed(client.headers(1, [(b"x-trailer", b"1")], end_stream=True)) == []
    assert set(resets(client.read())) <= {(1, STREAM_CLOSED)}
    fields = [(b"x-indexed", b"after the reset")]  # indexed in the block the codec discarded
    (event,) = client.feed(client.headers(3, request(b"GET", b"/", *fields)))
    assert isinstance(event, RequestReceived) and event.head.headers[-1] == fields[0]


@pytest.mark.parametrize("kind", ["data", "headers"])
def test_frame_on_a_stream_closed_both_ways_is_stream_closed(kind: str) -> None:
    # RFC 9113 5.1 closed: a frame after END_STREAM both ways MAY be a connection error
    # STREAM_CLOSED; a stream error STREAM_CLOSED is accepted too.
    client = Client()
    client.open(1)
    client.codec.send_head(1, 204, [], True)
    client.read()
    wire = (
        data(1, b"late", END_STREAM)
        if kind == "data"
        else client.headers(1, [(b"x-late", b"1")], end_stream=True)
    )
    stream_or_connection_error(client, wire, 1, STREAM_CLOSED)


def test_streams_over_max_concurrent_streams_are_refused() -> None:
    # RFC 9113 5.1.2: a stream error PROTOCOL_ERROR or REFUSED_STREAM.
    client = Client(H2Limits(max_concurrent_streams=2))
    client.open(1, end=False)
    client.open(3, end=False)
    assert client.feed(client.headers(5, request())) == []
    ((stream_id, code),) = resets(client.read())
    assert stream_id == 5 and code in (PROTOCOL_ERROR, REFUSED_STREAM)
    assert client.feed(data(1, b"", END_STREAM)) == [StreamEnded(1, [])]
    client.codec.send_head(1, 204, [], True)
    client.read()
    client.open(7)


def test_goaway_of_a_connection_error_names_the_last_stream_processed() -> None:
    # RFC 9113 6.8: the last peer-initiated stream that was or might be processed.
    client = Client()
    client.open(1)
    client.open(3, end=False)
    with pytest.raises(H2ProtocolFailure):
        client.feed(ping(stream_id=3))
    (last,) = [f for f in client.read() if isinstance(f, GoAwayFrame)]
    assert (last.last_stream_id, last.error_code) == (3, PROTOCOL_ERROR)


def test_push_promise_from_the_client_is_a_protocol_error() -> None:
    # RFC 9113 8.4: a client cannot push.
    client = Client()
    client.open(1, end=False)
    payload = (2).to_bytes(4, "big") + client.block(request())
    connection_error(client, frame(PUSH_PROMISE, END_HEADERS, 1, payload), PROTOCOL_ERROR)


# -- 4.3, 6.2, 6.10 header blocks ------------------------------------------------------------


@pytest.mark.parametrize(
    "opened",
    [
        pytest.param(False, id="alone"),
        pytest.param(True, id="after-end-headers"),
    ],
)
def test_continuation_without_an_open_header_block_is_a_protocol_error(opened: bool) -> None:
    # RFC 9113 6.10: a CONTINUATION must follow HEADERS or CONTINUATION without END_HEADERS.
    client = Client()
    if opened:
        client.open(1, end=False)
    wire = frame(CONTINUATION, END_HEADERS, 1, client.block([(b"x-a", b"1")]))
    connection_error(client, wire, PROTOCOL_ERROR)


def test_continuation_after_a_continuation_with_end_headers_is_a_protocol_error() -> None:
    client = Client()
    block = client.block(request())
    wire = (
        frame(HEADERS, END_STREAM, 1, block[:4])
        + frame(CONTINUATION, END_HEADERS, 1, block[4:])
        + frame(CONTINUATION, END_HEADERS, 1, b"")
    )
    connection_error(client, wire, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "interloper",
    [
        pytest.param(data(1, b"x"), id="data-same-stream"),
        pytest.param(ping(), id="ping"),
        pytest.param(priority(1, 0), id="priority-same-stream"),
        pytest.param(priority(3, 0), id="priority-other-stream"),
        pytest.param(settings(), id="settings"),
        pytest.param(window_update(0, 4096), id="window-update"),
        pytest.param(rst_stream(1), id="rst-stream"),
        pytest.param(frame(HEADERS, END_HEADERS, 3, b"\x82\x87\x84"), id="headers-other-stream"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 3, b""), id="continuation-other-stream"),
        pytest.param(frame(CONTINUATION, END_HEADERS, 0, b""), id="continuation-stream-zero"),
        pytest.param(frame(0xEE, 0, 0, b"ext"), id="unknown-type"),
    ],
)
def test_other_frame_inside_a_header_block_is_a_protocol_error(interloper: bytes) -> None:
    # RFC 9113 4.3, 6.10: a header block is contiguous; RFC 9113 5.5 for unknown types.
    client = Client()
    block = client.block(request())
    wire = frame(HEADERS, END_STREAM, 1, block[:4]) + interloper
    connection_error(client, wire + frame(CONTINUATION, END_HEADERS, 1, block[4:]), PROTOCOL_ERROR)


def test_header_block_over_several_continuations_is_decoded() -> None:
    client = Client()
    fields = request(b"GET", b"/", *[(b"x-field-%d" % i, b"v" * 50) for i in range(20)])
    block = client.block(fields)
    pieces = [block[i : i + 97] for i in range(0, len(block), 97)]
    assert len(pieces) >= 5
    wire = frame(HEADERS, END_STREAM, 1, pieces[0])
    wire += b"".join(frame(CONTINUATION, 0, 1, piece) for piece in pieces[1:-1])
    wire += frame(CONTINUATION, END_HEADERS, 1, pieces[-1])
    assert client.feed(wire[:50]) == []
    (event,) = client.feed(wire[50:])
    assert isinstance(event, RequestReceived) and event.ended
    assert event.head.headers == [(b"host", b"example.test"), *fields[4:]]


def test_empty_continuation_ends_a_header_block() -> None:
    client = Client()
    wire = frame(HEADERS, END_STREAM, 1, client.block(request())) + frame(
        CONTINUATION, END_HEADERS, 1, b""
    )
    (event,) = client.feed(wire)
    assert isinstance(event, RequestReceived)


def test_padded_headers_and_data_are_accepted_and_padding_counts_for_flow_control() -> None:
    client = Client()
    block = client.block(request(b"POST"))
    head = frame(HEADERS, END_HEADERS | PADDED, 1, padded(block, 30))
    (event,) = client.feed(head)
    assert isinstance(event, RequestReceived) and not event.ended
    assert client.feed(frame(DATA, PADDED, 1, padded(b"hello", 10))) == [
        StreamData(1, b"hello", 16)  # RFC 9113 6.9.1: the whole payload, Pad Length included
    ]
    assert client.feed(frame(DATA, PADDED | END_STREAM, 1, padded(b"", 0))) == [StreamEnded(1, [])]


def test_padded_headers_with_priority_are_accepted() -> None:
    client = Client()
    weight_and_dependency = (0).to_bytes(4, "big") + b"\x10"
    payload = padded(weight_and_dependency + client.block(request()), 7)
    (event,) = client.feed(
        frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIORITY_FLAG, 1, payload)
    )
    assert isinstance(event, RequestReceived) and event.stream_id == 1


@pytest.mark.parametrize("kind", [DATA, HEADERS])
@pytest.mark.parametrize("excess", [0, 1, 200])
def test_padding_as_long_as_the_payload_is_a_protocol_error(kind: int, excess: int) -> None:
    # RFC 9113 6.1, 6.2: Pad Length >= payload length is a connection error PROTOCOL_ERROR.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    content = b"abc" if kind == DATA else client.block(request())
    payload = bytes((len(content) + 1 + excess,)) + content  # Pad Length counts itself
    stream_id = 1 if kind == DATA else 3
    flags = PADDED | (END_HEADERS if kind == HEADERS else 0)
    connection_error(client, frame(kind, flags, stream_id, payload), PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", [DATA, HEADERS])
def test_padded_frame_too_short_for_its_pad_length_is_a_connection_error(kind: int) -> None:
    # No room for the Pad Length octet: "too small to contain mandatory frame data" (RFC 9113
    # 4.2, FRAME_SIZE_ERROR) or a padding error (6.1, 6.2, PROTOCOL_ERROR); either code.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    stream_id, flags = (1, PADDED) if kind == DATA else (3, PADDED | END_HEADERS)
    with pytest.raises(H2ProtocolFailure) as caught:
        client.feed(frame(kind, flags, stream_id, b""))
    assert caught.value.error_code in (PROTOCOL_ERROR, FRAME_SIZE_ERROR)
    assert goaway_codes(client.read()) == [caught.value.error_code]


def huffman(codes: bytes) -> bytes:
    """A Huffman-coded string literal of those raw octets (RFC 7541 5.2)."""
    return hpack_integer(len(codes), 7, 0x80) + codes


HPACK_ERRORS = {
    # RFC 7541 2.3.3, 6.1: index 0, and indexes past the static and dynamic tables (the
    # request block before the tail adds a few entries: 1000 is past them all).
    "index-zero": b"\x80",
    "index-past-the-tables": hpack_integer(1000, 7, 0x80),
    "literal-name-index-past-the-tables": hpack_integer(1000, 6, 0x40) + b"\x01v",
    # RFC 7541 5.2: the EOS symbol, padding over 7 bits, padding not the MSBs of EOS.
    "huffman-eos": b"\x40" + huffman(b"\xff\xff\xff\xff") + b"\x01v",
    "huffman-long-padding": b"\x40" + huffman(b"\x1f\xff") + b"\x01v",
    "huffman-zero-padding": b"\x40" + huffman(b"\x18") + b"\x01v",
    # RFC 7541 5.1, 5.2: a string longer than the block.
    "truncated-string": b"\x40\x0ax-abc",
    "truncated-integer": b"\x7f\xff",
}


@pytest.mark.parametrize("tail", list(HPACK_ERRORS.values()), ids=list(HPACK_ERRORS))
def test_hpack_decoding_error_is_a_compression_error(tail: bytes) -> None:
    # RFC 9113 4.3: a field block that does not decode is a connection error COMPRESSION_ERROR.
    client = Client()
    wire = frame(HEADERS, END_HEADERS | END_STREAM, 1, client.block(request()) + tail)
    connection_error(client, wire, COMPRESSION_ERROR)


TABLE_SIZE_ERRORS = {
    # RFC 7541 4.2, 6.3: over the SETTINGS_HEADER_TABLE_SIZE we use (4096, the default).
    "over-the-settings-value": hpack_integer(4097, 5, 0x20) + Encoder().encode(request()),
    # RFC 7541 4.2: a size update only at the start of a block.
    "after-a-field": Encoder().encode(request()) + hpack_integer(0, 5, 0x20),
}


@pytest.mark.parametrize("block", list(TABLE_SIZE_ERRORS.values()), ids=list(TABLE_SIZE_ERRORS))
def test_bad_dynamic_table_size_update_is_a_compression_error(block: bytes) -> None:
    # RFC 7541 4.2, 6.3: a decoding error, so RFC 9113 4.3: a connection error.
    client = Client()
    connection_error(client, frame(HEADERS, END_HEADERS | END_STREAM, 1, block), COMPRESSION_ERROR)


def test_dynamic_table_size_update_within_the_limit_is_accepted() -> None:
    client = Client()
    block = hpack_integer(0, 5, 0x20) + hpack_integer(4096, 5, 0x20) + client.block(request())
    (event,) = client.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert isinstance(event, RequestReceived)


def test_dynamic_table_is_kept_across_requests() -> None:
    client = Client()
    fields = request(b"GET", b"/same", (b"x-trace", b"abc123"), (b"user-agent", b"conformance"))
    first = client.block(fields)
    second = client.block(fields)
    assert len(second) < len(first) and all(octet & 0x80 for octet in second)  # all indexed
    (one,) = client.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
    (two,) = client.feed(frame(HEADERS, END_HEADERS | END_STREAM, 3, second))
    assert isinstance(one, RequestReceived) and isinstance(two, RequestReceived)
    assert two.head == one.head


def test_field_blocks_of_refused_streams_still_update_the_dynamic_table() -> None:
    # RFC 9113 4.3: every field block is decoded, even for a stream the codec refuses.
    client = Client()
    indexed = (b"x-kept", b"in the table")
    assert client.feed(client.headers(1, [*request(), (b"X-Bad", b"1"), indexed])) == []
    assert resets(client.read()) == [(1, PROTOCOL_ERROR)]
    (event,) = client.feed(client.headers(3, [*request(), indexed]))
    assert isinstance(event, RequestReceived) and event.head.headers[-1] == indexed


# -- 8.1, 8.2, 8.3 request validation: stream errors, the connection goes on -----------------

AUTHORITY = (b":authority", b"example.test")
MALFORMED = {
    "uppercase-name": request(b"GET", b"/", (b"X-Upper", b"1")),
    "pseudo-after-regular": [(b"accept", b"*/*"), *request()],
    "pseudo-between-regular": [*request()[:2], (b"accept", b"*/*"), *request()[2:]],
    "unknown-pseudo": request(b"GET", b"/", (b":foo", b"bar")),
    "status-in-request": [(b":status", b"200"), *request()],
    "no-method": [(b":scheme", b"https"), AUTHORITY, (b":path", b"/")],
    "no-scheme": [(b":method", b"GET"), AUTHORITY, (b":path", b"/")],
    "no-path": [(b":method", b"GET"), (b":scheme", b"https"), AUTHORITY],
    "two-methods": [(b":method", b"GET"), *request()],
    "two-schemes": [*request(), (b":scheme", b"https")],
    "two-paths": [*request()[:3], (b":path", b"/a"), (b":path", b"/b")],
    "two-authorities": [*request(), AUTHORITY],
    "empty-path": [(b":method", b"GET"), (b":scheme", b"https"), AUTHORITY, (b":path", b"")],
    "connection": request(b"GET", b"/", (b"connection", b"keep-alive")),
    "keep-alive": request(b"GET", b"/", (b"keep-alive", b"timeout=5")),
    "transfer-encoding": request(b"GET", b"/", (b"transfer-encoding", b"chunked")),
    "upgrade": request(b"GET", b"/", (b"upgrade", b"h2c")),
    "proxy-connection": request(b"GET", b"/", (b"proxy-connection", b"close")),
    "te-gzip": request(b"GET", b"/", (b"te", b"gzip")),
    "te-trailers-and-gzip": request(b"GET", b"/", (b"te", b"trailers, gzip")),
    "length-with-end-stream": request(b"POST", b"/", (b"content-length", b"3")),
}


@pytest.mark.parametrize("fields", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_is_a_stream_error_and_the_connection_goes_on(fields: Headers) -> None:
    # RFC 9113 8.1.1, 8.2, 8.3: a malformed request is a stream error PROTOCOL_ERROR.
    client = Client()
    assert client.feed(client.headers(1, fields)) == []
    assert resets(client.read()) == [(1, PROTOCOL_ERROR)]
    client.assert_alive(3)


def test_te_trailers_is_allowed() -> None:
    # RFC 9113 8.2.2: TE may be present with the value "trailers".
    client = Client()
    (event,) = client.feed(client.headers(1, request(b"GET", b"/", (b"te", b"trailers"))))
    assert isinstance(event, RequestReceived)


def test_cookie_crumbs_are_joined_into_one_cookie_field() -> None:
    # RFC 9113 8.2.3: split cookie fields are joined with "; " before an HTTP/1.1 hop.
    client = Client()
    crumbs = [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    (event,) = client.feed(client.headers(1, request(b"GET", b"/", *crumbs)))
    assert isinstance(event, RequestReceived)
    assert [f for f in event.head.headers if f[0] == b"cookie"] == [(b"cookie", b"a=1; b=2; c=3")]
    assert (b"accept", b"*/*") in event.head.headers


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param([(b":path", b"/")], id="pseudo"),
        pytest.param([(b"x-checksum", b"1"), (b":status", b"200")], id="pseudo-after-regular"),
        pytest.param([(b"X-Upper", b"1")], id="uppercase"),
        pytest.param([(b"connection", b"close")], id="connection-specific"),
    ],
)
def test_malformed_trailers_are_a_stream_error(trailers: Headers) -> None:
    # RFC 9113 8.1, 8.3: trailers carry no pseudo-header fields; malformed → stream error.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    assert client.feed(client.headers(1, trailers, end_stream=True)) == [
        StreamReset(1, PROTOCOL_ERROR)
    ]
    assert resets(client.read()) == [(1, PROTOCOL_ERROR)]
    client.assert_alive(3)


def test_trailers_without_end_stream_are_malformed() -> None:
    # RFC 9113 8.1: a HEADERS frame after the request head without END_STREAM makes the
    # request malformed: a stream error PROTOCOL_ERROR; 5.4.1 allows a connection error.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    wire = client.headers(1, [(b"x-checksum", b"1")], end_stream=False)
    try:
        events = client.feed(wire)
    except H2ProtocolFailure as failure:
        assert failure.error_code == PROTOCOL_ERROR
        assert goaway_codes(client.read()) == [PROTOCOL_ERROR]
        return
    assert events == [StreamReset(1, PROTOCOL_ERROR)]
    assert resets(client.read()) == [(1, PROTOCOL_ERROR)]


def test_trailers_end_the_request() -> None:
    client = Client()
    client.open(1, request(b"POST"), end=False)
    events = client.feed(data(1, b"body"), client.headers(1, [(b"x-sum", b"1")]))
    assert events == [StreamData(1, b"body", 4), StreamEnded(1, [(b"x-sum", b"1")])]


@pytest.mark.parametrize(
    ("length", "frames"),
    [
        pytest.param(b"3", [data(1, b"four", END_STREAM)], id="longer-at-once"),
        pytest.param(b"5", [data(1, b"abc"), data(1, b"def", END_STREAM)], id="longer-in-two"),
        pytest.param(b"5", [data(1, b"abc"), data(1, b"def")], id="longer-before-the-end"),
        pytest.param(b"5", [data(1, b"abc", END_STREAM)], id="shorter"),
        pytest.param(b"5", [data(1, b"", END_STREAM)], id="empty"),
        pytest.param(b"0", [data(1, b"x", END_STREAM)], id="zero-then-data"),
    ],
)
def test_body_disagreeing_with_content_length_is_a_stream_error(
    length: bytes, frames: list[bytes]
) -> None:
    # RFC 9113 8.1.1: a request whose DATA lengths differ from content-length is malformed.
    client = Client()
    client.open(1, request(b"POST", b"/", (b"content-length", length)), end=False)
    events = client.feed(*frames)
    assert events[-1] == StreamReset(1, PROTOCOL_ERROR)
    assert not [e for e in events if isinstance(e, StreamEnded)]
    assert_reset_once(client.read(), 1, PROTOCOL_ERROR)
    client.assert_alive(3)


def test_conflicting_content_lengths_are_malformed() -> None:
    # RFC 9110 8.6, RFC 9113 8.1.1: malformed, a stream error PROTOCOL_ERROR; 5.4.1 allows a
    # connection error (the h2-backed codec made it one).
    client = Client()
    fields = request(b"POST", b"/", (b"content-length", b"0"), (b"content-length", b"3"))
    if stream_or_connection_error(client, client.headers(1, fields), 1, PROTOCOL_ERROR) == "stream":
        client.assert_alive(3)


def test_body_matching_content_length_is_delivered() -> None:
    client = Client()
    client.open(1, request(b"POST", b"/", (b"content-length", b"6")), end=False)
    events = client.feed(data(1, b"abc"), frame(DATA, PADDED | END_STREAM, 1, padded(b"def", 9)))
    assert events == [StreamData(1, b"abc", 3), StreamData(1, b"def", 13), StreamEnded(1, [])]


# -- 6.5 SETTINGS ----------------------------------------------------------------------------


def test_every_settings_frame_is_acknowledged_in_order() -> None:
    # RFC 9113 6.5.3: each SETTINGS frame gets its own ACK, empty SETTINGS included.
    client = Client()
    sent = [settings(), settings((MAX_FRAME_SIZE, 20000)), settings((INITIAL_WINDOW_SIZE, 1000))]
    assert client.feed(*sent) == []
    acks = client.read()
    assert len(acks) == 3
    for ack in acks:
        assert isinstance(ack, SettingsFrame) and "ACK" in ack.flags and not ack.settings


def test_settings_ack_from_the_client_is_not_answered() -> None:
    client = Client()
    assert client.feed(SETTINGS_ACK) == []
    assert client.read() == []


def test_unknown_setting_is_ignored() -> None:
    # RFC 9113 6.5.2: unknown or unsupported identifiers MUST be ignored.
    client = Client()
    assert client.feed(settings((0xFF, 1), (0x7A7A, 2**32 - 1), (0x8, 1))) == []
    (ack,) = client.read()
    assert isinstance(ack, SettingsFrame) and "ACK" in ack.flags
    client.assert_alive(1)


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        pytest.param((ENABLE_PUSH, 2), PROTOCOL_ERROR, id="enable-push-2"),
        pytest.param((ENABLE_PUSH, 2**32 - 1), PROTOCOL_ERROR, id="enable-push-huge"),
        pytest.param((INITIAL_WINDOW_SIZE, 2**31), FLOW_CONTROL_ERROR, id="window-2^31"),
        pytest.param((INITIAL_WINDOW_SIZE, 2**32 - 1), FLOW_CONTROL_ERROR, id="window-2^32-1"),
        pytest.param((MAX_FRAME_SIZE, 16383), PROTOCOL_ERROR, id="frame-size-too-small"),
        pytest.param((MAX_FRAME_SIZE, 0), PROTOCOL_ERROR, id="frame-size-zero"),
        pytest.param((MAX_FRAME_SIZE, 2**24), PROTOCOL_ERROR, id="frame-size-too-large"),
    ],
)
def test_setting_out_of_range_is_a_connection_error(setting: tuple[int, int], code: int) -> None:
    # RFC 9113 6.5.2.
    connection_error(Client(), settings(setting), code)


@pytest.mark.parametrize("value", [0, 1])
def test_enable_push_0_and_1_are_accepted(value: int) -> None:
    client = Client()
    assert client.feed(settings((ENABLE_PUSH, value))) == []
    assert [type(f) for f in client.read()] == [SettingsFrame]


def test_settings_values_apply_in_order_the_last_one_wins() -> None:
    # RFC 9113 6.5.3: values are processed in the order they appear.
    client = Client(client_settings=settings((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)))
    client.open(1)
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"abc", end_stream=True) == 1
    assert sent_data(client.read()) == [(1, 1, False)]


def test_initial_window_size_change_adjusts_open_streams_even_below_zero() -> None:
    # RFC 9113 6.9.2: the change applies to every open stream's window, which may go
    # negative; nothing is sent until WINDOW_UPDATEs bring it above zero again.
    client = Client(client_settings=settings((INITIAL_WINDOW_SIZE, 100)))
    client.open(1)
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"a" * 60) == 60
    assert client.codec.window_for(1) == 40
    assert WindowOpened(0) in client.feed(settings((INITIAL_WINDOW_SIZE, 1000)))
    assert client.codec.window_for(1) == 940
    assert client.feed(settings((INITIAL_WINDOW_SIZE, 10))) == []  # window now 10 - 60 = -50
    assert client.codec.window_for(1) == 0
    assert client.codec.send_data(1, b"b" * 30) == 0
    assert client.feed(window_update(1, 50)) == [WindowOpened(1)]  # back to 0
    assert client.codec.send_data(1, b"b" * 30) == 0
    client.feed(window_update(1, 20))
    assert client.codec.window_for(1) == 20
    assert client.codec.send_data(1, b"b" * 30) == 20
    wire = client.read()
    assert sent_data(wire) == [(1, 60, False), (1, 20, False)]
    assert len([f for f in wire if isinstance(f, SettingsFrame)]) == 2  # both ACKed


def test_initial_window_size_change_overflowing_a_stream_window_is_a_flow_control_error() -> None:
    # RFC 9113 6.9.2: a connection error FLOW_CONTROL_ERROR.
    client = Client()
    client.open(1)
    client.feed(window_update(1, MAX_WINDOW - DEFAULT_WINDOW))
    connection_error(
        client, settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW + 1)), FLOW_CONTROL_ERROR
    )


def test_initial_window_size_does_not_change_the_connection_window() -> None:
    # RFC 9113 6.9.2: SETTINGS_INITIAL_WINDOW_SIZE is for streams only.
    client = Client(client_settings=settings((INITIAL_WINDOW_SIZE, 1 << 20)))
    client.open(1)
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"z" * 100000) == DEFAULT_WINDOW


def test_lowered_header_table_size_is_honoured_by_our_next_header_block() -> None:
    # RFC 7541 4.2, 6.3 / RFC 9113 6.5.2: after the client lowers SETTINGS_HEADER_TABLE_SIZE,
    # our next field block starts with a size update it can decode with that table.
    client = Client()
    client.open(1)
    fields = [(b"x-custom", b"first response"), (b"server", b"bastion")]
    client.codec.send_head(1, 200, fields, True)
    ((_, first),) = client.decode(client.read())
    assert first == [(b":status", b"200"), *fields]
    for size in (0, 256):
        assert client.feed(settings((HEADER_TABLE_SIZE, size))) == []
        client.decoder.max_allowed_table_size = size  # our decoder now refuses any larger
        stream_id = 3 if size == 0 else 5
        client.open(stream_id)
        client.codec.send_head(stream_id, 200, fields, True)
        wire = client.read()
        assert isinstance(wire[0], SettingsFrame) and "ACK" in wire[0].flags
        ((_, again),) = client.decode(wire[1:])
        assert again == first
        assert client.decoder.header_table_size <= size


def test_raised_header_table_size_still_decodes() -> None:
    client = Client(client_settings=settings((HEADER_TABLE_SIZE, 65536)))
    client.decoder.max_allowed_table_size = 65536
    for stream_id in (1, 3):
        client.open(stream_id)
        client.codec.send_head(stream_id, 200, [(b"x-big", b"v" * 3000)], True)
        ((_, fields),) = client.decode(client.read())
        assert fields == [(b":status", b"200"), (b"x-big", b"v" * 3000)]


# -- 6.7 PING --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [bytes(8), b"\xff" * 8, b"h2spec\x00\x01"])
def test_ping_is_answered_with_an_ack_of_the_same_payload(payload: bytes) -> None:
    client = Client()
    assert client.feed(ping(payload)) == []
    (pong,) = client.read()
    assert isinstance(pong, PingFrame)
    assert (pong.stream_id, "ACK" in pong.flags, pong.opaque_data) == (0, True, payload)


def test_ping_ack_is_not_answered() -> None:
    client = Client()
    assert client.feed(ping(b"unsolicd", flags=ACK)) == []
    assert client.read() == []


def test_pings_inside_a_request_body_are_answered_in_order() -> None:
    client = Client()
    client.open(1, request(b"POST"), end=False)
    events = client.feed(ping(b"11111111"), data(1, b"x"), ping(b"22222222"))
    assert events == [StreamData(1, b"x", 1)]
    pongs = [f.opaque_data for f in client.read() if isinstance(f, PingFrame)]
    assert pongs == [b"11111111", b"22222222"]


# -- 6.9 flow control ------------------------------------------------------------------------


def test_window_update_of_zero_on_the_connection_is_a_protocol_error() -> None:
    # RFC 9113 6.9: on the connection window, a connection error PROTOCOL_ERROR.
    connection_error(Client(), window_update(0, 0), PROTOCOL_ERROR)


def test_window_update_of_zero_on_a_stream_is_a_protocol_error() -> None:
    # RFC 9113 6.9: a stream error PROTOCOL_ERROR; 5.4.1 allows a connection error.
    client = Client()
    client.open(1, end=False)
    stream_or_connection_error(client, window_update(1, 0), 1, PROTOCOL_ERROR)


def test_connection_window_over_2_31_minus_1_is_a_flow_control_error() -> None:
    # RFC 9113 6.9.1: the connection: GOAWAY FLOW_CONTROL_ERROR.
    client = Client()
    assert client.feed(window_update(0, MAX_WINDOW - DEFAULT_WINDOW)) == [WindowOpened(0)]
    connection_error(client, window_update(0, 1), FLOW_CONTROL_ERROR)


def test_stream_window_over_2_31_minus_1_is_a_flow_control_error() -> None:
    # RFC 9113 6.9.1: a stream: RST_STREAM FLOW_CONTROL_ERROR (5.4.1: or a connection error).
    client = Client()
    client.open(1, end=False)
    assert client.feed(window_update(1, MAX_WINDOW - DEFAULT_WINDOW)) == [WindowOpened(1)]
    try:
        events = client.feed(window_update(1, 1))
    except H2ProtocolFailure as failure:
        assert failure.error_code == FLOW_CONTROL_ERROR
        assert goaway_codes(client.read()) == [FLOW_CONTROL_ERROR]
        return
    assert events == [StreamReset(1, FLOW_CONTROL_ERROR)]
    assert resets(client.read()) == [(1, FLOW_CONTROL_ERROR)]
    client.assert_alive(3)


def test_client_data_beyond_our_window_is_a_flow_control_error() -> None:
    # RFC 9113 6.9.1: the client overran the connection window we advertised.
    client = Client(H2Limits(initial_window_size=DEFAULT_WINDOW))
    client.open(1, request(b"POST"), end=False)
    for _ in range(3):
        client.feed(data(1, b"u" * 16384))
    assert client.feed(data(1, b"u" * (DEFAULT_WINDOW - 3 * 16384))) != []  # exactly full
    connection_error(client, data(1, b"u"), FLOW_CONTROL_ERROR)


def test_send_data_respects_stream_window_connection_window_and_frame_size() -> None:
    peer = settings((INITIAL_WINDOW_SIZE, 100000), (MAX_FRAME_SIZE, 20000))
    client = Client(client_settings=peer)
    client.open(1)
    client.open(3)
    for stream_id in (1, 3):
        client.codec.send_head(stream_id, 200, [], False)
    body = b"r" * 200000
    assert client.codec.send_data(1, body, end_stream=True) == DEFAULT_WINDOW  # connection
    assert client.codec.send_data(3, body) == 0
    assert client.codec.window_for(3) == 0
    assert client.feed(window_update(0, 50000)) == [WindowOpened(0)]
    assert client.codec.send_data(1, body, end_stream=True) == 100000 - DEFAULT_WINDOW  # stream
    assert client.codec.send_data(3, body) == 50000 - (100000 - DEFAULT_WINDOW)
    sizes = sent_data(client.read())
    assert all(length <= 20000 for _, length, _ in sizes)
    assert not any(end for _, _, end in sizes)  # END_STREAM only with the whole body
    assert sum(length for stream_id, length, _ in sizes if stream_id == 1) == 100000
    assert sum(length for stream_id, length, _ in sizes if stream_id == 3) == 15535


@pytest.mark.parametrize("peer_max_frame_size", [16384, 16385, 65536])
def test_data_frames_never_exceed_the_peer_max_frame_size(peer_max_frame_size: int) -> None:
    client = Client(
        client_settings=settings(
            (MAX_FRAME_SIZE, peer_max_frame_size), (INITIAL_WINDOW_SIZE, 1 << 20)
        )
    )
    client.feed(window_update(0, 1 << 20))
    client.open(1)
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"q" * 300000, end_stream=True) == 300000
    sizes = sent_data(client.read())
    assert max(length for _, length, _ in sizes) == peer_max_frame_size
    assert sum(length for _, length, _ in sizes) == 300000
    assert [end for _, _, end in sizes].count(True) == 1 and sizes[-1][2]


def test_window_update_opens_windows_and_is_reported() -> None:
    client = Client(client_settings=settings((INITIAL_WINDOW_SIZE, 10)))
    client.open(1)
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"w" * 30) == 10
    assert client.feed(window_update(1, 15)) == [WindowOpened(1)]
    assert client.codec.window_for(1) == 15
    assert client.feed(window_update(0, 1000)) == [WindowOpened(0)]
    assert client.codec.send_data(1, b"w" * 20, end_stream=True) == 15
    assert sent_data(client.read()) == [(1, 10, False), (1, 15, False)]


def test_acknowledged_body_bytes_reopen_the_windows_so_a_large_upload_finishes() -> None:
    # RFC 9113 6.9: a client honouring our windows sends a body far larger than them.
    client = Client(H2Limits(initial_window_size=DEFAULT_WINDOW))
    client.open(1, request(b"POST"), end=False)
    total, sent, received, ended = 500000, 0, 0, False
    connection_window = stream_window = DEFAULT_WINDOW
    while not ended:
        size = min(16384, connection_window, stream_window, total - sent)
        assert size > 0 or sent == total, "the upload stalled: no WINDOW_UPDATE came"
        connection_window -= size
        stream_window -= size
        sent += size
        for event in client.feed(data(1, b"p" * size, END_STREAM if sent == total else 0)):
            if isinstance(event, StreamData):
                received += len(event.data)
                client.codec.acknowledge(1, event.flow_len)
            ended = ended or isinstance(event, StreamEnded)
        for update in client.read():
            assert isinstance(update, WindowUpdateFrame)
            if update.stream_id == 0:
                connection_window += update.window_increment
            else:
                stream_window += update.window_increment
            assert connection_window <= DEFAULT_WINDOW and stream_window <= DEFAULT_WINDOW
    assert received == total


def test_padding_only_data_gives_its_window_back() -> None:
    # Padding is flow-controlled (RFC 9113 6.1) but no StreamData carries it: the codec
    # must give that window back by itself.
    client = Client(H2Limits(initial_window_size=DEFAULT_WINDOW))
    client.open(1, request(b"POST"), end=False)
    padding_only = frame(DATA, PADDED, 1, padded(b"", 255))
    given_back = 0
    for _ in range(200):  # 51 KB of padding, 78% of the window
        assert client.feed(padding_only) == []
        given_back += sum(
            f.window_increment
            for f in client.read()
            if isinstance(f, WindowUpdateFrame) and f.stream_id == 0
        )
    assert given_back > 0


# -- 6.8 GOAWAY, 5.3 priority ----------------------------------------------------------------


def test_client_goaway_is_reported_and_new_streams_are_refused() -> None:
    client = Client()
    client.open(1, request(b"POST"), end=False)
    assert client.feed(goaway(0, NO_ERROR)) == [ConnectionClosed(NO_ERROR)]
    assert client.feed(data(1, b"rest", END_STREAM)) == [
        StreamData(1, b"rest", 4),
        StreamEnded(1, []),
    ]
    assert client.feed(client.headers(3, request())) == []
    assert resets(client.read()) == [(3, REFUSED_STREAM)]
    client.codec.send_head(1, 200, [], False)
    assert client.codec.send_data(1, b"done", end_stream=True) == 4
    assert sent_data(client.read()) == [(1, 4, True)]


def test_client_goaway_with_an_error_code_and_debug_data_is_reported() -> None:
    client = Client()
    wire = frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"debug info")
    assert client.feed(wire) == [ConnectionClosed(2)]


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(priority(1, 0), id="open-stream"),
        pytest.param(priority(9, 1, weight=255), id="idle-stream"),
        pytest.param(priority(1, (1 << 31) | 3), id="exclusive-on-idle"),
    ],
)
def test_priority_frames_are_accepted(wire: bytes) -> None:
    # RFC 9113 5.3.2, 6.3: PRIORITY is allowed in any stream state; its signal may be ignored.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    assert client.feed(wire) == []
    assert client.read() == []
    assert client.feed(data(1, b"x", END_STREAM)) == [StreamData(1, b"x", 1), StreamEnded(1, [])]
    client.assert_alive(3)


def test_priority_on_a_closed_stream_is_accepted() -> None:
    client = Client()
    client.open(1)
    client.codec.send_head(1, 204, [], True)
    client.read()
    assert client.feed(priority(1, 0)) == []
    assert client.read() == []
    client.assert_alive(3)


def test_priority_on_an_idle_stream_does_not_open_it() -> None:
    # RFC 9113 5.1: PRIORITY leaves an idle stream idle, so a lower stream can still open.
    client = Client()
    assert client.feed(priority(7, 0)) == []
    client.assert_alive(3)
    client.assert_alive(7)


def test_stream_depending_on_itself_in_priority_is_a_protocol_error() -> None:
    # RFC 9113 5.3.1: a stream error PROTOCOL_ERROR; 5.4.1 allows a connection error.
    client = Client()
    client.open(1, request(b"POST"), end=False)
    stream_or_connection_error(client, priority(1, 1), 1, PROTOCOL_ERROR)


def test_stream_depending_on_itself_in_headers_is_a_protocol_error() -> None:
    # RFC 9113 5.3.1: a stream error PROTOCOL_ERROR; 5.4.1 allows a connection error.
    client = Client()
    payload = (1).to_bytes(4, "big") + b"\x10" + client.block(request())
    wire = frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, payload)
    stream_or_connection_error(client, wire, 1, PROTOCOL_ERROR)


# -- what the codec writes: field blocks cut at the peer's frame size ------------------------


@pytest.mark.parametrize("peer_max_frame_size", [16384, 20000, 100000])
def test_large_response_head_is_cut_into_headers_and_continuations(
    peer_max_frame_size: int,
) -> None:
    # RFC 9113 4.2, 6.10: no frame over the peer's SETTINGS_MAX_FRAME_SIZE, CONTINUATIONs
    # right after their HEADERS on the same stream, END_HEADERS on the last one only.
    client = Client(client_settings=settings((MAX_FRAME_SIZE, peer_max_frame_size)))
    client.open(1)
    fields = [(b"x-big-%d" % i, bytes(range(33 + i, 127)) * 100) for i in range(20)]
    client.codec.send_head(1, 200, fields, False)
    assert client.codec.send_data(1, b"body", end_stream=True) == 4
    wire = client.read()
    assert all(len(f.serialize()) - 9 <= peer_max_frame_size for f in wire)
    kinds = [type(f) for f in wire]
    assert kinds[0] is HeadersFrame and kinds[-1] is DataFrame
    assert set(kinds[1:-1]) <= {ContinuationFrame}
    assert (len(wire) > 2) == (sum(len(f.data) for f in wire[:-1]) > peer_max_frame_size)
    assert [("END_HEADERS" in f.flags) for f in wire[:-1]] == [False] * (len(wire) - 2) + [True]
    assert client.decode(wire) == [(1, [(b":status", b"200"), *fields])]


def test_response_head_trailers_and_data_decode_with_one_decoder() -> None:
    client = Client()
    client.open(1)
    client.open(3)
    client.codec.send_head(1, 200, [(b"content-type", b"text/plain")], False)
    client.codec.send_head(3, 404, [(b"content-type", b"text/plain")], True)
    client.codec.send_data(1, b"hello")
    client.codec.send_trailers(1, [(b"x-sum", b"5")])
    wire = client.read()
    assert client.decode(wire) == [
        (1, [(b":status", b"200"), (b"content-type", b"text/plain")]),
        (3, [(b":status", b"404"), (b"content-type", b"text/plain")]),
        (1, [(b"x-sum", b"5")]),
    ]
    ends = [(f.stream_id, type(f)) for f in wire if "END_STREAM" in f.flags]
    assert ends == [(3, HeadersFrame), (1, HeadersFrame)]
