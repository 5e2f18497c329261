"""The upstream (client) side of HTTP/1.1: requests out, response bytes in, events out.

`H1ResponseReader` parses one response at a time from an origin with llhttp (httptools),
including 1xx responses before the final one, bodies delimited by length, chunks or close,
and responses to HEAD (whose head is all there is). It learns the origin's keep-alive wishes
(`Connection`, `Keep-Alive: timeout=`). Errors are `ProxyError(UPSTREAM_PROTOCOL)`.

Sans-I/O: no sockets, no asyncio, no clock.
"""

from __future__ import annotations

import httptools

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import (
    END_OF_MESSAGE,
    BodyChunk,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    ResponseHead,
)
from bastion.http.headers import tokens

_NO_BODY_STATUS = frozenset({204, 304})
# The fields that decide a response's framing and keep-alive; the others are not looked at.
_KEEPALIVE_AND_FRAMING_FIELDS = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}
)
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
# Framing members as module globals: `Framing.X` is a slow lookup on every access (EnumType
# defines __getattr__, so CPython 3.11 cannot specialise it); a global load is cheap.
_FRAMING_NONE, _FRAMING_LENGTH, _FRAMING_CHUNKED, _FRAMING_CLOSE = (
    Framing.NONE,
    Framing.LENGTH,
    Framing.CHUNKED,
    Framing.CLOSE,
)
_field_line = b": ".join  # (name, value) -> b"name: value", mapped in C over a header list


class _UnsolicitedError(Exception):
    """Raised in a parser callback when an origin sends a response nobody asked for."""


class H1ResponseReader:
    """Parses the responses to requests sent one at a time on one origin connection."""

    __slots__ = (
        "_events",
        "_expect_body",
        "_framing",
        "_head_buffer",
        "_headers",
        "_parser",
        "_reason",
        "_trailers",
        "done",
        "poisoned",
        "switched",
        "tunnel_data",
    )

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers | None = None
        self._reason = b""
        self._expect_body = True
        self._framing = _FRAMING_NONE
        self._head_buffer = b""
        self.done = False  # the final response has been read to its end
        self.switched = False  # the origin answered 101: later bytes are tunnel data
        self.poisoned = False  # the origin broke framing: never reuse this connection
        self.tunnel_data = b""

    def expect(self, method: bytes) -> None:
        """Get ready for the response to a request with this method."""
        self._expect_body = method != b"HEAD"
        self.done = False

    @property
    def reading_until_close(self) -> bool:
        return self._framing is _FRAMING_CLOSE and not self.done

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; returns the events it completes. Raises ProxyError."""
        events: list[Event] = []
        self._events = events
        if not self._expect_body:
            self._feed_head_only(data)
            return events
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.switched = True
            self.tunnel_data = data[upgrade.args[0] :]
        except httptools.HttpParserCallbackError as failure:
            if not self.done:
                raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, f"bad response: {failure}") from None
            self.poisoned = True  # the response is whole; the connection is not reusable
        except httptools.HttpParserError as failure:
            raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, f"bad response: {failure}") from None
        return events

    def eof(self) -> list[Event]:
        """The origin closed its side. Ends a close-delimited body, else raises."""
        if self._framing is _FRAMING_CLOSE and not self.done:
            self.done = True
            self._framing = _FRAMING_NONE
            return [EndOfMessage([])]
        raise ProxyError(ErrorKind.UPSTREAM_CLOSED, "origin closed the connection")

    def _feed_head_only(self, data: bytes) -> None:
        """A response to HEAD: feed llhttp exactly the head(s), never a body."""
        buffer = self._head_buffer + data
        while buffer and not self.done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 1 << 16:
                    raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, "response head too large")
                break
            head, buffer = buffer[: end + 4], buffer[end + 4 :]
            try:
                self._parser.feed_data(head)
            except httptools.HttpParserError as failure:
                raise ProxyError(ErrorKind.UPSTREAM_PROTOCOL, f"bad response: {failure}") from None
        if self.done:
            self._parser = httptools.HttpResponseParser(self)
            if buffer:
                # A body after the head of a HEAD response: the head is still good (nginx
                # passes it on too), the connection is not.
                self.poisoned = True
                buffer = b""
        self._head_buffer = buffer

    # -- llhttp callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            raise _UnsolicitedError  # bytes after a complete response, before we asked
        self._headers = []
        self._trailers = None
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason  # llhttp may hand the reason over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._trailers = []
        head = _build_head(self._parser, self._reason, self._headers, self._expect_body)
        self._framing = head.framing
        self._events.append(head)
        if not self._expect_body and not head.informational:
            self._finish()

    def on_body(self, body: bytes) -> None:
        self._events.append(BodyChunk(body))

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            self.done = self.switched = True  # what follows is the new protocol
            return
        if 100 <= status < 200:
            return  # an interim response; the final one follows
        if not self.done:
            self._finish()

    def _finish(self) -> None:
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END_OF_MESSAGE)
        self._trailers = None
        self._framing = _FRAMING_NONE
        self.done = True


def _build_head(parser: object, reason: bytes, headers: Headers, expect_body: bool) -> ResponseHead:
    status: int = parser.get_status_code()  # type: ignore[attr-defined]
    version = _VERSIONS.get(parser.get_http_version()) or b"1.0"  # type: ignore[attr-defined]
    content_length: int | None = None
    chunked = False
    keep_alive = version == b"1.1"
    keepalive_timeout: float | None = None
    for name, value in headers:
        if name not in _KEEPALIVE_AND_FRAMING_FIELDS:
            continue
        if name == b"content-length":
            content_length = int(value)
        elif name == b"transfer-encoding":
            chunked = tokens(value)[-1:] == [b"chunked"]
        elif name == b"connection":
            options = tokens(value)
            if b"close" in options:
                keep_alive = False
            elif b"keep-alive" in options:
                keep_alive = True
        elif name == b"keep-alive":
            keepalive_timeout = _keepalive_timeout(value)
    if not expect_body or status in _NO_BODY_STATUS or 100 <= status < 200:
        framing = _FRAMING_NONE
    elif chunked:
        framing = _FRAMING_CHUNKED
    elif content_length is not None:
        framing = _FRAMING_LENGTH if content_length else _FRAMING_NONE
    else:
        framing, keep_alive = _FRAMING_CLOSE, False
    # positional: this runs once per response
    return ResponseHead(
        status, reason, headers, version, framing, content_length, keep_alive, keepalive_timeout
    )


def _keepalive_timeout(value: bytes) -> float | None:
    for item in value.split(b","):
        key, _, number = item.strip().partition(b"=")
        if key.strip().lower() == b"timeout":
            try:
                return float(number.strip())
            except ValueError:
                return None
    return None


def serialize_request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    """The request line and header block of an HTTP/1.1 request, ready for the wire."""
    fields = b"\r\n".join(map(_field_line, headers))
    return b"%s %s HTTP/1.1\r\n%s\r\n\r\n" % (method, target, fields)
