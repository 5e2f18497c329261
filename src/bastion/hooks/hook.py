"""`Hook`, the class a hook author subclasses, and the values that pass between a hook and
bastion: `Reply` (answer a request directly) and `LogEntry` (how a request ended).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.hooks.fields import RESPONSE_RESERVED, Value, field_name, field_value

if TYPE_CHECKING:
    from bastion.hooks.request import Request
    from bastion.hooks.response import Response


class Hook:
    """Subclass this and override the methods you need; the others cost nothing.

    bastion makes one instance per configured use (a `hooks` entry), when it loads the
    configuration, and shares it between every request (and, on HTTP/2, requests running
    at the same time on one event loop): keep per-request state in `request.state`, not on
    `self`. Methods are called on the event loop, so they must not block (no network or disk
    I/O per request; read files in `__init__`).

    An exception from `on_request`, `before_upstream` or `on_response` answers the request
    with 500 (bastion's own error page with the request id); one from `on_body_chunk` cuts
    the client connection (the response has started); one from `on_log` is only logged.
    Each is logged with its traceback, the hook and the request id, and after it no hook
    runs for that request any more except `on_log`. Other requests are not affected.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        """`options` is the entry's `options` table (or the `hook_options` beside the list),
        read-only: tables are Mappings, arrays tuples. Check it here and raise ValueError
        (or any exception) with a clear message: bastion refuses to start (or to reload),
        naming the entry's key path. `bastion check` runs this too."""
        self.options = options

    def on_request(self, request: Request) -> Reply | None:
        """The request head has arrived. A server hook (`[server] hooks`) is called before
        routing: a new `request.host` or `request.path` then chooses the route. A route
        hook is called after routing and the route's own filters, before the origin server
        is chosen. May edit headers, host, path and query, choose `request.upstream`, or
        return a `Reply` to answer without contacting any origin."""
        return None

    def before_upstream(self, request: Request) -> None:
        """The origin server is chosen; `request.headers` is now the header list it will
        receive (hop-by-hop fields removed; a route hook also sees the forwarding and
        client-certificate headers). Last chance to edit headers, path or query. Called once
        per attempt: a request retried on another server passes here again."""

    def on_response(self, request: Request, response: Response) -> None:
        """A response head is about to go to the client: an origin's, or one bastion makes
        itself (a redirect, an error page, a hook's `Reply`). May edit `response.headers`."""

    def wants_body(self, request: Request, response: Response) -> bool:
        """Whether `on_body_chunk` should see this response's body (only asked of hooks
        that override `on_body_chunk`, for proxied responses with a body). Answer False for
        bodies you leave alone: they then keep their Content-Length and pass untouched."""
        return True

    def on_body_chunk(
        self, request: Request, response: Response, chunk: bytes, last: bool
    ) -> bytes:
        """A piece of a proxied response body, as it streams; return the bytes to send in
        its place (b"" to hold everything back for now). `last` is True once, on a final
        call with an empty `chunk`, where whatever is held back must be returned. When any
        hook rewrites a body, bastion drops Content-Length and sends the body chunked (on
        HTTP/2: as DATA frames); it never buffers it whole."""
        return chunk

    def on_log(self, request: Request, entry: LogEntry) -> None:
        """The request is over and its access-log record written: read-only. Every routed
        request comes here once, whatever its end."""


class Reply:
    """An answer a hook gives instead of proxying (return it from `on_request`).

    `body` as `str` is sent as UTF-8 with `Content-Type: text/plain; charset=utf-8` unless
    `headers` names another type. `headers` is a mapping or `(name, value)` pairs; framing
    and hop-by-hop fields are bastion's and refused. Raises ValueError for a status outside
    200-599 or a bad header.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes | str = b"",
        headers: Mapping[str, Value] | Iterable[tuple[str, Value]] = (),
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"a reply's status is 200 to 599, got {status!r}")
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        fields = []
        for name, value in pairs:
            key = field_name(name)
            if key in RESPONSE_RESERVED:
                raise ValueError(f"a reply cannot set {name}: {RESPONSE_RESERVED[key]}")
            fields.append((key, field_value(value)))
        if isinstance(body, str):
            body = body.encode("utf-8")
            if not any(key == b"content-type" for key, _ in fields):
                fields.append((b"content-type", b"text/plain; charset=utf-8"))
        elif not isinstance(body, bytes):
            raise TypeError(f"a reply's body is bytes or str, got {type(body).__name__}")
        self.status = status
        self.body: bytes = body
        self.headers: tuple[tuple[bytes, bytes], ...] = tuple(fields)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {len(self.body)} bytes, {len(self.headers)} headers)"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """How a request ended, as its access-log record tells it."""

    request_id: str
    status: int  # what the client was sent; 0 when it got no response (cut or gone)
    bytes_out: int  # response body bytes sent to the client
    duration: float  # seconds from the request head to the end
    upstream: str | None  # the upstream it went to, if any
    server: str | None  # the origin server ("host:port") of the last attempt, if any
    flag: str  # the termination flag: "ok", "upstream_connect_failed", "hook_failed"...
