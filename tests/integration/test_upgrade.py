"""Upgrade pass-through: after the origin's 101 the client and origin connections are spliced
byte for byte both ways, until one side closes or the tunnel idles past `timeouts.idle`.

WebSocket runs with the `websockets` client against WebSocketEchoOrigin; other Upgrade
protocols with RawClient against AutonomousOrigin's `/upgrade` (101, then an echo of every
byte), and ScriptedOrigin where the test must decide when the origin closes. Routes with
`websocket = false`, and origins that refuse the switch, give a plain HTTP exchange and a
connection that keeps serving requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bastion.runtime.server import ProxyServer
from tests.support.client import RawClient, RawResponse, request_bytes
from tests.support.origins import (
    AutonomousOrigin,
    ScriptedConnection,
    ScriptedOrigin,
    WebSocketEchoOrigin,
    pattern_bytes,
)
from tests.support.proxy import running_proxy, single_route_config

IDLE_TIMEOUT = 0.3
SHORT_IDLE = f'timeouts = {{ idle = "{IDLE_TIMEOUT * 1000:g}ms" }}'
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo-proto\r\n\r\n"


def config(origin_address: str, *, route: str = "", upstream: str = "") -> str:
    return single_route_config(
        origin_address, route=route, upstream=upstream, server='graceful_timeout = "1s"'
    )


def upgrade_request(target: str = "/upgrade", protocol: str = "echo-proto") -> bytes:
    return request_bytes("GET", target, headers=[("Connection", "Upgrade"), ("Upgrade", protocol)])


def websocket_request(target: str = "/echo") -> bytes:
    return request_bytes(
        "GET",
        target,
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )


def tokens(value: str | bytes | None) -> set[str]:
    text = value.decode("latin-1") if isinstance(value, bytes) else value or ""
    return {part.strip().lower() for part in text.split(",") if part.strip()}


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def switch(client: RawClient, early: bytes = b"") -> RawResponse:
    """Ask for the echo-proto upgrade (followed at once by `early` bytes); expect 101."""
    await client.send(upgrade_request() + early)
    response = await client.read_response(timeout=2.0)
    assert response.status == 101, response.raw_head
    return response


async def echoed(client: RawClient, data: bytes) -> bytes:
    await client.send(data)
    return await client.stream.read_exactly(len(data), timeout=2.0)


@asynccontextmanager
async def proxied_client(
    origin_address: str, *, route: str = "", upstream: str = ""
) -> AsyncIterator[tuple[ProxyServer, RawClient]]:
    """Bastion in front of `origin_address`, and a client connected to it."""
    toml = config(origin_address, route=route, upstream=upstream)
    async with running_proxy(toml) as proxy, RawClient(proxy.ports[0]) as client:
        yield proxy, client


async def scripted_switch(client: RawClient, origin: ScriptedOrigin) -> ScriptedConnection:
    """Send the upgrade request; the scripted origin answers 101; returns its connection."""
    await client.send(upgrade_request())
    conn = await origin.accept(timeout=2.0)
    head = await conn.read_request_head(timeout=2.0)
    assert b"upgrade: echo-proto" in head.lower()
    await conn.send(SWITCH)
    assert (await client.read_response(timeout=2.0)).status == 101
    return conn


@asynccontextmanager
async def scripted_tunnel() -> AsyncIterator[tuple[ProxyServer, RawClient, ScriptedConnection]]:
    """A tunnel switched by a scripted origin: (proxy, client, the origin's connection)."""
    async with ScriptedOrigin() as origin, proxied_client(origin.address) as (proxy, client):
        yield proxy, client, await scripted_switch(client, origin)


# -- WebSocket ------------------------------------------------------------------------------


async def test_websocket_text_and_binary_messages_are_echoed() -> None:
    async with WebSocketEchoOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.ports[0]}/chat") as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            binary = bytes(range(256)) + b"\r\n\r\n\x00"
            await ws.send(binary)
            assert await ws.recv() == binary
        assert ws.close_code == 1000, "the closing handshake crosses the tunnel both ways"
        assert await eventually(lambda: not proxy.registry.connections)
        assert origin.paths == ["/chat"]
        assert origin.messages == ["héllo", binary]


