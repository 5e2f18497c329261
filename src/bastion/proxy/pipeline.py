"""The request lifecycle: identity, routing, filters, the origin exchange, errors, the log.

`Pipeline.serve` runs once per request as its own task. It decides everything that is not
byte shovelling: which route and server, what the origin sees, whether a failure may be
retried, which error answer to give, and it writes the access-log record exactly once.
The bytes themselves flow through the `Exchange` by callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bastion.errors import ErrorKind, ProxyError
from bastion.http.client_cert import CLIENT_CERT_HEADERS
from bastion.http.events import Framing, ResponseHead
from bastion.http.forwarded import recover_client_ip
from bastion.http.h1_client import serialize_request_head
from bastion.http.h1_server import reason_phrase
from bastion.http.headers import HOP_BY_HOP, append_via, header_value, without_hop_by_hop
from bastion.http.target import TargetError, parse_target
from bastion.proxy.exchange import Exchange
from bastion.proxy.phases import LocalReply
from bastion.proxy.router import MethodMismatch, RouteMatch

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.plan import CompiledRoute, Plan
    from bastion.proxy.ports import Connector, ExchangeLog, UpstreamLink

log = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_MAX_REQUEST_ID = 200
# Besides hop-by-hop headers, the client's X-Request-Id never goes on as is: bastion sets it
# (keeping a trusted client's value).
# Client-certificate headers are only ever set by bastion (spoofable otherwise).
_NOT_TO_ORIGIN = HOP_BY_HOP | {b"x-request-id"} | CLIENT_CERT_HEADERS


class RequestIds:
    """Cheap unique request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:08x}"


