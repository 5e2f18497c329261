"""HTTP/1.1 through the proxy: keep-alive, pipelining, HEAD, 1xx, bodies both ways, trailers,
hop-by-hop removal, Via, HTTP/1.0 clients, streaming responses."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from tests.support.client import RawClient, http_get, http_request, request_bytes
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import running_proxy, single_route_config


async def test_get_reaches_origin_and_comes_back() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        response = await http_get(proxy.ports[0], "/echo?x=1", host="app.example")
        assert response.status == 200
        seen = response.json()
        assert seen["method"] == "GET"
        assert seen["target"] == "/echo?x=1"
        headers = dict(seen["headers"])
        assert headers["host"] == "app.example"
        assert headers["via"] == "1.1 bastion"
        assert response.header("via") == b"1.1 bastion"


async def test_keepalive_serves_many_requests_on_one_connection_and_pools_origin() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            for number in range(5):
                await client.send(request_bytes("GET", f"/echo?n={number}"))
                response = await client.read_response()
                assert response.status == 200
                assert response.json()["target"] == f"/echo?n={number}"
        assert origin.connections_opened == 1
        assert len({r.conn_id for r in origin.requests}) == 1


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(
                b"".join(request_bytes("GET", f"/delay?s=0.0{3 - i}&i={i}") for i in range(3))
            )
            for _ in range(3):
                response = await client.read_response()
                assert response.status == 200
        targets = [r.target for r in origin.requests]
        assert targets == [f"/delay?s=0.0{3 - i}&i={i}" for i in range(3)]


async def test_head_response_has_no_body_and_connection_stays_usable() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("HEAD", "/head"))
            response = await client.read_response(head_request=True)
            assert response.status == 200
            assert response.header("content-length") == b"1234"
            assert response.body == b""
            await client.send(request_bytes("GET", "/echo"))
            assert (await client.read_response()).status == 200
        assert origin.connections_opened == 1


async def test_post_content_length_body_reaches_origin() -> None:
    body = pattern_bytes(300_000)
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        response = await http_request(proxy.ports[0], "POST", "/upload", body=body)
        assert response.status == 200
        assert response.json() == {
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }


async def test_chunked_request_body_with_trailers_is_forwarded() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"TE: trailers\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
            )
            response = await client.read_response()
        seen = response.json()
        assert seen["body_len"] == 11
        assert seen["trailers"] == [["x-sum", "42"]]


async def test_chunked_response_with_trailers_reaches_client() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        response = await http_get(proxy.ports[0], "/trailers")
        assert response.framing == "chunked"
        assert response.trailers and response.trailers[0][0] == b"x-checksum"
        assert response.trailers[0][1].decode() == hashlib.sha256(response.body).hexdigest()


async def test_hop_by_hop_headers_are_removed_both_ways() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        response = await http_get(
            proxy.ports[0],
            "/set-headers?hdr=Connection:X-Secret&hdr=X-Secret:1&hdr=Keep-Alive:timeout=5&hdr=X-Kept:yes",
            headers=[
                ("Connection", "X-Private, keep-alive"),
                ("X-Private", "p"),
                ("Keep-Alive", "timeout=1"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "gzip"),
                ("Trailer", "X-Foo"),
                ("Upgrade", "h2c"),
            ],
        )
        assert response.header("x-secret") is None
        assert response.header("keep-alive") is None
        assert response.header("x-kept") == b"yes"
        seen = {name for name, _ in origin.requests[-1].headers}
        for name in (
            "connection",
            "x-private",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
        ):
            assert name not in seen


async def test_http10_client_gets_a_close_delimited_stream() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(b"GET /bytes?n=1000&chunked=1 HTTP/1.0\r\n\r\n")
            data = await client.read_until_close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert b"transfer-encoding" not in head.lower()
        assert body == pattern_bytes(1000)


async def test_http10_keepalive_with_content_length() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            for _ in range(2):
                await client.send(b"GET /bytes?n=10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = await client.read_response()
                assert response.status == 200
                assert response.header("connection") == b"keep-alive"


async def test_expect_100_continue_is_relayed() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(
                b"POST /expect HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await client.read_response(skip_informational=False)
            assert interim.status == 100
            await client.send(b"hello")
            final = await client.read_response()
            assert final.status == 200
            assert final.json()["body_len"] == 5


async def test_early_hints_reach_the_client() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("GET", "/informational"))
            response = await client.read_response()
        assert response.status == 200
        assert [r.status for r in response.informational] == [103]


async def test_streaming_response_arrives_piece_by_piece() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        response = await http_get(proxy.ports[0], "/stream?n=4&interval=0.2&sse=1")
        assert response.body.count(b"data:") == 4
        times = response.chunk_times
        assert len(times) >= 4
        assert times[-1] - times[0] >= 0.45  # spread out, not held back until the end


async def test_close_delimited_origin_body_becomes_chunked_for_http11() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("GET", "/no-length"))
            response = await client.read_response()
            assert response.framing == "chunked"
            assert response.complete
            await client.send(request_bytes("GET", "/echo"))
            assert (await client.read_response()).status == 200


async def test_unix_socket_listener_serves_requests(tmp_path: Path) -> None:
    socket_path = tmp_path / "bastion.sock"
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address).replace(
            'address = "127.0.0.1:0"', f'address = "unix:{socket_path}"'
        )
        async with running_proxy(toml):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            writer.write(request_bytes("GET", "/echo?via=unix"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
    seen = origin.requests[0]
    assert seen.target == "/echo?via=unix"
    assert seen.header("x-forwarded-for") == "unix"


async def test_refused_upload_answer_survives_a_client_that_keeps_sending() -> None:
    """Lingering close: bastion answers 413 at once while the client is still uploading;
    closing with unread input would reset the connection and could destroy the answer."""
    body_piece = b"x" * 65536
    async with (
        AutonomousOrigin() as origin,
        running_proxy(single_route_config(origin.address, route='max_body = "1KB"')) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n" + body_piece
        )
        await asyncio.sleep(0.2)  # bastion has answered and half-closed by now
        for _ in range(32):  # 2 MiB more arrive after the answer
            await client.send(body_piece)
        response = await client.read_response()
        assert response.status == 413
        assert response.header("connection") == b"close"
        assert await client.wait_closed(timeout=5)
        assert not client.reset_by_peer
    assert origin.requests == []
