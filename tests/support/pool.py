"""Several named origins behind one upstream: for balancing, stickiness and health tests.

- `PoolOrigin`: a small HTTP/1.1 origin (asyncio streams + h11) that says who it is in every
  answer (`x-server: NAME`, body NAME), whose `/healthz` status, answer status and delay can be
  switched while it runs, and that can be stopped (connections refused) and started again on
  the same port. `/login` sets `JSESSIONID=NAME-N` (an application's own session cookie).
- `pool_config`: a proxy configuration with one route to an upstream over such origins.
- `client`/`served_by`/`tally`: a browser-like httpx client, who answered, and counts.
- `HealthLog`: the upstream runtime's state-change log lines, waited for.

What this module must not know: anything of bastion's internals; it sees the proxy from
outside, like the origins and the clients do.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import h11
import httpx
import pytest

HOST = "127.0.0.1"
RUNTIME_LOGGER = "bastion.proxy.upstream_runtime"
_READ_SIZE = 64 * 1024


class PoolOrigin:
    """One named origin server. Mutable knobs, read per request:

    - health_status: status of `GET /healthz` (0: close the connection without answering),
      or `flap()` for a repeating sequence; health_delay: seconds before answering it;
    - status: status of every other request; delay: seconds before answering one (a request
      may add `?delay=S`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.health_status = 200
        self.health_delay = 0.0
        self.status = 200
        self.delay = 0.0
        self.port = 0
        self.checks: list[int] = []  # statuses answered to /healthz, in order
        self.check_agents: set[str] = set()
        self.hits = 0  # requests other than /healthz
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sessions = 0
        self._flap: Iterator[int] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def flap(self, statuses: Sequence[int]) -> None:
        """Answer /healthz with `statuses` in turn, over and over."""
        self._flap = itertools.cycle(statuses)

    def set_health(self, status: int) -> None:
        self._flap = None
        self.health_status = status

    async def start(self) -> None:
        """Listen (again, on the same port once one was given)."""
        self._server = await asyncio.start_server(
            self._on_connect, HOST, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every connection: new connections are refused."""
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()
        self._server = None
        await asyncio.sleep(0.01)  # let the proxy see its pooled connections go

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(connection, reader)
                if not isinstance(event, h11.Request):
                    return
                while not isinstance(await _next_event(connection, reader), h11.EndOfMessage):
                    pass
                status, headers, body = await self._answer(event)
                if status == 0:
                    return  # hang up without a word
                headers += [("x-server", self.name), ("content-length", str(len(body)))]
                for reply in (
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ):
                    writer.write(connection.send(reply) or b"")
                await writer.drain()
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, request: h11.Request) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(request.target.decode("latin-1"))
        query = dict(parse_qsl(parts.query))
        if parts.path == "/healthz":
            status = next(self._flap) if self._flap is not None else self.health_status
            self.checks.append(status)
            agents = [v for n, v in request.headers if n == b"user-agent"]
            self.check_agents.update(agent.decode("latin-1") for agent in agents)
            if self.health_delay:
                await asyncio.sleep(self.health_delay)
            return status, [], b"health\n"
        self.hits += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            delay = float(query.get("delay", self.delay))
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        headers: list[tuple[str, str]] = []
        if parts.path == "/login":
            self.sessions += 1
            headers.append(("set-cookie", f"JSESSIONID={self.name}-{self.sessions}; Path=/"))
        return self.status, headers, self.name.encode()


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> object:
    while (event := connection.next_event()) is h11.NEED_DATA:
        connection.receive_data(await reader.read(_READ_SIZE))
    return event


@asynccontextmanager
async def origin_pool(*names: str) -> AsyncIterator[list[PoolOrigin]]:
    """Started origins named `names` (stopped on exit)."""
    origins = [PoolOrigin(name) for name in names]
    try:
        for origin in origins:
            await origin.start()
        yield origins
    finally:
        for origin in origins:
            await origin.stop()


def server_entry(
    origin: PoolOrigin, *, weight: int = 1, backup: bool = False, max_conns: int = 0
) -> str:
    """One `servers` element as a TOML inline table."""
    return (
        f'{{ url = "{origin.url}", weight = {weight}, max_conns = {max_conns}, '
        f"backup = {str(backup).lower()} }}"
    )


def pool_config(
    servers: Iterable[PoolOrigin | str], upstream: str = "", *, listen: str = "", site: str = ""
) -> str:
    """One listener on 127.0.0.1:0, one catch-all route to `[upstream.app]` whose servers are
    `servers` (origins, or `server_entry` strings), plus `upstream` lines."""
    entries = ", ".join(
        f'"{entry.url}"' if isinstance(entry, PoolOrigin) else entry for entry in servers
    )
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
{listen}
[[site]]
hosts = ["*"]
{site}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{entries}]
{upstream}
"""


def client(
    port: int,
    *,
    local_address: str | None = None,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = False,
) -> httpx.AsyncClient:
    """A keep-alive client with a cookie jar (like a browser), no environment proxies."""
    transport = httpx.AsyncHTTPTransport(local_address=local_address, verify=verify, retries=0)
    return httpx.AsyncClient(
        base_url=f"{scheme}://{HOST}:{port}",
        transport=transport,
        trust_env=False,
        timeout=5.0,
    )


def served_by(response: httpx.Response) -> str:
    """The name of the origin that answered (fails on an answer of bastion's own)."""
    name = response.headers.get("x-server")
    assert name is not None, f"{response.status_code} from bastion itself: {response.text!r}"
    return str(name)


async def tally(
    http: httpx.AsyncClient,
    count: int,
    path: str | Callable[[int], str] = "/",
    headers: Mapping[str, str] | None = None,
) -> Counter[str]:
    """Send `count` GETs one after the other; how many each origin answered (all 200)."""
    counts: Counter[str] = Counter()
    for index in range(count):
        target = path(index) if callable(path) else path
        response = await http.get(target, headers=headers)
        assert response.status_code == 200, (response.status_code, response.text)
        counts[served_by(response)] += 1
    return counts


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return predicate()
        await asyncio.sleep(0.005)
    return True


class HealthLog:
    """The state-change lines the upstream runtime logs (caught at INFO through caplog)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger=RUNTIME_LOGGER)
        self._caplog = caplog

    @property
    def lines(self) -> list[str]:
        return [
            record.getMessage() for record in self._caplog.records if record.name == RUNTIME_LOGGER
        ]

    def about(self, origin: PoolOrigin, change: str) -> list[str]:
        """Lines saying server `origin` went through `change` ("down", "up", "ejected"...)."""
        marker = f"server {origin.address} {change}:"
        return [line for line in self.lines if marker in line]

    async def wait(self, origin: PoolOrigin, change: str, timeout: float = 2.0) -> str:
        """The first line about `change` of `origin`, waiting for it."""
        assert await eventually(lambda: bool(self.about(origin, change)), timeout), (
            f"no {change!r} line for {origin.name} ({origin.address}) in {self.lines}"
        )
        return self.about(origin, change)[0]
