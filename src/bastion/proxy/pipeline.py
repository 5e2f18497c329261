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

from bastion.balance.server import ServerState
from bastion.errors import ErrorKind, ProxyError, Side
from bastion.http.client_cert import CLIENT_CERT_HEADERS
from bastion.http.events import Framing, ResponseHead
from bastion.http.forwarded import recover_client_ip
from bastion.http.h1_client import serialize_request_head
from bastion.http.h1_server import reason_phrase
from bastion.http.headers import (
    HOP_BY_HOP,
    append_via,
    asks_connection_auth,
    header_value,
    without_hop_by_hop,
)
from bastion.http.target import TargetError, parse_target
from bastion.proxy.context import PinnedLink
from bastion.proxy.exchange import Exchange
from bastion.proxy.phases import Filter, LocalReply
from bastion.proxy.router import MethodMismatch, RouteMatch

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.plan import CompiledRoute, Plan, UpstreamPlan
    from bastion.proxy.ports import Connector, ExchangeLog, UpstreamLink

log = logging.getLogger(__name__)

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_RETRY_STATUSES = frozenset({502, 503})  # origin answers an idempotent request may retry
# Failures after the request reached the origin that another server may not repeat.
_RETRY_ELSEWHERE_KINDS = frozenset(
    {ErrorKind.UPSTREAM_READ_TIMEOUT, ErrorKind.UPSTREAM_CLOSED, ErrorKind.UPSTREAM_PROTOCOL}
)
# Refusals for want of a server: the 503 says when to come back (RFC 9110 10.2.3).
_RETRY_AFTER_KINDS = frozenset({ErrorKind.NO_SERVER, ErrorKind.QUEUE_FULL, ErrorKind.QUEUE_TIMEOUT})
_MAX_REQUEST_ID = 200
# Framing members as module globals: `Framing.X` is a slow lookup on every access (EnumType
# defines __getattr__, so CPython 3.11 cannot specialise it); a global load is cheap.
_FRAMING_CHUNKED = Framing.CHUNKED
# Besides hop-by-hop headers, the client's X-Request-Id never goes on as is: bastion sets it
# (keeping a trusted client's value).
# Client-certificate headers are only ever set by bastion (spoofable otherwise).
_NOT_TO_ORIGIN = HOP_BY_HOP | {b"x-request-id"} | CLIENT_CERT_HEADERS