async def test_websocket_one_megabyte_binary_message_crosses_intact() -> None:
    message = pattern_bytes(1_000_000, offset=7)
    async with WebSocketEchoOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.ports[0]}/big") as ws:
            await ws.send(message)
            answer = await asyncio.wait_for(ws.recv(), 5.0)
        assert isinstance(answer, bytes)
        assert hashlib.sha256(answer).digest() == hashlib.sha256(message).digest()


async def test_websocket_many_messages_arrive_in_order() -> None:
    sent = [f"message {n}" if n % 2 else f"{n}".encode() * (n % 50) for n in range(1000)]
    async with WebSocketEchoOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.ports[0]}/many") as ws:
            for message in sent:
                await ws.send(message)
            received = [await asyncio.wait_for(ws.recv(), 2.0) for _ in sent]
        assert received == sent
        assert origin.messages == sent


async def test_websocket_handshake_headers_reach_origin_and_answer_reaches_client() -> None:
    async with WebSocketEchoOrigin() as origin, running_proxy(config(origin.address)) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.ports[0]}/chat?room=1") as ws:
            assert ws.request is not None and ws.response is not None
            key = ws.request.headers["Sec-WebSocket-Key"]
            assert ws.response.status_code == 101
            assert ws.response.headers["Upgrade"].lower() == "websocket"
            assert "upgrade" in tokens(ws.response.headers["Connection"])
            assert ws.response.headers.get("Sec-WebSocket-Accept")
        assert origin.paths == ["/chat?room=1"]
        seen = dict(origin.request_headers[0])
        assert seen["upgrade"].lower() == "websocket"
        assert "upgrade" in tokens(seen["connection"])
        assert seen["sec-websocket-key"] == key
        assert seen["sec-websocket-version"] == "13"
        assert "permessage-deflate" in seen["sec-websocket-extensions"]


async def test_websocket_extension_negotiation_passes_both_ways() -> None:
    async with (
        WebSocketEchoOrigin(compression="deflate") as origin,
        running_proxy(config(origin.address)) as proxy,
        connect(f"ws://127.0.0.1:{proxy.ports[0]}/z") as ws,
    ):
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        text = "compressible " * 5000
        await ws.send(text)
        assert await ws.recv() == text


# -- other Upgrade protocols ------------------------------------------------------------------


async def test_generic_upgrade_echoes_raw_bytes_both_ways_including_early_bytes() -> None:
    early = b"EARLY\x00\xff bytes sent with the request head"
    async with AutonomousOrigin() as origin, proxied_client(origin.address) as (_, client):
        response = await switch(client, early)
        assert response.header("upgrade") == b"echo-proto"
        assert "upgrade" in tokens(response.header("connection"))
        assert await client.stream.read_exactly(len(early), timeout=2.0) == early
        looks_like_http = b"GET /not-parsed HTTP/1.1\r\nHost: x\r\n\r\n"
        assert await echoed(client, looks_like_http) == looks_like_http
        assert await echoed(client, bytes(range(256)) * 4) == bytes(range(256)) * 4
        seen = origin.requests[-1]
        assert seen.header("upgrade") == "echo-proto"
        assert "upgrade" in tokens(seen.header("connection"))
        assert len(origin.requests) == 1, "tunnel bytes must not be parsed as requests"


async def test_generic_tunnel_carries_megabytes_both_ways_at_once() -> None:
    size = 8 * 1024 * 1024
    async with AutonomousOrigin() as origin, proxied_client(origin.address) as (_, client):
        await switch(client)

        async def write_all() -> str:
            digest = hashlib.sha256()
            for offset in range(0, size, 100_003):
                piece = pattern_bytes(min(100_003, size - offset), offset)
                digest.update(piece)
                await client.send(piece)
            return digest.hexdigest()

        async def read_all() -> str:
            digest, got = hashlib.sha256(), 0
            while got < size:
                piece = await client.read_some(timeout=5.0)
                assert piece, "tunnel closed early"
                digest.update(piece)
                got += len(piece)
            return digest.hexdigest()

        sent_digest, received_digest = await asyncio.gather(write_all(), read_all())
        assert received_digest == sent_digest


