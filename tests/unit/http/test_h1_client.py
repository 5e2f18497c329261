"""H1ResponseReader, serialize_request_head and the header rules applied before forwarding.

The response reader reads what an origin answers on one connection, one response per
`expect(method)`: 1xx first, HEAD (no body whatever the head says), 204/304, length, chunked
with trailers and close-delimited bodies; it learns keep-alive wishes, and turns anything
malformed into ProxyError(UPSTREAM_PROTOCOL). The `bastion.http.headers` rules (hop-by-hop
removal, Via) are checked here too, as they shape the request this side sends.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import BodyChunk, EndOfMessage, Event, Framing, Headers, ResponseHead
from bastion.http.h1_client import H1ResponseReader, serialize_request_head
from bastion.http.h1_server import H1RequestReader
from bastion.http.headers import (
    HOP_BY_HOP,
    append_via,
    connection_tokens,
    header_value,
    joined_values,
    next_hop_headers,
    tokens,
    without_hop_by_hop,
)


def merged(events: list[Event]) -> list[Event]:
    """Events with adjacent body chunks joined: how the bytes were split must not matter."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, BodyChunk) and out and isinstance(out[-1], BodyChunk):
            out[-1] = BodyChunk(out[-1].data + event.data)
        elif not (isinstance(event, BodyChunk) and not event.data):
            out.append(event)
    return out


def read(
    data: bytes | list[bytes], method: bytes = b"GET", *, eof: bool = False
) -> tuple[H1ResponseReader, list[Event]]:
    reader = H1ResponseReader()
    reader.expect(method)
    events: list[Event] = []
    for piece in [data] if isinstance(data, bytes) else data:
        events += reader.feed(piece)
    if eof:
        events += reader.eof()
    return reader, merged(events)


def read_bytewise(data: bytes, method: bytes = b"GET") -> list[Event]:
    return read([data[i : i + 1] for i in range(len(data))], method)[1]


def response_heads(events: list[Event]) -> list[ResponseHead]:
    return [event for event in events if isinstance(event, ResponseHead)]


def failure(data: bytes, method: bytes = b"GET") -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        read(data, method)
    return caught.value


# -- bodies and framing ---------------------------------------------------------------------


def test_content_length_response() -> None:
    reader, events = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert events == [
        ResponseHead(
            status=200,
            reason=b"OK",
            headers=[(b"content-length", b"5"), (b"x-a", b"b")],
            http_version=b"1.1",
            framing=Framing.LENGTH,
            content_length=5,
            keep_alive=True,
        ),
        BodyChunk(b"hello"),
        EndOfMessage([]),
    ]
    assert reader.done


def test_not_done_until_the_whole_body_arrived() -> None:
    reader = H1ResponseReader()
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert not reader.done
    assert merged(reader.feed(b"lo")) == [BodyChunk(b"lo"), EndOfMessage([])]
    assert reader.done


def test_chunked_response_with_trailers() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    reader, events = read(data)
    assert response_heads(events)[0].framing is Framing.CHUNKED
    assert events[1:] == [BodyChunk(b"hello world"), EndOfMessage([(b"x-sum", b"42")])]
    assert reader.done