class RequestIds:
    """Cheap unique request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._format = os.urandom(6).hex() + "%08x"  # the prefix, then the counter
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return self._format % self._count


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
        self._on_end = self._on_exchange_end  # bound once, not per request
        self._on_head_bound = self._on_head

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
        for received_filter in self.plan.received_filters:
            reply = received_filter.request_received(ctx)
            if reply is not None:
                return reply
        target = ctx.target  # a filter may have rewritten it
        assert target is not None
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
        ctx.upstream = route.upstream
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
        if not head.host and header_value(headers, b"host") is None:
            # An HTTP/1.0 client may send no Host; the origin's HTTP/1.1 needs one (unless
            # the route's header policy set one).
            assert ctx.server is not None
            headers.append((b"host", ctx.server.label.encode()))
        if tunnel and head.upgrade is not None:
            headers.append((b"connection", b"upgrade"))
            headers.append((b"upgrade", head.upgrade))
        if head.framing is _FRAMING_CHUNKED:
            headers.append((b"transfer-encoding", b"chunked"))
        append_via(headers, head.http_version)
        return serialize_request_head(head.method, ctx.upstream_target, headers)

    # -- the origin exchange ------------------------------------------------------------

    def _begin_proxy(self, ex: Exchange) -> None:
        ctx = ex.ctx
        route = ctx.route
        upstream = ctx.upstream
        assert route is not None and upstream is not None
        ex.tunnel_requested = route.websocket and ctx.head.upgrade is not None
        ex.on_head = self._on_head_bound
        upstream.runtime.budget.record_request(time.monotonic())
        pinned = ctx.client.pinned
        if pinned is not None and pinned.upstream == upstream.name and upstream.pin_auth:
            ctx.client.pinned = None
            if pinned.link.reusable and upstream.runtime.state_of(pinned.server_index):
                self._use_pinned(ex, upstream, pinned)
                return
            pinned.link.close()
        self._acquire(ex)

    def _acquire(self, ex: Exchange) -> None:
        """Choose the server for the next attempt (raises NO_SERVER or QUEUE_FULL)."""
        ctx = ex.ctx
        assert ctx.upstream is not None
        choice = ctx.upstream.runtime.acquire(ctx, ctx.tried)
        if isinstance(choice, ServerState):
            self._dispatch(ex, choice)
        else:
            ex.task = ex.loop.create_task(self._wait_in_queue(ex, choice))

    async def _wait_in_queue(self, ex: Exchange, slot: asyncio.Future[ServerState]) -> None:
        """Every server is at max_conns: wait for a slot (the client may leave meanwhile)."""

        def leave(_ex: Exchange, _error: ProxyError | None) -> None:
            slot.cancel()

        ex.on_end = leave
        try:
            await asyncio.wait((slot,))
        except asyncio.CancelledError:
            slot.cancel()
            raise
        ex.on_end = None
        if slot.cancelled():
            self._finish(ex, ex.end_error)
            return
        if ex.ended and slot.exception() is None:
            # The client left after the slot was granted, before this task woke: hand the
            # slot back (through _finish) instead of sending a request nobody waits for.
            ex.ctx.server_state = slot.result()
            self._finish(ex, ex.end_error)
            return
        failure = slot.exception()
        if failure is not None:
            self._finish(ex, failure if isinstance(failure, ProxyError) else _internal(failure))
            return
        try:
            self._dispatch(ex, slot.result())
        except ProxyError as failure:  # an upstream_request filter refused (a failing hook)
            self._finish(ex, failure)

    def _dispatch(self, ex: Exchange, state: ServerState) -> None:
        ctx = ex.ctx
        assert ctx.upstream is not None
        ctx.server_state = state
        server = ctx.server = ctx.upstream.runtime.server_plan(state)
        ex.upstream_head_bytes = self.upstream_head(ctx, ex.tunnel_requested)
        ex.attempt_started = time.monotonic()
        link = self.connector.take_idle(server, ctx)
        if link is not None:
            ex.connect_time = 0.0
            self._send(ex, link, replay=ex.body_sent)
        else:
            ex.task = ex.loop.create_task(self._connect_and_send(ex, replay=ex.body_sent))

    def _use_pinned(self, ex: Exchange, upstream: UpstreamPlan, pinned: PinnedLink) -> None:
        """Send on the origin connection this client connection is bound to (NTLM)."""
        ctx = ex.ctx
        state = upstream.runtime.state_of(pinned.server_index)
        assert state is not None  # checked by the caller
        upstream.runtime.occupy(state)
        ctx.server_state = state
        ctx.server = upstream.runtime.server_plan(state)
        ex.pinned = True
        ex.upstream_head_bytes = self.upstream_head(ctx, ex.tunnel_requested)
        ex.attempt_started = time.monotonic()
        ex.connect_time = 0.0
        self._send(ex, pinned.link, replay=False)

    async def _connect_and_send(self, ex: Exchange, replay: bool) -> None:
        ctx = ex.ctx
        assert ctx.upstream is not None and ctx.server
        started = time.monotonic()
        try:
            link = await self.connector.connect(ctx.upstream, ctx.server, ctx)
        except ProxyError as failure:
            # Nothing reached the origin: any request may go to another server.
            if not self._retry_elsewhere(ex, failure, budget_taken=False):
                self._finish(ex, failure)
            return
        except Exception as error:
            log.exception("internal error connecting to %s", ctx.server.label)
            self._finish(ex, _internal(error))
            return
        if ex.ended:  # the client left (or overran max_body) while we were connecting
            self.connector.release(link, None)
            self._finish(ex, ex.end_error)
            return
        ex.connect_time = time.monotonic() - started
        self._send(ex, link, replay)

    def _send(self, ex: Exchange, link: UpstreamLink, replay: bool) -> None:
        ex.attach(link, ex.upstream_head_bytes, replay)
        ex.body_sent = True
        self.watchdog.watch(ex)
        ex.on_end = self._on_end

    def _on_head(self, ex: Exchange, head: ResponseHead) -> bool:
        """The origin's final response head, before the client sees it."""
        ctx = ex.ctx
        state = ctx.server_state
        assert ctx.upstream is not None and state is not None
        upstream = ctx.upstream
        runtime = upstream.runtime
        status = head.status
        if status in _RETRY_STATUSES and self._may_retry_elsewhere(ex):
            ex.fail(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, f"origin answered {status}"))
            return False
        ex.latency = time.monotonic() - ex.attempt_started
        if runtime.cookie is not None or runtime.learned is not None:
            cookie = runtime.sticky_set_cookie(ctx, state)
            if cookie is not None:
                head.headers.append((b"set-cookie", cookie))
            runtime.learn_session(state, head.headers)
        if upstream.pin_auth and status == 401 and asks_connection_auth(head.headers):
            if ctx.head.http_version == b"2":
                # One TCP connection carries every stream: it cannot be bound to one origin
                # connection. Browsers retry the request over HTTP/1.1 (RFC 9113 8.1.2).
                ex.fail(ProxyError(ErrorKind.HTTP_1_1_REQUIRED, "connection-bound auth"))
                return False
            ex.pinned = True
        return True

    def _on_exchange_end(self, ex: Exchange, error: ProxyError | None) -> None:
        self.watchdog.unwatch(ex)
        if error is not None and self._retry(ex, error):
            return
        if error is None and ex.switched:
            self._release_server(ex, failed=False)
            self._start_tunnel(ex)
        else:
            self._settle_upstream(ex, error)
        self._finish(ex, error)

    def _retry(self, ex: Exchange, error: ProxyError) -> bool:
        """Send the request again if `error` allows it; True when a new attempt started."""
        if error.kind is ErrorKind.UPSTREAM_UNAVAILABLE:  # decided, and budgeted, in _on_head
            return self._retry_elsewhere(ex, error, budget_taken=True)
        if not ex.retried and self._may_retry(ex, error):
            # A pooled connection the origin had closed: the same server, a fresh connection.
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
            return True
        if error.kind in _RETRY_ELSEWHERE_KINDS and self._may_retry_elsewhere(ex):
            return self._retry_elsewhere(ex, error, budget_taken=True)
        return False

    def _may_retry_elsewhere(self, ex: Exchange) -> bool:
        """After the origin saw the request: only an idempotent one whose body was kept, with
        retries and budget left and another server to try (takes from the budget)."""
        ctx = ex.ctx
        assert ctx.upstream is not None
        runtime = ctx.upstream.runtime
        return (
            ctx.head.method in _IDEMPOTENT
            and ex.replayable
            and not ex.pinned
            and len(ctx.tried) < runtime.retries
            and runtime.has_other_server(ctx.tried, ctx.server_state)
            and runtime.budget.try_retry(time.monotonic())
        )

    def _retry_elsewhere(self, ex: Exchange, failure: ProxyError, *, budget_taken: bool) -> bool:
        """Mark this attempt's server failed and start an attempt on another one. True when
        the request is taken care of: a new attempt started, or (a hook failed on it) the
        request was answered."""
        ctx = ex.ctx
        assert ctx.upstream is not None
        runtime = ctx.upstream.runtime
        state = ctx.server_state
        self._release_server(ex, failed=True)
        if state is not None:
            ctx.tried = (*ctx.tried, state)
        if not budget_taken and not (
            len(ctx.tried) <= runtime.retries
            and runtime.has_other_server(ctx.tried, None)
            and runtime.budget.try_retry(time.monotonic())
        ):
            return False
        log.info(
            "request %s: %s; trying another server of %s",
            ctx.request_id,
            failure,
            runtime.name,
        )
        link = ex.detach_upstream()
        if link is not None:
            link.close()
        ex.reset_for_retry()
        try:
            self._acquire(ex)
        except ProxyError as refusal:
            if refusal.kind is ErrorKind.HOOK_FAILED:
                self._finish(ex, refusal)  # a hook failed for the new attempt: that answers
                return True
            return False  # nobody else can take it now: the original failure answers
        return True

    def _release_server(self, ex: Exchange, *, failed: bool) -> None:
        """End the attempt's count on its server (once), feeding health and latency."""
        ctx = ex.ctx
        state = ctx.server_state
        if state is None:
            return
        ctx.server_state = None
        assert ctx.upstream is not None
        ctx.upstream.runtime.release(state, failed=failed, latency=ex.latency)

    def _finish(self, ex: Exchange, error: ProxyError | None) -> None:
        """The one exit of every request: answer an error, log, hand the connection back."""
        if ex.ctx.route is None:
            ex.ctx.route = self.plan.unrouted
        if ex.ctx.server_state is not None:
            self._release_server(ex, failed=_counts_as_failure(error, ex))
        if error is not None:
            self._answer_error(ex, error)
        for sink in self.log_sinks:
            sink.log_exchange(ex)
        route = ex.ctx.route
        if route is not None and route.finished_filters:
            _tell_finished(route.finished_filters, ex)
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
            if ex.pinned:
                self._pin(ex, link)
            else:
                self.connector.release(link, head.keepalive_timeout)
        else:
            link.close()

    @staticmethod
    def _pin(ex: Exchange, link: UpstreamLink) -> None:
        """Bind the origin connection to the client connection for the rest of its life."""
        ctx = ex.ctx
        assert ctx.upstream is not None and ctx.server_state
        if ex.close_after:
            link.close()  # the client connection ends with this response
            return
        ctx.client.drop_pinned()
        ctx.client.pinned = PinnedLink(ctx.upstream.name, ctx.server_state.index, link)

    def _start_tunnel(self, ex: Exchange) -> None:
        link = ex.detach_upstream()
        assert link is not None
        ex.ctx.flag = "upgraded"
        ex.send_switch()
        ex.downstream.start_tunnel(link, ex.tunnel_first_bytes)

    # -- answers bastion makes itself ---------------------------------------------------

    def send_local(self, ex: Exchange, reply: LocalReply) -> None:
        if ex.ctx.route is None:
            ex.ctx.route = self.plan.unrouted
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
        headers = [(b"x-request-id", ctx.request_id.encode())]
        upstream = ctx.upstream
        if error.kind in _RETRY_AFTER_KINDS and upstream is not None:
            seconds = upstream.runtime.room.retry_after
            headers.append((b"retry-after", str(seconds).encode()))
        reply = LocalReply(status, headers, body.encode())
        try:
            self.send_local(ex, reply)
        except ProxyError as failure:
            # A response filter failed on this very answer (a hook; it stands aside now):
            # answer its failure, once; a second failure cuts the connection.
            if error.kind is ErrorKind.HOOK_FAILED:
                ex.abort_client = True
                return
            self._answer_error(ex, failure)
            return
        ctx.flag = error.kind.flag


