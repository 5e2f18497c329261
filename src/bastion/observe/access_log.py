"""The access log: one line per request, in nginx's combined format or as JSON.

`AccessRecord` is what the proxy core fills in while it serves one request; `AccessLog` formats
each finished record, buffers the lines and writes them to stdout or to a file in one write call
per flush. A file is opened with O_APPEND and can be reopened after rotation (SIGUSR1).

The combined format is nginx's

    $remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    "$http_user_agent"

extended with four fields, so the line still parses as "combined" for tools that stop there:

    rid=<request id> rt=<total seconds, 3 decimals> ut=<seconds until the origin's response
    head, 3 decimals, or -> us=<origin server address or ->

Times are written in UTC (`27/Nov/2026:03:17:50 +0000`), whatever the process time zone is.
`$request` is `METHOD TARGET HTTP/x.y` (HTTP/2 is written `HTTP/2.0`, as nginx does), or `-` when
no request line was read. `$status` is 0 when no response was sent. Every text field is escaped
the way nginx does it: `"`, `\\`, control bytes and bytes >= 0x7F become `\\xHH`, so a client
cannot forge or split log lines. Text holding only code points below 256 is taken to be bytes
decoded as latin-1 (what the core does); other text is escaped as its UTF-8 bytes.

This module knows nothing of the proxy core, sockets or the event loop: a flush is deferred
through the `schedule` callable it is given (e.g. `loop.call_soon`).
"""

from __future__ import annotations

import json
import logging
import os
import select
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

FLUSH_THRESHOLD = 64 * 1024
"""Buffered bytes beyond which `AccessLog.write` flushes at once instead of waiting."""

_STDOUT_FD = 1
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_FILE_MODE = 0o640
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HTTP_VERSION_TEXT = {"1.0": "1.0", "1.1": "1.1", "2": "2.0", "2.0": "2.0"}
_BYTE_TEXT = tuple(
    chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}" for b in range(256)
)
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=True, check_circular=False, separators=(",", ":"))


@dataclass(slots=True)
class AccessRecord:
    """What is known about one request when it ends; the core fills it in as it serves."""

    start_time: float = 0.0
    """Wall clock (time.time()) when the request head arrived."""
    client_ip: str = "-"
    method: str = "-"
    target: str = "-"
    """The request-target as sent by the client, decoded as latin-1."""
    http_version: str = "1.1"
    """ "1.0", "1.1" or "2"."""
    host: str = "-"
    status: int = 0
    """0: no response was sent (client gone, aborted)."""
    bytes_in: int = 0
    """Request bytes received, head and body."""
    bytes_out: int = 0
    """Response body bytes sent (combined format's $body_bytes_sent)."""
    referer: str = "-"
    user_agent: str = "-"
    request_id: str = "-"
    site: str = "-"
    route: str = "-"
    upstream: str = "-"
    upstream_server: str = "-"
    upstream_status: int = 0
    duration: float = 0.0
    """Seconds from the request head received to the last byte sent."""
    connect_time: float | None = None
    """Seconds to connect to the origin (0.0 for a reused pooled connection), None: no connect."""
    first_byte_time: float | None = None
    """Seconds from the request head received until the origin's response head arrived."""
    flag: str = "-"
    """Why the request ended: "ok", "upstream_connect_failed", "client_aborted", ..."""
    tls_version: str | None = None
    """"TLSv1.3" etc. for clients that came over TLS, else None."""
    tls_cipher: str | None = None
    alpn: str | None = None
    """The application protocol negotiated by ALPN ("http/1.1"), None without."""


