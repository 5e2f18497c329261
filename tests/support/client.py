"""A raw HTTP/1.1 client for wire-level tests, and the byte stream it runs on.

What lives here:
- `ByteStream`: an asyncio Protocol holding the bytes a peer sent, with exact knowledge of how the
  peer went away (FIN or RST). The scripted origin reuses it for its side of a connection.
- `RawClient`: sends any bytes (valid or not) and reads responses with a small, strict,
  hand-written parser that reports what really arrived: framing used, whether the body was
  complete, when each chunk arrived, 1xx responses seen before the final one.
- `http_request` / `http_get`: one-shot conveniences.

What it must not know: anything of bastion. This is the client in front of the proxy, written
independently of the proxy's own codecs so that it can catch their mistakes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import ssl as ssl_module
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

MAX_HEAD_BYTES = 64 * 1024
READ_PIECE = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/(\d\.\d) (\d{3})(?: ([^\r\n\x00]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(;.*)?")
_NO_BODY_STATUSES = (204, 304)


class ResponseParseError(ValueError):
    """The bytes received are not a valid HTTP/1.1 response; `data` holds what was read."""

    def __init__(self, message: str, data: bytes = b"") -> None:
        super().__init__(f"{message}: {data[:200]!r}")
        self.data = data


class NoResponseError(ConnectionError):
    """The connection ended before a single byte of a response arrived."""


class ByteStream(asyncio.Protocol):
    """One TCP connection's bytes: a read buffer plus exact close/reset knowledge.

    Reading pauses while more than `high_water` unread bytes are buffered, so a test that stops
    reading creates real backpressure on the peer. All waits take a timeout (seconds, None = no
    own timeout) and raise TimeoutError when it expires.
    """

    def __init__(
        self,
        *,
        high_water: int = 256 * 1024,
        on_connected: Callable[[ByteStream], None] | None = None,
    ) -> None:
        self._on_connected = on_connected
        self._buffer = bytearray()
        self._high_water = high_water
        self._transport: asyncio.Transport | None = None
        self._changed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._reading_paused = False
        self._closed_by_us = False
        self.peer_closed = False
        """True once the peer sent FIN or RST (not when we closed first)."""
        self.reset_by_peer = False
        """True if the connection ended with ECONNRESET from the peer."""
        self.input_ended = False
        """No more bytes will arrive (peer FIN/RST, or we closed)."""
        self.peer: tuple[str, int] | None = None

    # -- asyncio.Protocol callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its whole interface.
        self._transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self._connected.set()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_connected is not None:
            self._on_connected(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._changed.set()
        if len(self._buffer) > self._high_water and not self._reading_paused:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool:
        self.peer_closed = True
        self.input_ended = True
        self._changed.set()
        # Keep the transport open so we can still write (half-close); TLS cannot do that.
        return self._transport is not None and self._transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed_by_us:
            self.peer_closed = True
        if isinstance(exc, ConnectionResetError):
            self.reset_by_peer = True
        self.input_ended = True
        self._changed.set()
        self._writable.set()
        self._lost.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def wait_connected(self, timeout: float | None = 5.0) -> None:
        """Wait for connection_made (uvloop calls it after create_connection returned)."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # -- reading --------------------------------------------------------------------------------
    def buffered(self) -> int:
        """Number of received bytes not read yet."""
        return len(self._buffer)

    def at_eof(self) -> bool:
        """True when every received byte was read and no more will come."""
        return not self._buffer and self.input_ended

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._reading_paused and len(self._buffer) <= self._high_water // 2:
            assert self._transport is not None
            self._transport.resume_reading()
            self._reading_paused = False
        return data

    async def _wait_change(self) -> None:
        # Someone wants more bytes: reading resumes even past the high-water mark.
        if self._reading_paused:
            assert self._transport is not None
            self._transport.resume_reading()
            self._reading_paused = False
        self._changed.clear()
        await self._changed.wait()

    async def read_some(self, max_bytes: int = READ_PIECE, timeout: float | None = 5.0) -> bytes:
        """Up to `max_bytes` as soon as any are there; b"" once input ended."""
        async with asyncio.timeout(timeout):
            while not self._buffer and not self.input_ended:
                await self._wait_change()
        return self._take(min(max_bytes, len(self._buffer)))

    async def read_exactly(self, n: int, timeout: float | None = 5.0) -> bytes:
        """Exactly `n` bytes; asyncio.IncompleteReadError (with the partial bytes) on early end."""
        async with asyncio.timeout(timeout):
            while len(self._buffer) < n and not self.input_ended:
                await self._wait_change()
        if len(self._buffer) < n:
            raise asyncio.IncompleteReadError(self._take(len(self._buffer)), n)
        return self._take(n)

    async def read_until(
        self, separator: bytes, timeout: float | None = 5.0, limit: int = MAX_HEAD_BYTES
    ) -> bytes:
        """Bytes up to and including `separator`; IncompleteReadError on early end,
        asyncio.LimitOverrunError if more than `limit` bytes arrive without it."""
        async with asyncio.timeout(timeout):
            while (end := self._buffer.find(separator)) < 0:
                if len(self._buffer) > limit:
                    raise asyncio.LimitOverrunError("separator not found", len(self._buffer))
                if self.input_ended:
                    raise asyncio.IncompleteReadError(self._take(len(self._buffer)), None)
                await self._wait_change()
        return self._take(end + len(separator))

    async def read_until_close(self, timeout: float | None = 5.0) -> bytes:
        """Everything until the input ends (consumes as it goes, so no backpressure stall)."""
        out = bytearray()
        async with asyncio.timeout(timeout):
            while True:
                out += self._take(len(self._buffer))
                if self.input_ended and not self._buffer:
                    return bytes(out)
                await self._wait_change()

    async def wait_input_ended(self, timeout: float | None = 5.0) -> bool:
        """Wait (without consuming) until no more input will come; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not self.input_ended:
                    await self._wait_change()
        except TimeoutError:
            return False
        return True

    # -- writing and closing --------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        """Write and wait until the transport's buffer drained below its high-water mark."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("connection is closed")
        self._transport.write(data)
        await self._writable.wait()

    def write_eof(self) -> None:
        """Half-close: send FIN, keep reading."""
        assert self._transport is not None
        self._transport.write_eof()

    async def close(self, timeout: float = 1.0) -> None:
        """Orderly close (FIN after pending writes); if the peer does not take those writes
        within `timeout`, abort (RST). Returns once the socket is gone."""
        self._closed_by_us = True
        if self._transport is None:
            return
        self._transport.close()
        try:
            async with asyncio.timeout(timeout):
                await self._lost.wait()
        except TimeoutError:
            self._transport.abort()
            await self._lost.wait()

    def reset(self) -> None:
        """Abortive close: SO_LINGER 0 makes the kernel send RST instead of FIN."""
        self._closed_by_us = True
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()