def _tell_finished(filters: tuple[Filter, ...], ex: Exchange) -> None:
    for finished_filter in filters:
        try:
            finished_filter.request_finished(ex)
        except Exception:
            log.exception(
                "filter %s failed after request %s", finished_filter.name, ex.ctx.request_id
            )


def _internal(error: BaseException) -> ProxyError:
    return ProxyError(ErrorKind.INTERNAL, f"internal error: {type(error).__name__}")


def _counts_as_failure(error: ProxyError | None, ex: Exchange) -> bool:
    """Whether an attempt's end counts against its server (passive health)."""
    if error is not None:
        return error.side is Side.UPSTREAM
    return ex.status in (502, 503, 504)


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
        upstream = ex.ctx.upstream
        assert upstream is not None
        if ex.upstream_write_paused_since is not None:
            # The origin does not take the request body; the client is paused for it.
            if now - ex.upstream_write_paused_since >= upstream.write_timeout:
                return ProxyError(ErrorKind.UPSTREAM_WRITE_TIMEOUT, "origin stopped reading")
            return None
        if not ex.request_complete and not ex.response_started:
            # The client is still sending its body: its silence is what is timed.
            if now - ex.last_client_activity >= self._body_timeout:
                return ProxyError(ErrorKind.CLIENT_TIMEOUT, "client stopped sending its body")
            return None
        if now - ex.last_upstream_activity >= upstream.read_timeout:
            return ProxyError(ErrorKind.UPSTREAM_READ_TIMEOUT, "origin stopped answering")
        return None