async def test_bytes_the_origin_sends_with_its_101_reach_the_client() -> None:
    async with ScriptedOrigin() as origin, proxied_client(origin.address) as (_, client):
        await client.send(upgrade_request())
        conn = await origin.accept(timeout=2.0)
        await conn.read_request_head(timeout=2.0)
        await conn.send(SWITCH + b"server speaks first")
        assert (await client.read_response(timeout=2.0)).status == 101
        assert await client.stream.read_exactly(19, timeout=2.0) == b"server speaks first"
        await client.send(b"client answers")
        assert await conn.read_exactly(14, timeout=2.0) == b"client answers"
        await conn.close()


# -- idle timeout and closing ------------------------------------------------------------------


async def test_idle_tunnel_is_closed_after_the_idle_timeout() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxied_client(origin.address, upstream=SHORT_IDLE) as (_, client),
    ):
        await switch(client)
        assert await echoed(client, b"ping") == b"ping"
        last_activity = time.monotonic()
        assert await client.wait_closed(timeout=3.0)
        silent_for = time.monotonic() - last_activity
        assert IDLE_TIMEOUT * 0.8 <= silent_for < IDLE_TIMEOUT + 1.0
        assert await eventually(lambda: origin.open_connections == 0)


async def test_traffic_keeps_the_tunnel_open_past_the_idle_timeout() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxied_client(origin.address, upstream=SHORT_IDLE) as (_, client),
    ):
        await switch(client)
        started = time.monotonic()
        while time.monotonic() - started < IDLE_TIMEOUT * 3:
            assert await echoed(client, b"tick") == b"tick"
            await asyncio.sleep(IDLE_TIMEOUT / 3)
        assert not client.closed_by_peer
        assert await client.wait_closed(timeout=3.0)


async def test_client_closing_closes_the_origin_connection() -> None:
    async with scripted_tunnel() as (proxy, client, conn):
        await client.send(b"last words")
        assert await conn.read_exactly(10, timeout=2.0) == b"last words"
        await client.close()
        assert await conn.wait_closed_by_peer(timeout=2.0)
        await conn.close()
        assert await eventually(lambda: not proxy.registry.connections)


async def test_client_reset_closes_the_origin_connection() -> None:
    async with scripted_tunnel() as (proxy, client, conn):
        client.reset()
        assert await conn.wait_closed_by_peer(timeout=2.0)
        assert await eventually(lambda: not proxy.registry.connections)


async def test_origin_closing_closes_the_client_connection() -> None:
    async with scripted_tunnel() as (proxy, client, conn):
        await conn.send(b"goodbye")
        await conn.close()
        assert await client.read_until_close(timeout=2.0) == b"goodbye"
        assert client.closed_by_peer
        await client.close()
        assert await eventually(lambda: not proxy.registry.connections)


async def test_origin_reset_closes_the_client_connection() -> None:
    async with scripted_tunnel() as (proxy, client, conn):
        conn.reset()
        assert await client.wait_closed(timeout=2.0)
        assert await eventually(lambda: not proxy.registry.connections)


async def test_client_half_close_reaches_origin_which_can_still_answer() -> None:
    async with scripted_tunnel() as (proxy, client, conn):
        await client.send(b"request")
        client.write_eof()
        assert await conn.read_until_close(timeout=2.0) == b"request"
        await conn.send(b"reply after half-close")
        await conn.close()
        assert await client.read_until_close(timeout=2.0) == b"reply after half-close"
        assert await eventually(lambda: not proxy.registry.connections)


# -- no switch --------------------------------------------------------------------------------