@dataclass
class RawResponse:
    """One response exactly as it came over the wire. Header names are lowercased bytes."""

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    raw_head: bytes
    body: bytes = b""
    body_len: int = 0
    body_sha256: str = ""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    framing: str = "none"
    """How the body was delimited: "none", "content-length", "chunked" or "close"."""
    complete: bool = True
    """False when the connection ended before the framing said the body was over."""
    chunk_times: list[float] = field(default_factory=list)
    """time.monotonic() at which each chunk's data had fully arrived (chunked framing only)."""
    chunk_sizes: list[int] = field(default_factory=list)
    informational: list[RawResponse] = field(default_factory=list)
    """1xx responses that came before this one (when skipped by read_response)."""

    @property
    def chunked(self) -> bool:
        return self.framing == "chunked"

    def headers_named(self, name: bytes | str) -> list[bytes]:
        """Every value of the header `name` (any case), in arrival order."""
        wanted = (name.encode() if isinstance(name, str) else name).lower()
        return [value for key, value in self.headers if key == wanted]

    def header(self, name: bytes | str) -> bytes | None:
        """The header's value; several fields are joined with b", "; None when absent."""
        values = self.headers_named(name)
        return b", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_response_head(raw_head: bytes) -> RawResponse:
    """Strictly parse a status line and header fields (raw_head ends with CRLF CRLF)."""
    lines = raw_head[:-4].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ResponseParseError("bad status line", raw_head)
    headers = [parse_field_line(line) for line in lines[1:]]
    version, status, reason = match.groups()
    return RawResponse(int(status), reason or b"", version, headers, raw_head)


