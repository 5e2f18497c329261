"""The downstream (server) side of HTTP/1.1: request bytes in, events out; responses out.

`H1RequestReader` wraps llhttp (httptools) in its strict mode and adds the checks llhttp
leaves to its user, so that nothing ambiguous ever reaches an origin: a request with both
Content-Length and Transfer-Encoding, bad lengths, bad chunk sizes, whitespace before a colon,
obs-fold and control characters are refused by llhttp; this module adds Host rules, the
transfer-coding rules of RFC 9112 6.1, and the head and URI size limits. Errors are raised as
`ProxyError` with the status to answer; after one, the connection must be closed.

Sans-I/O: no sockets, no asyncio, no clock.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import httptools

from bastion.errors import ErrorKind, ProxyError
from bastion.http.events import (
    END_OF_MESSAGE,
    BodyChunk,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    RequestHead,
)
from bastion.http.headers import tokens

_MAX_UPGRADE_BUFFER = 1 << 20
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
# Framing members as module globals: `Framing.X` is a slow lookup on every access (EnumType
# defines __getattr__, so CPython 3.11 cannot specialise it); a global load is cheap.
_FRAMING_NONE, _FRAMING_LENGTH, _FRAMING_CHUNKED = Framing.NONE, Framing.LENGTH, Framing.CHUNKED
_UNDERSCORE = ord("_")  # `int in bytes` is a memchr
_field_line = b": ".join  # (name, value) -> b"name: value", mapped in C over a header list


_REASONS: dict[int, bytes] = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for `status` (b"" when it has none)."""
    return _REASONS.get(status, b"")


class _RefusalError(Exception):
    """Raised inside a parser callback to hand a ProxyError out through llhttp."""

    def __init__(self, error: ProxyError) -> None:
        self.error = error


