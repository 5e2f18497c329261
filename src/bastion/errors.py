"""The two error types of bastion, and the one table that maps a failure to an answer.

`ConfigError` is a user's mistake in a configuration file: it carries every problem found,
each naming the file, the key path and what was expected. `ProxyError` is a failure while
serving a request: its `ErrorKind` says what went wrong, which side broke it, which status the
client gets and which termination flag the access log shows. This module imports nothing
from bastion.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration file: `file: key.path: message`."""

    file: str
    key_path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key_path}" if self.key_path else self.file
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration file that cannot be used; holds every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


class Side(enum.Enum):
    """Who broke the exchange."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"
    INTERNAL = "internal"


class ErrorKind(enum.Enum):
    """Every way a request can fail; `answer` gives the status and the log flag."""

    BAD_REQUEST = "bad_request"
    HEADERS_TOO_LARGE = "headers_too_large"
    URI_TOO_LONG = "uri_too_long"
    UNSUPPORTED_CODING = "unsupported_transfer_coding"
    BODY_TOO_LARGE = "body_too_large"
    NO_ROUTE = "no_route"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CLIENT_TIMEOUT = "client_timeout"
    CLIENT_ABORTED = "client_aborted"
    UPSTREAM_CONNECT_FAILED = "upstream_connect_failed"
    UPSTREAM_CONNECT_TIMEOUT = "upstream_connect_timeout"
    UPSTREAM_READ_TIMEOUT = "upstream_read_timeout"
    UPSTREAM_WRITE_TIMEOUT = "upstream_write_timeout"
    UPSTREAM_CLOSED = "upstream_closed"
    UPSTREAM_PROTOCOL = "upstream_protocol_error"
    UPSTREAM_ABORTED_BODY = "upstream_aborted_body"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # the origin answered 502/503: retried
    HTTP_1_1_REQUIRED = "http_1_1_required"  # connection-bound auth asked of an HTTP/2 client
    NO_SERVER = "no_server_available"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    SHUTTING_DOWN = "shutting_down"
    HOOK_FAILED = "hook_failed"  # a user's Python hook raised (logged where it did)
    INTERNAL = "internal_error"

    @property
    def status(self) -> int:
        """The HTTP status a client is answered with (0: close without an answer)."""
        return _STATUS[self]

    @property
    def flag(self) -> str:
        """The termination flag written to the access log."""
        return self.value


_STATUS: dict[ErrorKind, int] = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.HEADERS_TOO_LARGE: 431,
    ErrorKind.URI_TOO_LONG: 414,
    ErrorKind.UNSUPPORTED_CODING: 501,
    ErrorKind.BODY_TOO_LARGE: 413,
    ErrorKind.NO_ROUTE: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CLIENT_TIMEOUT: 408,
    ErrorKind.CLIENT_ABORTED: 0,
    ErrorKind.UPSTREAM_CONNECT_FAILED: 502,
    ErrorKind.UPSTREAM_CONNECT_TIMEOUT: 504,
    ErrorKind.UPSTREAM_READ_TIMEOUT: 504,
    ErrorKind.UPSTREAM_WRITE_TIMEOUT: 504,
    ErrorKind.UPSTREAM_CLOSED: 502,
    ErrorKind.UPSTREAM_PROTOCOL: 502,
    ErrorKind.UPSTREAM_ABORTED_BODY: 0,
    ErrorKind.UPSTREAM_UNAVAILABLE: 502,
    ErrorKind.HTTP_1_1_REQUIRED: 0,
    ErrorKind.NO_SERVER: 503,
    ErrorKind.QUEUE_FULL: 503,
    ErrorKind.QUEUE_TIMEOUT: 503,
    ErrorKind.SHUTTING_DOWN: 503,
    ErrorKind.HOOK_FAILED: 500,
    ErrorKind.INTERNAL: 500,
}

_SIDE: dict[ErrorKind, Side] = {
    ErrorKind.BAD_REQUEST: Side.DOWNSTREAM,
    ErrorKind.HEADERS_TOO_LARGE: Side.DOWNSTREAM,
    ErrorKind.URI_TOO_LONG: Side.DOWNSTREAM,
    ErrorKind.UNSUPPORTED_CODING: Side.DOWNSTREAM,
    ErrorKind.BODY_TOO_LARGE: Side.DOWNSTREAM,
    ErrorKind.NO_ROUTE: Side.DOWNSTREAM,
    ErrorKind.METHOD_NOT_ALLOWED: Side.DOWNSTREAM,
    ErrorKind.CLIENT_TIMEOUT: Side.DOWNSTREAM,
    ErrorKind.CLIENT_ABORTED: Side.DOWNSTREAM,
    ErrorKind.UPSTREAM_CONNECT_FAILED: Side.UPSTREAM,
    ErrorKind.UPSTREAM_CONNECT_TIMEOUT: Side.UPSTREAM,
    ErrorKind.UPSTREAM_READ_TIMEOUT: Side.UPSTREAM,
    ErrorKind.UPSTREAM_WRITE_TIMEOUT: Side.UPSTREAM,
    ErrorKind.UPSTREAM_CLOSED: Side.UPSTREAM,
    ErrorKind.UPSTREAM_PROTOCOL: Side.UPSTREAM,
    ErrorKind.UPSTREAM_ABORTED_BODY: Side.UPSTREAM,
    ErrorKind.UPSTREAM_UNAVAILABLE: Side.UPSTREAM,
    ErrorKind.HTTP_1_1_REQUIRED: Side.DOWNSTREAM,
    ErrorKind.NO_SERVER: Side.UPSTREAM,
    ErrorKind.QUEUE_FULL: Side.UPSTREAM,
    ErrorKind.QUEUE_TIMEOUT: Side.UPSTREAM,
    ErrorKind.SHUTTING_DOWN: Side.INTERNAL,
    ErrorKind.HOOK_FAILED: Side.INTERNAL,
    ErrorKind.INTERNAL: Side.INTERNAL,
}


class ProxyError(Exception):
    """A request that cannot be served.

    `retryable` says whether the same request may be sent again on a fresh upstream
    connection (nothing of it reached an origin, or the origin closed a reused connection
    before answering); the code that observes the failure decides it.
    """

    def __init__(self, kind: ErrorKind, detail: str = "", *, retryable: bool = False) -> None:
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)

    @property
    def side(self) -> Side:
        return _SIDE[self.kind]

    @property
    def status(self) -> int:
        return self.kind.status