def test_close_delimited_body_ends_at_eof() -> None:
    reader = H1ResponseReader()
    reader.expect(b"GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
    head = response_heads(events)[0]
    assert (head.framing, head.keep_alive) == (Framing.CLOSE, False)
    assert reader.reading_until_close
    events += reader.feed(b"def")
    assert not reader.done
    events += reader.eof()
    assert merged(events)[1:] == [BodyChunk(b"abcdef"), EndOfMessage([])]
    assert reader.done
    assert not reader.reading_until_close


def test_http10_response_without_length_is_close_delimited() -> None:
    _, events = read(b"HTTP/1.0 200 OK\r\n\r\nabc", eof=True)
    assert response_heads(events)[0].framing is Framing.CLOSE
    assert events[1:] == [BodyChunk(b"abc"), EndOfMessage([])]


def test_unknown_final_coding_means_read_until_close() -> None:
    # RFC 9112 6.3: a response whose final coding is not chunked is delimited by close.
    _, events = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", eof=True)
    assert response_heads(events)[0].framing is Framing.CLOSE
    assert events[1:] == [BodyChunk(b"abc"), EndOfMessage([])]


@pytest.mark.parametrize(
    "data",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", b"HTTP/1.1 200 OK\r\nContent-"],
    ids=["mid-body", "mid-head"],
)
def test_eof_before_the_end_of_a_framed_response_is_an_error(data: bytes) -> None:
    reader = H1ResponseReader()
    reader.expect(b"GET")
    reader.feed(data)
    with pytest.raises(ProxyError) as caught:
        reader.eof()
    assert caught.value.kind is ErrorKind.UPSTREAM_CLOSED


def test_eof_before_any_byte_is_upstream_closed() -> None:
    reader = H1ResponseReader()
    reader.expect(b"GET")
    with pytest.raises(ProxyError) as caught:
        reader.eof()
    assert caught.value.kind is ErrorKind.UPSTREAM_CLOSED


# -- 1xx, HEAD, 204/304 -------------------------------------------------------------------


def test_interim_responses_come_before_the_final_one() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    reader = H1ResponseReader()
    reader.expect(b"POST")
    first = reader.feed(data[:26])
    assert [head.status for head in response_heads(first)] == [100]
    assert all(head.informational for head in response_heads(first))
    assert not reader.done
    rest = merged(reader.feed(data[26:]))
    assert [head.status for head in response_heads(rest)] == [103, 200]
    assert response_heads(rest)[0].headers == [(b"link", b"</a.css>; rel=preload")]
    assert response_heads(rest)[0].framing is Framing.NONE
    assert rest[-2:] == [BodyChunk(b"ok"), EndOfMessage([])]
    assert reader.done


@pytest.mark.parametrize(
    "framing_header",
    [b"Content-Length: 1234", b"Transfer-Encoding: chunked", b"X-None: 1"],
    ids=["content-length", "chunked", "no-framing"],
)
def test_response_to_head_has_no_body_whatever_its_head_says(framing_header: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + framing_header + b"\r\n\r\n"
    reader, events = read(data, b"HEAD")
    head = response_heads(events)[0]
    assert head.framing is Framing.NONE
    assert events[1:] == [EndOfMessage([])]
    assert reader.done
    assert read_bytewise(data, b"HEAD") == events


def test_response_to_head_keeps_the_announced_length_for_the_client() -> None:
    _, events = read(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", b"HEAD")
    assert response_heads(events)[0].content_length == 1234


def test_response_to_head_after_a_100_continue() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    reader, events = read(data, b"HEAD")
    assert [head.status for head in response_heads(events)] == [100, 200]
    assert events[-1] == EndOfMessage([])
    assert reader.done


def assert_not_reusable_after(data: bytes, method: bytes, expected_body: bytes) -> None:
    """Bytes after a complete response: either a protocol error, or the response as sent
    (nothing of the extra bytes in it) and a reader that forbids reusing the connection."""
    reader = H1ResponseReader()
    reader.expect(method)
    try:
        events = merged(reader.feed(data))
    except ProxyError as error:
        assert error.kind is ErrorKind.UPSTREAM_PROTOCOL
        return
    assert len(response_heads(events)) == 1
    assert [e.data for e in events if isinstance(e, BodyChunk)] == (
        [expected_body] if expected_body else []
    )
    assert events[-1] == EndOfMessage([])
    assert reader.poisoned


def test_data_after_the_response_to_head_never_leaves_a_reusable_connection() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    assert_not_reusable_after(data + b"hello", b"HEAD", b"")
    reader = H1ResponseReader()
    reader.expect(b"HEAD")
    assert merged(reader.feed(data))[-1] == EndOfMessage([])
    assert reader.done
    try:
        extra = reader.feed(b"hello")
    except ProxyError as error:
        assert error.kind is ErrorKind.UPSTREAM_PROTOCOL
    else:
        assert extra == []
        assert reader.poisoned


@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL", b"junk"],
    ids=["partial-response", "whole-response", "junk"],
)
def test_bytes_after_a_complete_response_never_become_the_next_response(extra: bytes) -> None:
    # Response queue poisoning: what an origin sends before it is asked must not be read as
    # the answer to the next request on this connection.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert_not_reusable_after(data + extra, b"GET", b"ok")


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_even_with_a_content_length(status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    reader, events = read(data)
    assert response_heads(events)[0].framing is Framing.NONE
    assert events[1:] == [EndOfMessage([])]
    assert reader.done


def test_switching_protocols_hands_over_the_following_bytes() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nhello"
    reader, events = read(data)
    assert response_heads(events)[0].status == 101
    assert reader.switched
    assert reader.tunnel_data == b"hello"


# -- keep-alive ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "keep_alive", "timeout"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", True, None),
        (b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 0", True, 5.0),
        (b"HTTP/1.1 200 OK\r\nKeep-Alive: max=3, timeout=2.5\r\nContent-Length: 0", True, 2.5),
        (b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=soon\r\nContent-Length: 0", True, None),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0", False, None),
        (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0", False, None),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0", False, None),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0", True, None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", False, None),
    ],
    ids=[
        "default",
        "timeout",
        "timeout-second",
        "timeout-junk",
        "close",
        "close-case",
        "http10",
        "http10-keep-alive",
        "close-delimited",
    ],
)
def test_keep_alive_wishes_are_learned(
    head: bytes, keep_alive: bool, timeout: float | None
) -> None:
    _, events = read(head + b"\r\n\r\n")
    response = response_heads(events)[0]
    assert (response.keep_alive, response.keepalive_timeout) == (keep_alive, timeout)


def test_one_reader_serves_consecutive_responses_on_one_connection() -> None:
    reader = H1ResponseReader()
    answers: list[list[Event]] = []
    for method, data in [
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        (b"GET", b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
        (b"DELETE", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\n!"),
    ]:
        reader.expect(method)
        assert not reader.done
        answers.append(merged(reader.feed(data)))
        assert reader.done
    assert [response_heads(a)[0].status for a in answers] == [200, 200, 201, 204, 404]
    assert [a[1] for a in answers if len(a) == 3] == [
        BodyChunk(b"ab"),
        BodyChunk(b"x"),
        BodyChunk(b"!"),
    ]


# -- splitting -----------------------------------------------------------------------------

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine Thanks\r\nContent-Length: 1\r\n\r\n!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
]


@pytest.mark.parametrize("data", RESPONSES, ids=["length", "interim", "chunked", "empty"])
def test_feeding_one_byte_at_a_time_gives_the_same_events(data: bytes) -> None:
    # Including the reason phrase: llhttp reports it in pieces when it is split across reads.
    assert read_bytewise(data) == read(data)[1]


@pytest.mark.parametrize("data", RESPONSES, ids=["length", "interim", "chunked", "empty"])
def test_every_split_point_gives_the_same_events(data: bytes) -> None:
    whole = read(data)[1]
    for cut in range(1, len(data)):
        assert read([data[:cut], data[cut:]])[1] == whole, cut


def test_reason_of_an_interim_response_does_not_stick_to_the_final_one() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"
    assert [h.reason for h in response_heads(read(data)[1])] == [b"Continue", b""]


# -- garbage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A : b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    ],
    ids=[
        "not-http",
        "bad-status",
        "cl-and-te",
        "two-lengths",
        "plus-length",
        "bad-chunk",
        "nul-in-value",
        "space-before-colon",
        "obs-fold",
        "bare-lf",
    ],
)
def test_malformed_response_is_an_upstream_protocol_error(data: bytes) -> None:
    error = failure(data)
    assert error.kind is ErrorKind.UPSTREAM_PROTOCOL
    assert error.status == 502


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", *RESPONSES]),
    st.binary(max_size=200),
    st.sampled_from([b"GET", b"HEAD"]),
    st.booleans(),
)
def test_arbitrary_bytes_raise_nothing_but_proxy_error(
    prefix: bytes, noise: bytes, method: bytes, then_eof: bool
) -> None:
    reader = H1ResponseReader()
    reader.expect(method)
    try:
        reader.feed(prefix + noise)
        if then_eof:
            reader.eof()
    except ProxyError as error:
        assert error.kind in (ErrorKind.UPSTREAM_PROTOCOL, ErrorKind.UPSTREAM_CLOSED)


