"""Origins that sit behind the proxy in integration tests.

- `AutonomousOrigin`: an HTTP/1.1 server (asyncio streams + h11) that answers by itself according
  to the request path (table `_HANDLERS` below, documented in each handler) and records every
  request and connection for assertions.
- `ScriptedOrigin`: hands each accepted connection to the test, which reads and writes raw bytes
  step by step (partial sends, FIN versus RST).
- `WebSocketEchoOrigin`: a `websockets` server echoing every message at any path.

All listen on 127.0.0.1, port 0 (see `.port`), and are async context managers that close every
connection on exit. What they must not know: anything of bastion; they are the far side of the
proxy, written independently of its codecs so they can catch its mistakes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import ssl as ssl_module
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl, urlsplit

import h11
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.client import ByteStream

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
READ_SIZE = 64 * 1024
KEPT_BODY_BYTES = 64 * 1024
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NO_BODY_STATUSES = (204, 304)


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """Bytes [offset, offset + n) of PATTERN repeated forever: any slice of a body is checkable."""
    start = offset % len(PATTERN)
    return (PATTERN * ((start + n) // len(PATTERN) + 1))[start : start + n]


@dataclass
class SeenRequest:
    """A request as the autonomous origin received it; body fields fill in as it is read."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    """As received, names lowercased, in order."""
    conn_id: int
    request_no: int
    """1-based index of this request on its connection."""
    peer: tuple[str, int]
    http_version: str
    body: bytes = b""
    """Only the first 64 KiB are kept."""
    body_len: int = 0
    body_sha256: str = EMPTY_SHA256
    body_complete: bool = False
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def header(self, name: str) -> str | None:
        """The header's value (several fields joined with ", "), None when absent."""
        values = self.headers_named(name)
        return ", ".join(values) if values else None


@dataclass(frozen=True)
class StreamPiece:
    """One piece written by /stream, with the time.monotonic() at which it was written."""

    conn_id: int
    index: int
    sent_at: float


