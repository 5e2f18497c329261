"""One proxied request in flight: the glue between a client connection and an origin one.

The client connection feeds request body bytes in; the origin connection reports the
response; the exchange frames each side for the other, applies back-pressure both ways (a
slow reader on one side pauses reading on the other), and calls `on_end` once the
exchange has ended, well or badly. It never buffers more than a high-water mark of either
body. It talks to both connections only through the ports in `bastion.proxy.ports`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.errors import ErrorKind, ProxyError
from bastion.http.chunked import chunk, last_chunk
from bastion.http.events import Framing, Headers, ResponseHead
from bastion.http.headers import append_via, next_hop_headers, without_hop_by_hop

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.phases import BodyTransform, Filter
    from bastion.proxy.ports import DownstreamLink, UpstreamLink

log = logging.getLogger(__name__)

HIGH_WATER = 64 * 1024  # bytes of request body held before the origin is connected
RETRY_BUFFER = 64 * 1024  # request bodies up to this size are kept to be replayed once
# Framing members as module globals: `Framing.X` is a slow lookup on every access (EnumType
# defines __getattr__, so CPython 3.11 cannot specialise it); a global load is cheap.
_FRAMING_NONE, _FRAMING_LENGTH, _FRAMING_CHUNKED = Framing.NONE, Framing.LENGTH, Framing.CHUNKED
_NO_BODY_STATUSES = frozenset({204, 304})


_NO_TRAILERS: Headers = []  # shared default; never mutated


def _nothing(exchange: Exchange) -> None:
    pass


class Exchange:
    """The state of one request between its head arriving and its last byte leaving.

    Slotted, every field set in `__init__` (once per request, on the hot path): slot reads
    and writes are specialised by CPython, while a dict-based instance gaining its fields in
    varying order makes each first write a generic (several times slower) attribute store.
    A new field must be named in `__slots__` and given its default in `__init__`.
    """

    __slots__ = (
        "_paused_reasons",
        "_pending",
        "_pending_size",
        "_replay",
        "_replay_dropped",
        "_streaming",
        "_tunnel_first_bytes",
        "abort_client",
        "attempt_started",
        "body_sent",
        "bytes_out",
        "close_after",
        "connect_time",
        "ctx",
        "downstream",
        "end_error",
        "ended",
        "first_byte_at",
        "last_client_activity",
        "last_upstream_activity",
        "latency",
        "loop",
        "on_done",
        "on_end",
        "on_head",
        "pinned",
        "received",
        "request_complete",
        "request_trailers",
        "response_complete",
        "response_head",
        "response_started",
        "retried",
        "status",
        "switch_head",
        "switched",
        "task",
        "transforms",
        "tunnel_requested",
        "upstream",
        "upstream_head_bytes",
        "upstream_write_paused_since",
        "write_paused_since",
    )

    def __init__(
        self, ctx: RequestContext, downstream: DownstreamLink, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.ctx = ctx
        self.downstream = downstream
        self.loop = loop
        self.on_done: Callable[[Exchange], None] = _nothing
        self.upstream: UpstreamLink | None = None
        now = loop.time()
        # request side
        self.request_complete = complete = ctx.head.framing is _FRAMING_NONE
        self.close_after = not ctx.head.keep_alive
        self.request_trailers: Headers = _NO_TRAILERS
        self.received = 0
        self._pending: list[bytes] | None = None  # body held until the origin is connected
        self._pending_size = 0
        self._replay: list[bytes] | None = None  # body kept to be replayed on a retry
        self._replay_dropped = False
        self._streaming = False
        self._paused_reasons: set[str] | None = None  # why reading from the client is paused
        self.last_client_activity = 0.0 if complete else now
        self.last_upstream_activity = now
        self.write_paused_since: float | None = None
        # the origin stopped reading our request
        self.upstream_write_paused_since: float | None = None
        self.upstream_head_bytes = b""
        self.retried = False
        self.tunnel_requested = False  # the Upgrade was forwarded: a 101 may follow
        self.task: asyncio.Task[None] | None = None  # only while connecting to an origin
        self.attempt_started = 0.0  # when the current attempt's server was chosen (monotonic)
        self.body_sent = False  # an attempt has sent the request (a retry must replay it)
        self.pinned = False  # the origin connection is bound to the client connection (NTLM)
        # response side
        self.response_head: ResponseHead | None = None
        self.response_started = False
        self.response_complete = False
        self.transforms: tuple[BodyTransform, ...] | None = None  # rewriting the response body
        self.bytes_out = 0
        self.first_byte_at: float | None = None
        self.switched = False
        self.switch_head: ResponseHead | None = None
        self._tunnel_first_bytes = b""
        self.status = 0  # the status the client was sent, for the log
        self.connect_time: float | None = None
        self.abort_client = False  # cut the client connection: the response is unusable
        self.latency: float | None = None  # from choosing the server to its response head
        self.ended = False  # the exchange is over (well: end_error None, or badly)
        self.end_error: ProxyError | None = None
        self.on_end: Callable[[Exchange, ProxyError | None], None] | None = None
        # Sees each final response head first; False: the head is not for the client (the
        # attempt was ended, e.g. to retry elsewhere).
        self.on_head: Callable[[Exchange, ResponseHead], bool] | None = None

    # -- request body, from the client -----------------------------------------------

    def request_body(self, data: bytes) -> None:
        self.received += len(data)
        self.last_client_activity = self.loop.time()
        route = self.ctx.route
        if route is not None and self.received > route.max_body:
            self.fail(ProxyError(ErrorKind.BODY_TOO_LARGE, "request body over max_body"))
            return
        if not self._replay_dropped:
            if self.received > RETRY_BUFFER:
                self._replay_dropped, self._replay = True, None
            elif self._replay is None:
                self._replay = [data]
            else:
                self._replay.append(data)
        if self._streaming and self.upstream is not None:
            self.upstream.write(chunk(data) if self.ctx.head.framing is _FRAMING_CHUNKED else data)
            return
        if self._pending is None:
            self._pending = [data]
        else:
            self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > HIGH_WATER:
            self._pause_client("buffer")

    def request_end(self, trailers: Headers) -> None:
        self.request_complete = True
        self.last_upstream_activity = self.loop.time()  # the origin's turn starts now
        self.request_trailers = trailers
        if (
            self._streaming
            and self.upstream is not None
            and self.ctx.head.framing is _FRAMING_CHUNKED
        ):
            self.upstream.write(last_chunk(trailers))

    @property
    def replayable(self) -> bool:
        """Whether the request can be sent again: its body is complete and was kept."""
        return self.request_complete and not self._replay_dropped and not self.response_started

    # -- origin connection -------------------------------------------------------------

    def attach(self, upstream: UpstreamLink, head_bytes: bytes, replay: bool) -> None:
        """Send the request on `upstream` and stream the rest of the body as it comes."""
        self.upstream = upstream
        upstream.start(self, self.ctx.head.method)
        framing = self.ctx.head.framing
        parts = self._replay if replay else self._pending
        if framing is _FRAMING_NONE or (not parts and framing is _FRAMING_LENGTH):
            upstream.write(head_bytes)  # the common case: a request without a body
        else:
            self._write_first_body(upstream, head_bytes, parts or [])
        self._pending = None
        self._pending_size = 0
        self._streaming = True
        self.last_upstream_activity = self.loop.time()
        if self._paused_reasons:
            self._resume_client("buffer")

    def _write_first_body(self, upstream: UpstreamLink, head: bytes, parts: list[bytes]) -> None:
        if self.ctx.head.framing is _FRAMING_CHUNKED:
            body = b"".join(chunk(p) for p in parts)
            if self.request_complete:
                body += last_chunk(self.request_trailers)
        else:
            body = b"".join(parts)
        if len(body) < 16384:
            upstream.write(head + body)
        else:
            upstream.write(head)
            upstream.write(body)

    def reset_for_retry(self) -> None:
        """Forget a failed attempt that sent nothing the client has seen."""
        self.ended = False
        self.end_error = None
        self.response_head = None
        self.first_byte_at = None

    def detach_upstream(self) -> UpstreamLink | None:
        upstream, self.upstream = self.upstream, None
        self._streaming = False
        if upstream is not None:
            upstream.detach()
        return upstream

    def on_response_head(self, head: ResponseHead) -> None:
        self.last_upstream_activity = self.loop.time()
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        if 100 <= head.status < 200:  # head.informational, without a property call
            self._relay_informational(head)
            return
        if self.on_head is not None and not self.on_head(self, head):
            return
        self.response_head = head
        if not self.request_complete:
            self.close_after = True  # answered before the whole request arrived
        try:
            self.send_head(head)
        except ProxyError as failure:
            # A response filter refused the head (a failing hook, logged where it failed):
            # nothing went to the client, so the failure is answered instead.
            self._resolve(failure)

    def on_response_body(self, data: bytes) -> None:
        self.last_upstream_activity = self.loop.time()
        if self.transforms is not None:
            data = self._transformed(data, end=False)
            if not data:
                return
        self.bytes_out += len(data)
        self.downstream.send_body(data)
        if self.downstream.write_paused and self.upstream is not None:
            self.upstream.pause_reading()

    def on_response_end(self, trailers: Headers) -> None:
        if self.response_head is None:
            self._resolve(ProxyError(ErrorKind.UPSTREAM_PROTOCOL, "no final response head"))
            return
        if self.transforms is not None:
            rest = self._transformed(b"", end=True)
            if self.ended:
                return
            if rest:
                self.bytes_out += len(rest)
                self.downstream.send_body(rest)
        self.downstream.end_response(trailers)
        self.response_complete = True
        self._resolve(None)

    def _transformed(self, data: bytes, *, end: bool) -> bytes:
        """`data` through the body transforms in order (with `end`, their held-back tails
        too). A failing transform ends the exchange: the body it was making is unusable."""
        assert self.transforms is not None
        try:
            for transform in self.transforms:
                data = transform.feed(data) if data else b""
                if end:
                    data += transform.end()
        except ProxyError as error:
            self._fail_body(error)
            return b""
        except Exception:
            log.exception("response body transform failed (request %s)", self.ctx.request_id)
            self._fail_body(ProxyError(ErrorKind.INTERNAL, "response body transform failed"))
            return b""
        return data

    def _fail_body(self, error: ProxyError) -> None:
        """A transform failed: while no byte of the response is out, the head is taken back
        so the client gets an error answer rather than a cut connection."""
        if self.downstream.retract_head():
            self.response_started = False
            self.transforms = None
            self.status = 0
        self._resolve(error)

    def on_upstream_failed(self, error: ProxyError) -> None:
        self._resolve(error)

    def on_switched(self, data: bytes) -> None:
        if self.switch_head is None or not self.tunnel_requested:
            self._resolve(ProxyError(ErrorKind.UPSTREAM_PROTOCOL, "unrequested protocol switch"))
            return
        self.switched = True
        self._tunnel_first_bytes = data
        self._resolve(None)

    def on_upstream_write_paused(self, paused: bool) -> None:
        now = self.loop.time()
        self.upstream_write_paused_since = now if paused else None
        if not paused:
            self.last_client_activity = now  # the client's pause was ours, not its silence
        if paused:
            self._pause_client("upstream")
        else:
            self._resume_client("upstream")

    # -- client connection flow control -------------------------------------------------

    def downstream_write_paused(self, paused: bool) -> None:
        self.write_paused_since = self.loop.time() if paused else None
        if self.upstream is None:
            return
        if paused:
            self.upstream.pause_reading()
        else:
            self.upstream.resume_reading()

    def downstream_lost(self) -> None:
        self._resolve(ProxyError(ErrorKind.CLIENT_ABORTED, "client closed the connection"))

    def _pause_client(self, reason: str) -> None:
        reasons = self._paused_reasons
        if not reasons:
            self.downstream.pause_reading()
            self._paused_reasons = reasons = set()
        reasons.add(reason)

    def _resume_client(self, reason: str) -> None:
        reasons = self._paused_reasons
        if reasons and reason in reasons:
            reasons.discard(reason)
            if not reasons:
                self.downstream.resume_reading()

    # -- the response head -------------------------------------------------------------

    def _relay_informational(self, head: ResponseHead) -> None:
        if head.status == 101:
            self.switch_head = head  # written by the tunnel set-up once the switch is final
            return
        if not self.response_started:
            self.downstream.send_informational(head, without_hop_by_hop(head.headers))

    def send_head(self, head: ResponseHead, body: bytes | None = None) -> None:
        """Run the response-header filters and hand the end-to-end head to the client link,
        which frames it for its protocol. With `body` (a local answer) the whole response
        goes at once."""
        ctx = self.ctx
        route = ctx.route
        if route is not None:
            for response_filter in route.response_filters:
                response_filter.response_headers(ctx, head)
            if body is None and route.body_filters and self._has_body(head):
                self._start_transforms(route.body_filters, head)
        headers = next_hop_headers(head.headers, head.http_version)
        self.response_started = True
        self.status = head.status
        self.downstream.send_response_head(self, head, headers, body)

    def _has_body(self, head: ResponseHead) -> bool:
        return (
            head.framing is not _FRAMING_NONE
            and head.status not in _NO_BODY_STATUSES
            and self.ctx.head.method != b"HEAD"
        )

    def _start_transforms(self, filters: tuple[Filter, ...], head: ResponseHead) -> None:
        """Ask the body filters for transforms; with any, the body's length is unknown until
        its end, so Content-Length goes and the client link frames the body as it comes."""
        ctx = self.ctx
        transforms = []
        for body_filter in filters:
            transform = body_filter.response_body(ctx, head)
            if transform is not None:
                transforms.append(transform)
        if not transforms:
            return
        self.transforms = tuple(transforms)
        head.framing = _FRAMING_CHUNKED
        head.content_length = None
        head.headers[:] = [field for field in head.headers if field[0] != b"content-length"]

    def flush(self) -> None:
        """The origin's read ended: let the client link write what it holds back."""
        self.downstream.flush()

    def _resolve(self, error: ProxyError | None) -> None:
        """End the exchange once; whoever waits (`on_end`) is told at once, synchronously.

        Callers make no further use of the exchange after this: the next request on the
        client connection may already be under way when it returns.
        """
        if self.ended:
            return
        self.ended = True
        self.end_error = error
        if self.on_end is not None:
            self.on_end(self, error)

    def fail(self, error: ProxyError) -> None:
        """End the exchange with `error` (the pipeline turns it into an answer)."""
        self._resolve(error)

    def send_switch(self) -> None:
        """Tell the client the protocol switch happened (the origin's 101)."""
        head = self.switch_head
        assert head is not None
        headers = without_hop_by_hop(head.headers, keep=(b"upgrade",))
        headers.append((b"connection", b"upgrade"))
        append_via(headers, head.http_version)
        self.status = 101
        self.response_started = True
        self.downstream.send_switch(head, headers)

    @property
    def tunnel_first_bytes(self) -> bytes:
        return self._tunnel_first_bytes
