"""An origin with Windows integrated authentication's connection-bound handshake (NTLM).

Like IIS: a request without credentials gets `401` + `WWW-Authenticate: NTLM`; leg one
(`Authorization: NTLM <negotiate>`) gets `401` + a challenge bound to *this* connection; leg
three (`Authorization: NTLM <authenticate>`) succeeds only on the connection that received the
challenge, which is then authenticated: its later requests need no credentials. Any other
connection, or a third leg elsewhere, starts over with a bare 401. Every answer names the
connection that served it, so tests can see whether a proxy kept the legs together.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json

import h11

NEGOTIATE = b"NTLM " + base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00" + b"\x00" * 24)
AUTHENTICATE = b"NTLM " + base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\x00" * 56)
CHALLENGE = b"NTLM " + base64.b64encode(b"NTLMSSP\x00\x02\x00\x00\x00" + b"\x11" * 40)


def _message_type(authorization: bytes) -> int | None:
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"ntlm":
        return None
    try:
        raw = base64.b64decode(token, validate=True)
    except ValueError:
        return None
    return raw[8] if raw.startswith(b"NTLMSSP\x00") and len(raw) > 8 else None


class NtlmOrigin:
    """`async with NtlmOrigin() as origin`: serves on 127.0.0.1, an ephemeral port."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self.port = 0
        self.completed: list[int] = []  # connections on which a handshake completed
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> NtlmOrigin:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._ids)
        self._writers.add(writer)
        state = "new"  # new -> challenged -> authenticated
        parser = h11.Connection(h11.SERVER)
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    parser.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    auth = dict(event.headers).get(b"authorization", b"")
                    status, extra, state = self._answer(conn_id, state, auth)
                    body = json.dumps({"conn": conn_id, "state": state}).encode()
                    headers = [(b"content-length", b"%d" % len(body)), *extra]
                    writer.write(parser.send(h11.Response(status_code=status, headers=headers)))
                    writer.write(parser.send(h11.Data(data=body)))
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(parser.send(h11.EndOfMessage()))
                    await writer.drain()
                    if parser.our_state is h11.MUST_CLOSE:
                        return
                    parser.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (ConnectionError, h11.RemoteProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(
        self, conn_id: int, state: str, authorization: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], str]:
        kind = _message_type(authorization)
        if kind == 1:
            return 401, [(b"www-authenticate", CHALLENGE)], "challenged"
        if kind == 3 and state == "challenged":
            self.completed.append(conn_id)
            return 200, [], "authenticated"
        if state == "authenticated" and not authorization:
            return 200, [], "authenticated"
        return 401, [(b"www-authenticate", b"NTLM"), (b"www-authenticate", b"Negotiate")], "new"