def parse_field_line(line: bytes) -> tuple[bytes, bytes]:
    """`name: value` (no CRLF) -> (lowercased name, value without surrounding blanks)."""
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):  # also rejects obs-fold (leading blank)
        raise ResponseParseError("bad header line", line)
    value = value.strip(b" \t")
    if _FORBIDDEN_IN_VALUE.search(value):
        raise ResponseParseError("forbidden byte in header value", line)
    return name.lower(), value


def body_framing(response: RawResponse, head_request: bool) -> tuple[str, int]:
    """RFC 9112 section 6.3: how the body of `response` is delimited, and its length if known."""
    if head_request or response.status < 200 or response.status in _NO_BODY_STATUSES:
        return "none", 0
    codings = [
        c.strip().lower()
        for v in response.headers_named(b"transfer-encoding")
        for c in v.split(b",")
    ]
    if codings:
        return ("chunked", 0) if codings[-1] == b"chunked" else ("close", 0)
    lengths = {
        part.strip() for v in response.headers_named(b"content-length") for part in v.split(b",")
    }
    if not lengths:
        return "close", 0
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise ResponseParseError("bad content-length", b",".join(sorted(lengths)))
    return "content-length", int(lengths.pop())


class _BodySink:
    """Collects body bytes (optionally keeping them) with their length and SHA-256."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.data = bytearray()
        self.length = 0
        self.digest = hashlib.sha256()

    def add(self, piece: bytes) -> None:
        if self.keep:
            self.data += piece
        self.length += len(piece)
        self.digest.update(piece)

    def finish_into(self, response: RawResponse) -> None:
        response.body = bytes(self.data)
        response.body_len = self.length
        response.body_sha256 = self.digest.hexdigest()


async def _read_length_body(stream: ByteStream, length: int, sink: _BodySink) -> bool:
    while sink.length < length:
        piece = await stream.read_some(min(READ_PIECE, length - sink.length), timeout=None)
        if not piece:
            return False
        sink.add(piece)
    return True


async def _read_chunk_size(stream: ByteStream) -> int:
    line = await stream.read_until(b"\r\n", timeout=None)
    match = _CHUNK_SIZE.fullmatch(line[:-2])
    if match is None:
        raise ResponseParseError("bad chunk size line", line)
    return int(match.group(1), 16)


async def _read_chunked_body(stream: ByteStream, response: RawResponse, sink: _BodySink) -> bool:
    """Chunks into `sink`, then trailers; False if the connection ended before the last-chunk
    and trailer section (any partial chunk data is kept in the body)."""
    try:
        while (size := await _read_chunk_size(stream)) > 0:
            try:
                sink.add(await stream.read_exactly(size, timeout=None))
            except asyncio.IncompleteReadError as exc:
                sink.add(exc.partial)
                raise
            if await stream.read_exactly(2, timeout=None) != b"\r\n":
                raise ResponseParseError("chunk data not followed by CRLF")
            response.chunk_times.append(time.monotonic())
            response.chunk_sizes.append(size)
        while (line := await stream.read_until(b"\r\n", timeout=None)) != b"\r\n":
            response.trailers.append(parse_field_line(line[:-2]))
    except asyncio.IncompleteReadError:
        return False
    return True


async def read_one_response(
    stream: ByteStream, *, head_request: bool = False, keep_body: bool = True
) -> RawResponse:
    """Read one response (1xx included) from `stream`; leaves any following bytes buffered."""
    try:
        raw_head = await stream.read_until(b"\r\n\r\n", timeout=None)
    except asyncio.LimitOverrunError:
        raise ResponseParseError("response head too long") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise NoResponseError("connection closed before any response byte") from None
        raise ResponseParseError(
            "connection closed inside the response head", exc.partial
        ) from None
    response = parse_response_head(raw_head)
    response.framing, length = body_framing(response, head_request)
    sink = _BodySink(keep_body)
    try:
        if response.framing == "content-length":
            response.complete = await _read_length_body(stream, length, sink)
        elif response.framing == "chunked":
            response.complete = await _read_chunked_body(stream, response, sink)
        elif response.framing == "close":
            sink.add(await stream.read_until_close(timeout=None))
    except asyncio.LimitOverrunError:
        raise ResponseParseError("chunk size or trailer line too long") from None
    sink.finish_into(response)
    return response


class RawClient:
    """One client connection that sends raw bytes and reads responses strictly.

    `async with RawClient(port) as c:` connects (TLS when `ssl` is given) and closes on exit.
    """

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        high_water: int = 256 * 1024,
    ) -> None:
        self.port = port
        self.host = host
        self._ssl = ssl
        self._server_hostname = server_hostname
        self.stream = ByteStream(high_water=high_water)

    async def __aenter__(self) -> RawClient:
        loop = asyncio.get_running_loop()
        await loop.create_connection(
            lambda: self.stream,
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self._server_hostname if self._ssl else None,
        )
        await self.stream.wait_connected()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, data: bytes) -> None:
        await self.stream.write(data)

    async def read_response(
        self,
        *,
        head_request: bool = False,
        skip_informational: bool = True,
        keep_body: bool = True,
        timeout: float = 5.0,
    ) -> RawResponse:
        """The next response. 1xx ones (except 101) are collected in `.informational` of the
        final response unless `skip_informational=False`, which returns each on its own."""
        informational: list[RawResponse] = []
        async with asyncio.timeout(timeout):
            while True:
                response = await read_one_response(
                    self.stream, head_request=head_request, keep_body=keep_body
                )
                is_interim = 100 <= response.status < 200 and response.status != 101
                if not (skip_informational and is_interim):
                    break
                informational.append(response)
        response.informational = informational
        return response

    async def read_some(self, max_bytes: int = READ_PIECE, timeout: float = 5.0) -> bytes:
        return await self.stream.read_some(max_bytes, timeout)

    async def read_until_close(self, timeout: float = 5.0) -> bytes:
        return await self.stream.read_until_close(timeout)

    def at_eof(self) -> bool:
        return self.stream.at_eof()

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closed (FIN or RST) within `timeout`; unread bytes are kept."""
        return await self.stream.wait_input_ended(timeout) and self.stream.peer_closed

    @property
    def closed_by_peer(self) -> bool:
        return self.stream.peer_closed

    @property
    def reset_by_peer(self) -> bool:
        return self.stream.reset_by_peer

    def write_eof(self) -> None:
        self.stream.write_eof()

    def reset(self) -> None:
        self.stream.reset()

    async def close(self) -> None:
        await self.stream.close()


def request_bytes(
    method: str,
    target: str,
    *,
    host: str = "test",
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    body: bytes = b"",
) -> bytes:
    """A well-formed HTTP/1.1 request; Content-Length is added when there is a body."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + host.encode()]
    for name, value in headers:
        raw_name = name.encode("latin-1") if isinstance(name, str) else name
        raw_value = value.encode("latin-1") if isinstance(value, str) else value
        lines.append(raw_name + b": " + raw_value)
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def http_request(
    port: int,
    method: str,
    target: str,
    *,
    host: str = "test",
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    body: bytes = b"",
    timeout: float = 5.0,
) -> RawResponse:
    """Open a connection, send one request, read one response, close."""
    async with RawClient(port) as client:
        await client.send(request_bytes(method, target, host=host, headers=headers, body=body))
        return await client.read_response(head_request=method == "HEAD", timeout=timeout)


async def http_get(
    port: int,
    path: str,
    host: str = "test",
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    *,
    timeout: float = 5.0,
) -> RawResponse:
    """One-shot GET over a fresh connection."""
    return await http_request(port, "GET", path, host=host, headers=headers, timeout=timeout)
