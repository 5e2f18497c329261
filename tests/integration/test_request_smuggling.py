"""Request smuggling through the proxy: ambiguous requests are refused and never reach an origin.

For each malformed request (the CL.TE / TE.CL / TE.TE classics, bad lengths and chunk sizes,
field syntax a second parser could read differently, a missing Host, oversized heads) the
client gets the expected status, bastion then closes the connection, and the origin behind it
has seen no request at all (and rejected nothing, so no malformed byte reached its parser
either). Valid pipelined traffic keeps working, and a valid request before a malformed one is
still answered.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.support.client import RawClient, RawResponse, request_bytes
from tests.support.origins import AutonomousOrigin, ScriptedOrigin, pattern_bytes
from tests.support.proxy import running_proxy, single_route_config

LIMITS = 'max_header_size = "4KB"\nmax_uri_size = "1KB"\nheader_timeout = "2s"'
HOST = b"Host: app.test\r\n"
SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n"


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST /submit HTTP/" + version + b"\r\n" + HOST + headers + b"\r\n" + body


def get_with(header_lines: bytes) -> bytes:
    return b"GET /echo HTTP/1.1\r\n" + HOST + header_lines + b"\r\n"


def config(origin: str) -> str:
    return single_route_config(origin, server=LIMITS)


async def send_and_read(port: int, data: bytes) -> tuple[RawResponse, bool]:
    """Send `data` on a fresh connection: the response, and whether bastion then closed."""
    async with RawClient(port) as client:
        await client.send(data)
        response = await client.read_response(timeout=2.0)
        return response, await client.wait_closed(timeout=2.0)


def assert_origin_saw_nothing(origin: AutonomousOrigin) -> None:
    assert [(r.method, r.target) for r in origin.requests] == []
    assert origin.rejected == 0


MALFORMED = [
    # -- the classics, each with a second request hidden where one parser sees a body ------
    pytest.param(
        post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="CL.TE",
    ),
    pytest.param(
        post(
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
        ),
        400,
        id="TE.CL",
    ),
    pytest.param(
        post(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\nContent-Length: 4\r\n",
            b"0\r\n\r\n" + SMUGGLED,
        ),
        400,
        id="TE.TE-second-field",
    ),
    pytest.param(
        post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="CL4-TE-chunked-then-admin",
    ),
    pytest.param(
        post(b"Content-Length: 4\r\nContent-Length: 40\r\n", b"abcd" + SMUGGLED),
        400,
        id="two-differing-content-lengths",
    ),
    pytest.param(post(b"Content-Length: +5\r\n", b"abcde"), 400, id="content-length-plus"),
    pytest.param(post(b"Content-Length: 5, 40\r\n", b"abcde" + SMUGGLED), 400, id="cl-list"),
    pytest.param(post(b"Content-Length: 0x5\r\n", b"abcde"), 400, id="content-length-hex"),
    pytest.param(
        post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-chunked-identity",
    ),
    pytest.param(
        post(b"Transfer-Encoding : chunked\r\nContent-Length: 4\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-space-before-colon",
    ),
    pytest.param(
        post(b" Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-leading-space",
    ),
    pytest.param(
        post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-obs-folded",
    ),
    pytest.param(
        post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-xchunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"1.0"),
        400,
        id="te-in-http10",
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        501,
        id="te-gzip-chunked",
    ),
    # -- chunk syntax ------------------------------------------------------------------------
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nab\r\n0\r\n\r\n"), 400, id="chunk-zz"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"1FFFFFFFFFFFFFFFF\r\n" + SMUGGLED),
        400,
        id="chunk-size-overflow",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n", b"2\r\nabXX0\r\n\r\n"),
        400,
        id="chunk-data-too-long",
    ),
    # -- field syntax ------------------------------------------------------------------------
    pytest.param(get_with(b"X-A : b\r\n"), 400, id="space-before-colon"),
    pytest.param(get_with(b"X-A: b\r\n c\r\n"), 400, id="obs-fold"),
    pytest.param(get_with(b"X-A: b\x00c\r\n"), 400, id="nul-in-value"),
    pytest.param(get_with(b"X-A: b\rc\r\n"), 400, id="cr-in-value"),
    pytest.param(get_with(b"X-A: b\x7fc\r\n"), 400, id="del-in-value"),
    pytest.param(get_with(b"X-A: b\nX-B: c\r\n"), 400, id="lf-in-value"),
    pytest.param(b"GET /echo HTTP/1.1\nHost: app.test\n\n", 400, id="bare-lf-line-endings"),
    # -- Host and method -------------------------------------------------------------------------
    pytest.param(b"GET /echo HTTP/1.1\r\n\r\n", 400, id="no-host-on-http11"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="host-with-space"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: evil/x\r\n\r\n", 400, id="host-with-slash"),
    pytest.param(b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n", 405, id="connect"),
    # -- sizes (configured: 4 KB of head, 1 KB of URI) ------------------------------------------
    pytest.param(get_with(b"X-Big: " + b"a" * 5000 + b"\r\n"), 431, id="headers-over-limit"),
    pytest.param(get_with(b"X-A: b\r\n" * 700), 431, id="many-headers-over-limit"),
    pytest.param(
        b"GET /" + b"a" * 1100 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, id="uri-over-limit"
    ),
]


@pytest.mark.parametrize(("data", "status"), MALFORMED)
async def test_malformed_request_is_refused_closed_and_never_reaches_the_origin(
    data: bytes, status: int
) -> None:
    async with AutonomousOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        response, closed = await send_and_read(proxy.ports[0], data)
        assert response.status == status
        assert response.header("connection") == b"close"
        assert closed
    assert_origin_saw_nothing(origin)


@pytest.mark.parametrize(("data", "status"), MALFORMED)
async def test_malformed_request_after_a_good_one_on_the_same_connection(
    data: bytes, status: int
) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_bytes("GET", "/echo?first=1", host="app.test"))
        assert (await client.read_response(timeout=2.0)).status == 200
        await client.send(data)
        assert (await client.read_response(timeout=2.0)).status == status
        assert await client.wait_closed(timeout=2.0)
    assert [r.target for r in origin.requests] == ["/echo?first=1"]
    assert origin.rejected == 0


async def test_default_header_limit_is_32kb() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        over, closed = await send_and_read(
            proxy.ports[0], get_with(b"X-Big: " + b"a" * (33 * 1024) + b"\r\n")
        )
        assert (over.status, closed) == (431, True)
        assert_origin_saw_nothing(origin)
        async with RawClient(proxy.ports[0]) as client:
            await client.send(get_with(b"X-Big: " + b"a" * (30 * 1024) + b"\r\n"))
            assert (await client.read_response(timeout=2.0)).status == 200
    assert len(origin.requests) == 1


@pytest.mark.parametrize(
    "request_line",
    [b"GET /echo HTTP/2.0\r\n\r\n", b"GET /echo\r\n\r\n"],
    ids=["http-2.0-label-without-host", "http-0.9-simple-request"],
)
async def test_request_that_is_not_http1x_never_reaches_the_origin(request_line: bytes) -> None:
    # Otherwise it would skip the HTTP/1.1 Host rule and be forwarded without a Host.
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_line)
        response = await client.read_response(timeout=2.0)
        assert response.status in (400, 505)
        assert await client.wait_closed(timeout=2.0)
    assert_origin_saw_nothing(origin)


@pytest.mark.parametrize(
    "lookalike", [b"Transfer_Encoding: chunked", b"Content_Length: 40"], ids=["te", "cl"]
)
async def test_underscore_lookalike_of_a_framing_header_never_reaches_the_origin(
    lookalike: bytes,
) -> None:
    # CGI/WSGI-style origins map `Transfer_Encoding` and `Transfer-Encoding` to the same
    # HTTP_TRANSFER_ENCODING variable: forwarding it lets the origin frame the body differently
    # from bastion. Refusing the request (400) or dropping the field are both safe.
    data = post(b"Content-Length: 5\r\n" + lookalike + b"\r\n", b"0\r\n\r\n" + SMUGGLED)
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(data)
        first = await client.read_response(timeout=2.0)
        if first.status == 400:
            assert await client.wait_closed(timeout=2.0)
    forwarded = {name for seen in origin.requests for name, _ in seen.headers}
    assert not {"transfer_encoding", "content_length"} & forwarded


# -- a smuggled request never reaches the origin --------------------------------------------


async def test_cl4_te_chunked_smuggling_attempt_never_delivers_admin() -> None:
    attack = post(
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: app.test\r\nX-Ignore: ",
    )
    follow_up = request_bytes("GET", "/echo?victim=1", host="app.test")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(attack)
        response = await client.read_response(timeout=2.0)
        assert response.status == 400
        assert await client.wait_closed(timeout=2.0)
        async with RawClient(proxy.ports[0]) as victim:
            await victim.send(follow_up)
            answer = await victim.read_response(timeout=2.0)
            assert answer.status == 200
            assert answer.json()["target"] == "/echo?victim=1"
    assert [r.target for r in origin.requests] == ["/echo?victim=1"]
    assert origin.rejected == 0


async def test_smuggling_attempt_sends_no_byte_of_admin_to_the_origin() -> None:
    # Watch the origin's raw bytes: bastion must not even open a connection for the attack.
    attack = post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED)
    async with ScriptedOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        response, closed = await send_and_read(proxy.ports[0], attack)
        assert (response.status, closed) == (400, True)
        with pytest.raises(TimeoutError):
            await origin.accept(timeout=0.2)
    assert origin.accepted == 0


async def test_bad_chunk_after_the_head_was_forwarded_never_completes_at_the_origin() -> None:
    # The head is valid and may already be on its way; the broken chunk must cut the upstream
    # request short (no last chunk), so the origin never sees a whole request.
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n"))
        await asyncio.sleep(0.1)
        await client.send(b"zz\r\n0\r\n\r\n" + SMUGGLED)
        raw = await client.read_until_close(timeout=2.0)
        assert raw.startswith(b"HTTP/1.1 400 ")
        assert client.closed_by_peer
        await asyncio.sleep(0.1)
    assert [r.target for r in origin.requests if r.body_complete] == []
    assert "/admin" not in [r.target for r in origin.requests]


# -- valid traffic around it ------------------------------------------------------------------


async def test_valid_pipelined_sequence_after_a_valid_request_still_works() -> None:
    body = pattern_bytes(3000)
    pipeline = (
        request_bytes("POST", "/echo?n=1", host="app.test", body=body)
        + b"POST /echo?n=2 HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"3\r\nabc\r\n0\r\n\r\n"
        + request_bytes("GET", "/echo?n=3", host="app.test")
    )  # fmt: skip
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_bytes("GET", "/echo?n=0", host="app.test"))
        assert (await client.read_response(timeout=2.0)).status == 200
        await client.send(pipeline)
        answers = [(await client.read_response(timeout=2.0)).json() for _ in range(3)]
        assert not client.closed_by_peer
    assert [a["target"] for a in answers] == ["/echo?n=1", "/echo?n=2", "/echo?n=3"]
    assert answers[0]["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert answers[1]["body_len"] == 3
    assert [r.target for r in origin.requests] == [f"/echo?n={n}" for n in range(4)]


async def test_valid_request_with_body_then_malformed_one_in_separate_writes() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_bytes("POST", "/echo", host="app.test", body=b"hello"))
        first = await client.read_response(timeout=2.0)
        assert first.status == 200
        assert first.json()["body_len"] == 5
        await client.send(get_with(b"X-A : smuggle\r\n"))
        assert (await client.read_response(timeout=2.0)).status == 400
        assert await client.wait_closed(timeout=2.0)
    assert [r.target for r in origin.requests] == ["/echo"]


async def test_valid_request_with_body_then_malformed_one_in_the_same_write() -> None:
    # Both arrive in one read: the first is still answered, then the second gets 400.
    data = request_bytes("POST", "/echo", host="app.test", body=b"hello") + post(
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED
    )
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(data)
        first = await client.read_response(timeout=2.0)
        assert first.status == 200
        assert first.json()["body_len"] == 5
        assert (await client.read_response(timeout=2.0)).status == 400
        assert await client.wait_closed(timeout=2.0)
    assert [r.target for r in origin.requests] == ["/echo"]


async def test_pipelined_request_after_a_large_body_is_not_taken_for_an_oversized_head() -> None:
    # One read carries the end of a 60 KB body and the start of the next request; the body is
    # not part of the next head, so no 431.
    body = pattern_bytes(60_000)
    first = request_bytes("POST", "/echo?n=1", host="app.test", body=body)
    second = request_bytes("GET", "/echo?n=2", host="app.test")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(first + second[:12])
        await asyncio.sleep(0.05)
        await client.send(second[12:])
        statuses = [(await client.read_response(timeout=2.0)).status for _ in range(2)]
    assert statuses == [200, 200]
    assert [r.target for r in origin.requests] == ["/echo?n=1", "/echo?n=2"]


async def test_long_uri_split_across_reads_is_judged_by_its_length() -> None:
    # 700 bytes of target under a 1 KB limit, sent in pieces as TCP may deliver them.
    data = b"GET /echo?q=" + b"a" * 688 + b" HTTP/1.1\r\n" + HOST + b"\r\n"
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        for start in range(0, len(data), 100):
            await client.send(data[start : start + 100])
            await asyncio.sleep(0.005)
        assert (await client.read_response(timeout=2.0)).status == 200
    assert len(origin.requests) == 1


UPGRADE_WITH_BODY = (
    b"POST /echo HTTP/1.1\r\n" + HOST + b"Connection: upgrade\r\nUpgrade: websocket\r\n"
    b"Content-Length: 2\r\n\r\nab"
)


async def test_upgrade_request_with_body_then_malformed_one_in_one_write_gets_200_then_400() -> (
    None
):
    # The Upgrade request carries a body, so it is not switched: it is answered, then the
    # malformed one behind it gets 400 (never a connection dropped without an answer).
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config(origin.address)) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(UPGRADE_WITH_BODY + b"GET /admin HTTP/1.1\r\nX-A : b\r\n\r\n")
        first = await client.read_response(timeout=2.0)
        assert (first.status, first.json()["body_len"]) == (200, 2)
        assert (await client.read_response(timeout=2.0)).status == 400
        assert await client.wait_closed(timeout=2.0)
    assert "/admin" not in [r.target for r in origin.requests]
    assert origin.rejected == 0
