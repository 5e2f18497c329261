"""The admin listener: a small asyncio HTTP/1.1 server answering with `AdminApi`.

Requests are parsed by bastion's own `H1RequestReader` (strict llhttp, size limits) and
answered one at a time per connection (keep-alive; pipelined requests wait their turn).
Everything is bounded: head and URI sizes, a 64 KiB body (413 beyond), the time to send a
request (408 and close), the connections served at once (503 and close beyond). A bug in a
handler answers 500 and is logged; the listener keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from bastion.admin.api import AdminApi
from bastion.admin.messages import Request, Response, error_response
from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import BodyChunk, EndOfMessage, Event, RequestHead
from bastion.http.h1_server import H1RequestReader, serialize_response_head
from bastion.units import Address

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADER_SIZE = 16 * 1024
MAX_URI_SIZE = 4 * 1024
REQUEST_TIMEOUT = 30.0  # seconds for an idle keep-alive connection to send a whole request
MAX_CONNECTIONS = 64
_READ_SIZE = 64 * 1024


class _ClosedError(Exception):
    """The client closed the connection between requests."""


class AdminServer:
    """Serves `api` on `address` (port 0: any free port, see `port`)."""

    def __init__(
        self, api: AdminApi, address: Address, *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.api = api
        self.address = address
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.address.unix_path is not None:
            self._server = await asyncio.start_unix_server(self._accept, self.address.unix_path)
        else:
            self._server = await asyncio.start_server(
                self._accept, self.address.host, self.address.port, reuse_address=True
            )
        log.info("admin API listening on %s", self.bound)

    @property
    def port(self) -> int:
        """The TCP port actually bound (0 for a unix socket)."""
        if self._server is None or not self._server.sockets:
            return 0
        name = self._server.sockets[0].getsockname()
        return int(name[1]) if isinstance(name, tuple) else 0

    @property
    def bound(self) -> str:
        if self.address.unix_path is not None:
            return str(self.address)
        return str(Address(self.address.host, self.port))

    async def stop(self) -> None:
        """Stop accepting and end every open admin connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            writer.write(_serialize(error_response(503, "too many admin connections"), False))
            await _close(writer)
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except ConnectionError:
            pass  # the client went away (reset, broken pipe): nothing to answer
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else None
        connection = _Connection(reader, H1RequestReader(MAX_HEADER_SIZE, MAX_URI_SIZE))
        while True:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    head, body = await connection.next_request()
            except _ClosedError:
                return
            except TimeoutError:
                if connection.started:  # idle keep-alive connections just close
                    answer = error_response(408, "request not received in time")
                    writer.write(_serialize(answer, False))
                return
            except ProxyError as error:
                status = error.status or 400
                writer.write(_serialize(error_response(status, str(error.detail)), False))
                return
            request = Request(
                head.method.decode("latin-1"),
                head.target.decode("latin-1").partition("?")[0],
                {name.decode("latin-1"): value.decode("latin-1") for name, value in head.headers},
                peer_host,
                body,
            )
            response = await self._answer(request)
            writer.write(_serialize(response, head.keep_alive))
            await writer.drain()
            if not head.keep_alive:
                return

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.api.handle(request)
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path)
            return error_response(500, "internal error: see the error log")


class _Connection:
    """Whole requests (head and bounded body) out of one connection's bytes."""

    def __init__(self, reader: asyncio.StreamReader, parser: H1RequestReader) -> None:
        self._reader = reader
        self._parser = parser
        self._events: list[Event] = []

    @property
    def started(self) -> bool:
        """Some of a request has arrived."""
        return bool(self._events) or self._parser.in_message

    async def _event(self) -> Event:
        while not self._events:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise _ClosedError
            self._events.extend(self._parser.feed(data))
        return self._events.pop(0)

    async def next_request(self) -> tuple[RequestHead, bytes]:
        """The next request; `_ClosedError` at the end of the stream (mid-request too)."""
        head = await self._event()
        if not isinstance(head, RequestHead):
            raise ProxyError(ErrorKind.BAD_REQUEST, "expected a request head")
        if head.upgrade is not None:
            self._parser.decline_upgrade()
        if (head.content_length or 0) > MAX_BODY:
            raise ProxyError(ErrorKind.BODY_TOO_LARGE, "admin request bodies are small")
        body = bytearray()
        while True:
            event = await self._event()
            if isinstance(event, EndOfMessage):
                return head, bytes(body)
            if isinstance(event, BodyChunk):
                body += event.data
                if len(body) > MAX_BODY:
                    raise ProxyError(ErrorKind.BODY_TOO_LARGE, "admin request bodies are small")


def _serialize(response: Response, keep_alive: bool) -> bytes:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *((name.lower().encode(), value.encode("latin-1")) for name, value in response.headers),
    ]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    return serialize_response_head(response.status, b"", headers) + response.body


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
