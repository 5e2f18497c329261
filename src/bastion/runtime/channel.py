"""The supervisor ↔ worker channel: newline-delimited JSON messages over a socketpair.

Each worker has one stream socket of a `socket.socketpair()`, the supervisor the other end.
A message is a JSON object with a `"type"` string, one per line. Both sides use `Channel`:

    channel = Channel(sock, handlers)      # handlers: a MessageHandlers, maybe shared
    channel.on("metrics", on_metrics)      # handler(message: dict, channel: Channel) -> None
    await channel.start()                  # reading begins; handlers run on the event loop
    channel.send({"type": "ready"})        # never blocks; buffered by the transport
    await channel.closed.wait()            # the peer went away (EOF) or close() was called

The supervisor builds one `MessageHandlers` and gives it to every worker's channel, so a
handler registered once (`supervisor.handlers.on(...)`) sees the messages of every worker,
present and future; `channel.peer` says which worker sent it (index, generation, pid).
A message of a type nobody registered is logged once per type and dropped; a handler that
raises is logged and the channel keeps going. Messages in use: `ready` (worker → supervisor,
once it is listening) and `draining` (worker → supervisor, once it stopped accepting).

What it must not know: what the messages mean, processes or signals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[Message, "Channel"], None]

MAX_LINE = 16 * 1024 * 1024
"""A longer line is a broken peer: the channel closes."""

_ENCODER = json.JSONEncoder(ensure_ascii=True, check_circular=False, separators=(",", ":"))


class MessageHandlers:
    """Handlers by message type; one instance may serve many channels."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._unknown: set[str] = set()

    def on(self, type_: str, handler: Handler) -> None:
        """Call `handler(message, channel)` for every message of `type_` (in order added)."""
        self._handlers.setdefault(type_, []).append(handler)

    def dispatch(self, message: Message, channel: Channel) -> None:
        type_ = message.get("type")
        handlers = self._handlers.get(type_) if isinstance(type_, str) else None
        if not handlers:
            if str(type_) not in self._unknown:
                self._unknown.add(str(type_))
                log.warning("channel %s: no handler for message type %r", channel.peer, type_)
            return
        for handler in handlers:
            try:
                handler(message, channel)
            except Exception:
                log.exception("channel %s: handler of %r failed", channel.peer, type_)


class Channel(asyncio.Protocol):
    """One end of a supervisor ↔ worker socketpair."""

    def __init__(
        self, sock: socket.socket, handlers: MessageHandlers | None = None, peer: str = "peer"
    ) -> None:
        self.sock = sock
        self.handlers = handlers if handlers is not None else MessageHandlers()
        self.peer = peer
        self.closed = asyncio.Event()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def on(self, type_: str, handler: Handler) -> None:
        """Register a handler for one message type (on this channel's `handlers`)."""
        self.handlers.on(type_, handler)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, sock=self.sock)

    def send(self, message: Message) -> None:
        """Queue one message; dropped (and logged at debug) once the channel is closed."""
        if self._transport is None or self._transport.is_closing():
            log.debug("channel %s closed: dropping %r", self.peer, message.get("type"))
            return
        self._transport.write(_ENCODER.encode(message).encode() + b"\n")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self.sock.close()
            self.closed.set()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            self._receive(bytes(self._buffer[start:end]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > MAX_LINE:
            log.error("channel %s: message longer than %d bytes, closing", self.peer, MAX_LINE)
            self.close()

    def _receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.error("channel %s: not a JSON message: %r", self.peer, line[:200])
            return
        if not isinstance(message, dict):
            log.error("channel %s: not a JSON object: %r", self.peer, line[:200])
            return
        self.handlers.dispatch(message, self)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.closed.set()