# -- serialize_request_head ----------------------------------------------------------------


def test_request_head_is_request_line_headers_in_order_and_blank_line() -> None:
    head = serialize_request_head(
        b"POST", b"/a?b", [(b"host", b"h"), (b"x-a", b"1"), (b"x-a", b"2")]
    )
    assert head == b"POST /a?b HTTP/1.1\r\nhost: h\r\nx-a: 1\r\nx-a: 2\r\n\r\n"


def test_serialized_request_head_reads_back_identically() -> None:
    headers: Headers = [(b"host", b"example.test"), (b"x-a", b"b c"), (b"content-length", b"2")]
    events = H1RequestReader().feed(serialize_request_head(b"PUT", b"/x", headers) + b"ok")
    head = events[0]
    assert (head.method, head.target, head.headers) == (b"PUT", b"/x", headers)  # type: ignore[union-attr]
    assert events[1:] == [BodyChunk(b"ok"), EndOfMessage([])]


# -- headers: hop-by-hop removal, Via, token lists -------------------------------------------


def test_every_hop_by_hop_header_is_removed() -> None:
    headers: Headers = [(b"host", b"h"), *((name, b"x") for name in sorted(HOP_BY_HOP))]
    headers.append((b"x-end", b"1"))
    assert without_hop_by_hop(headers) == [(b"host", b"h"), (b"x-end", b"1")]
    assert {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding",
            b"upgrade", b"proxy-connection"} <= HOP_BY_HOP  # fmt: skip


