"""The upstream's waiting room: requests wait for a server under `max_conns`, first come first
served; past `queue.timeout` or beyond `queue.max` they get 503 with Retry-After; a client that
leaves while it waits takes no slot from those after it.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from collections.abc import Callable

from tests.support.client import RawClient, RawResponse, http_get, request_bytes
from tests.support.origins import AutonomousOrigin, ScriptedOrigin
from tests.support.proxy import running_proxy

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def queue_config(server: str, *, queue: str = "", upstream: str = "") -> str:
    """One route to upstream `app` with the one server `server` (a TOML value)."""
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
servers = [{server}]
queue = {{ {queue} }}
{upstream}
"""


def one_slot(origin: AutonomousOrigin) -> str:
    return f'{{ url = "{origin.url}", max_conns = 1 }}'


async def started(port: int, path: str) -> tuple[RawClient, asyncio.Task[RawResponse]]:
    """A client connection that sent `GET path`; the task reads its response."""
    client = RawClient(port)
    await client.__aenter__()
    await client.send(request_bytes("GET", path))
    return client, asyncio.create_task(client.read_response(timeout=10))


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def queued(port: int, path: str) -> RawClient:
    """A client connection that sent `GET path` and will not read the answer."""
    client = RawClient(port)
    await client.__aenter__()
    await client.send(request_bytes("GET", path))
    return client


def assert_retry_after(response: RawResponse) -> None:
    assert response.status == 503, response.text
    retry_after = response.header("retry-after")
    assert retry_after is not None, "a queue refusal tells the client when to come back"
    assert retry_after.isdigit() and int(retry_after) >= 1


# -- FIFO under max_conns --------------------------------------------------------------------


async def test_max_conns_one_serves_twenty_slow_requests_one_at_a_time_in_order() -> None:
    count, delay = 20, 0.05
    async with (
        AutonomousOrigin() as origin,
        running_proxy(queue_config(one_slot(origin))) as proxy,
    ):
        port = proxy.ports[0]
        finished: list[float] = []

        async def answer(task: asyncio.Task[RawResponse]) -> RawResponse:
            response = await task
            finished.append(time.monotonic())
            return response

        tasks: list[asyncio.Task[RawResponse]] = []
        clients: list[RawClient] = []
        for n in range(count):
            client, task = await started(port, f"/delay?s={delay}&n={n}")
            clients.append(client)
            tasks.append(asyncio.create_task(answer(task)))
            await asyncio.sleep(0.004)  # staggered: the arrival order is known
        responses = await asyncio.gather(*tasks)
        for client in clients:
            await client.close()
    assert [r.status for r in responses] == [200] * count
    assert [seen.target for seen in origin.requests] == [
        f"/delay?s={delay}&n={n}" for n in range(count)
    ]
    # One at a time: each answer came a whole delay after the one before it.
    gaps = [later - earlier for earlier, later in itertools.pairwise(sorted(finished))]
    assert min(gaps) >= delay * 0.8, gaps


# -- refusals: 503 with Retry-After --------------------------------------------------------------


async def test_queue_timeout_gets_503_with_retry_after() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(queue_config(one_slot(origin), queue='timeout = "200ms"')) as proxy,
    ):
        port = proxy.ports[0]
        busy, holder = await started(port, "/delay?s=1")
        await until(lambda: len(origin.requests) == 1)
        began = time.monotonic()
        refused = await http_get(port, "/echo?late=1")
        waited = time.monotonic() - began
        assert (await holder).status == 200
        await busy.close()
    assert_retry_after(refused)
    assert 0.15 <= waited < 0.9
    assert [seen.target for seen in origin.requests] == ["/delay?s=1"]


async def test_full_queue_refuses_at_once_with_retry_after() -> None:
    queue = 'max = 1, timeout = "5s"'
    async with (
        AutonomousOrigin() as origin,
        running_proxy(queue_config(one_slot(origin), queue=queue)) as proxy,
    ):
        port = proxy.ports[0]
        first, first_answer = await started(port, "/delay?s=0.4&n=1")
        await until(lambda: len(origin.requests) == 1)
        second, second_answer = await started(port, "/echo?n=2")  # waits: the queue is full
        await asyncio.sleep(0.05)
        began = time.monotonic()
        refused = await http_get(port, "/echo?n=3")
        waited = time.monotonic() - began
        answers = await asyncio.gather(first_answer, second_answer)
        await first.close()
        await second.close()
    assert_retry_after(refused)
    assert waited < 0.2
    assert [r.status for r in answers] == [200, 200]
    assert [seen.target for seen in origin.requests] == ["/delay?s=0.4&n=1", "/echo?n=2"]


