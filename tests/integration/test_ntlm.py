"""Windows integrated authentication through the proxy (the NTLM trap).

NTLM and Negotiate authenticate a TCP connection, not a request: the origin accepts the third
leg only on the connection that carried the first, and later requests on it need no
credentials. Once an origin answers `WWW-Authenticate: NTLM`, bastion binds that client
connection to that origin connection (`pin_auth`) for the rest of its life, never pooling or
sharing it, and closes it with the client connection. Without the pin, the legs of one
handshake land on different origin connections and it never completes. HTTP/2 multiplexes
clients' requests on one connection, so such a request is refused with HTTP_1_1_REQUIRED.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from tests.support.certs import TestPKI
from tests.support.client import RawClient, RawResponse, http_get, request_bytes
from tests.support.ntlm_origin import AUTHENTICATE, NEGOTIATE, NtlmOrigin
from tests.support.origins import ScriptedOrigin
from tests.support.proxy import running_proxy

HTTP_1_1_REQUIRED = 0xD


def ntlm_config(servers: list[str], upstream: str = "", *, pki: TestPKI | None = None) -> str:
    """One route to upstream `app` with `servers` (URLs); a TLS listener when `pki` is given."""
    listener, site_tls = "", ""
    if pki is not None:
        cert = pki.server_cert("localhost")
        listener = "tls = true"
        site_tls = f'tls = {{ certificate = "{cert.certificate}", key = "{cert.key}" }}'
    listed = ", ".join(f'"{server}"' for server in servers)
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
{listener}
[[site]]
hosts = ["*"]
{site_tls}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{listed}]
{upstream}
"""


async def ask(client: RawClient, authorization: bytes | None = None) -> RawResponse:
    headers = [(b"authorization", authorization)] if authorization else []
    await client.send(request_bytes("GET", "/private", headers=headers))
    return await client.read_response()


async def handshake(port: int, later: int = 0) -> list[RawResponse]:
    """On one client connection: a bare request, the NTLM legs one and three, then `later`
    requests without credentials. Every response, in order."""
    async with RawClient(port) as client:
        responses = [await ask(client), await ask(client, NEGOTIATE)]
        responses.append(await ask(client, AUTHENTICATE))
        for _ in range(later):
            responses.append(await ask(client))
    return responses


def conns(responses: list[RawResponse]) -> list[int]:
    return [response.json()["conn"] for response in responses]


# -- the handshake holds through the proxy --------------------------------------------------


async def test_three_leg_handshake_completes_while_other_clients_use_the_upstream() -> None:
    async with NtlmOrigin() as origin, running_proxy(ntlm_config([origin.url])) as proxy:
        port = proxy.ports[0]
        others: list[RawResponse] = []

        async def hammer() -> None:
            for _ in range(15):
                others.append(await http_get(port, "/private"))

        async with asyncio.timeout(15):
            hammering = [asyncio.create_task(hammer()) for _ in range(4)]
            handshakes = await asyncio.gather(*(handshake(port, later=3) for _ in range(6)))
            await asyncio.gather(*hammering)
    for responses in handshakes:
        assert [r.status for r in responses] == [401, 401, 200, 200, 200, 200]
        assert responses[0].header("www-authenticate") is not None
        assert (responses[1].header("www-authenticate") or b"").startswith(b"NTLM ")
        assert len(set(conns(responses))) == 1  # every leg and later request: one connection
    assert sorted(origin.completed) == sorted(conns(r)[0] for r in handshakes)
    # Authenticated origin connections are never lent to anyone else.
    assert len(others) == 60
    assert all(r.status == 401 and r.json()["state"] == "new" for r in others)


async def test_without_pin_auth_the_legs_land_on_different_connections() -> None:
    # Two servers balanced round robin: without the pin, leg three goes elsewhere.
    async with NtlmOrigin() as first, NtlmOrigin() as second:
        config = ntlm_config([first.url, second.url], "pin_auth = false")
        async with running_proxy(config) as proxy:
            responses = await handshake(proxy.ports[0])
    assert [r.status for r in responses] == [401, 401, 401]  # the trap: it starts over
    assert first.completed == [] and second.completed == []


async def test_with_pin_auth_the_pin_outranks_the_balancer() -> None:
    async with NtlmOrigin() as first, NtlmOrigin() as second:
        async with running_proxy(ntlm_config([first.url, second.url])) as proxy:
            responses = await handshake(proxy.ports[0], later=4)
    assert [r.status for r in responses] == [401, 401, 200, 200, 200, 200, 200]
    assert len(set(conns(responses))) == 1
    assert len(first.completed) + len(second.completed) == 1


# -- the pinned origin connection lives and dies with the client connection -------------------


@pytest.mark.parametrize(
    ("challenge", "closed_with_client"),
    [(b"NTLM", True), (b"Negotiate", True), (b'Basic realm="app"', False)],
)
async def test_pinned_origin_connection_closes_with_the_client_connection(
    challenge: bytes, closed_with_client: bool
) -> None:
    unauthorized = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: %s\r\n" % challenge
    unauthorized += b"Content-Length: 0\r\n\r\n"
    async with (
        ScriptedOrigin() as origin,
        running_proxy(ntlm_config([f"http://{origin.address}"])) as proxy,
        RawClient(proxy.ports[0]) as client,
    ):
        await client.send(request_bytes("GET", "/private"))
        connection = await origin.accept()
        await connection.read_request_head()
        await connection.send(unauthorized)
        assert (await client.read_response()).status == 401
        await client.close()
        # Basic is per request: that origin connection goes back to the pool and stays open.
        closed = await connection.wait_closed_by_peer(timeout=1.0 if closed_with_client else 0.3)
    assert closed is closed_with_client


# -- HTTP/2 clients: HTTP_1_1_REQUIRED --------------------------------------------------------


async def test_h2_request_answered_with_ntlm_is_reset_with_http_1_1_required(
    tmp_path: Path,
) -> None:
    pki = TestPKI(tmp_path)
    context = pki.client_context()
    context.set_alpn_protocols(["h2"])
    async with NtlmOrigin() as origin, running_proxy(ntlm_config([origin.url], pki=pki)) as proxy:
        events = await h2_get(proxy.ports[0], context, ["/private"])
    [reset] = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (1, HTTP_1_1_REQUIRED)
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


async def h2_get(port: int, context: ssl.SSLContext, paths: list[str]) -> list[h2.events.Event]:
    """GET each path on one HTTP/2 connection; the events until every stream ended or reset."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    open_streams = set()
    for index, path in enumerate(paths):
        stream_id = 1 + 2 * index
        request = [(":method", "GET"), (":path", path), (":scheme", "https")]
        conn.send_headers(stream_id, [*request, (":authority", "localhost")], end_stream=True)
        open_streams.add(stream_id)
    writer.write(conn.data_to_send())
    events: list[h2.events.Event] = []
    try:
        async with asyncio.timeout(5):
            while open_streams:
                data = await reader.read(65536)
                assert data, "the proxy closed the HTTP/2 connection"
                for event in conn.receive_data(data):
                    events.append(event)
                    if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        open_streams.discard(event.stream_id)
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    return events