def test_headers_named_in_connection_are_removed_too() -> None:
    headers: Headers = [
        (b"host", b"h"),
        (b"connection", b"X-Secret, x-other"),
        (b"x-secret", b"1"),
        (b"connection", b"X-Third"),
        (b"x-other", b"2"),
        (b"x-third", b"3"),
        (b"x-kept", b"4"),
    ]
    assert without_hop_by_hop(headers) == [(b"host", b"h"), (b"x-kept", b"4")]


def test_connection_cannot_make_the_proxy_drop_host_or_content_length() -> None:
    # "Hop-by-hop abuse": naming Host or Content-Length in Connection must not strip them,
    # or the origin would read a different request (no Host; a body with no length).
    headers: Headers = [
        (b"host", b"h"),
        (b"connection", b"host, Content-Length, x-request-id, x-drop"),
        (b"content-length", b"5"),
        (b"x-request-id", b"r1"),
        (b"x-drop", b"d"),
    ]
    assert without_hop_by_hop(headers) == [
        (b"host", b"h"),
        (b"content-length", b"5"),
        (b"x-request-id", b"r1"),
    ]


def test_kept_hop_by_hop_headers_survive() -> None:
    headers: Headers = [(b"connection", b"upgrade"), (b"upgrade", b"websocket"), (b"te", b"x")]
    assert without_hop_by_hop(headers, keep=[b"upgrade"]) == [(b"upgrade", b"websocket")]


def test_hop_by_hop_removal_keeps_order_and_does_not_touch_the_input() -> None:
    headers: Headers = [(b"b", b"1"), (b"te", b"x"), (b"a", b"2"), (b"b", b"3")]
    before = list(headers)
    assert without_hop_by_hop(headers) == [(b"b", b"1"), (b"a", b"2"), (b"b", b"3")]
    assert headers == before


def test_append_via_adds_this_hop_or_extends_the_existing_via() -> None:
    headers: Headers = [(b"host", b"h")]
    append_via(headers, b"1.1")
    assert headers == [(b"host", b"h"), (b"via", b"1.1 bastion")]
    earlier: Headers = [(b"via", b"1.0 fred"), (b"x", b"y")]
    append_via(earlier, b"1.0")
    assert earlier == [(b"via", b"1.0 fred, 1.0 bastion"), (b"x", b"y")]


@pytest.mark.parametrize("version", [b"1.1", b"1.0", b"2"])
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"server", b"s"), (b"content-length", b"2")],
        [(b"via", b"1.0 fred"), (b"x", b"y")],
        [(b"x", b"1"), (b"connection", b"X-A, close"), (b"x-a", b"2"), (b"via", b"1.1 a")],
        [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"x", b"1")],
        [(b"te", b"trailers"), (b"x", b"1"), (b"transfer-encoding", b"chunked")],
        [(b"connection", b"content-length, x-request-id"), (b"content-length", b"1")],
    ],
)
def test_next_hop_headers_are_hop_by_hop_removal_then_via(headers: Headers, version: bytes) -> None:
    expected = without_hop_by_hop(headers)
    append_via(expected, version)
    before = list(headers)
    assert next_hop_headers(headers, version) == expected
    assert headers == before


def test_token_helpers() -> None:
    assert tokens(b" Keep-Alive , ,Upgrade,") == [b"keep-alive", b"upgrade"]
    headers: Headers = [(b"connection", b"a, B"), (b"x", b"1"), (b"connection", b"c"), (b"x", b"2")]
    assert connection_tokens(headers) == frozenset({b"a", b"b", b"c"})
    assert header_value(headers, b"x") == b"1"
    assert header_value(headers, b"missing") is None
    assert joined_values(headers, b"x") == b"1, 2"


hop_names = st.sampled_from(sorted(HOP_BY_HOP))
end_to_end_names = st.sampled_from([b"host", b"content-length", b"x-a", b"x-b", b"accept"])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(hop_names | end_to_end_names, st.binary(max_size=8)), max_size=10),
    st.lists(hop_names | end_to_end_names, max_size=4),
)
def test_hop_by_hop_removal_never_drops_host_or_content_length(
    headers: Headers, listed: list[bytes]
) -> None:
    with_connection = [*headers, (b"connection", b", ".join(listed))]
    kept = without_hop_by_hop(with_connection)
    protected = [(n, v) for n, v in with_connection if n in (b"host", b"content-length")]
    assert [(n, v) for n, v in kept if n in (b"host", b"content-length")] == protected
    assert not any(name in HOP_BY_HOP for name, _ in kept)
    assert not any(name in listed and name not in (b"host", b"content-length") for name, _ in kept)
