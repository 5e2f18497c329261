"""H1RequestReader and serialize_response_head: bytes in, events out, and every refusal.

The reader must be strict: anything a second parser could read differently (framing, header
syntax, Host) is refused with the status to answer, so nothing ambiguous reaches an origin.
Each malformed case is a row of a table; valid traffic is checked for identical events however
the bytes are split; hypothesis round-trips random requests and throws random bytes at it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import BodyChunk, EndOfMessage, Event, Framing, Headers, RequestHead
from bastion.http.h1_client import H1ResponseReader, serialize_request_head
from bastion.http.h1_server import H1RequestReader, reason_phrase, serialize_response_head

HOST = b"Host: example.test\r\n"


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A POST / with a Host header, the given header lines (CRLF-terminated) and body."""
    return b"POST / HTTP/" + version + b"\r\n" + HOST + headers + b"\r\n" + body


def get_with(header_lines: bytes) -> bytes:
    """A GET / with a Host header followed by `header_lines` (CRLF-terminated)."""
    return b"GET / HTTP/1.1\r\n" + HOST + header_lines + b"\r\n"


def merged(events: list[Event]) -> list[Event]:
    """Events with adjacent body chunks joined: how the bytes were split must not matter."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, BodyChunk) and out and isinstance(out[-1], BodyChunk):
            out[-1] = BodyChunk(out[-1].data + event.data)
        elif not (isinstance(event, BodyChunk) and not event.data):
            out.append(event)
    return out


def feed_pieces(reader: H1RequestReader, pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events += reader.feed(piece)
    return merged(events)


def parse(data: bytes, **limits: int) -> list[Event]:
    return feed_pieces(H1RequestReader(**limits), [data])


def parse_bytewise(data: bytes, **limits: int) -> list[Event]:
    return feed_pieces(H1RequestReader(**limits), [data[i : i + 1] for i in range(len(data))])


def refusal(data: bytes, *, bytewise: bool = False, **limits: int) -> ProxyError:
    """The ProxyError the reader raises for `data` (fails the test if it raises none).

    A reader may hand out the events completed before an error first and raise on the next
    feed, so an empty feed follows the data.
    """
    reader = H1RequestReader(**limits)
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    with pytest.raises(ProxyError) as caught:
        for piece in [*pieces, b""]:
            reader.feed(piece)
    return caught.value


def body_of(events: list[Event]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, BodyChunk))


def heads(events: list[Event]) -> list[RequestHead]:
    return [event for event in events if isinstance(event, RequestHead)]


# -- valid requests ------------------------------------------------------------------------


def test_get_becomes_a_head_and_an_end_with_lowercase_names_and_raw_values() -> None:
    events = parse(b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nX-Thing: Some Value\r\n\r\n")
    assert events == [
        RequestHead(
            method=b"GET",
            target=b"/a?b=c",
            http_version=b"1.1",
            headers=[(b"host", b"example.test"), (b"x-thing", b"Some Value")],
            framing=Framing.NONE,
            content_length=None,
            keep_alive=True,
            host=b"example.test",
            head_size=events[0].head_size,  # type: ignore[union-attr]
        ),
        EndOfMessage([]),
    ]
    assert heads(events)[0].head_size > 0


def test_content_length_body_is_delivered_and_framed_by_length() -> None:
    events = parse(post(b"Content-Length: 5\r\n", b"hello"))
    head = heads(events)[0]
    assert (head.framing, head.content_length) == (Framing.LENGTH, 5)
    assert body_of(events) == b"hello"
    assert events[-1] == EndOfMessage([])


def test_content_length_zero_means_no_body() -> None:
    events = parse(post(b"Content-Length: 0\r\n"))
    assert heads(events)[0].framing is Framing.NONE
    assert events[-1] == EndOfMessage([])


def test_chunked_body_with_extension_and_trailers() -> None:
    events = parse(
        post(
            b"Transfer-Encoding: chunked\r\n",
            b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: b\r\n\r\n",
        )
    )
    assert heads(events)[0].framing is Framing.CHUNKED
    assert body_of(events) == b"hello world"
    assert events[-1] == EndOfMessage([(b"x-sum", b"42"), (b"x-other", b"b")])


@pytest.mark.parametrize("value", [b"chunked", b"CHUNKED", b"Chunked ", b"\tchunked"])
def test_chunked_is_recognised_in_any_case_and_with_optional_whitespace(value: bytes) -> None:
    events = parse(post(b"Transfer-Encoding: " + value + b"\r\n", b"1\r\na\r\n0\r\n\r\n"))
    assert heads(events)[0].framing is Framing.CHUNKED
    assert body_of(events) == b"a"


def test_http10_without_host_is_accepted_and_not_kept_alive() -> None:
    head = heads(parse(b"GET / HTTP/1.0\r\n\r\n"))[0]
    assert (head.http_version, head.host, head.keep_alive) == (b"1.0", b"", False)


def test_http10_keep_alive_is_honoured() -> None:
    head = heads(parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))[0]
    assert head.keep_alive is True


def test_connection_close_ends_keep_alive() -> None:
    assert heads(parse(get_with(b"Connection: close\r\n")))[0].keep_alive is False


def test_expect_continue_only_for_http11_requests_with_a_body() -> None:
    with_body = post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"ab")
    assert heads(parse(with_body))[0].expect_continue is True
    assert heads(parse(get_with(b"Expect: 100-continue\r\n")))[0].expect_continue is False
    old = post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"ab", version=b"1.0")
    assert heads(parse(old))[0].expect_continue is False


def test_an_empty_line_before_a_request_is_ignored() -> None:
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request-line.
    assert heads(parse(b"\r\n" + get_with(b"")))[0].target == b"/"


def test_in_message_is_true_only_between_the_first_byte_and_the_end() -> None:
    reader = H1RequestReader()
    assert not reader.in_message
    reader.feed(b"POST / HTTP/1.1\r\n")
    assert reader.in_message
    reader.feed(HOST + b"Content-Length: 2\r\n\r\na")
    assert reader.in_message
    reader.feed(b"b")
    assert not reader.in_message


# -- pipelining and splitting -------------------------------------------------------------

PIPELINE = (
    b"GET /one HTTP/1.1\r\n" + HOST + b"\r\n"
    b"POST /two HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc"
    b"POST /three HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
    b"2\r\nde\r\n1\r\nf\r\n0\r\nX-T: 1\r\n\r\n"
    b"GET /four HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
)


def test_pipelined_requests_in_one_feed_come_out_in_order() -> None:
    events = parse(PIPELINE)
    assert [head.target for head in heads(events)] == [b"/one", b"/two", b"/three", b"/four"]
    assert [type(e).__name__ for e in events] == [
        "RequestHead", "EndOfMessage",
        "RequestHead", "BodyChunk", "EndOfMessage",
        "RequestHead", "BodyChunk", "EndOfMessage",
        "RequestHead", "EndOfMessage",
    ]  # fmt: skip
    assert events[3] == BodyChunk(b"abc")
    assert events[6] == BodyChunk(b"def")
    assert events[7] == EndOfMessage([(b"x-t", b"1")])


def test_feeding_one_byte_at_a_time_gives_the_same_events() -> None:
    assert parse_bytewise(PIPELINE) == parse(PIPELINE)


def test_every_split_point_gives_the_same_events() -> None:
    whole = parse(PIPELINE)
    for cut in range(1, len(PIPELINE)):
        pieces = [PIPELINE[:cut], PIPELINE[cut:]]
        assert feed_pieces(H1RequestReader(), pieces) == whole, cut


def test_events_completed_before_an_error_in_the_same_feed_are_not_lost() -> None:
    # A valid request and a malformed one arrive in one read. The valid one must still be
    # answered (the connection then gets 400 and is closed), so the reader may raise only once
    # it has handed out what came before the error (here: on the next feed).
    valid = post(b"Content-Length: 3\r\n", b"abc")
    malformed = b"GET /bad HTTP/1.1\r\nHost: a\r\nX-Bad : 1\r\n\r\n"
    reader = H1RequestReader()
    events: list[Event] = []
    with pytest.raises(ProxyError) as caught:
        events += reader.feed(valid + malformed)
        events += reader.feed(b"")
    assert caught.value.status == 400
    assert merged(events) == parse(valid)


def test_no_event_of_a_request_broken_in_its_body_is_handed_out_from_the_same_read() -> None:
    # Its head is valid, but its body is not: handing the head out would start a request at
    # the origin that can never be completed honestly.
    valid = get_with(b"")
    broken = b"POST /broken HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    for data in (broken, valid + broken):
        reader = H1RequestReader()
        events: list[Event] = []
        with pytest.raises(ProxyError) as caught:
            events += reader.feed(data)
            events += reader.feed(b"")
        assert caught.value.status == 400
        assert b"/broken" not in [head.target for head in heads(events)]


# -- malformed requests: status table -------------------------------------------------------

MALFORMED = [
    # framing: Content-Length and Transfer-Encoding together, bad lengths (RFC 9112 6.1, 6.3)
    pytest.param(post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
                 id="CL.TE"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n"), 400,
                 id="TE.CL"),
    pytest.param(post(b"Content-Length: 4\r\nContent-Length: 5\r\n", b"abcde"), 400,
                 id="two-differing-content-lengths"),
    pytest.param(post(b"Content-Length: 4, 5\r\n", b"abcde"), 400, id="content-length-list"),
    pytest.param(post(b"Content-Length: +5\r\n", b"abcde"), 400, id="content-length-plus"),
    pytest.param(post(b"Content-Length: -1\r\n"), 400, id="content-length-negative"),
    pytest.param(post(b"Content-Length: 0x5\r\n", b"abcde"), 400, id="content-length-hex"),
    pytest.param(post(b"Content-Length: 5a\r\n", b"abcde"), 400, id="content-length-trailing-junk"),
    pytest.param(post(b"Content-Length: 5 5\r\n", b"abcde"), 400, id="content-length-two-numbers"),
    pytest.param(post(b"Content-Length: \r\n"), 400, id="content-length-empty"),
    pytest.param(post(b"Content-Length: 99999999999999999999999\r\n"), 400,
                 id="content-length-overflow"),
    # transfer codings (RFC 9112 6.1): chunked must be final, exactly once
    pytest.param(post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), 400,
                 id="te-chunked-not-final"),
    pytest.param(post(b"Transfer-Encoding: gzip\r\n", b"abc"), 400, id="te-gzip-only"),
    pytest.param(post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 400, id="te-xchunked"),
    pytest.param(post(b"Transfer-Encoding: chunked;q=1\r\n", b"0\r\n\r\n"), 400,
                 id="te-chunked-with-parameter"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                      b"0\r\n\r\n"), 400, id="te-chunked-twice"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n", b"0\r\n\r\n"),
                 400, id="te-chunked-then-unknown-field"),
    pytest.param(post(b"Transfer-Encoding: \r\n"), 400, id="te-empty"),
    pytest.param(post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501,
                 id="te-gzip-chunked-unsupported"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"1.0"), 400,
                 id="te-in-http10"),
    pytest.param(post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400,
                 id="te-space-before-colon"),
    pytest.param(post(b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400,
                 id="te-line-starting-with-space"),
    pytest.param(post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"), 400,
                 id="te-obs-folded"),
    # chunk syntax (RFC 9112 7.1)
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"), 400,
                 id="chunk-size-zz"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"1FFFFFFFFFFFFFFFF\r\nab\r\n"), 400,
                 id="chunk-size-overflow"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"-1\r\nab\r\n"), 400,
                 id="chunk-size-negative"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"0x2\r\nab\r\n0\r\n\r\n"), 400,
                 id="chunk-size-0x"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"2\r\nabXX0\r\n\r\n"), 400,
                 id="chunk-data-longer-than-size"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"2\nab\n0\n\n"), 400,
                 id="chunk-bare-lf"),
    pytest.param(post(b"Transfer-Encoding: chunked\r\n", b"0\r\nX-T : 1\r\n\r\n"), 400,
                 id="trailer-space-before-colon"),
    # field syntax (RFC 9112 5)
    pytest.param(get_with(b"X-A : b\r\n"), 400, id="space-before-colon"),
    pytest.param(get_with(b"X-A\t: b\r\n"), 400, id="tab-before-colon"),
    pytest.param(get_with(b"X-A: b\r\n c\r\n"), 400, id="obs-fold-space"),
    pytest.param(get_with(b"X-A: b\r\n\tc\r\n"), 400, id="obs-fold-tab"),
    pytest.param(get_with(b"X-A: b\x00c\r\n"), 400, id="nul-in-value"),
    pytest.param(get_with(b"X-A: b\rc\r\n"), 400, id="cr-in-value"),
    pytest.param(get_with(b"X-A: b\nc\r\n"), 400, id="lf-in-value"),
    pytest.param(get_with(b"X-A: b\x7fc\r\n"), 400, id="del-in-value"),
    pytest.param(get_with(b"X-A: b\x01c\r\n"), 400, id="ctl-01-in-value"),
    pytest.param(get_with(b"X-A: b\x1bc\r\n"), 400, id="escape-in-value"),
    pytest.param(get_with(b"X-\x00A: b\r\n"), 400, id="nul-in-name"),
    pytest.param(get_with(b": b\r\n"), 400, id="empty-name"),
    pytest.param(get_with(b"X-No-Colon\r\n"), 400, id="no-colon"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", 400, id="bare-lf-line-endings"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, id="bare-lf-after-a-field"),
    pytest.param(b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, id="bare-cr"),
    # request line
    pytest.param(b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="space-in-target"),
    pytest.param(b"GET /a\x01b HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="ctl-in-target"),
    pytest.param(b"GET /a\x00b HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="nul-in-target"),
    pytest.param(b"GET / HTTP/1.2\r\n" + HOST + b"\r\n", 400, id="http-1.2"),
    # Host (RFC 9112 3.2)
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host-on-http11"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, id="two-equal-hosts"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, id="host-empty"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="host-with-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, id="host-with-slash"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, id="host-with-userinfo"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400, id="host-list"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", 400, id="host-with-backslash"),
    # methods
    pytest.param(b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", 405,
                 id="connect"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "status"), MALFORMED)
def test_malformed_request_is_refused_with_its_status(data: bytes, status: int) -> None:
    assert refusal(data).status == status


@pytest.mark.parametrize(("data", "status"), MALFORMED)
def test_malformed_request_fed_bytewise_is_refused_with_the_same_status(
    data: bytes, status: int
) -> None:
    assert refusal(data, bytewise=True).status == status


@pytest.mark.parametrize(("data", "status"), MALFORMED)
def test_malformed_request_after_a_valid_one_is_refused(data: bytes, status: int) -> None:
    reader = H1RequestReader()
    assert heads(merged(reader.feed(get_with(b""))))[0].target == b"/"
    with pytest.raises(ProxyError) as caught:
        reader.feed(data)
        reader.feed(b"")
    assert caught.value.status == status


def test_refusals_carry_the_kind_that_names_the_cause() -> None:
    assert refusal(get_with(b"X-A : b\r\n")).kind is ErrorKind.BAD_REQUEST
    gzip = post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n")
    assert refusal(gzip).kind is ErrorKind.UNSUPPORTED_CODING
    connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"
    assert refusal(connect).kind is ErrorKind.METHOD_NOT_ALLOWED


@pytest.mark.parametrize(
    "extra_field",
    [b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: cow\r\n", b"Transfer-Encoding: x\r\n"],
)
def test_transfer_encoding_fields_are_combined_before_judging(extra_field: bytes) -> None:
    # RFC 9110 5.3: two field lines mean the same as one line with both values joined by a
    # comma. `TE: gzip` + `TE: chunked` is `TE: gzip, chunked`, so it must get that answer and
    # never be treated as plain chunked (the gzip coding would silently be dropped).
    value = extra_field.split(b": ", 1)[1].rstrip()
    two_fields = post(extra_field + b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n")
    one_field = post(b"Transfer-Encoding: " + value + b", chunked\r\n", b"0\r\n\r\n")
    assert refusal(two_fields).status == refusal(one_field).status


@pytest.mark.parametrize(
    "request_line",
    [b"GET / HTTP/2.0\r\n\r\n", b"GET / HTTP/3.0\r\n\r\n", b"GET /\r\n\r\n"],
    ids=["http-2.0-without-host", "http-3.0-without-host", "http-0.9-simple-request"],
)
def test_only_http10_and_http11_request_lines_are_accepted(request_line: bytes) -> None:
    # Anything else is not HTTP/1.x at all (505, or 400): a request labelled 2.0 would
    # otherwise skip the Host and Transfer-Encoding rules, which test for 1.1 and 1.0 only.
    assert refusal(request_line).status in (400, 505)


def test_http20_label_does_not_bypass_the_transfer_encoding_rules() -> None:
    data = b"POST / HTTP/2.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert refusal(data).status in (400, 505)


@pytest.mark.parametrize(
    "lookalike", [b"Transfer_Encoding: chunked", b"Content_Length: 5", b"Host_: other"]
)
def test_underscore_lookalike_of_a_framing_field_is_never_handed_on(lookalike: bytes) -> None:
    # CGI/WSGI origins read `Transfer_Encoding` as Transfer-Encoding: refuse it or drop it.
    data = post(b"Content-Length: 5\r\n" + lookalike + b"\r\n", b"0\r\n\r\n")
    try:
        events = parse(data)
    except ProxyError as error:
        assert error.status == 400
        return
    assert all(b"_" not in name for name, _ in heads(events)[0].headers)
    assert body_of(events) == b"0\r\n\r\n"


# -- size limits ----------------------------------------------------------------------------


def test_headers_over_the_default_32kb_get_431() -> None:
    big = get_with(b"X-Big: " + b"a" * (33 * 1024) + b"\r\n")
    assert refusal(big).status == 431
    assert refusal(big).kind is ErrorKind.HEADERS_TOO_LARGE


def test_headers_under_the_default_limit_are_accepted() -> None:
    assert heads(parse(get_with(b"X-Big: " + b"a" * (30 * 1024) + b"\r\n")))


def test_many_small_headers_over_the_limit_get_431() -> None:
    assert refusal(get_with(b"X-A: b\r\n" * 5000)).status == 431


def test_a_head_that_never_ends_is_refused_before_it_is_complete() -> None:
    reader = H1RequestReader(max_header_size=4096, max_uri_size=1024)
    reader.feed(b"GET / HTTP/1.1\r\n" + HOST + b"X-Endless: ")
    with pytest.raises(ProxyError) as caught:
        for _ in range(100):
            reader.feed(b"a" * 1000)
    assert caught.value.status == 431


def test_uri_over_the_default_8kb_gets_414() -> None:
    long_uri = b"GET /" + b"a" * (9 * 1024) + b" HTTP/1.1\r\n" + HOST + b"\r\n"
    assert refusal(long_uri).status == 414
    assert refusal(long_uri).kind is ErrorKind.URI_TOO_LONG


def test_uri_that_never_ends_gets_414() -> None:
    reader = H1RequestReader(max_header_size=4096, max_uri_size=1024)
    reader.feed(b"GET /")
    with pytest.raises(ProxyError) as caught:
        for _ in range(100):
            reader.feed(b"a" * 100)
    assert caught.value.status == 414


def test_configured_limits_apply() -> None:
    limits = {"max_header_size": 4096, "max_uri_size": 1024}
    assert refusal(get_with(b"X: " + b"a" * 5000 + b"\r\n"), **limits).status == 431
    uri = b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
    assert refusal(uri, **limits).status == 414
    assert heads(parse(get_with(b"X: " + b"a" * 3000 + b"\r\n"), **limits))


def test_uri_limit_does_not_depend_on_how_the_bytes_arrive() -> None:
    # A target of 60% of the limit is accepted in one read; it must be accepted in many reads
    # too (the request line is what TCP splits most, for long URLs).
    limits = {"max_header_size": 4096, "max_uri_size": 1024}
    data = b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
    assert heads(parse(data, **limits))[0].target == b"/" + b"a" * 600
    assert parse_bytewise(data, **limits) == parse(data, **limits)
    assert feed_pieces(H1RequestReader(**limits), [data[:300], data[300:]]) == parse(data, **limits)


def test_large_body_before_a_partial_pipelined_head_does_not_count_as_head_bytes() -> None:
    # One read holds the end of a 50 KB body and the start of the next request: the body's
    # bytes are not part of the next request's head.
    body = b"x" * 50_000
    first = post(b"Content-Length: 50000\r\n", body)
    second = b"GET /second HTTP/1.1\r\n" + HOST + b"\r\n"
    reader = H1RequestReader()
    events = feed_pieces(reader, [first + second[:10], second[10:]])
    assert [head.target for head in heads(events)] == [b"/", b"/second"]
    assert body_of(events) == body


# -- upgrades ----------------------------------------------------------------------------

UPGRADE = b"GET /chat HTTP/1.1\r\n" + HOST + b"Connection: upgrade\r\nUpgrade: websocket\r\n"


def test_upgrade_request_holds_later_bytes_for_the_tunnel() -> None:
    reader = H1RequestReader()
    events = reader.feed(UPGRADE + b"\r\nhello")
    assert len(events) == 1
    head = heads(events)[0]
    assert (head.upgrade, head.framing) == (b"websocket", Framing.NONE)
    assert reader.feed(b" world") == []
    assert reader.accept_upgrade() == b"hello world"


def test_declined_upgrade_parses_what_followed_as_requests() -> None:
    reader = H1RequestReader()
    events = reader.feed(UPGRADE + b"\r\nGET /next HTTP/1.1\r\n" + HOST + b"\r\n")
    assert [head.target for head in heads(events)] == [b"/chat"]
    after = merged(reader.decline_upgrade())
    assert [head.target for head in heads(after)] == [b"/next"]
    assert after[-1] == EndOfMessage([])
    later = merged(reader.feed(b"GET /later HTTP/1.1\r\n" + HOST + b"\r\n"))
    assert [head.target for head in heads(later)] == [b"/later"]


def test_declined_upgrade_still_refuses_a_malformed_follower() -> None:
    reader = H1RequestReader()
    reader.feed(UPGRADE + b"\r\nGET /next HTTP/1.1\r\nX-A : b\r\n\r\n")
    with pytest.raises(ProxyError) as caught:
        reader.decline_upgrade()
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        (b"Content-Length: 5\r\n", b"hello"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_request_with_a_body_is_not_switched_and_its_body_is_parsed(
    framing: bytes, body: bytes
) -> None:
    data = UPGRADE_WITH_BODY + framing + b"\r\n" + body
    data += b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"
    for events in (parse(data), parse_bytewise(data)):
        first, second = heads(events)
        assert first.upgrade is None
        assert body_of(events) == b"hello"
        assert second.target == b"/next"
        assert events[-1] == EndOfMessage([])


UPGRADE_WITH_BODY = UPGRADE.replace(b"GET", b"POST")


@pytest.mark.parametrize(
    "data",
    [
        UPGRADE_WITH_BODY + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n",
        UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nabGET / HTTP/1.1\r\nX-A : b\r\n\r\n",
        UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nab\x00\x01\x02",
    ],
    ids=["bad-chunk", "next-without-host", "next-space-before-colon", "garbage"],
)
def test_upgrade_request_with_a_body_then_bad_bytes_in_the_same_read_gets_400(data: bytes) -> None:
    # The same bytes split after the head are refused with 400; in one read they must be too,
    # never escape as a raw httptools exception past the connection's error handling.
    head_end = data.index(b"\r\n\r\n") + 4
    with pytest.raises(ProxyError) as split:
        feed_pieces(H1RequestReader(), [data[:head_end], data[head_end:], b""])
    assert split.value.status == 400
    assert refusal(data).status == 400


@pytest.mark.parametrize(
    ("follower", "status"),
    [
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
        (get_with(b"X-Big: " + b"a" * 5000 + b"\r\n"), 431),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    ],
    ids=["uri-too-long", "headers-too-large", "connect"],
)
def test_request_behind_an_upgrade_request_with_a_body_keeps_its_own_status(
    follower: bytes, status: int
) -> None:
    # One read or two, the request behind the (unswitched) upgrade request gets its status.
    limits = {"max_header_size": 4096, "max_uri_size": 1024}
    first = UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nab"
    for pieces in ([first + follower], [first, follower]):
        reader = H1RequestReader(**limits)
        with pytest.raises(ProxyError) as caught:
            feed_pieces(reader, [*pieces, b""])
        assert caught.value.status == status, len(pieces)


def test_upgrade_request_with_a_body_then_an_upgrade_request_in_the_same_read() -> None:
    data = UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nab" + UPGRADE + b"\r\ntunnel"
    reader = H1RequestReader()
    events = merged(reader.feed(data))
    assert [head.upgrade for head in heads(events)] == [None, b"websocket"]
    assert body_of(events) == b"ab"
    assert reader.accept_upgrade() == b"tunnel"


def test_upgrade_without_connection_upgrade_is_an_ordinary_request() -> None:
    data = b"GET / HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\n\r\nGET /2 HTTP/1.1\r\n" + HOST
    events = parse(data + b"\r\n")
    assert [head.upgrade for head in heads(events)] == [None, None]


# -- serialize_response_head ----------------------------------------------------------------


def test_response_head_is_status_line_headers_in_order_and_blank_line() -> None:
    head = serialize_response_head(200, b"OK", [(b"b", b"2"), (b"a", b"1"), (b"b", b"3")])
    assert head == b"HTTP/1.1 200 OK\r\nb: 2\r\na: 1\r\nb: 3\r\n\r\n"


def test_response_head_uses_the_standard_reason_when_none_is_given() -> None:
    assert serialize_response_head(404, b"", []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert serialize_response_head(431, b"", []).startswith(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    )
    assert reason_phrase(799) == b""


def test_response_head_keeps_a_custom_reason_and_version() -> None:
    assert serialize_response_head(200, b"Fine", [], b"1.0") == b"HTTP/1.0 200 Fine\r\n\r\n"


def test_serialized_response_head_reads_back_identically() -> None:
    headers: Headers = [(b"content-length", b"3"), (b"x-a", b"b c")]
    reader = H1ResponseReader()
    reader.expect(b"GET")
    events = reader.feed(serialize_response_head(201, b"", headers) + b"abc")
    response = events[0]
    assert type(response).__name__ == "ResponseHead"
    assert (response.status, response.reason, response.headers) == (  # type: ignore[union-attr]
        201,
        b"Created",
        headers,
    )


# -- hypothesis ----------------------------------------------------------------------------

# RFC 9110 tchar without "_": fields named with one are bastion's to drop (see below).
TOKEN_CHARS = "!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING_NAMES = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade",
                 b"expect", b"keep-alive", b"proxy-connection", b"te", b"trailer"}  # fmt: skip
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"PURGE"]

names = (
    st.text(TOKEN_CHARS, min_size=1, max_size=20)
    .map(str.encode)
    .filter(lambda name: name.lower() not in FRAMING_NAMES)
)
visible = st.integers(0x21, 0x7E) | st.integers(0x80, 0xFF)
field_values = st.one_of(
    st.just(b""),
    visible.map(lambda byte: bytes([byte])),
    st.builds(
        lambda first, middle, last: bytes([first, *middle, last]),
        visible,
        st.lists(visible | st.sampled_from([0x20, 0x09]), max_size=30),
        visible,
    ),
)
header_lists = st.lists(st.tuples(names, field_values), max_size=6)
path_chars = st.sampled_from(list(b"abcXYZ019-._~!$&'()*+,;=:@/%?"))
targets = st.lists(path_chars, max_size=40).map(lambda chars: b"/" + bytes(chars))


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, Headers, bytes, Headers]:
    """(wire bytes, method, target, headers as sent, body, trailers)."""
    method = draw(st.sampled_from(METHODS))
    target = draw(targets)
    headers = [(b"Host", b"example.test"), *draw(header_lists)]
    body = b"" if method == b"HEAD" else draw(st.binary(max_size=300))
    trailers: Headers = []
    if body and draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(1, len(body)), max_size=5, unique=True)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        trailers = draw(st.lists(st.tuples(names, field_values), max_size=3))
        headers.append((b"Transfer-Encoding", b"chunked"))
        wire_body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces)
        wire_body += b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
    else:
        if body:
            headers.append((b"Content-Length", str(len(body)).encode()))
        wire_body = body
    wire = serialize_request_head(method, target, headers) + wire_body
    return wire, method, target, headers, body, trailers


def random_split(
    draw: Callable[[st.SearchStrategy[list[int]]], list[int]], data: bytes
) -> list[bytes]:
    if not data:
        return [data]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    """What a request's events say, without the fields the reader derives (framing, sizes)."""
    out: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, RequestHead):
            out.append(("head", event.method, event.target, event.headers))
        elif isinstance(event, BodyChunk):
            out.append(("body", event.data))
        elif isinstance(event, EndOfMessage):
            out.append(("end", event.trailers))
    return out


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_valid_requests_round_trip_whatever_the_split(data: st.DataObject) -> None:
    requests = data.draw(st.lists(valid_requests(), min_size=1, max_size=3))
    wire = b"".join(request[0] for request in requests)
    events = feed_pieces(H1RequestReader(), random_split(data.draw, wire))
    expected: list[tuple[object, ...]] = []
    for _, method, target, headers, body, trailers in requests:
        expected.append(("head", method, target, [(n.lower(), v) for n, v in headers]))
        if body:
            expected.append(("body", body))
        expected.append(("end", [(n.lower(), v) for n, v in trailers]))
    assert summary(events) == expected