class TimestampCache:
    """Formats wall-clock times for log lines, remembering the texts of the last second seen."""

    __slots__ = ("_iso_second", "_second", "_time_local")

    def __init__(self) -> None:
        self._second = -1
        self._time_local = ""
        self._iso_second = ""

    def time_local(self, wall_time: float) -> str:
        """`27/Nov/2026:03:17:50 +0000` for the second `wall_time` falls in (UTC)."""
        second = int(wall_time)
        if second != self._second:
            self._remember(second)
        return self._time_local

    def iso_millis(self, wall_time: float) -> str:
        """`2026-11-27T03:17:50.123Z`: ISO 8601 in UTC with milliseconds."""
        second, millis = divmod(round(wall_time * 1000), 1000)
        if second != self._second:
            self._remember(second)
        return f"{self._iso_second}.{millis:03d}Z"

    def _remember(self, second: int) -> None:
        t = time.gmtime(second)
        self._second = second
        self._time_local = (
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}"
            f":{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        self._iso_second = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )


def escape_field(value: str) -> str:
    """`value` with `"`, `\\`, control and non-ASCII bytes written as `\\xHH` (nginx style)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return "".join(map(_BYTE_TEXT.__getitem__, raw))


def _seconds_or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def _request_line(record: AccessRecord) -> str:
    if record.method == "-":
        return "-"
    version = _HTTP_VERSION_TEXT.get(record.http_version, record.http_version)
    return escape_field(f"{record.method} {record.target} HTTP/{version}")


def format_combined(record: AccessRecord, stamps: TimestampCache | None = None) -> str:
    """The record as one combined-format line (with the rid/rt/ut/us extension), no newline.

    Pass the same `stamps` for every line so the time text is built once per second.
    """
    stamps = stamps if stamps is not None else TimestampCache()
    return (
        f"{escape_field(record.client_ip)} - - [{stamps.time_local(record.start_time)}]"
        f' "{_request_line(record)}" {record.status} {record.bytes_out}'
        f' "{escape_field(record.referer)}" "{escape_field(record.user_agent)}"'
        f" rid={escape_field(record.request_id)} rt={record.duration:.3f}"
        f" ut={_seconds_or_dash(record.first_byte_time)}"
        f" us={escape_field(record.upstream_server)}"
    )


def _millis(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def format_json(record: AccessRecord, stamps: TimestampCache | None = None) -> str:
    """The record as one compact JSON object (ASCII only, control characters escaped)."""
    stamps = stamps if stamps is not None else TimestampCache()
    return _JSON_ENCODER.encode(
        {
            "time": stamps.iso_millis(record.start_time),
            "client_ip": record.client_ip,
            "method": record.method,
            "target": record.target,
            "http_version": record.http_version,
            "host": record.host,
            "status": record.status,
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "referer": record.referer,
            "user_agent": record.user_agent,
            "request_id": record.request_id,
            "site": record.site,
            "route": record.route,
            "upstream": record.upstream,
            "upstream_server": record.upstream_server,
            "upstream_status": record.upstream_status,
            "duration_ms": round(record.duration * 1000, 3),
            "connect_ms": _millis(record.connect_time),
            "first_byte_ms": _millis(record.first_byte_time),
            "flag": record.flag,
            "tls_version": record.tls_version,
            "tls_cipher": record.tls_cipher,
            "alpn": record.alpn,
        }
    )


_FORMATTERS: dict[str, Callable[[AccessRecord, TimestampCache], str]] = {
    "combined": format_combined,
    "json": format_json,
}


def _open_append(path: str) -> int:
    return os.open(path, _FILE_FLAGS, _FILE_MODE)


class AccessLog:
    """Buffers formatted access-log lines and writes them to stdout, a file, or nowhere.

    `destination` is "stdout", "off", or a file path (opened for appending, created if
    missing; an unusable path raises OSError here, at startup). `schedule` runs a deferred
    flush, e.g. `loop.call_soon`; None flushes after every write. A failed write never raises:
    the first failure is logged, the lines are dropped and counted in `dropped_lines`.
    """

    def __init__(
        self,
        destination: str,
        fmt: Literal["combined", "json"],
        *,
        schedule: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        if fmt not in _FORMATTERS:
            raise ValueError(f"access log format must be 'combined' or 'json', got {fmt!r}")
        if not destination:
            raise ValueError("access log destination must be 'stdout', 'off' or a file path")
        self._format = _FORMATTERS[fmt]
        self._schedule = schedule
        self._stamps = TimestampCache()
        self._buffer = bytearray()
        self._path: str | None = None
        self._fd: int | None = None
        self._failing = False
        self._dropped_lines = 0
        # Writes to a pipe are atomic only up to PIPE_BUF: several worker processes share
        # stdout, so a flush into a pipe goes in pieces of whole lines within that size.
        self._atomic_limit: int | None = None
        if destination == "stdout":
            self._fd = _STDOUT_FD
            self._atomic_limit = _pipe_limit(_STDOUT_FD)
        elif destination != "off":
            self._fd = _open_append(destination)
            self._path = destination

    @property
    def enabled(self) -> bool:
        """False when lines go nowhere ("off", or closed): the core skips building records."""
        return self._fd is not None

    @property
    def dropped_lines(self) -> int:
        """Lines lost to write errors since this log was opened."""
        return self._dropped_lines

    def write(self, record: AccessRecord) -> None:
        """Format `record` and buffer its line; the flush is scheduled, or done at once."""
        if self._fd is None:
            return
        was_empty = not self._buffer
        self._buffer += (self._format(record, self._stamps) + "\n").encode()
        if self._schedule is None or len(self._buffer) > FLUSH_THRESHOLD:
            self.flush()
        elif was_empty:
            self._schedule(self.flush)

    def flush(self) -> None:
        """Write every buffered line in one write call and clear the buffer; never raises."""
        if not self._buffer or self._fd is None:
            return
        data, self._buffer = self._buffer, bytearray()
        pending = memoryview(data)
        limit = self._atomic_limit
        try:
            while pending:
                piece = pending if limit is None else _whole_lines(pending, limit)
                pending = pending[os.write(self._fd, piece) :]
        except OSError as exc:
            self._drop(pending, exc)
        else:
            if self._failing:
                logger.warning("access log %s: writing again", self._describe())
                self._failing = False

    def reopen(self) -> None:
        """Flush, then reopen the file path (log rotation); no-op for stdout and "off".

        If the path cannot be opened the error is logged and lines keep going to the old file.
        """
        if self._path is None or self._fd is None:
            return
        self.flush()
        try:
            new_fd = _open_append(self._path)
        except OSError as exc:
            logger.error(
                "access log %s: cannot reopen (%s); still writing to the file open before",
                self._path,
                exc,
            )
            return
        old_fd, self._fd = self._fd, new_fd
        self._close_fd(old_fd)

    def close(self) -> None:
        """Flush and close the file (never stdout); later writes are ignored. Never raises."""
        self.flush()
        if self._path is not None and self._fd is not None:
            self._close_fd(self._fd)
        self._fd = None

    def _drop(self, unwritten: memoryview, exc: OSError) -> None:
        lines = max(1, bytes(unwritten).count(b"\n"))
        self._dropped_lines += lines
        if not self._failing:
            self._failing = True
            logger.error(
                "access log %s: write failed (%s); dropping lines until a write succeeds",
                self._describe(),
                exc,
            )

    def _close_fd(self, fd: int) -> None:
        try:
            os.close(fd)
        except OSError as exc:
            logger.warning("access log %s: closing failed (%s)", self._path, exc)

    def _describe(self) -> str:
        return self._path if self._path is not None else "stdout"


def _pipe_limit(fd: int) -> int | None:
    """PIPE_BUF when `fd` is a pipe (or FIFO), else None (no limit needed)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    return select.PIPE_BUF if stat.S_ISFIFO(mode) else None


def _whole_lines(pending: memoryview, limit: int) -> memoryview:
    """The longest run of whole lines at the start of `pending` within `limit` bytes (a
    single longer line goes whole: it cannot be written atomically anyway)."""
    if len(pending) <= limit:
        return pending
    cut = bytes(pending[:limit]).rfind(b"\n")
    if cut >= 0:
        return pending[: cut + 1]
    end = bytes(pending).find(b"\n", limit)
    return pending if end < 0 else pending[: end + 1]