class Pipeline:
    """Serves requests according to one Plan."""

    def __init__(
        self, plan: Plan, connector: Connector, log_sinks: Sequence[ExchangeLog] = ()
    ) -> None:
        self.plan = plan
        self.connector = connector
        self.log_sinks = tuple(log_sinks)
        self.request_ids = RequestIds()
        self.watchdog = ExchangeWatchdog(plan.limits.body_timeout)

    def serve(self, ex: Exchange, done: Callable[[Exchange], None]) -> None:
        """Start serving one request; `done(ex)` is called once it has ended. Never raises.

        The common path (a pooled origin connection) runs without a task: the request is
        sent from here and its end arrives as a callback (`ex.on_end`).
        """
        ex.on_done = done
        ctx = ex.ctx
        try:
            reply = self._prepare(ctx)
            if ctx.route is not None and ex.received > ctx.route.max_body:
                raise ProxyError(ErrorKind.BODY_TOO_LARGE, "request body over max_body")
            if reply is not None:
                self.send_local(ex, reply)
                self._finish(ex, None)
            else:
                self._begin_proxy(ex)
        except ProxyError as failure:
            self._finish(ex, failure)
        except Exception:
            log.exception("internal error serving %s %r", ctx.head.method, ctx.head.target)
            self._finish(ex, ProxyError(ErrorKind.INTERNAL, "internal error"))

    # -- before the origin -------------------------------------------------------------

    def _prepare(self, ctx: RequestContext) -> LocalReply | None:
        head = ctx.head
        client = ctx.client
        if client.peer_trusted:
            ctx.client_ip = recover_client_ip(client.peer_ip, head.headers, self.plan.trusted)
            incoming = header_value(head.headers, b"x-request-id")
            if incoming and len(incoming) <= _MAX_REQUEST_ID and incoming.isascii():
                ctx.request_id = incoming.decode("ascii")
        if not ctx.request_id:
            ctx.request_id = self.request_ids.next()
        try:
            target = parse_target(head.target, head.method)
        except TargetError as failure:
            raise ProxyError(ErrorKind.BAD_REQUEST, str(failure)) from None
        ctx.target = target
        ctx.upstream_target = target.uri
        if client.listener.redirect_to_https:
            return _https_redirect(head.host, target.uri)
        if target.authority is not None:
            # RFC 9112 3.2.2: an absolute-form target's authority replaces Host.
            head.host = target.authority
            head.headers[:] = [(n, v) for n, v in head.headers if n != b"host"]
            head.headers.append((b"host", target.authority))
        match = self.plan.router.match(head.host, target.path, head.method)
        if match is None:
            raise ProxyError(ErrorKind.NO_ROUTE, "no site or route matches")
        if isinstance(match, MethodMismatch):
            allow = b", ".join(match.allowed)
            return LocalReply(405, [(b"allow", allow)], b"405 Method Not Allowed\n", "bad_method")
        route = match.rule.target
        ctx.route = route
        tls = client.tls
        if (
            tls is not None
            and tls.server_name
            and self.plan.client_auth_anywhere
            and self._misdirected(match, tls.server_name)
        ):
            return LocalReply(421, [], b"421 Misdirected Request\n", "misdirected")
        if head.content_length is not None and head.content_length > route.max_body:
            raise ProxyError(ErrorKind.BODY_TOO_LARGE, "declared body over max_body")
        for request_filter in route.request_filters:
            reply = request_filter.request_headers(ctx)
            if reply is not None:
                return reply
        return None

    def _misdirected(self, match: RouteMatch[CompiledRoute], server_name: str) -> bool:
        """RFC 9110 15.5.20: the TLS handshake chose one site (by SNI), the Host another,
        and either checks client certificates, so this connection must not serve it."""
        chosen = self.plan.router.find_site(server_name.encode())
        if chosen is None or chosen is match.site:
            return False
        return match.rule.target.client_auth != "off" or any(
            rule.target.client_auth != "off" for rule in chosen.routes
        )

    def upstream_head(self, ctx: RequestContext, tunnel: bool) -> bytes:
        """The request head the origin receives."""
        head = ctx.head
        headers = without_hop_by_hop(head.headers, drop=_NOT_TO_ORIGIN)
        route = ctx.route
        assert route is not None
        for upstream_filter in route.upstream_filters:
            upstream_filter.upstream_request(ctx, headers)
        headers.append((b"x-request-id", ctx.request_id.encode()))
        if not head.host:
            # An HTTP/1.0 client may send no Host; the origin's HTTP/1.1 needs one.
            assert ctx.server is not None
            headers.append((b"host", ctx.server.label.encode()))
        if tunnel and head.upgrade is not None:
            headers.append((b"connection", b"upgrade"))
            headers.append((b"upgrade", head.upgrade))
        if head.framing is Framing.CHUNKED:
            headers.append((b"transfer-encoding", b"chunked"))
        append_via(headers, head.http_version)
        return serialize_request_head(head.method, ctx.upstream_target, headers)

    # -- the origin exchange ------------------------------------------------------------

    def _begin_proxy(self, ex: Exchange) -> None:
        ctx = ex.ctx
        route = ctx.route
        assert route is not None and route.upstream is not None
        upstream = route.upstream
        tunnel = route.websocket and ctx.head.upgrade is not None
        ex.tunnel_requested = tunnel
        server = upstream.pick_server()
        ctx.server = server
        ex.upstream_head_bytes = self.upstream_head(ctx, tunnel)
        link = self.connector.take_idle(server)
        if link is not None:
            ex.connect_time = 0.0
            self._send(ex, link, replay=False)
        else:
            ex.task = ex.loop.create_task(self._connect_and_send(ex, replay=False))

    async def _connect_and_send(self, ex: Exchange, replay: bool) -> None:
        ctx = ex.ctx
        assert ctx.route is not None and ctx.route.upstream is not None and ctx.server
        started = time.monotonic()
        try:
            link = await self.connector.connect(ctx.route.upstream, ctx.server)
        except ProxyError as failure:
            self._finish(ex, failure)
            return
        except Exception:
            log.exception("internal error connecting to %s", ctx.server.label)
            self._finish(ex, ProxyError(ErrorKind.INTERNAL, "internal error"))
            return
        if ex.ended:  # the client left (or overran max_body) while we were connecting
            self.connector.release(link, None)
            self._finish(ex, ex.end_error)
            return
        ex.connect_time = time.monotonic() - started
        self._send(ex, link, replay)

    def _send(self, ex: Exchange, link: UpstreamLink, replay: bool) -> None:
        ex.attach(link, ex.upstream_head_bytes, replay)
        self.watchdog.watch(ex)
        ex.on_end = self._on_exchange_end

    def _on_exchange_end(self, ex: Exchange, error: ProxyError | None) -> None:
        self.watchdog.unwatch(ex)
        if error is not None and not ex.retried and self._may_retry(ex, error):
            server = ex.ctx.server
            log.info(
                "retrying %s on a fresh connection to %s: %s",
                ex.ctx.request_id,
                server.label if server else "-",
                error,
            )
            stale = ex.detach_upstream()
            if stale is not None:
                stale.close()
            ex.retried = True
            ex.reset_for_retry()
            ex.task = ex.loop.create_task(self._connect_and_send(ex, replay=True))
            return
        if error is None and ex.switched:
            self._start_tunnel(ex)
        else:
            self._settle_upstream(ex, error)
        self._finish(ex, error)

    def _finish(self, ex: Exchange, error: ProxyError | None) -> None:
        """The one exit of every request: answer an error, log, hand the connection back."""
        if error is not None:
            self._answer_error(ex, error)
        for sink in self.log_sinks:
            sink.log_exchange(ex)
        ex.on_done(ex)

    @staticmethod
    def _may_retry(ex: Exchange, error: ProxyError) -> bool:
        # The head reached the origin, which may have acted on it: only idempotent
        # requests are sent again (RFC 9110 9.2.2).
        return error.retryable and ex.replayable and ex.ctx.head.method in _IDEMPOTENT

    def _settle_upstream(self, ex: Exchange, error: ProxyError | None) -> None:
        link = ex.detach_upstream()
        if link is None:
            return
        head = ex.response_head
        if (
            error is None
            and head is not None
            and ex.response_complete
            and ex.request_complete
            and head.keep_alive
            and link.reusable
        ):
            self.connector.release(link, head.keepalive_timeout)
        else:
            link.close()

    def _start_tunnel(self, ex: Exchange) -> None:
        link = ex.detach_upstream()
        assert link is not None
        ex.ctx.flag = "upgraded"
        ex.send_switch()
        ex.downstream.start_tunnel(link, ex.tunnel_first_bytes)

    # -- answers bastion makes itself ---------------------------------------------------

    def send_local(self, ex: Exchange, reply: LocalReply) -> None:
        headers = list(reply.headers)
        headers.append((b"content-length", str(len(reply.body)).encode()))
        if not any(name == b"content-type" for name, _ in headers) and reply.body:
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        head = ResponseHead(
            status=reply.status,
            reason=reason_phrase(reply.status),
            headers=headers,
            content_length=len(reply.body),
        )
        if not ex.request_complete:
            ex.close_after = True
        ex.ctx.flag = reply.flag
        body = b"" if ex.ctx.head.method == b"HEAD" else reply.body
        ex.send_head(head, body)
        ex.bytes_out += len(body)
        ex.response_complete = True
        ex.status = reply.status

    def _answer_error(self, ex: Exchange, error: ProxyError) -> None:
        ctx = ex.ctx
        ctx.flag = error.kind.flag
        status = error.status
        if error.kind is ErrorKind.CLIENT_ABORTED:
            ex.status = 0
            ex.abort_client = True
            return
        if ex.response_started or status == 0:
            # Bytes are out: the only honest signal left is to cut the connection so the
            # client sees the truncation instead of a short body that looks complete.
            ex.abort_client = True
            return
        if error.side.value == "upstream":
            log.warning(
                "request %s to %s failed: %s",
                ctx.request_id,
                ctx.server.label if ctx.server else "-",
                error,
            )
        body = f"{status} {reason_phrase(status).decode()}\nrequest id: {ctx.request_id}\n"
        ex.close_after = ex.close_after or error.side.value == "downstream"
        reply = LocalReply(status, [(b"x-request-id", ctx.request_id.encode())], body.encode())
        self.send_local(ex, reply)
        ctx.flag = error.kind.flag