async def test_route_with_websocket_false_does_not_switch() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxied_client(origin.address, route="websocket = false") as (_, client),
    ):
        await client.send(websocket_request("/echo"))
        response = await client.read_response(timeout=2.0)
        assert response.status == 200
        assert response.header("upgrade") is None
        seen = dict(response.json()["headers"])
        assert "upgrade" not in seen
        assert "upgrade" not in tokens(seen.get("connection"))
        await client.send(request_bytes("GET", "/echo?after=1"))
        follow_up = await client.read_response(timeout=2.0)
        assert follow_up.status == 200
        assert follow_up.json()["target"] == "/echo?after=1"
        assert origin.requests[0].header("upgrade") is None


async def test_route_with_websocket_false_refuses_a_websocket_client() -> None:
    async with (
        WebSocketEchoOrigin() as origin,
        running_proxy(config(origin.address, route="websocket = false")) as proxy,
    ):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"ws://127.0.0.1:{proxy.ports[0]}/chat", open_timeout=2.0):
                pass
        assert caught.value.response.status_code != 101
        assert origin.paths == []


async def test_route_with_websocket_false_does_not_switch_even_if_the_origin_answers_101() -> None:
    """The Upgrade header was not forwarded, so a 101 is an origin error (502), never a tunnel;
    the client connection goes on serving plain requests."""
    async with (
        ScriptedOrigin() as origin,
        proxied_client(origin.address, route="websocket = false") as (_, client),
    ):
        await client.send(upgrade_request("/ws"))
        conn = await origin.accept(timeout=2.0)
        head = await conn.read_request_head(timeout=2.0)
        assert b"upgrade" not in head.lower()
        await conn.send(SWITCH + b"tunnel bytes")
        response = await client.read_response(timeout=2.0)
        assert response.status == 502
        await client.send(request_bytes("GET", "/plain"))
        second = await origin.accept(timeout=2.0)
        assert (await second.read_request_head(timeout=2.0)).startswith(b"GET /plain ")
        await second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        follow_up = await client.read_response(timeout=2.0)
        assert (follow_up.status, follow_up.body) == (200, b"ok")


async def test_origin_answering_101_to_a_plain_request_gets_502() -> None:
    async with ScriptedOrigin() as origin, proxied_client(origin.address) as (_, client):
        await client.send(request_bytes("GET", "/plain"))
        conn = await origin.accept(timeout=2.0)
        await conn.read_request_head(timeout=2.0)
        await conn.send(SWITCH + b"tunnel bytes")
        response = await client.read_response(timeout=2.0)
        assert response.status == 502
        assert b"tunnel bytes" not in response.body


@pytest.mark.parametrize(
    ("target", "status"), [("/echo", 200), ("/status/426", 426)], ids=["200", "426"]
)
async def test_origin_refusing_the_upgrade_gives_its_answer_and_a_usable_connection(
    target: str, status: int
) -> None:
    async with AutonomousOrigin() as origin, proxied_client(origin.address) as (_, client):
        await client.send(upgrade_request(target, "websocket"))
        response = await client.read_response(timeout=2.0)
        assert response.status == status
        assert response.complete
        await client.send(request_bytes("GET", "/echo?plain=1"))
        follow_up = await client.read_response(timeout=2.0)
        assert follow_up.status == 200
        assert follow_up.json()["target"] == "/echo?plain=1"
        assert not client.closed_by_peer
        assert origin.requests[0].header("upgrade") == "websocket"
        assert origin.requests[1].header("upgrade") is None


async def test_request_pipelined_after_a_refused_upgrade_is_answered() -> None:
    async with AutonomousOrigin() as origin, proxied_client(origin.address) as (_, client):
        await client.send(
            upgrade_request("/status/426", "websocket") + request_bytes("GET", "/echo?next=1")
        )
        assert (await client.read_response(timeout=2.0)).status == 426
        follow_up = await client.read_response(timeout=2.0)
        assert follow_up.status == 200
        assert follow_up.json()["target"] == "/echo?next=1"
        assert [r.target for r in origin.requests] == ["/status/426", "/echo?next=1"]
