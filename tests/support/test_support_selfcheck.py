"""Self-checks of the test-support origins and raw client, run against each other (no proxy).

What lives here: fast proofs that every autonomous-origin path, the scripted origin, the
WebSocket echo origin and the raw client's framing/incompleteness reporting behave as the
integration tests assume. It must not know bastion.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools

import pytest
from websockets.asyncio.client import connect

from tests.support.client import (
    NoResponseError,
    RawClient,
    ResponseParseError,
    http_get,
    http_request,
    request_bytes,
)
from tests.support.origins import (
    AutonomousOrigin,
    ScriptedOrigin,
    WebSocketEchoOrigin,
    pattern_bytes,
)
from tests.support.proxy_protocol_origin import ProxyProtocolOrigin

pytestmark = pytest.mark.timeout(10)


async def test_echo_describes_the_request_and_records_it() -> None:
    async with AutonomousOrigin() as origin:
        response = await http_request(
            origin.port, "POST", "/echo?x=1", headers=[("X-Thing", "a")], body=b"hello"
        )
    document = response.json()
    assert response.status == 200
    assert response.header(b"content-type") == b"application/json"
    assert document["method"] == "POST"
    assert document["target"] == "/echo?x=1"
    assert ["x-thing", "a"] in document["headers"]
    assert document["body_len"] == 5
    assert document["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert document["request_no"] == 1
    assert origin.requests[0].body == b"hello"
    assert origin.requests[0].header("host") == "test"
    assert origin.connections_opened == 1


async def test_keepalive_connection_numbers_its_requests() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(request_bytes("GET", "/a") + request_bytes("GET", "/b"))  # pipelined
        first = (await client.read_response()).json()
        second = (await client.read_response()).json()
        assert (first["request_no"], second["request_no"]) == (1, 2)
        assert first["conn_id"] == second["conn_id"]
        assert origin.open_connections == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_bytes_sends_the_pattern_with_the_asked_framing(chunked: bool) -> None:
    query = "&chunked=1&chunk=1000" if chunked else ""
    async with AutonomousOrigin() as origin:
        response = await http_get(origin.port, f"/bytes?n=2500{query}")
    assert response.body == pattern_bytes(2500)
    assert response.complete
    assert response.framing == ("chunked" if chunked else "content-length")
    assert response.chunk_sizes == ([1000, 1000, 500] if chunked else [])


async def test_large_body_streams_without_keeping_it() -> None:
    size = 8 * 1024 * 1024
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(request_bytes("GET", f"/bytes?n={size}"))
        response = await client.read_response(keep_body=False)
    assert (response.body, response.body_len) == (b"", size)
    assert response.body_sha256 == hashlib.sha256(pattern_pattern(size)).hexdigest()


def pattern_pattern(size: int) -> bytes:
    """The pattern built in 64 KiB slices, proving slices at offsets join seamlessly."""
    return b"".join(pattern_bytes(min(65536, size - at), at) for at in range(0, size, 65536))


@pytest.mark.parametrize("chunked", [False, True])
async def test_close_mid_body_is_seen_as_incomplete(chunked: bool) -> None:
    query = "&chunked=1" if chunked else ""
    async with AutonomousOrigin() as origin:
        response = await http_get(origin.port, f"/close-mid-body?n=1000&send=100{query}")
    assert not response.complete
    assert response.body == pattern_bytes(100)


async def test_stream_pieces_arrive_spread_out() -> None:
    async with AutonomousOrigin() as origin:
        response = await http_get(origin.port, "/stream?n=3&interval=0.1&sse=1")
    assert response.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert response.header("content-type") == b"text/event-stream"
    gaps = [later - earlier for earlier, later in itertools.pairwise(response.chunk_times)]
    assert len(gaps) == 2 and min(gaps) >= 0.08
    assert [piece.index for piece in origin.stream_pieces] == [0, 1, 2]


async def test_trailers_carry_the_body_checksum() -> None:
    async with AutonomousOrigin() as origin:
        response = await http_get(origin.port, "/trailers?n=300")
    assert response.trailers == [
        (b"x-checksum", hashlib.sha256(pattern_bytes(300)).hexdigest().encode())
    ]


async def test_informational_and_expect_continue() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(request_bytes("GET", "/informational"))
        response = await client.read_response()
        assert [r.status for r in response.informational] == [103]
        assert response.informational[0].header("link") == b"</style.css>; rel=preload"
        head = request_bytes("POST", "/expect", headers=[("Expect", "100-continue")], body=b"xyz")
        await client.send(head[:-3])
        interim = await client.read_response(skip_informational=False)
        assert interim.status == 100
        await client.send(b"xyz")
        assert (await client.read_response()).json()["body_len"] == 3


async def test_expect_reject_answers_417_without_the_body() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        head = request_bytes("POST", "/expect?reject=1", headers=[("Expect", "100-continue")])
        await client.send(head.replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n"))
        assert (await client.read_response()).status == 417
        assert await client.wait_closed()


async def test_head_status_and_set_headers() -> None:
    async with AutonomousOrigin() as origin:
        head = await http_request(origin.port, "HEAD", "/head")
        no_content = await http_get(origin.port, "/status/204")
        custom = await http_get(origin.port, "/set-headers?x-a=1&hdr=Connection:close,%20X-Foo")
    assert (head.header("content-length"), head.body) == (b"1234", b"")
    assert (no_content.status, no_content.framing) == (204, "none")
    assert custom.header("x-a") == b"1"
    assert b"x-foo" in (custom.header("connection") or b"").lower()


async def test_connection_ending_paths() -> None:
    async with AutonomousOrigin() as origin:
        no_length = await http_get(origin.port, "/no-length?n=50")
        assert (no_length.framing, no_length.body) == ("close", pattern_bytes(50))
        with pytest.raises(NoResponseError):
            await http_get(origin.port, "/close-before-response")
        with pytest.raises(ResponseParseError):
            await http_get(origin.port, "/garbage")
        async with RawClient(origin.port) as client:
            await client.send(request_bytes("GET", "/reset"))
            assert await client.wait_closed()
            assert client.reset_by_peer


async def test_malformed_request_is_rejected_with_400() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
        response = await client.read_response()
        assert response.status == 400
        assert await client.wait_closed()
    assert origin.rejected == 1


async def test_upgrade_switches_then_echoes_raw_bytes() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        upgrade = [("Connection", "upgrade"), ("Upgrade", "raw-echo")]
        await client.send(request_bytes("GET", "/upgrade", headers=upgrade) + b"early")
        response = await client.read_response()
        assert (response.status, response.header("upgrade")) == (101, b"raw-echo")
        await client.send(b"late")
        assert await client.stream.read_exactly(9) == b"earlylate"


async def test_keepalive_timeout_and_close_after() -> None:
    async with AutonomousOrigin(keepalive_timeout=0.2) as origin, RawClient(origin.port) as c:
        await c.send(request_bytes("GET", "/delay?s=0"))
        assert (await c.read_response()).header("keep-alive") == b"timeout=0.2"
        assert await c.wait_closed(timeout=2)
    async with AutonomousOrigin(close_after=1) as origin, RawClient(origin.port) as c:
        await c.send(request_bytes("GET", "/echo"))
        assert (await c.read_response()).header("connection") is None  # closes unannounced
        assert await c.wait_closed()


async def test_slow_upload_reads_everything() -> None:
    body = pattern_bytes(300_000)
    async with AutonomousOrigin() as origin:
        response = await http_request(
            origin.port, "PUT", "/upload?delay_per_chunk=0.001", body=body
        )
    assert response.json() == {
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


async def test_scripted_origin_round_trip_fin_and_rst() -> None:
    async with ScriptedOrigin() as origin, RawClient(origin.port) as client:
        await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        conn = await origin.accept()
        assert (await conn.read_request_head()).startswith(b"POST / HTTP/1.1\r\n")
        assert await conn.read_exactly(3) == b"abc"
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert (await client.read_response()).body == b"ok"
        await client.close()
        assert await conn.wait_closed_by_peer(timeout=2)
        assert origin.accepted == 1
    async with ScriptedOrigin() as origin, RawClient(origin.port) as client:
        conn = await origin.accept()
        conn.reset()
        assert await client.wait_closed()
        assert client.reset_by_peer


async def test_websocket_origin_echoes_text_and_binary() -> None:
    async with (
        WebSocketEchoOrigin() as origin,
        connect(f"ws://127.0.0.1:{origin.port}/chat?room=1") as websocket,
    ):
        await websocket.send("hi")
        assert await websocket.recv() == "hi"
        await websocket.send(b"\x00\x01")
        assert await websocket.recv() == b"\x00\x01"
    assert origin.paths == ["/chat?room=1"]
    assert ("upgrade", "websocket") in origin.request_headers[0]
    assert origin.messages == ["hi", b"\x00\x01"]


async def test_delay_body_sends_in_two_parts() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(request_bytes("GET", "/delay-body?s=0.2"))
        started = asyncio.get_running_loop().time()
        response = await client.read_response()
        assert response.body == b"abcd"
        assert asyncio.get_running_loop().time() - started >= 0.15


async def test_client_leaving_mid_body_is_not_an_origin_error() -> None:
    async with AutonomousOrigin() as origin:
        async with RawClient(origin.port) as client:
            await client.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        assert origin.open_connections == 0
    assert origin.requests[0].body == b"abc"
    assert not origin.requests[0].body_complete
    assert origin.handler_errors == []


async def test_bad_chunked_body_is_rejected_and_large_heads_pass() -> None:
    async with AutonomousOrigin() as origin, RawClient(origin.port) as client:
        await client.send(request_bytes("GET", "/echo", headers=[("x-big", "v" * 40_000)]))
        assert (await client.read_response()).status == 200
        await client.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        assert (await client.read_response()).status == 400
    assert (origin.rejected, origin.handler_errors) == (1, [])


async def test_proxy_protocol_origin_reads_v1_and_v2_and_refuses_the_rest() -> None:
    v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n"
    v2_local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    async with ProxyProtocolOrigin() as origin:
        for header in (v1, v2_local):
            async with RawClient(origin.port) as client:
                await client.send(header + request_bytes("GET", "/a") + request_bytes("GET", "/b"))
                first, second = await client.read_response(), await client.read_response()
            assert first.json()["conn_id"] == second.json()["conn_id"]
        async with RawClient(origin.port) as client:
            await client.send(request_bytes("GET", "/no-header"))
            assert await client.wait_closed()
    assert first.json()["proxy"]["command"] == "LOCAL"
    assert origin.headers[0].source == ("203.0.113.7", 51000)
    assert origin.headers[0].destination == ("10.0.0.1", 443)
    assert [len(conn.requests) for conn in origin.connections] == [2, 2]
    assert len(origin.bad_headers) == 1