class _Exchange:
    """One request/response on an autonomous-origin connection, as handlers see it."""

    def __init__(self, conn: _OriginConnection, request: h11.Request, seen: SeenRequest) -> None:
        self.conn = conn
        self.request = request
        self.seen = seen
        parts = urlsplit(seen.target)
        self.path = parts.path
        self.query = parse_qsl(parts.query, keep_blank_values=True)

    def param(self, name: str, default: str) -> str:
        return next((value for key, value in self.query if key == name), default)

    def flag(self, name: str) -> bool:
        return self.param(name, "0") not in ("", "0", "false")

    @property
    def is_head(self) -> bool:
        return self.request.method == b"HEAD"

    async def read_body(self, *, delay_per_read: float = 0.0) -> None:
        """Read the request body into `seen` (100 Continue first if the client waits for it)."""
        if self.conn.h11.they_are_waiting_for_100_continue:
            await self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        digest = hashlib.sha256()
        try:
            while True:
                event = await self.conn.next_event()
                if isinstance(event, h11.Data):
                    self._record_body(event.data, digest)
                    if delay_per_read:
                        await asyncio.sleep(delay_per_read)
                elif isinstance(event, h11.EndOfMessage):
                    self.seen.trailers = _decode_headers(event.headers)
                    self.seen.body_complete = True
                    return
                else:
                    raise ConnectionResetError(f"client went away mid-body: {event!r}")
        finally:
            self.seen.body_sha256 = digest.hexdigest()

    def _record_body(self, data: bytes, digest: hashlib._Hash) -> None:
        room = KEPT_BODY_BYTES - len(self.seen.body)
        if room > 0:
            self.seen.body += data[:room]
        self.seen.body_len += len(data)
        digest.update(data)

    async def start(
        self, status: int, headers: Sequence[tuple[str, str]], length: int | None
    ) -> None:
        """Send the response head; `length` None means chunked (h11 picks the framing)."""
        all_headers = list(headers)
        if length is not None:
            all_headers.append(("content-length", str(length)))
        if self.conn.origin.keepalive_timeout is not None:
            all_headers.append(("keep-alive", f"timeout={self.conn.origin.keepalive_timeout:g}"))
        await self.conn.send(h11.Response(status_code=status, headers=all_headers))

    async def send_body(self, data: bytes) -> None:
        if data and not self.is_head:
            await self.conn.send(h11.Data(data=data))

    async def end(self, trailers: Sequence[tuple[str, str]] = ()) -> None:
        await self.conn.send(h11.EndOfMessage(headers=list(trailers)))

    async def respond(
        self, status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A whole response with Content-Length (none and no body for 204/304)."""
        if status in _NO_BODY_STATUSES:
            await self.start(status, headers, length=None)
        else:
            await self.start(status, [("content-type", "text/plain"), *headers], len(body))
            await self.send_body(body)
        await self.end()

    async def respond_json(self, document: object) -> None:
        body = json.dumps(document).encode()
        await self.start(200, [("content-type", "application/json")], len(body))
        await self.send_body(body)
        await self.end()


def _decode_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


# -- path handlers: each documents its query parameters --------------------------------------


async def _answer_echo(ex: _Exchange) -> None:
    """/echo (and any unknown path): JSON describing the request as received."""
    seen = ex.seen
    await ex.respond_json(
        {
            "method": seen.method,
            "target": seen.target,
            "headers": [list(pair) for pair in seen.headers],
            "body_len": seen.body_len,
            "body_sha256": seen.body_sha256,
            "conn_id": seen.conn_id,
            "request_no": seen.request_no,
            "peer": list(seen.peer),
            "http_version": seen.http_version,
            "trailers": [list(pair) for pair in seen.trailers],
        }
    )


async def _answer_bytes(ex: _Exchange) -> None:
    """/bytes?n=N[&chunked=1][&chunk=SIZE]: N pattern bytes, streamed in SIZE pieces."""
    total, piece = int(ex.param("n", "0")), int(ex.param("chunk", str(READ_SIZE)))
    kind = [("content-type", "application/octet-stream")]
    await ex.start(200, kind, length=None if ex.flag("chunked") else total)
    for offset in range(0, total, piece):
        await ex.send_body(pattern_bytes(min(piece, total - offset), offset))
    await ex.end()


async def _answer_upload(ex: _Exchange) -> None:
    """/upload[?delay_per_chunk=SECONDS]: read the body piece by piece, answer its length/hash."""
    await ex.read_body(delay_per_read=float(ex.param("delay_per_chunk", "0")))
    await ex.respond_json({"body_len": ex.seen.body_len, "body_sha256": ex.seen.body_sha256})


async def _answer_stream(ex: _Exchange) -> None:
    """/stream?n=5&interval=0.2[&sse=1]: chunked, one piece per interval (times recorded)."""
    count, interval = int(ex.param("n", "5")), float(ex.param("interval", "0.2"))
    sse = ex.flag("sse")
    kind = "text/event-stream" if sse else "text/plain"
    await ex.start(200, [("content-type", kind), ("cache-control", "no-cache")], length=None)
    for index in range(count):
        if index:
            await asyncio.sleep(interval)
        await ex.send_body((f"data: {index}\n\n" if sse else f"chunk {index}\n").encode())
        ex.conn.origin.stream_pieces.append(StreamPiece(ex.seen.conn_id, index, time.monotonic()))
    await ex.end()


async def _answer_delay(ex: _Exchange) -> None:
    """/delay?s=SECONDS: sleep, then 200 "ok"."""
    await asyncio.sleep(float(ex.param("s", "1")))
    await ex.respond(200, b"ok")


async def _answer_delay_body(ex: _Exchange) -> None:
    """/delay-body?s=SECONDS: head with Content-Length 4 and "ab", sleep, then "cd"."""
    await ex.start(200, [("content-type", "text/plain")], length=4)
    await ex.send_body(b"ab")
    await asyncio.sleep(float(ex.param("s", "1")))
    await ex.send_body(b"cd")
    await ex.end()


async def _answer_status(ex: _Exchange) -> None:
    """/status/<code>[?hdr=Name:Value...]: that status with a short body (none for 204/304)."""
    code = ex.path.removeprefix("/status/")
    if not (code.isdigit() and 200 <= int(code) <= 999):
        await ex.respond(400, b"status must be 200..999\n")
        return
    await ex.respond(int(code), f"status {code}\n".encode(), _query_headers(ex, only_hdr=True))


async def _answer_close_mid_body(ex: _Exchange) -> None:
    """/close-mid-body?n=1000&send=100[&chunked=1]: announce n bytes, send `send`, then FIN."""
    chunked = ex.flag("chunked")
    await ex.start(200, [], length=None if chunked else int(ex.param("n", "1000")))
    await ex.send_body(pattern_bytes(int(ex.param("send", "100"))))
    await ex.conn.close()


async def _answer_close_before_response(ex: _Exchange) -> None:
    """/close-before-response: the request was read; close without a byte of response."""
    await ex.conn.close()


async def _answer_reset(ex: _Exchange) -> None:
    """/reset: abortive close (RST) after reading the request."""
    ex.conn.reset()


async def _answer_garbage(ex: _Exchange) -> None:
    """/garbage: b"HELLO\\r\\n\\r\\n" instead of a response, then close."""
    await ex.conn.write_raw(b"HELLO\r\n\r\n")
    await ex.conn.close()


async def _answer_trailers(ex: _Exchange) -> None:
    """/trailers[?n=1000]: chunked pattern body with trailer x-checksum: <sha256 of body>."""
    body = pattern_bytes(int(ex.param("n", "1000")))
    await ex.start(200, [("content-type", "text/plain"), ("trailer", "x-checksum")], length=None)
    await ex.send_body(body[: len(body) // 2])
    await ex.send_body(body[len(body) // 2 :])
    await ex.end(trailers=[("x-checksum", hashlib.sha256(body).hexdigest())])


async def _answer_head(ex: _Exchange) -> None:
    """/head: Content-Length 1234; the 1234 pattern bytes follow unless the method is HEAD."""
    await ex.respond(200, pattern_bytes(1234))


async def _answer_expect(ex: _Exchange) -> None:
    """/expect[?reject=1]: 100 Continue then echo, or 417 (and close) without reading the body."""
    if ex.flag("reject"):
        await ex.respond(417, b"rejected\n", [("connection", "close")])
        return
    await ex.read_body()
    await _answer_echo(ex)


async def _answer_informational(ex: _Exchange) -> None:
    """/informational: 103 Early Hints (link: </style.css>; rel=preload), then 200 "ok"."""
    hints = [("link", "</style.css>; rel=preload")]
    await ex.conn.send(h11.InformationalResponse(status_code=103, headers=hints))
    await ex.respond(200, b"ok")


def _query_headers(ex: _Exchange, *, only_hdr: bool) -> list[tuple[str, str]]:
    """Response headers from the query: `hdr=Name:Value` pairs, plus `name=value` ones."""
    headers: list[tuple[str, str]] = []
    for key, value in ex.query:
        if key == "hdr":
            name, _, field_value = value.partition(":")
            headers.append((name.strip(), field_value.strip()))
        elif not only_hdr:
            headers.append((key, value))
    return headers


async def _answer_set_headers(ex: _Exchange) -> None:
    """/set-headers?name=value&hdr=Name:Value...: 200 "ok" carrying those headers (not framing
    ones: Content-Length/Transfer-Encoding are h11's)."""
    await ex.respond(200, b"ok\n", _query_headers(ex, only_hdr=False))


async def _answer_no_length(ex: _Exchange) -> None:
    """/no-length[?n=1000]: HTTP/1.1 200 with no framing header; the body ends at close."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
    await ex.conn.write_raw(head + pattern_bytes(int(ex.param("n", "1000"))))
    await ex.conn.close()


async def _answer_upgrade(ex: _Exchange) -> None:
    """/upgrade: `Upgrade: X` gets 101 then every byte is echoed back; without it, 426."""
    protocol = ex.seen.header("upgrade")
    if not protocol:
        await ex.respond(426, b"upgrade required\n", [("connection", "close")])
        return
    switch = [("connection", "upgrade"), ("upgrade", protocol)]
    await ex.conn.send(h11.InformationalResponse(status_code=101, headers=switch))
    leftover, _ = ex.conn.h11.trailing_data
    await ex.conn.echo_raw(leftover)


_Handler = Callable[[_Exchange], Awaitable[None]]
_HANDLERS: MappingProxyType[str, _Handler] = MappingProxyType(
    {
        "/echo": _answer_echo,
        "/bytes": _answer_bytes,
        "/upload": _answer_upload,
        "/stream": _answer_stream,
        "/delay": _answer_delay,
        "/delay-body": _answer_delay_body,
        "/close-mid-body": _answer_close_mid_body,
        "/close-before-response": _answer_close_before_response,
        "/reset": _answer_reset,
        "/garbage": _answer_garbage,
        "/trailers": _answer_trailers,
        "/head": _answer_head,
        "/expect": _answer_expect,
        "/informational": _answer_informational,
        "/set-headers": _answer_set_headers,
        "/no-length": _answer_no_length,
        "/upgrade": _answer_upgrade,
    }
)
_READS_BODY_ITSELF = frozenset({"/upload", "/expect"})


def _handler_for(path: str) -> _Handler:
    if path.startswith("/status/"):
        return _answer_status
    return _HANDLERS.get(path, _answer_echo)


class _OriginConnection:
    """One accepted connection of the autonomous origin: h11 state machine plus the socket."""

    def __init__(
        self,
        origin: AutonomousOrigin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn_id: int,
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=origin.max_head_bytes)
        self.peer: tuple[str, int] = writer.get_extra_info("peername")[:2]
        self.requests = 0
        self.responses = 0
        self.finished = False

    async def serve(self) -> None:
        """Answer requests until the client leaves, a handler closes, or a limit is reached."""
        while not self.finished:
            try:
                event = await self.next_event(idle=True)
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed, or idle past keepalive_timeout
                await self._answer(event)
            except h11.RemoteProtocolError as exc:  # bad head, or bad body framing
                await self._reject(exc)
                return
            self._finish_cycle()

    async def next_event(self, *, idle: bool = False) -> h11.Event | None:
        """The next h11 event, reading as needed; None when idle longer than keepalive_timeout."""
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            waiting_for_request = idle and self.h11.their_state is h11.IDLE
            try:
                async with asyncio.timeout(
                    self.origin.keepalive_timeout if waiting_for_request else None
                ):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                return None
            if not data and self.h11.their_state is h11.SEND_BODY:
                raise ConnectionResetError("client closed in the middle of the request body")
            self.h11.receive_data(data)
        assert event is not h11.PAUSED, "handlers must not read past a request"
        return event  # type: ignore[return-value]

    async def _answer(self, request: h11.Request) -> None:
        self.requests += 1
        seen = SeenRequest(
            method=request.method.decode("ascii"),
            target=request.target.decode("latin-1"),
            headers=_decode_headers(list(request.headers)),
            conn_id=self.conn_id,
            request_no=self.requests,
            peer=self.peer,
            http_version=request.http_version.decode("ascii"),
        )
        self.origin.requests.append(seen)
        exchange = _Exchange(self, request, seen)
        if exchange.path not in _READS_BODY_ITSELF:
            await exchange.read_body()
        await _handler_for(exchange.path)(exchange)

    def _finish_cycle(self) -> None:
        if self.finished:
            return
        self.responses += 1
        limit = self.origin.close_after
        both_done = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        if both_done and (limit is None or self.responses < limit):
            self.h11.start_next_cycle()
        else:
            self.finished = True  # must-close, unread body, or close_after reached (silently)

    async def _reject(self, exc: h11.RemoteProtocolError) -> None:
        """Malformed request: count it, answer h11's status hint (400, 431...) and close."""
        self.origin.rejected += 1
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f"bad request: {exc}\n".encode()
            head = [("content-length", str(len(body))), ("connection", "close")]
            await self.send(h11.Response(status_code=exc.error_status_hint, headers=head))
            await self.send(h11.Data(data=body), h11.EndOfMessage())

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def write_raw(self, data: bytes) -> None:
        """Bytes straight to the socket, bypassing h11."""
        self.writer.write(data)
        await self.writer.drain()

    async def echo_raw(self, first: bytes) -> None:
        """After a protocol switch: echo every byte until the client closes, then close."""
        data = first
        while True:
            if data:
                await self.write_raw(data)
            data = await self.reader.read(READ_SIZE)
            if not data:
                break
        await self.close()

    async def close(self) -> None:
        """Orderly close (FIN)."""
        self.finished = True
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes the kernel send RST."""
        self.finished = True
        self.writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.writer.transport.abort()


class AutonomousOrigin:
    """HTTP/1.1 origin answering by path; see the `_answer_*` handlers for each path.

    keepalive_timeout: every response says `Keep-Alive: timeout=<n>` and a connection idle that
    long is closed. close_after: close a connection (without announcing it) after N responses.
    max_head_bytes: larger request heads are rejected (431).
    """

    def __init__(
        self,
        *,
        keepalive_timeout: float | None = None,
        close_after: int | None = None,
        max_head_bytes: int = 64 * 1024,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.ssl = ssl  # serve over TLS with this context (an https origin)
        self.keepalive_timeout = keepalive_timeout
        self.close_after = close_after
        self.max_head_bytes = max_head_bytes
        self.requests: list[SeenRequest] = []
        self.stream_pieces: list[StreamPiece] = []
        self.connections_opened = 0
        self.open_connections = 0
        self.rejected = 0
        self.handler_errors: list[BaseException] = []
        """Unexpected exceptions of connection handlers (also logged): a bug in this module."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def __aenter__(self) -> AutonomousOrigin:
        self._server = await asyncio.start_server(self._on_connect, HOST, 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._closing = True
        self._server.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports run connection_lost

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback owning its task: Python 3.11's streams log an error for a cancelled
        # client_connected_cb task, and we must be able to cancel at shutdown.
        self.connections_opened += 1
        connection = _OriginConnection(self, reader, writer, self.connections_opened)
        task = asyncio.get_running_loop().create_task(self._serve_connection(connection))
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.handler_errors.append(error)
            logger.error("autonomous origin handler failed", exc_info=error)

    async def _serve_connection(self, connection: _OriginConnection) -> None:
        self.open_connections += 1
        try:
            await connection.serve()
        except ConnectionError:
            pass  # the client went away; nothing to answer
        finally:
            self.open_connections -= 1
            if self._closing:  # do not wait to flush to a client that may not read
                connection.writer.transport.abort()
            else:
                connection.writer.close()


class ScriptedConnection:
    """One connection accepted by ScriptedOrigin; the test drives every byte."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream

    @property
    def peer(self) -> tuple[str, int] | None:
        """The proxy's address for this connection."""
        return self.stream.peer

    async def read_request_head(self, timeout: float = 5.0) -> bytes:
        """Bytes up to and including the first CRLF CRLF."""
        return await self.stream.read_until(b"\r\n\r\n", timeout)

    async def read_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        return await self.stream.read_exactly(n, timeout)

    async def read_some(self, max_bytes: int = READ_SIZE, timeout: float = 5.0) -> bytes:
        """Whatever is there (waiting for at least one byte); b"" once the peer closed."""
        return await self.stream.read_some(max_bytes, timeout)

    async def read_until(self, separator: bytes, timeout: float = 5.0) -> bytes:
        return await self.stream.read_until(separator, timeout)

    async def read_until_close(self, timeout: float = 5.0) -> bytes:
        return await self.stream.read_until_close(timeout)

    async def send(self, data: bytes) -> None:
        await self.stream.write(data)

    def write_eof(self) -> None:
        self.stream.write_eof()

    async def close(self) -> None:
        """Orderly close (FIN)."""
        await self.stream.close()

    def reset(self) -> None:
        """Abortive close (RST)."""
        self.stream.reset()

    @property
    def closed_by_peer(self) -> bool:
        return self.stream.peer_closed

    @property
    def reset_by_peer(self) -> bool:
        return self.stream.reset_by_peer

    async def wait_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the proxy closed its side (FIN or RST) within `timeout`; keeps unread bytes."""
        return await self.stream.wait_input_ended(timeout) and self.stream.peer_closed


class ScriptedOrigin:
    """A listener whose connections the test accepts and drives by hand."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._incoming: asyncio.Queue[ScriptedConnection] = asyncio.Queue()
        self._connections: list[ScriptedConnection] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def __aenter__(self) -> ScriptedOrigin:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ByteStream(on_connected=self._on_connected), HOST, 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _on_connected(self, stream: ByteStream) -> None:
        connection = ScriptedConnection(stream)
        self.accepted += 1
        self._connections.append(connection)
        self._incoming.put_nowait(connection)

    async def accept(self, timeout: float = 5.0) -> ScriptedConnection:
        """The next connection, in accept order (TimeoutError if none comes)."""
        async with asyncio.timeout(timeout):
            return await self._incoming.get()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self._connections:
            await connection.stream.close()
        await self._server.wait_closed()


class WebSocketEchoOrigin:
    """`websockets` server echoing text and binary messages at any path; records what it saw."""

    def __init__(self, *, compression: str | None = None) -> None:
        self.port = 0
        self.paths: list[str] = []
        self.request_headers: list[list[tuple[str, str]]] = []
        """Per handshake, as received, names lowercased."""
        self.messages: list[str | bytes] = []
        self._compression = compression
        self._server: Server | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def __aenter__(self) -> WebSocketEchoOrigin:
        self._server = await serve(self._echo, HOST, 0, compression=self._compression)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def _echo(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        self.paths.append(websocket.request.path)
        headers = websocket.request.headers.raw_items()
        self.request_headers.append([(name.lower(), value) for name, value in headers])
        with suppress(ConnectionClosed):
            async for message in websocket:
                self.messages.append(message)
                await websocket.send(message)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