async def test_no_queue_at_all_refuses_a_request_over_max_conns() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(queue_config(one_slot(origin), queue="max = 0")) as proxy,
    ):
        port = proxy.ports[0]
        busy, holder = await started(port, "/delay?s=0.3")
        await until(lambda: len(origin.requests) == 1)
        refused = await http_get(port, "/echo")
        assert (await holder).status == 200
        await busy.close()
    assert_retry_after(refused)


async def test_no_usable_server_gets_503_with_retry_after() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        refused = f'"http://127.0.0.1:{probe.getsockname()[1]}"'
    upstream = 'passive = { failures = 1, eject = "30s" }'
    async with running_proxy(queue_config(refused, upstream=upstream)) as proxy:
        first = await http_get(proxy.ports[0], "/")
        second = await http_get(proxy.ports[0], "/")
    assert first.status == 502  # the refusal ejects the only server
    assert_retry_after(second)


# -- clients that leave while they wait ----------------------------------------------------------


async def test_client_leaving_the_queue_takes_no_slot() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(queue_config(one_slot(origin))) as proxy,
    ):
        port = proxy.ports[0]
        busy, holder = await started(port, "/delay?s=0.2&n=1")
        await until(lambda: len(origin.requests) == 1)
        leaver = await queued(port, "/echo?n=left")
        waiting, waiter = await started(port, "/echo?n=3")
        await asyncio.sleep(0.05)
        leaver.reset()
        answers = await asyncio.gather(holder, waiter)
        later = [await http_get(port, f"/echo?n={n}", timeout=2) for n in range(4, 7)]
        await busy.close()
        await waiting.close()
    assert [r.status for r in [*answers, *later]] == [200] * 5
    assert "/echo?n=left" not in [seen.target for seen in origin.requests]


async def test_client_gone_as_its_queue_slot_is_granted_sends_nothing_frees_slot() -> None:
    # The holder's response and the waiting client's reset reach the proxy in one loop turn:
    # the freed slot goes to the waiter, whose client is gone by the time it would use it.
    async with (
        ScriptedOrigin() as origin,
        running_proxy(
            queue_config(f'{{ url = "http://{origin.address}", max_conns = 1 }}')
        ) as proxy,
    ):
        port = proxy.ports[0]
        holder, holder_answer = await started(port, "/hold")
        connection = await origin.accept()
        assert (await connection.read_request_head()).startswith(b"GET /hold ")
        # A plain socket: its close sends the RST at once, not on a later loop turn.
        leaver = socket.create_connection(("127.0.0.1", port))
        leaver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaver.sendall(request_bytes("GET", "/left"))
        await asyncio.sleep(0.05)  # queued behind /hold
        await connection.send(OK)  # no await point between these two:
        leaver.close()  # both land before the proxy's next poll
        assert (await holder_answer).status == 200
        later, later_answer = await started(port, "/later")
        head = await connection.read_request_head(timeout=2)
        assert head.startswith(b"GET /later "), "the slot and the connection were free"
        await connection.send(OK)
        assert (await later_answer).status == 200
        for client in (holder, later):
            await client.close()


# -- a server that comes back takes the waiting requests ---------------------------------------


class LateOrigin:
    """A port that refuses connections until `open()`; then answers every request 200 "late"
    (and closes). Bound at once so the proxy can be configured with it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.targets: list[str] = []
        self._server: asyncio.Server | None = None

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._answer, sock=self.socket)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.targets.append(head.split(b" ", 2)[1].decode())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate")
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.socket.close()


async def test_server_back_from_ejection_serves_the_queue_at_once() -> None:
    late = LateOrigin()
    upstream = 'passive = { failures = 1, eject = "300ms" }'
    try:
        async with AutonomousOrigin() as origin:
            servers = f'{one_slot(origin)}, "http://{late.address}"'
            config = queue_config(servers, queue='timeout = "5s"', upstream=upstream)
            async with running_proxy(config) as proxy:
                port = proxy.ports[0]
                # Round robin: one of these is refused by `late`, which is ejected for 300 ms
                # (and the request served by `origin`).
                warm = [await http_get(port, f"/echo?warm={n}") for n in range(2)]
                busy, holder = await started(port, "/delay?s=1.5")
                await until(lambda: origin.requests[-1].target == "/delay?s=1.5")
                first, first_answer = await started(port, "/echo?n=B")  # waits: no server
                await late.open()
                await asyncio.sleep(0.45)  # the ejection is over
                began = time.monotonic()
                second, second_answer = await started(port, "/echo?n=C")
                answers = await asyncio.gather(first_answer, second_answer)
                waited = time.monotonic() - began
                assert (await holder).status == 200
                for client in (busy, first, second):
                    await client.close()
    finally:
        late.close()
    assert [r.status for r in warm] == [200, 200]
    assert [r.status for r in answers] == [200, 200]
    assert "/echo?n=B" in late.targets
    assert waited < 0.5  # not held until /delay ends