VALID_PREFIXES = [
    b"",
    get_with(b""),
    b"GET / HTTP/1.1\r\n",
    post(b"Content-Length: 10\r\n"),
    post(b"Transfer-Encoding: chunked\r\n"),
    UPGRADE + b"\r\n",
    UPGRADE_WITH_BODY + b"Content-Length: 2\r\n\r\nab",
    UPGRADE_WITH_BODY + b"Transfer-Encoding: chunked\r\n\r\n",
]


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(VALID_PREFIXES), st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_proxy_error(
    data: st.DataObject, prefix: bytes, noise: bytes
) -> None:
    reader = H1RequestReader(max_header_size=1024, max_uri_size=256)
    try:
        for piece in random_split(data.draw, prefix + noise):
            reader.feed(piece)
    except ProxyError as error:
        assert error.status in (400, 405, 414, 431, 501, 505)


FORBIDDEN_IN_VALUE = [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]
FORBIDDEN_IN_NAME = [*range(0x00, 0x21), 0x7F, *b'"(),/;<=>?@[\\]{}']


@settings(max_examples=100, deadline=None)
@given(names, field_values, st.sampled_from(FORBIDDEN_IN_VALUE), st.data())
def test_header_value_with_a_control_character_is_refused(
    name: bytes, value: bytes, forbidden: int, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(value)))
    bad_value = value[:at] + bytes([forbidden]) + value[at:]
    assert refusal(get_with(name + b": " + bad_value + b"\r\n")).status == 400


@settings(max_examples=100, deadline=None)
@given(names, field_values, st.sampled_from(FORBIDDEN_IN_NAME), st.data())
def test_header_name_with_a_forbidden_byte_is_refused(
    name: bytes, value: bytes, forbidden: int, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(name)))
    bad_name = name[:at] + bytes([forbidden]) + name[at:]
    assert refusal(get_with(bad_name + b": " + value + b"\r\n")).status == 400


@settings(max_examples=100, deadline=None)
@given(names, field_values, st.lists(st.sampled_from([b" ", b"\t"]), min_size=1, max_size=3))
def test_whitespace_before_the_colon_is_refused(
    name: bytes, value: bytes, blanks: list[bytes]
) -> None:
    assert refusal(get_with(name + b"".join(blanks) + b": " + value + b"\r\n")).status == 400


@settings(max_examples=100, deadline=None)
@given(names, field_values, field_values.filter(bool), st.sampled_from([b" ", b"\t"]))
def test_obs_fold_is_refused(name: bytes, value: bytes, more: bytes, blank: bytes) -> None:
    assert refusal(get_with(name + b": " + value + b"\r\n" + blank + more + b"\r\n")).status == 400