def _https_redirect(host: bytes, uri: bytes) -> LocalReply:
    """A `redirect_to_https` listener's answer: 308 to the same host (default port) and URI."""
    name = host.rpartition(b":")[0] if host.rpartition(b":")[2].isdigit() else host
    if not name:
        return LocalReply(400, [], b"400 Bad Request\n", "bad_request")
    location = b"https://" + name + uri
    return LocalReply(308, [(b"location", location)], b"308 Permanent Redirect\n", "redirect")


class ExchangeWatchdog:
    """Fails exchanges that stall: an origin silent past its read timeout, or a client that
    stopped sending its body or reading the response for longer than the body timeout.
    One timer for all of them, ticking while any is watched, not a timer per request."""

    TICK = 0.1

    def __init__(self, body_timeout: float) -> None:
        self._body_timeout = body_timeout
        self._watched: set[Exchange] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, ex: Exchange) -> None:
        self._watched.add(ex)
        if self._handle is None:
            self._handle = ex.loop.call_later(self.TICK, self._tick, ex.loop)

    def unwatch(self, ex: Exchange) -> None:
        self._watched.discard(ex)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        for ex in list(self._watched):
            error = self._overdue(ex, now)
            if error is not None:
                self._watched.discard(ex)
                ex.fail(error)
        if self._watched:
            self._handle = loop.call_later(self.TICK, self._tick, loop)

    def _overdue(self, ex: Exchange, now: float) -> ProxyError | None:
        if ex.write_paused_since is not None:
            if now - ex.write_paused_since >= self._body_timeout:
                return ProxyError(ErrorKind.CLIENT_TIMEOUT, "client stopped reading")
            return None
        route = ex.ctx.route
        assert route is not None and route.upstream is not None
        if ex.upstream_write_paused_since is not None:
            # The origin does not take the request body; the client is paused for it.
            if now - ex.upstream_write_paused_since >= route.upstream.write_timeout:
                return ProxyError(ErrorKind.UPSTREAM_WRITE_TIMEOUT, "origin stopped reading")
            return None
        if not ex.request_complete and not ex.response_started:
            # The client is still sending its body: its silence is what is timed.
            if now - ex.last_client_activity >= self._body_timeout:
                return ProxyError(ErrorKind.CLIENT_TIMEOUT, "client stopped sending its body")
            return None
        if now - ex.last_upstream_activity >= route.upstream.read_timeout:
            return ProxyError(ErrorKind.UPSTREAM_READ_TIMEOUT, "origin stopped answering")
        return None
