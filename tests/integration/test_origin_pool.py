"""The origin connection pool: keep-alive reuse per server, its limits, and the keep-alive race.

A pooled connection is reused only when its response was read to the end and the origin did not
ask to close; idle ones are capped (`max_idle`), expire (`idle_timeout`, and before the origin's
own `Keep-Alive: timeout=`), and are dropped once the origin closed them. A request that fails on
a reused connection before any response byte is retried once on a fresh connection, but only
when sending it again cannot repeat a side effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tests.support.client import RawClient, RawResponse, http_get, http_request, request_bytes
from tests.support.origins import AutonomousOrigin, ScriptedConnection, ScriptedOrigin
from tests.support.proxy import running_proxy, single_route_config

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
OK = OK_HEAD + b"ok"


async def eventually(predicate: Callable[[], bool], timeout: float = 1.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return predicate()
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def proxy_to(address: str, upstream: str = "", *, toml: str = "") -> AsyncIterator[int]:
    """A proxy in front of the server at `address` (or running `toml`); yields its port."""
    async with running_proxy(toml or single_route_config(address, upstream=upstream)) as proxy:
        yield proxy.ports[0]


async def conn_ids(port: int, count: int, *, pause: float = 0.0) -> list[int]:
    """Send `count` sequential /echo requests, each on its own client connection; the origin
    connection id each one arrived on."""
    ids = []
    for index in range(count):
        if index and pause:
            await asyncio.sleep(pause)
        response = await http_get(port, f"/echo?i={index}")
        assert response.status == 200, response.text
        ids.append(response.json()["conn_id"])
    return ids


# -- reuse and its limits ----------------------------------------------------------------------


async def test_sequential_requests_from_two_clients_share_one_origin_connection() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        assert await conn_ids(port, 2) == [1, 1]
    assert origin.connections_opened == 1


async def test_pool_is_per_server() -> None:
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        toml = single_route_config(first.address).replace(
            f'servers = ["http://{first.address}"]',
            f'servers = ["http://{first.address}", "http://{second.address}"]',
        )
        async with proxy_to("", toml=toml) as port:
            for index in range(6):
                assert (await http_get(port, f"/echo?i={index}")).status == 200
    assert (len(first.requests), len(second.requests)) == (3, 3)
    assert (first.connections_opened, second.connections_opened) == (1, 1)


async def test_max_idle_zero_never_reuses() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, "keepalive = { max_idle = 0 }") as port,
    ):
        assert await conn_ids(port, 3) == [1, 2, 3]
        assert await eventually(lambda: origin.open_connections == 0)


async def test_idle_timeout_expires_a_pooled_connection() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, 'keepalive = { idle_timeout = "300ms" }') as port,
    ):
        assert await conn_ids(port, 2, pause=0.1) == [1, 1]
        assert await conn_ids(port, 1) == [1]
        await asyncio.sleep(0.6)
        assert await conn_ids(port, 1) == [2]
        # the expired connection was closed, not just passed over
        assert await eventually(lambda: origin.open_connections == 1)


async def test_max_idle_caps_the_connections_kept_open() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, "keepalive = { max_idle = 2 }") as port,
    ):
        responses = await asyncio.gather(
            *(http_get(port, f"/delay?s=0.2&i={index}") for index in range(5))
        )
        assert [r.status for r in responses] == [200] * 5
        assert origin.connections_opened == 5
        assert await eventually(lambda: origin.open_connections <= 2)
        await asyncio.sleep(0.1)
        assert origin.open_connections == 2
        assert (await http_get(port, "/echo")).status == 200
        assert origin.connections_opened == 5  # one of the two idle ones was reused


async def test_connection_close_response_is_not_reused() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        closing = await http_get(port, "/set-headers?hdr=Connection:close")
        assert closing.status == 200
        assert await conn_ids(port, 1) == [2]
    assert origin.connections_opened == 2


async def test_connection_close_response_is_closed_even_if_origin_keeps_socket_open() -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        first = asyncio.create_task(http_get(port, "/first"))
        conn1 = await origin.accept()
        await conn1.read_request_head()
        await conn1.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        assert (await first).status == 200
        assert await conn1.wait_closed_by_peer(1.0), "bastion must close a Connection: close one"
        second = asyncio.create_task(http_get(port, "/second"))
        conn2 = await origin.accept()
        assert (await conn2.read_request_head()).startswith(b"GET /second ")
        await conn2.send(OK)
        assert (await second).status == 200
        assert await conn1.read_until_close(timeout=1.0) == b""


async def test_unread_response_body_is_not_reused() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        # Far more than loopback socket buffers hold (tens of MB), so the proxy cannot have
        # read the whole response from the origin when the client goes away.
        await client.send(request_bytes("GET", "/bytes?n=1000000000"))
        assert (await client.read_some()).startswith(b"HTTP/1.1 200")
        client.reset()
        # the half-read origin connection is closed, not parked in the pool
        assert await eventually(lambda: origin.open_connections == 0)
        assert await conn_ids(port, 1) == [2]
    assert origin.connections_opened == 2


# -- the keep-alive race ---------------------------------------------------------------------


async def test_learned_keepalive_timeout_drops_idle_connection_before_origin_does() -> None:
    async with AutonomousOrigin(keepalive_timeout=1.0) as origin, proxy_to(origin.address) as port:
        assert await conn_ids(port, 1) == [1]
        await asyncio.sleep(0.9)
        assert origin.open_connections == 1  # the origin would still take it: bastion must not
        assert await conn_ids(port, 1) == [2]


async def test_request_after_origin_keepalive_timeout_gets_200() -> None:
    async with AutonomousOrigin(keepalive_timeout=1.0) as origin, proxy_to(origin.address) as port:
        assert await conn_ids(port, 1) == [1]
        await asyncio.sleep(1.1)
        assert await conn_ids(port, 1) == [2]


async def test_long_origin_keepalive_timeout_still_allows_reuse() -> None:
    async with AutonomousOrigin(keepalive_timeout=5.0) as origin, proxy_to(origin.address) as port:
        assert await conn_ids(port, 2, pause=0.3) == [1, 1]


async def test_origin_closing_silently_after_each_response_with_pauses() -> None:
    async with AutonomousOrigin(close_after=1) as origin, proxy_to(origin.address) as port:
        assert await conn_ids(port, 5, pause=0.05) == [1, 2, 3, 4, 5]


async def test_origin_closing_silently_after_each_response_back_to_back() -> None:
    async with (
        AutonomousOrigin(close_after=1) as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        for index in range(10):
            await client.send(request_bytes("GET", f"/echo?i={index}"))
            response = await client.read_response()
            assert response.status == 200, response.text
    # every request was answered once on a connection of its own (some after a retry)
    answered = [r.target for r in origin.requests]
    assert sorted(set(answered)) == sorted(f"/echo?i={index}" for index in range(10))


async def test_idle_connection_closed_by_origin_is_not_used() -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        first = asyncio.create_task(http_get(port, "/first"))
        conn1 = await origin.accept()
        await conn1.read_request_head()
        await conn1.send(OK)
        assert (await first).status == 200
        conn1.write_eof()  # the origin gives up on the idle connection
        await asyncio.sleep(0.05)
        second = asyncio.create_task(http_get(port, "/second"))
        conn2 = await origin.accept()
        assert (await conn2.read_request_head()).startswith(b"GET /second ")
        await conn2.send(OK)
        assert (await second).status == 200
        assert await conn1.read_until_close(timeout=1.0) == b""


# -- retry after a failure on a reused connection --------------------------------------------


async def pooled_connection(origin: ScriptedOrigin, port: int) -> ScriptedConnection:
    """Serve one GET through the proxy on a new origin connection, which stays pooled."""
    first = asyncio.create_task(http_get(port, "/first"))
    conn = await origin.accept()
    assert (await conn.read_request_head()).startswith(b"GET /first ")
    await conn.send(OK)
    assert (await first).status == 200
    await asyncio.sleep(0.05)  # let the proxy put the connection back in its pool
    return conn


def header_of(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def response_or_resend(
    origin: ScriptedOrigin, pending: asyncio.Task[RawResponse]
) -> tuple[RawResponse, bytes | None]:
    """The client's response, and the request head if the proxy sent the request again on a
    new origin connection instead (that one is then answered 200 so the client finishes)."""
    accepting = asyncio.create_task(origin.accept(timeout=2.0))
    done, _ = await asyncio.wait({pending, accepting}, return_when=asyncio.FIRST_COMPLETED)
    if accepting not in done:
        accepting.cancel()
        await asyncio.sleep(0.1)  # a late resend would show in origin.accepted
        return pending.result(), None
    conn = accepting.result()
    head = await conn.read_request_head()
    await conn.send(OK_HEAD if head.startswith(b"HEAD ") else OK)
    return await pending, head


async def test_get_failing_on_reused_connection_is_retried_on_a_fresh_one() -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        second = asyncio.create_task(http_get(port, "/second"))
        first_try = await conn1.read_request_head()
        assert first_try.startswith(b"GET /second ")
        await conn1.close()  # the keep-alive race: closed before any response byte
        conn2 = await origin.accept()
        retried = await conn2.read_request_head()
        await conn2.send(OK)
        response = await second
    assert response.status == 200
    assert response.body == b"ok"
    assert retried.startswith(b"GET /second ")
    assert header_of(retried, b"x-request-id") == header_of(first_try, b"x-request-id")
    assert origin.accepted == 2


async def test_retry_happens_only_once() -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        second = asyncio.create_task(http_get(port, "/second"))
        await conn1.read_request_head()
        await conn1.close()
        conn2 = await origin.accept()
        await conn2.read_request_head()
        await conn2.close()  # the fresh connection fails too: that is the origin's answer
        response, resent = await response_or_resend(origin, second)
    assert resent is None, "a failure on a fresh connection must not be retried"
    assert response.status == 502
    assert origin.accepted == 2


async def test_failure_on_a_fresh_connection_is_not_retried() -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        pending = asyncio.create_task(http_get(port, "/only"))
        conn = await origin.accept()
        await conn.read_request_head()
        await conn.close()
        response, resent = await response_or_resend(origin, pending)
    assert resent is None
    assert response.status == 502
    assert origin.accepted == 1


async def test_post_with_body_failing_on_reused_connection_is_not_retried() -> None:
    """The body reached the origin, which may have acted on it: 502, never a second POST."""
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        post = asyncio.create_task(http_request(port, "POST", "/orders", body=b"hello"))
        assert (await conn1.read_request_head()).startswith(b"POST /orders ")
        assert await conn1.read_exactly(5) == b"hello"
        await conn1.close()
        response, resent = await response_or_resend(origin, post)
    assert resent is None, f"POST was sent twice: {resent!r}"
    assert response.status == 502
    assert origin.accepted == 1


async def test_put_with_body_failing_on_reused_connection_is_retried() -> None:
    """PUT is idempotent and its small body was kept: it is replayed whole."""
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        put = asyncio.create_task(http_request(port, "PUT", "/doc", body=b"hello"))
        await conn1.read_request_head()
        await conn1.read_exactly(5)
        await conn1.close()
        conn2 = await origin.accept()
        head = await conn2.read_request_head()
        body = await conn2.read_exactly(5)
        await conn2.send(OK)
        response = await put
    assert head.startswith(b"PUT /doc ")
    assert header_of(head, b"content-length") == b"5"
    assert body == b"hello"
    assert response.status == 200


async def test_post_without_body_failing_on_reused_connection_is_not_retried() -> None:
    """The request head reached the origin, so it may have been applied: a proxy must not
    automatically retry a non-idempotent request (RFC 9110 section 9.2.2), body or not."""
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        post = asyncio.create_task(http_request(port, "POST", "/logout"))
        assert (await conn1.read_request_head()).startswith(b"POST /logout ")
        await conn1.close()
        response, resent = await response_or_resend(origin, post)
    assert resent is None, f"POST was sent twice: {resent!r}"
    assert response.status == 502


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "DELETE"])
async def test_idempotent_methods_are_retried_after_the_keepalive_race(method: str) -> None:
    async with ScriptedOrigin() as origin, proxy_to(origin.address) as port:
        conn1 = await pooled_connection(origin, port)
        pending = asyncio.create_task(http_request(port, method, "/again"))
        await conn1.read_request_head()
        await conn1.close()
        response, resent = await response_or_resend(origin, pending)
    assert resent is not None and resent.startswith(method.encode() + b" /again ")
    assert response.status == 200
