"""Failover between the servers of an upstream: what a client sees when one of them fails.

A server killed under load costs no client request; a refused connection is tried on another
server whatever the method (nothing was sent); a 502/503 answer is retried elsewhere only for
an idempotent request whose body was kept (at most 64 KiB); `retries = 0` turns retrying off;
the retry budget keeps an outage of every server from multiplying the traffic. Attempts are
counted on the origins themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import socket

import h11

from tests.support.client import RawClient, RawResponse, http_get, http_request, request_bytes
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy

REPLAY_BUFFER = 64 * 1024


def pool_config(servers: list[str], upstream: str = "") -> str:
    """One route to upstream `app` whose servers are `servers` (TOML values, e.g. '"http://…"')."""
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{", ".join(servers)}]
{upstream}
"""


def url(address: str) -> str:
    return f'"http://{address}"'


def unused_port() -> int:
    """A loopback port nothing listens on (bound, noted, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class StatusOrigin:
    """An origin answering every request with one status, after reading its whole body;
    `bodies` lists the body of each request it got, so attempts can be counted."""

    def __init__(self, status: int = 503) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> StatusOrigin:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        parser = h11.Connection(h11.SERVER)
        body = bytearray()
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    parser.receive_data(data)
                    if not data:
                        return
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self.bodies.append(bytes(body))
                    body.clear()
                    text = f"status {self.status}\n".encode()
                    head = [(b"content-length", b"%d" % len(text))]
                    writer.write(parser.send(h11.Response(status_code=self.status, headers=head)))
                    writer.write(parser.send(h11.Data(data=text)) + parser.send(h11.EndOfMessage()))
                    await writer.drain()
                    parser.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


# -- a server dies under load ------------------------------------------------------------------


async def test_server_killed_under_steady_get_load_fails_no_client_request() -> None:
    origins = [AutonomousOrigin() for _ in range(3)]
    for origin in origins:
        await origin.__aenter__()
    victim = origins[1]
    total, workers = 300, 10
    numbers = itertools.count()
    done: list[RawResponse] = []
    failures: list[str] = []
    killed = asyncio.Event()
    victim_share: list[int] = []

    async def client(port: int) -> None:
        # One keep-alive client connection per worker, like a load generator.
        async with RawClient(port) as raw:
            while (n := next(numbers)) < total:
                path = f"/delay?s=0.005&n={n}" if n % 3 == 0 else f"/echo?n={n}"
                await raw.send(request_bytes("GET", path))
                response = await raw.read_response()
                done.append(response)
                if response.status != 200:
                    failures.append(f"{path}: {response.status} {response.text!r}")
                if len(done) == total // 3 and not killed.is_set():
                    killed.set()
                    victim_share.append(len(victim.requests))
                    await victim.__aexit__(None, None, None)  # listener and connections gone

    try:
        config = pool_config([url(o.address) for o in origins], 'timeouts = { connect = "1s" }')
        async with running_proxy(config) as proxy:
            async with asyncio.timeout(20):
                await asyncio.gather(*(client(proxy.ports[0]) for _ in range(workers)))
    finally:
        for origin in (origins[0], origins[2]):
            await origin.__aexit__(None, None, None)
    assert killed.is_set()
    assert failures == []
    assert len(done) == total
    [before] = victim_share
    assert before > 0  # the victim did take its share until it died
    survivors = len(origins[0].requests) + len(origins[2].requests)
    assert survivors >= total - before


# -- refused connections: any method goes elsewhere ---------------------------------------------


async def test_refused_connection_is_retried_on_another_server_for_any_method() -> None:
    refused = f"127.0.0.1:{unused_port()}"
    body = b"form=" + b"x" * 3000
    async with (
        AutonomousOrigin() as origin,
        running_proxy(pool_config([url(refused), url(origin.address)])) as proxy,
    ):
        port = proxy.ports[0]
        posts = [await http_request(port, "POST", f"/echo?n={n}", body=body) for n in range(4)]
        gets = [await http_get(port, f"/echo?g={n}") for n in range(4)]
    assert [r.status for r in posts + gets] == [200] * 8
    digest = hashlib.sha256(body).hexdigest()
    assert all(r.json()["body_sha256"] == digest for r in posts)
    assert len(origin.requests) == 8  # each request reached the live server exactly once


# -- the origin answered 502/503: only idempotent requests go elsewhere -------------------------


async def test_get_answered_503_is_retried_on_another_server() -> None:
    async with (
        StatusOrigin(503) as failing,
        AutonomousOrigin() as origin,
        running_proxy(pool_config([url(failing.address), url(origin.address)])) as proxy,
    ):
        responses = [await http_get(proxy.ports[0], f"/echo?n={n}") for n in range(6)]
    assert [r.status for r in responses] == [200] * 6
    assert len(failing.bodies) >= 2  # round robin sent some there first
    assert len(origin.requests) == 6


async def test_post_answered_503_is_not_retried() -> None:
    async with (
        StatusOrigin(503) as failing,
        AutonomousOrigin() as origin,
        running_proxy(pool_config([url(failing.address), url(origin.address)])) as proxy,
    ):
        port = proxy.ports[0]
        responses = [await http_request(port, "POST", "/echo", body=b"a=1") for _ in range(4)]
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 200, 503, 503]
    assert all(r.text == "status 503\n" for r in responses if r.status == 503)  # the origin's
    assert len(failing.bodies) == 2 and len(origin.requests) == 2  # one attempt each


async def test_retries_zero_turns_retrying_off() -> None:
    async with (
        StatusOrigin(503) as failing,
        AutonomousOrigin() as origin,
        running_proxy(
            pool_config([url(failing.address), url(origin.address)], "retries = 0")
        ) as proxy,
    ):
        responses = [await http_get(proxy.ports[0], f"/echo?n={n}") for n in range(4)]
    assert sorted(r.status for r in responses) == [200, 200, 503, 503]
    assert len(failing.bodies) + len(origin.requests) == 4


async def test_retries_zero_answers_a_refused_connection_with_502() -> None:
    refused = f"127.0.0.1:{unused_port()}"
    async with (
        AutonomousOrigin() as origin,
        running_proxy(pool_config([url(refused), url(origin.address)], "retries = 0")) as proxy,
    ):
        responses = [await http_get(proxy.ports[0], f"/echo?n={n}") for n in range(4)]
    assert sorted(r.status for r in responses) == [200, 200, 502, 502]


async def test_small_body_is_replayed_but_one_over_the_replay_buffer_is_not() -> None:
    small = b"s" * 1000
    large = b"L" * (REPLAY_BUFFER + 40_000)
    async with (
        StatusOrigin(503) as failing,
        AutonomousOrigin() as origin,
        running_proxy(pool_config([url(failing.address), url(origin.address)])) as proxy,
    ):
        port = proxy.ports[0]
        small_puts = [await http_request(port, "PUT", "/echo", body=small) for _ in range(2)]
        failing.bodies.clear()
        large_puts = [await http_request(port, "PUT", "/echo", body=large) for _ in range(2)]
    assert [r.status for r in small_puts] == [200, 200]
    assert all(r.json()["body_sha256"] == hashlib.sha256(small).hexdigest() for r in small_puts)
    assert sorted(r.status for r in large_puts) == [200, 503]
    assert failing.bodies == [large]  # the origin had all of it, and it was not sent again
    assert sum(1 for seen in origin.requests if seen.body_len == len(large)) == 1


# -- every server fails: the retry budget -------------------------------------------------------


async def test_retry_budget_bounds_attempts_when_every_server_fails() -> None:
    requests, workers = 300, 10
    reserve = 3 * 10  # the budget's floor: 3 retries a second over its 10 s window
    upstream = "retries = 2\npassive = { failures = 0 }"  # keep every server in the game
    async with StatusOrigin(503) as a, StatusOrigin(503) as b, StatusOrigin(503) as c:
        config = pool_config([url(a.address), url(b.address), url(c.address)], upstream)
        async with running_proxy(config) as proxy:
            numbers = iter(range(requests))
            statuses: list[int] = []

            async def client() -> None:
                async with RawClient(proxy.ports[0]) as raw:
                    for n in numbers:
                        await raw.send(request_bytes("GET", f"/x?n={n}"))
                        statuses.append((await raw.read_response()).status)

            async with asyncio.timeout(20):
                await asyncio.gather(*(client() for _ in range(workers)))
        attempts = len(a.bodies) + len(b.bodies) + len(c.bodies)
    assert statuses == [503] * requests
    assert requests < attempts <= requests * 1.2 + reserve  # without the budget: 3x