class H1RequestReader:
    """Parses a stream of HTTP/1.x requests (pipelined or not) into events.

    After a request that asks to switch protocols (Upgrade, no body) the reader holds every
    later byte: the caller either takes them as tunnel data (`accept_upgrade`) or has them
    parsed as further HTTP requests (`decline_upgrade`). An Upgrade request that carries a
    body is never switched; its body is parsed like any other.
    """

    __slots__ = (
        "_events",
        "_field_bytes",
        "_head",
        "_headers",
        "_in_head",
        "_last_host",
        "_later_bytes",
        "_max_header_size",
        "_max_uri_size",
        "_parser",
        "_pending_upgrade",
        "_refusal",
        "_skip_synthetic_head",
        "_trailers",
        "_uri_bytes",
        "_url_parts",
        "failure",
        "upgrade_buffer",
    )

    def __init__(self, max_header_size: int = 32 * 1024, max_uri_size: int = 8 * 1024) -> None:
        self._max_header_size = max_header_size
        self._max_uri_size = max_uri_size
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers | None = None
        self._url_parts: list[bytes] = []
        self._uri_bytes = 0
        self._head: RequestHead | None = None
        self._later_bytes = 0  # bytes of reads after the first one of an unfinished head
        self._field_bytes = 0
        self._last_host: bytes | None = None
        self._in_head = False
        self.failure: ProxyError | None = None
        self._refusal: ProxyError | None = None
        self._pending_upgrade = False
        self._skip_synthetic_head = False
        self.upgrade_buffer = b""

    @property
    def in_message(self) -> bool:
        """True while a request has started but not been fully received."""
        return self._in_head or self._head is not None

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; returns the events it completes.

        A malformed request raises ProxyError (answer it, then close) — but only once the
        events completed before it in the same read have been handed out: the error is then
        kept in `failure` and raised by the next call.
        """
        if self.failure is not None:
            raise self.failure
        if self._pending_upgrade:
            self.upgrade_buffer += data
            if len(self.upgrade_buffer) > _MAX_UPGRADE_BUFFER:
                raise ProxyError(ErrorKind.BAD_REQUEST, "too much data before the upgrade")
            return []
        events: list[Event] = []
        self._events = events
        was_in_head = self._in_head
        try:
            self._feed_parser(data)
            if self._in_head:
                self._check_head_size(data, was_in_head)
        except ProxyError as error:
            # Hand out only the requests completed before the error: the malformed one,
            # even a head of it that parsed, must never reach an origin.
            complete = _through_last_end(events)
            if not complete:
                raise
            self.failure = error
            return complete
        return events

    def _feed_parser(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade_request(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as failure:
            # The refusal a callback raised is kept on the reader: httptools chains its own
            # error to whatever exception is being handled, which may not be ours.
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                raise refusal from None
            raise ProxyError(ErrorKind.BAD_REQUEST, str(failure)) from None
        except httptools.HttpParserError as failure:
            raise ProxyError(ErrorKind.BAD_REQUEST, str(failure)) from None

    def _check_head_size(self, data: bytes, was_in_head: bool) -> None:
        """Bound what llhttp buffers for an unfinished head (a header line never ending)."""
        if was_in_head:
            self._later_bytes += len(data)
        head_bytes = self._uri_bytes + self._field_bytes + self._later_bytes
        if head_bytes > self._max_header_size + self._max_uri_size:
            raise ProxyError(ErrorKind.HEADERS_TOO_LARGE, "request head too large")

    def accept_upgrade(self) -> bytes:
        """The bytes that followed an upgrade request: the start of the tunnel."""
        data, self.upgrade_buffer = self.upgrade_buffer, b""
        return data

    def decline_upgrade(self) -> list[Event]:
        """Continue parsing HTTP after an upgrade request that will not be switched."""
        self._pending_upgrade = False
        self._head = None
        self._parser = httptools.HttpRequestParser(self)
        data, self.upgrade_buffer = self.upgrade_buffer, b""
        return self.feed(data) if data else []

    def _after_upgrade_request(self, rest: bytes) -> None:
        head = self._head
        if head is None or head.framing is _FRAMING_NONE:
            self._head = None
            self._pending_upgrade = True
            self.upgrade_buffer = rest
            return
        # llhttp treats what follows an Upgrade head as tunnel bytes even when the request
        # declares a body. Parse that body with the framing the head declared by priming a
        # fresh parser with a head of the same framing, whose events are dropped.
        self._parser = httptools.HttpRequestParser(self)
        self._skip_synthetic_head = True
        if head.framing is _FRAMING_CHUNKED:
            framing = b"Transfer-Encoding: chunked"
        else:
            framing = b"Content-Length: %d" % (head.content_length or 0)
        self._parser.feed_data(b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
        self._head = head
        self._feed_parser(rest)

    # -- llhttp callbacks -------------------------------------------------------------

    def _refuse(self, error: ProxyError) -> _RefusalError:
        self._refusal = error
        return _RefusalError(error)

    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = None
        self._url_parts = []
        self._uri_bytes = 0
        self._later_bytes = 0
        self._field_bytes = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url_parts.append(url)  # llhttp may hand the target over in pieces
        self._uri_bytes += len(url)
        if self._uri_bytes > self._max_uri_size:
            raise self._refuse(ProxyError(ErrorKind.URI_TOO_LONG, "request-target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._trailers is not None:
            self._trailers.append((name.lower(), value))
            return
        self._field_bytes += len(name) + len(value) + 4
        if _UNDERSCORE in name:
            # Like nginx: `Content_Length` and friends may reach a CGI/WSGI origin as the
            # same variable as the real header. Such fields are dropped, never forwarded.
            return
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._trailers = []
        if self._skip_synthetic_head:
            self._skip_synthetic_head = False
            return
        url = b"".join(self._url_parts)
        method: bytes = self._parser.get_method()
        # Request line and header block as a well-formed client writes them ("Name: value",
        # CRLF endings): exact for those, and what the size limit and the log count.
        size = len(method) + len(url) + 14 + self._field_bytes
        try:
            if size > self._max_header_size:
                raise ProxyError(ErrorKind.HEADERS_TOO_LARGE, "request headers too large")
            head = self._build_head(method, url, size)
        except ProxyError as error:
            raise self._refuse(error) from None
        self._head = head
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        self._events.append(BodyChunk(body))

    def on_message_complete(self) -> None:
        head = self._head
        if head is not None and (
            head.upgrade is not None
            or (head.framing is not _FRAMING_NONE and self._parser.should_upgrade())
        ):
            return  # what follows is decided by _after_upgrade_request
        self._head = None
        trailers = self._trailers
        self._events.append(EndOfMessage(trailers) if trailers else END_OF_MESSAGE)
        self._trailers = None

    # -- validation beyond llhttp -------------------------------------------------------

    def _build_head(self, method: bytes, url: bytes, size: int) -> RequestHead:
        parser = self._parser
        if method == b"CONNECT":
            raise ProxyError(ErrorKind.METHOD_NOT_ALLOWED, "CONNECT is not served here")
        text_version = parser.get_http_version()
        version = _VERSIONS.get(text_version)
        if version is None:
            raise ProxyError(ErrorKind.BAD_REQUEST, f"HTTP/{text_version} request line")
        host, transfer_encoding, content_length, expect, upgrade = _scan_headers(self._headers)
        if host is None:
            if version == b"1.1":
                raise ProxyError(ErrorKind.BAD_REQUEST, "HTTP/1.1 request without Host")
            host = b""
        elif host != self._last_host:  # a keep-alive client repeats its Host: check it once
            if not _valid_host(host):
                raise ProxyError(ErrorKind.BAD_REQUEST, "invalid Host header")
            self._last_host = host
        if transfer_encoding is None and not content_length:
            framing = _FRAMING_NONE
        else:
            framing = _request_framing(version, transfer_encoding, content_length)
        switch = (
            upgrade
            if upgrade is not None and parser.should_upgrade() and framing is _FRAMING_NONE
            else None
        )
        return RequestHead(  # positional: this runs once per request
            method,
            url,
            version,
            self._headers,
            framing,
            content_length,
            parser.should_keep_alive(),
            host,
            expect and version == b"1.1" and framing is not _FRAMING_NONE,  # expect_continue
            switch,  # upgrade
            size,  # head_size
        )


def _through_last_end(events: list[Event]) -> list[Event]:
    for index in range(len(events) - 1, -1, -1):
        if type(events[index]) is EndOfMessage:
            return events[: index + 1]
    return []


_SCANNED_FIELDS = frozenset({b"transfer-encoding", b"content-length", b"expect", b"upgrade"})


def _scan_headers(
    headers: Headers,
) -> tuple[bytes | None, bytes | None, int | None, bool, bytes | None]:
    """Host, Transfer-Encoding, Content-Length, Expect: 100-continue and Upgrade, one pass."""
    host: bytes | None = None
    transfer_encoding: bytes | None = None
    content_length: int | None = None
    expect = False
    upgrade: bytes | None = None
    for name, value in headers:
        if name == b"host":
            if host is not None:
                raise ProxyError(ErrorKind.BAD_REQUEST, "more than one Host header")
            host = value
        elif name not in _SCANNED_FIELDS:
            continue
        elif name == b"transfer-encoding":
            # Several fields are one list (RFC 9110 5.3): judge them together.
            if transfer_encoding is not None:
                value = transfer_encoding + b"," + value
            transfer_encoding = value
        elif name == b"content-length":
            content_length = int(value)  # llhttp has already refused anything but digits
        elif name == b"expect":
            expect = value.strip().lower() == b"100-continue"
        elif name == b"upgrade":
            upgrade = value
    return host, transfer_encoding, content_length, expect, upgrade


# RFC 9110 7.2: uri-host [ ":" port ]; a reg-name of unreserved characters and
# percent-escapes, or a bracketed IPv6 literal; the port is up to five digits.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?")


def _valid_host(host: bytes) -> bool:
    return len(host) <= 255 and _HOST.fullmatch(host) is not None


def _request_framing(
    version: bytes, transfer_encoding: bytes | None, content_length: int | None
) -> Framing:
    if transfer_encoding is not None:
        if version == b"1.0":
            # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding is faulty framing.
            raise ProxyError(ErrorKind.BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request")
        codings = tokens(transfer_encoding)
        if codings != [b"chunked"]:
            if codings and codings[-1] == b"chunked":
                raise ProxyError(
                    ErrorKind.UNSUPPORTED_CODING, "transfer codings other than chunked"
                )
            raise ProxyError(ErrorKind.BAD_REQUEST, "final transfer coding is not chunked")
        return _FRAMING_CHUNKED
    if content_length:
        return _FRAMING_LENGTH
    return _FRAMING_NONE


def serialize_response_head(
    status: int, reason: bytes, headers: Headers, http_version: bytes = b"1.1"
) -> bytes:
    """The status line and header block of a response, ready for the wire."""
    status_line = b"HTTP/%s %d %s" % (http_version, status, reason or reason_phrase(status))
    if not headers:
        return status_line + b"\r\n\r\n"
    fields = b"\r\n".join(map(_field_line, headers))
    return status_line + b"\r\n" + fields + b"\r\n\r\n"
