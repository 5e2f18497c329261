"""An origin that expects a PROXY protocol header (v1 or v2) first on every connection, the
way a backend behind HAProxy's `send-proxy` does, and then serves HTTP/1.1 (over TLS when
given a context: the header comes before the handshake).

Every answer is JSON: the PROXY header its connection started with, the request as
received, and the connection's number, so a test sees which client's header carried which
request. It parses the header with its own code (struct and ipaddress, from the
specification), not bastion's, so that it can catch bastion's mistakes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl as ssl_module
import struct
from dataclasses import dataclass, field

import h11

HOST = "127.0.0.1"
_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_FAMILIES = {0x1: "TCP4", 0x2: "TCP6", 0x3: "UNIX"}


@dataclass
class SeenHeader:
    """A PROXY header as the origin read it."""

    version: int
    command: str  # "PROXY" or "LOCAL"
    family: str  # "TCP4", "TCP6", "UNIX" or "UNKNOWN"
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    raw: bytes = b""

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "command": self.command,
            "family": self.family,
            "source": list(self.source) if self.source else None,
            "destination": list(self.destination) if self.destination else None,
        }


@dataclass
class SeenConnection:
    header: SeenHeader
    requests: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)
    """(method, target, headers) of each request, in order."""


class BadHeaderError(ValueError):
    pass


async def read_proxy_header(reader: asyncio.StreamReader) -> SeenHeader:
    """Read exactly one PROXY header from the stream (nothing after it)."""
    first = await reader.readexactly(1)
    if first == b"P":
        line = first + await reader.readuntil(b"\r\n")
        if len(line) > 107:
            raise BadHeaderError("v1 line too long")
        return _v1(line)
    rest = await reader.readexactly(15)
    fixed = first + rest
    if fixed[:12] != _SIGNATURE:
        raise BadHeaderError(f"no PROXY signature: {fixed!r}")
    version_command, family_byte, length = struct.unpack("!BBH", fixed[12:])
    body = await reader.readexactly(length)
    if version_command >> 4 != 2:
        raise BadHeaderError("not version 2")
    raw = fixed + body
    if version_command & 0xF == 0:
        return SeenHeader(2, "LOCAL", "UNKNOWN", raw=raw)
    if version_command & 0xF != 1:
        raise BadHeaderError("unknown command")
    family = _FAMILIES.get(family_byte >> 4, "UNKNOWN")
    if family == "TCP4":
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
    elif family == "TCP6":
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
    else:
        return SeenHeader(2, "PROXY", family, raw=raw)
    source = (str(ipaddress.ip_address(src)), sport)
    destination = (str(ipaddress.ip_address(dst)), dport)
    return SeenHeader(2, "PROXY", family, source, destination, raw)


def _v1(line: bytes) -> SeenHeader:
    words = line[:-2].decode("ascii").split(" ")
    if words[0] != "PROXY":
        raise BadHeaderError(f"not a PROXY line: {line!r}")
    if words[1] == "UNKNOWN":
        return SeenHeader(1, "PROXY", "UNKNOWN", raw=line)
    if words[1] not in ("TCP4", "TCP6") or len(words) != 6:
        raise BadHeaderError(f"bad v1 line: {line!r}")
    source = (str(ipaddress.ip_address(words[2])), int(words[4]))
    destination = (str(ipaddress.ip_address(words[3])), int(words[5]))
    return SeenHeader(1, "PROXY", words[1], source, destination, line)


class ProxyProtocolOrigin:
    """Accepts connections that start with a PROXY header; anything else is counted in
    `bad_headers` and closed."""

    def __init__(self, *, ssl: ssl_module.SSLContext | None = None) -> None:
        self.ssl = ssl
        self.connections: list[SeenConnection] = []
        self.bad_headers: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def headers(self) -> list[SeenHeader]:
        return [conn.header for conn in self.connections]

    async def __aenter__(self) -> ProxyProtocolOrigin:
        self._server = await asyncio.start_server(self._on_connect, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(5):
                    header = await read_proxy_header(reader)
            except (BadHeaderError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
                self.bad_headers.append(str(error))
                return
            if self.ssl is not None:
                await writer.start_tls(self.ssl)
            connection = SeenConnection(header)
            self.connections.append(connection)
            await self._serve_http(reader, writer, connection, len(self.connections))
        except (ConnectionError, ssl_module.SSLError):
            pass
        finally:
            writer.transport.abort()

    async def _serve_http(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: SeenConnection,
        conn_id: int,
    ) -> None:
        http = h11.Connection(h11.SERVER)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                http.receive_data(data)
                if not data and http.their_state is h11.IDLE:
                    return
                continue
            if isinstance(event, h11.Request):
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
                target = event.target.decode("latin-1")
                connection.requests.append((event.method.decode(), target, headers))
                body = json.dumps(
                    {
                        "proxy": connection.header.as_json(),
                        "conn_id": conn_id,
                        "target": target,
                        "headers": [list(pair) for pair in headers],
                    }
                ).encode()
                response = h11.Response(
                    status_code=200,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(body))),
                    ],
                )
                writer.write(http.send(response) + http.send(h11.Data(data=body)))
                writer.write(http.send(h11.EndOfMessage()))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                else:
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return
