"""H2ServerCodec against a real h2 client, joined in memory: requests, responses, defences.

Every test drives an `h2` client connection (or frames crafted with hyperframe, where a
well-behaved client cannot be made to misbehave) into the codec and checks what comes out:
the codec's events on one side, the client's events or the raw frames on the wire on the
other. The flood limits run on a clock the test moves by hand.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.http.events import Framing, Headers, RequestHead
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

PROTOCOL_ERROR = 0x1
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB

GET: Headers = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.test"),
    (b":path", b"/index.html?q=1"),
]


def request(method: bytes = b"GET", path: bytes = b"/", *extra: tuple[bytes, bytes]) -> Headers:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", b"example.test"),
        (b":path", path),
        *extra,
    ]


def frames_of(data: bytes) -> list[Frame]:
    """The frames in `data`, parsed with hyperframe: what went on the wire."""
    frames: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


class Link:
    """An h2 client and the codec, joined in memory, on a clock the test moves."""

    def __init__(
        self,
        limits: H2Limits | None = None,
        *,
        strict_client: bool = True,
        client_settings: dict[h2.settings.SettingCodes, int] | None = None,
        handshake: bool = True,
    ) -> None:
        self.now = 0.0
        self.codec = H2ServerCodec(limits or H2Limits(), lambda: self.now)
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=strict_client,
            normalize_outbound_headers=strict_client,
        )
        self.client = h2.connection.H2Connection(config)
        if client_settings:
            self.client.local_settings = h2.settings.Settings(
                client=True, initial_values=client_settings
            )
        self.client.initiate_connection()
        self.codec.start()
        self.handshake_events: list[H2Event] = []
        if handshake:
            for _ in range(2):  # preface and SETTINGS each way, then the ACKs
                self.to_client()
                self.handshake_events += self.to_codec()

    def to_codec(self) -> list[H2Event]:
        return self.codec.feed(self.client.data_to_send())

    def to_client(self) -> list[h2.events.Event]:
        return self.client.receive_data(self.codec.data_to_send())

    def send(self, stream_id: int, headers: Headers, end_stream: bool = True) -> list[H2Event]:
        self.client.send_headers(stream_id, headers, end_stream=end_stream)
        return self.to_codec()


def only(events: Iterable[object], kind: type) -> list[object]:
    return [event for event in events if isinstance(event, kind)]


def resets_seen_by_client(link: Link) -> dict[int, int]:
    return {
        event.stream_id: int(event.error_code)
        for event in link.to_client()
        if isinstance(event, h2.events.StreamReset)
    }


def goaway_code(data: bytes) -> int | None:
    codes = [frame.error_code for frame in frames_of(data) if isinstance(frame, GoAwayFrame)]
    return codes[-1] if codes else None


# -- preface and request heads ------------------------------------------------------------


def test_preface_advertises_the_limits_and_opens_the_connection_window() -> None:
    limits = H2Limits(max_concurrent_streams=7, max_header_list_size=9000)
    codec = H2ServerCodec(limits, lambda: 0.0)
    codec.start()
    settings_frame, window_update = frames_of(codec.data_to_send())
    assert isinstance(settings_frame, SettingsFrame)
    assert settings_frame.settings == {
        SettingsFrame.ENABLE_PUSH: 0,
        SettingsFrame.INITIAL_WINDOW_SIZE: 1024 * 1024,
        SettingsFrame.MAX_FRAME_SIZE: 16384,
        SettingsFrame.MAX_HEADER_LIST_SIZE: 9000,
        SettingsFrame.MAX_CONCURRENT_STREAMS: 7,
    }
    assert isinstance(window_update, WindowUpdateFrame)
    assert (window_update.stream_id, window_update.window_increment) == (0, 1024 * 1024 - 65535)


def test_get_becomes_the_request_head_the_h1_reader_would_produce() -> None:
    link = Link()
    assert link.handshake_events == []
    events = link.send(1, [*GET, (b"accept", b"*/*")])
    head_size = sum(len(name) + len(value) + 32 for name, value in [*GET, (b"accept", b"*/*")])
    assert events == [
        RequestReceived(
            1,
            RequestHead(
                method=b"GET",
                target=b"/index.html?q=1",
                http_version=b"2",
                headers=[(b"host", b"example.test"), (b"accept", b"*/*")],
                framing=Framing.NONE,
                content_length=None,
                keep_alive=True,
                host=b"example.test",
                head_size=head_size,
            ),
            ended=True,
        )
    ]


def test_events_do_not_depend_on_how_the_bytes_are_split() -> None:
    def conversation(link: Link) -> bytes:
        link.client.send_headers(1, request(b"POST", b"/", (b"content-length", b"5")))
        link.client.send_data(1, b"hello", end_stream=True)
        link.client.send_headers(3, request(), end_stream=True)
        return link.client.data_to_send()

    whole = Link(handshake=False)
    expected = whole.codec.feed(conversation(whole))
    assert [type(e).__name__ for e in expected] == [
        "RequestReceived",
        "StreamData",
        "StreamEnded",
        "RequestReceived",
    ]
    split = Link(handshake=False)
    data = conversation(split)
    events = [event for i in range(len(data)) for event in split.codec.feed(data[i : i + 1])]
    assert events == expected


def test_host_header_stands_in_for_a_missing_authority() -> None:
    link = Link()
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
    (event,) = link.send(1, [*headers, (b"host", b"origin.test:8080")])
    assert isinstance(event, RequestReceived)
    assert event.head.host == b"origin.test:8080"
    assert event.head.headers == [(b"host", b"origin.test:8080")]


def test_options_asterisk_is_accepted() -> None:
    (event,) = Link().send(1, request(b"OPTIONS", b"*"))
    assert isinstance(event, RequestReceived)
    assert event.head.target == b"*"


def test_cookie_crumbs_are_joined_into_one_header() -> None:
    link = Link(strict_client=False)
    crumbs = [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    (event,) = link.send(1, request(b"GET", b"/", *crumbs))
    assert isinstance(event, RequestReceived)
    assert [field for field in event.head.headers if field[0] == b"cookie"] == [
        (b"cookie", b"a=1; b=2; c=3")
    ]


def test_names_with_underscores_are_dropped_like_the_h1_reader_does() -> None:
    link = Link()
    (event,) = link.send(1, request(b"GET", b"/", (b"content_length", b"5"), (b"x-ok", b"1")))
    assert isinstance(event, RequestReceived)
    assert event.head.headers == [(b"host", b"example.test"), (b"x-ok", b"1")]


def test_post_with_body_and_trailers() -> None:
    link = Link()
    (head,) = link.send(1, request(b"POST", b"/upload", (b"te", b"trailers")), end_stream=False)
    assert isinstance(head, RequestReceived)
    assert (head.ended, head.head.framing, head.head.content_length) == (
        False,
        Framing.CHUNKED,
        None,
    )
    link.client.send_data(1, b"hello ")
    link.client.send_data(1, b"world")
    link.client.send_headers(1, [(b"x-checksum", b"abc"), (b"x_dropped", b"1")], end_stream=True)
    events = link.to_codec()
    assert [e for e in events if isinstance(e, StreamData)] == [
        StreamData(1, b"hello ", 6),
        StreamData(1, b"world", 5),
    ]
    assert events[-1] == StreamEnded(1, [(b"x-checksum", b"abc")])
    assert len(only(events, StreamEnded)) == 1


def test_content_length_gives_length_framing_and_a_plain_end() -> None:
    link = Link()
    (head,) = link.send(1, request(b"PUT", b"/", (b"content-length", b"3")), end_stream=False)
    assert isinstance(head, RequestReceived)
    assert (head.head.framing, head.head.content_length) == (Framing.LENGTH, 3)
    link.client.send_data(1, b"abc", end_stream=True)
    assert link.to_codec() == [StreamData(1, b"abc", 3), StreamEnded(1, [])]


def test_padding_counts_for_flow_control() -> None:
    link = Link()
    link.send(1, request(b"POST"), end_stream=False)
    link.client.send_data(1, b"abc", pad_length=10)
    assert link.to_codec() == [StreamData(1, b"abc", 14)]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param(
            [(b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")],
            PROTOCOL_ERROR,
            id="no-method",
        ),
        pytest.param(
            [(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/")],
            PROTOCOL_ERROR,
            id="no-scheme",
        ),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a")],
            PROTOCOL_ERROR,
            id="no-path",
        ),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")],
            PROTOCOL_ERROR,
            id="no-authority-nor-host",
        ),
        pytest.param(
            request(b"GET", b"/", (b"X-Upper", b"1")), PROTOCOL_ERROR, id="uppercase-name"
        ),
        pytest.param(
            request(b"GET", b"/", (b"connection", b"close")), PROTOCOL_ERROR, id="connection"
        ),
        pytest.param(request(b"GET", b"/", (b"keep-alive", b"5")), PROTOCOL_ERROR, id="keep-alive"),
        pytest.param(
            request(b"GET", b"/", (b"transfer-encoding", b"chunked")),
            PROTOCOL_ERROR,
            id="te-chunked",
        ),
        pytest.param(
            request(b"GET", b"/", (b"upgrade", b"websocket")), PROTOCOL_ERROR, id="upgrade"
        ),
        pytest.param(request(b"GET", b"/", (b"te", b"gzip")), PROTOCOL_ERROR, id="te-not-trailers"),
        pytest.param([(b"accept", b"*/*"), *request()], PROTOCOL_ERROR, id="pseudo-after-regular"),
        pytest.param(request(b"GET", b"/", (b":path", b"/2")), PROTOCOL_ERROR, id="two-paths"),
        pytest.param(
            request(b"GET", b"/", (b":status", b"200")), PROTOCOL_ERROR, id="status-in-request"
        ),
        pytest.param(request(b"GET", b"/", (b":foo", b"1")), PROTOCOL_ERROR, id="unknown-pseudo"),
        pytest.param(
            request(b"GET", b"/", (b"x-a", b" padded")), PROTOCOL_ERROR, id="value-whitespace"
        ),
        pytest.param(request(b"GET", b"/", (b"x-a", b"a\x00b")), PROTOCOL_ERROR, id="value-nul"),
        pytest.param(request(b"GET", b"/", (b"x a", b"1")), PROTOCOL_ERROR, id="name-space"),
        pytest.param(request(b"GET", b"index.html"), PROTOCOL_ERROR, id="path-not-origin-form"),
        pytest.param(request(b"GET", b"*"), PROTOCOL_ERROR, id="asterisk-not-options"),
        pytest.param(request(b"GET", b"/a b"), PROTOCOL_ERROR, id="path-space"),
        pytest.param(request(b"GET", b"/a\tb"), PROTOCOL_ERROR, id="path-tab"),
        pytest.param(request(b"GE T", b"/"), PROTOCOL_ERROR, id="method-not-token"),
        pytest.param(
            [(b":method", b"GET"), (b":scheme", b"ftp"), (b":authority", b"a"), (b":path", b"/")],
            PROTOCOL_ERROR,
            id="scheme-ftp",
        ),
        pytest.param(
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"u@a"),
                (b":path", b"/"),
            ],
            PROTOCOL_ERROR,
            id="authority-userinfo",
        ),
        pytest.param(
            request(b"GET", b"/", (b"host", b"other.test")), PROTOCOL_ERROR, id="host-mismatch"
        ),
        pytest.param(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b"host", b"a"),
                (b"host", b"a"),
            ],
            PROTOCOL_ERROR,
            id="two-hosts",
        ),
        pytest.param(
            request(b"POST", b"/", (b"content-length", b"5")),
            PROTOCOL_ERROR,
            id="length-without-body",
        ),
        pytest.param(
            [(b":method", b"CONNECT"), (b":authority", b"a:443")], REFUSED_STREAM, id="connect"
        ),
        pytest.param(
            request(b"CONNECT", b"/chat", (b":protocol", b"websocket")),
            REFUSED_STREAM,
            id="extended-connect",
        ),
    ],
)
def test_malformed_request_resets_the_stream_and_the_connection_goes_on(
    headers: Headers, code: int
) -> None:
    link = Link(strict_client=False)
    assert link.send(1, headers) == []
    assert resets_seen_by_client(link) == {1: code}
    (event,) = link.send(3, request())
    assert isinstance(event, RequestReceived)
    assert event.stream_id == 3


def test_pseudo_field_in_trailers_resets_the_stream() -> None:
    link = Link(strict_client=False)
    link.send(1, request(b"POST"), end_stream=False)
    link.client.send_headers(1, [(b":path", b"/")], end_stream=True)
    assert link.to_codec() == [StreamReset(1, PROTOCOL_ERROR)]
    assert resets_seen_by_client(link) == {1: PROTOCOL_ERROR}


@pytest.mark.parametrize(("body", "end"), [(b"12345678", False), (b"12", True)])
def test_body_disagreeing_with_content_length_is_a_stream_error(body: bytes, end: bool) -> None:
    link = Link()
    link.send(1, request(b"POST", b"/", (b"content-length", b"4")), end_stream=False)
    link.client.send_data(1, body, end_stream=end)
    assert link.to_codec() == [StreamReset(1, PROTOCOL_ERROR)]
    assert resets_seen_by_client(link)[1] == PROTOCOL_ERROR
    assert only(link.send(3, request()), RequestReceived)


# -- responses and flow control ----------------------------------------------------------


def test_response_drops_connection_specific_fields_and_ends_the_stream() -> None:
    link = Link()
    link.send(1, request())
    hop_by_hop = [(name, b"x") for name in (b"connection", b"keep-alive", b"te", b"upgrade")]
    link.codec.send_head(1, 200, [(b"content-type", b"text/plain"), *hop_by_hop], False)
    assert link.codec.send_data(1, b"hello", end_stream=True) == 5
    events = link.to_client()
    response = only(events, h2.events.ResponseReceived)[0]
    assert isinstance(response, h2.events.ResponseReceived)
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert only(events, h2.events.StreamEnded)
    assert link.codec.open_streams == 0


def test_informational_head_and_trailers() -> None:
    link = Link()
    link.send(1, request())
    link.codec.send_head(1, 103, [(b"link", b"</s.css>; rel=preload")], False)
    link.codec.send_head(1, 200, [], False)
    link.codec.send_data(1, b"body")
    link.codec.send_trailers(1, [(b"grpc-status", b"0"), (b"connection", b"x")])
    kinds = [type(event).__name__ for event in link.to_client()]
    assert kinds[-5:] == [
        "InformationalResponseReceived",
        "ResponseReceived",
        "DataReceived",
        "TrailersReceived",
        "StreamEnded",
    ]


def test_send_data_splits_into_frames_of_the_client_max_frame_size() -> None:
    link = Link()
    link.send(1, request())
    link.codec.send_head(1, 200, [], False)
    link.codec.data_to_send()
    assert link.codec.send_data(1, b"x" * 40000, end_stream=True) == 40000
    wire = frames_of(link.codec.data_to_send())
    sizes = [(len(f.data), "END_STREAM" in f.flags) for f in wire if isinstance(f, DataFrame)]
    assert len(sizes) == len(wire)
    assert sizes == [(16384, False), (16384, False), (7232, True)]


def test_send_data_stops_at_the_client_window_and_resumes_on_window_update() -> None:
    small = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10}
    link = Link(client_settings=small)
    link.send(1, request())
    link.codec.send_head(1, 200, [], False)
    assert link.codec.window_for(1) == 10
    assert link.codec.send_data(1, b"a" * 25, end_stream=True) == 10
    assert link.codec.window_for(1) == 0
    assert link.codec.send_data(1, b"a" * 15, end_stream=True) == 0
    events = link.to_client()
    assert not only(events, h2.events.StreamEnded)  # END_STREAM waits for the rest
    link.client.acknowledge_received_data(10, 1)
    assert WindowOpened(1) in link.to_codec()
    assert link.codec.send_data(1, b"a" * 15, end_stream=True) == 10
    assert link.codec.send_data(1, b"a" * 5, end_stream=True) == 0


def test_connection_window_limits_every_stream() -> None:
    link = Link(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    link.send(1, request())
    link.codec.send_head(1, 200, [], False)
    assert link.codec.send_data(1, b"z" * 70000) == 65535
    link.to_client()
    link.client.increment_flow_control_window(1000)
    assert WindowOpened(0) in link.to_codec()
    assert link.codec.window_for(1) == 1000


def test_client_raising_initial_window_opens_every_stream() -> None:
    link = Link()
    link.send(1, request())
    link.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100000})
    assert WindowOpened(0) in link.to_codec()


def test_acknowledge_sends_window_updates() -> None:
    link = Link(H2Limits(initial_window_size=65535))
    link.send(1, request(b"POST"), end_stream=False)
    link.client.send_data(1, b"b" * 16000)
    link.client.send_data(1, b"b" * 16000)
    link.client.send_data(1, b"b" * 8000)
    data_events = only(link.to_codec(), StreamData)
    assert sum(len(e.data) for e in data_events if isinstance(e, StreamData)) == 40000
    assert not [f for f in frames_of(link.codec.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    for event in data_events:
        assert isinstance(event, StreamData)
        link.codec.acknowledge(1, event.flow_len)
    updates = {
        f.stream_id: f.window_increment
        for f in frames_of(link.codec.data_to_send())
        if isinstance(f, WindowUpdateFrame)
    }
    assert updates == {0: 40000, 1: 40000}


def test_reset_hands_unacknowledged_bytes_back_to_the_connection() -> None:
    link = Link(H2Limits(initial_window_size=65535))
    link.send(1, request(b"POST"), end_stream=False)
    for _ in range(3):
        link.client.send_data(1, b"b" * 16000)
    link.to_codec()
    link.codec.reset(1)
    wire = frames_of(link.codec.data_to_send())
    assert [(type(f).__name__, f.stream_id) for f in wire] == [
        ("RstStreamFrame", 1),
        ("WindowUpdateFrame", 0),
    ]
    assert isinstance(wire[0], RstStreamFrame) and wire[0].error_code == CANCEL
    assert isinstance(wire[1], WindowUpdateFrame) and wire[1].window_increment == 48000
    link.codec.acknowledge(1, 48000)  # late: nothing more to hand back
    assert link.codec.data_to_send() == b""


def test_client_reset_is_reported_and_later_sends_do_nothing() -> None:
    link = Link()
    link.send(1, request())
    link.client.reset_stream(1, CANCEL)
    assert link.to_codec() == [StreamReset(1, CANCEL)]
    link.codec.send_head(1, 200, [], False)
    assert link.codec.send_data(1, b"late", end_stream=True) == 0
    link.codec.reset(1)
    assert link.codec.data_to_send() == b""
    assert link.codec.open_streams == 0


def test_goaway_is_graceful_streams_in_flight_finish_new_ones_are_refused() -> None:
    link = Link()
    link.send(1, request())
    link.codec.goaway()
    assert link.send(3, request()) == []
    link.codec.send_head(1, 200, [], True)
    wire = frames_of(link.codec.data_to_send())
    goaway = [f for f in wire if isinstance(f, GoAwayFrame)]
    assert [(f.last_stream_id, f.error_code) for f in goaway] == [(1, 0)]
    refused = [f for f in wire if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in refused] == [(3, REFUSED_STREAM)]
    assert [f.stream_id for f in wire if isinstance(f, HeadersFrame)] == [1]


def test_client_goaway_lets_streams_in_flight_finish_and_refuses_new_ones() -> None:
    link = Link()
    link.send(1, request(b"POST"), end_stream=False)
    link.client.close_connection(0)
    assert link.to_codec() == [ConnectionClosed(0)]
    link.codec.send_head(1, 200, [], False)
    assert link.codec.send_data(1, b"done", end_stream=True) == 4
    late_request = HeadersFrame(3, data=Encoder().encode(request()), flags=["END_HEADERS"])
    assert link.codec.feed(DataFrame(1, data=b"body").serialize() + late_request.serialize()) == [
        StreamData(1, b"body", 4)
    ]
    wire = [(type(f).__name__, f.stream_id) for f in frames_of(link.codec.data_to_send())]
    assert wire == [
        ("HeadersFrame", 1),
        ("DataFrame", 1),
        ("RstStreamFrame", 3),
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(raw_frame(0x7, 0, 1, bytes(8)), PROTOCOL_ERROR, id="on-a-stream"),
        pytest.param(raw_frame(0x7, 0, 0, bytes(4)), FRAME_SIZE_ERROR, id="short"),
        pytest.param(
            raw_frame(0x1, 0, 1, Encoder().encode(request())) + raw_frame(0x7, 0, 0, bytes(8)),
            PROTOCOL_ERROR,
            id="inside-a-header-block",
        ),
    ],
)
def test_malformed_client_goaway_ends_the_connection(data: bytes, code: int) -> None:
    assert_failed(Link(), data, code)


# -- defences ------------------------------------------------------------------------------


def assert_failed(link: Link, data: bytes, code: int) -> H2ProtocolFailure:
    with pytest.raises(H2ProtocolFailure) as caught:
        link.codec.feed(data)
    assert caught.value.error_code == code
    assert goaway_code(link.codec.data_to_send()) == code
    with pytest.raises(H2ProtocolFailure):
        link.codec.feed(b"")
    return caught.value


def test_rapid_reset_ends_the_connection_with_enhance_your_calm() -> None:
    link = Link(H2Limits(max_resets_per_window=20))
    for stream_id in range(1, 43, 2):
        link.client.send_headers(stream_id, request(), end_stream=True)
        link.client.reset_stream(stream_id, CANCEL)
    failure = assert_failed(link, link.client.data_to_send(), ENHANCE_YOUR_CALM)
    assert "reset" in failure.reason


def test_resets_spread_over_time_are_tolerated() -> None:
    link = Link(H2Limits(max_resets_per_window=20, window=10.0))
    stream_id = 1
    for _ in range(5):
        for _ in range(20):
            link.send(stream_id, request())
            link.client.reset_stream(stream_id, CANCEL)
            assert link.to_codec() == [StreamReset(stream_id, CANCEL)]
            stream_id += 2
        link.now += 10.0


def test_refused_streams_count_as_resets() -> None:
    link = Link(H2Limits(max_resets_per_window=5), strict_client=False)
    for stream_id in range(1, 11, 2):
        assert link.send(stream_id, request(b"GET", b"no-slash")) == []
    link.client.send_headers(11, request(b"GET", b"no-slash"))
    assert_failed(link, link.client.data_to_send(), ENHANCE_YOUR_CALM)


def test_continuation_flood_is_cut_off_and_memory_stays_bounded() -> None:
    limits = H2Limits(max_continuation_bytes=64 * 1024)
    link = Link(limits)
    block = Encoder().encode(request())
    start = HeadersFrame(1, data=block[:10], flags=["END_STREAM"]).serialize()
    filler = ContinuationFrame(1, data=b"\x00" * 16384).serialize()
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(H2ProtocolFailure) as caught:
            link.codec.feed(start)
            for _ in range(1000):  # 16 MB if nothing stopped it
                fed += len(filler)
                link.codec.feed(filler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.error_code == ENHANCE_YOUR_CALM
    assert fed <= limits.max_continuation_bytes + len(filler)
    assert peak < 4 * limits.max_continuation_bytes
    assert goaway_code(link.codec.data_to_send()) == ENHANCE_YOUR_CALM


def test_empty_continuation_frames_are_a_flood() -> None:
    link = Link(H2Limits(max_control_frames_per_window=20))
    block = Encoder().encode(request())
    data = HeadersFrame(1, data=block[:5]).serialize()
    data += ContinuationFrame(1, data=b"").serialize() * 30
    assert_failed(link, data, ENHANCE_YOUR_CALM)


def test_frame_over_max_frame_size_is_refused_on_its_header() -> None:
    link = Link()
    header_of_a_1mb_data_frame = (1 << 20).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01"
    assert_failed(link, header_of_a_1mb_data_frame, FRAME_SIZE_ERROR)


def test_hpack_bomb_ends_the_connection_before_any_request() -> None:
    link = Link(H2Limits(max_header_list_size=16 * 1024))
    bomb = request(b"GET", b"/", *[(b"x-bomb", b"b" * 4000)] * 10)  # 40 KB decoded
    link.client.send_headers(1, bomb, end_stream=True)
    data = link.client.data_to_send()
    assert len(data) < 5000  # the dynamic table makes it small on the wire
    assert_failed(link, data, ENHANCE_YOUR_CALM)


def test_large_header_block_in_continuation_frames_is_served() -> None:
    link = Link()
    big = [(b"x-big-%d" % i, bytes([65 + i]) * 4000) for i in range(6)]  # 24 KB, under 32 KB
    link.client.send_headers(1, request(b"GET", b"/", *big), end_stream=True)
    data = link.client.data_to_send()
    assert any(isinstance(frame, ContinuationFrame) for frame in frames_of(data))
    (event,) = link.codec.feed(data)
    assert isinstance(event, RequestReceived)
    assert event.head.headers[1:] == big


def test_head_request_body_is_a_stream_error() -> None:
    link = Link()
    link.send(1, request(b"HEAD"), end_stream=False)
    link.client.send_data(1, b"x", end_stream=True)
    assert link.to_codec() == [StreamReset(1, PROTOCOL_ERROR)]


def test_streams_over_the_concurrency_limit_are_refused() -> None:
    link = Link(H2Limits(max_concurrent_streams=3), handshake=False)
    for stream_id in (1, 3, 5, 7, 9):
        link.client.send_headers(stream_id, request(), end_stream=True)
    events = link.to_codec()
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [1, 3, 5]
    assert resets_seen_by_client(link) == {7: REFUSED_STREAM, 9: REFUSED_STREAM}
    assert link.codec.open_streams == 3
    link.codec.send_head(3, 204, [], True)
    link.to_client()
    (event,) = link.send(11, request())
    assert isinstance(event, RequestReceived) and event.stream_id == 11


FLOODS = {
    "settings": SettingsFrame(0, settings={SettingsFrame.MAX_FRAME_SIZE: 16384}).serialize(),
    "ping": PingFrame(0, opaque_data=b"12345678").serialize(),
    "empty-data": DataFrame(1, data=b"").serialize(),
    "padding-only-data": DataFrame(1, data=b"", flags=["PADDED"], pad_length=20).serialize(),
    "priority": PriorityFrame(1, depends_on=0, stream_weight=15).serialize(),
    "unknown-type": raw_frame(0xEE, 0, 0, b"x"),
    "tiny-window-updates": WindowUpdateFrame(0, window_increment=1).serialize(),  # CVE-2019-9511
}


@pytest.mark.parametrize("flood", FLOODS)
def test_control_frame_floods_end_the_connection(flood: str) -> None:
    link = Link(H2Limits(max_control_frames_per_window=30))
    link.send(1, request(b"POST"), end_stream=False)
    assert_failed(link, FLOODS[flood] * 40, ENHANCE_YOUR_CALM)


def test_control_frames_within_the_rate_are_answered() -> None:
    link = Link(H2Limits(max_control_frames_per_window=30, window=1.0))
    for _ in range(10):
        for _ in range(25):
            link.client.ping(b"12345678")
        assert link.to_codec() == []
        acks = only(link.to_client(), h2.events.PingAckReceived)
        assert len(acks) == 25
        link.now += 1.0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        H2Limits(max_frame_size=1000)
    with pytest.raises(ValueError):
        H2Limits(window=0)


# -- fuzzing --------------------------------------------------------------------------------

_VALID_BLOCK = Encoder().encode(request(b"POST"))


def exercise(link: Link, data: bytes) -> None:
    """Feed `data`, answer what it asks for; only H2ProtocolFailure may come out."""
    try:
        events = link.codec.feed(data)
    except H2ProtocolFailure:
        link.codec.data_to_send()
        return
    for event in events:
        if isinstance(event, RequestReceived):
            link.codec.send_head(event.stream_id, 200, [(b"server", b"t")], False)
            link.codec.send_data(event.stream_id, b"ok" * 10000, end_stream=True)
        elif isinstance(event, StreamData):
            link.codec.acknowledge(event.stream_id, event.flow_len)
        elif isinstance(event, StreamEnded):
            link.codec.reset(event.stream_id)
    link.codec.data_to_send()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_after_the_preface_only_raise_protocol_failures(data: bytes) -> None:
    exercise(Link(), data)


_TRAILER_BLOCK = Encoder().encode([(b"x-trailer", b"1")])
_STREAMS = st.sampled_from([1, 1, 3, 3, 5, 0, 2, 2**31 - 1])


def _frames(kind: int, flags: list[int], payload: st.SearchStrategy[bytes]) -> st.SearchStrategy:
    return st.builds(raw_frame, st.just(kind), st.sampled_from(flags), _STREAMS, payload)


# Frames of every type with plausible flags and payloads, so that streams get opened, fed,
# ended and reset in every order; and frames of anything at all.
frame_strategy = st.one_of(
    _frames(0x1, [0x4, 0x5, 0x0, 0x24], st.sampled_from([_VALID_BLOCK, _TRAILER_BLOCK])),
    _frames(0x9, [0x4, 0x0], st.sampled_from([_VALID_BLOCK[:7], _VALID_BLOCK[7:], b""])),
    _frames(0x0, [0x0, 0x1, 0x8, 0x9], st.binary(max_size=40)),
    _frames(0x3, [0x0], st.binary(min_size=4, max_size=4)),
    _frames(0x8, [0x0], st.integers(0, 2**31).map(lambda n: n.to_bytes(4, "big"))),
    _frames(0x4, [0x0, 0x1], st.binary(max_size=3).map(lambda b: b"\x00\x04" + b * 2)),
    _frames(0x6, [0x0, 0x1], st.binary(min_size=8, max_size=8)),
    _frames(0x2, [0x0], st.binary(min_size=5, max_size=5)),
    st.builds(
        raw_frame,
        st.integers(0, 12),
        st.integers(0, 255),
        _STREAMS,
        st.one_of(st.binary(max_size=40), st.just(_VALID_BLOCK)),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_strategy, max_size=20))
def test_arbitrary_frames_only_raise_protocol_failures(frames: list[bytes]) -> None:
    link = Link(H2Limits(max_resets_per_window=3, max_control_frames_per_window=5))
    for frame in [raw_frame(0x1, 0x4, 1, _VALID_BLOCK), *frames]:  # stream 1 open, for a start
        exercise(link, frame)
