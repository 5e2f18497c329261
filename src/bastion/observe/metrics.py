"""Per-process metrics: counters kept cheaply per request, gauges read when asked.

`MetricsStore` holds one process's counters, keyed by (site, route) and by upstream; it lives
as long as the process, so counters survive reloads. Each pipeline gets a `MetricsSink` (an
`ExchangeLog`) that counts every finished exchange into counter objects it found once per
route: a request costs a dict lookup by identity, a bisect on a tuple and a few int
increments — no label lookups, no prometheus_client objects. TLS handshakes are counted by
the SSL objects of the server contexts (`MetricsStore.count_handshakes`).

`take_snapshot` turns the counters, plus gauges read at that moment (client connections, each
server's health and in-flight count, each upstream's queue), into plain JSON-able data: what
a worker sends its supervisor and what `observe.metrics_export` renders.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.exchange import Exchange
    from bastion.proxy.plan import CompiledRoute, Plan, UpstreamPlan

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between a worker's snapshots to its supervisor
# Upper bounds (seconds) of the duration histograms' buckets; +Inf is implied.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Requests by status class, indexed by status // 100: 0 = no response was sent (the client
# left, or the connection was cut), 1..5 = 1xx..5xx, 6..9 = codes an origin made up.
STATUS_CLASSES = 10
HANDSHAKE_RESULTS = ("ok", "failed", "aborted")


class RouteCounters:
    """The counters of one (site, route)."""

    __slots__ = ("duration", "duration_sum", "received", "requests", "route", "sent", "site")

    def __init__(self, site: str, route: str) -> None:
        self.site = site
        self.route = route
        self.requests = [0] * STATUS_CLASSES
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative
        self.duration_sum = 0.0
        self.received = 0  # request bytes: heads and bodies
        self.sent = 0  # response body bytes


class UpstreamCounters:
    """The counters of one upstream: its response times and the retries it caused."""

    __slots__ = ("name", "response", "response_sum", "retries")

    def __init__(self, name: str) -> None:
        self.name = name
        self.response = [0] * (len(DURATION_BUCKETS) + 1)
        self.response_sum = 0.0
        self.retries = 0


class HandshakeCounts:
    """TLS handshakes on the client side: finished, refused by TLS, or abandoned."""

    __slots__ = HANDSHAKE_RESULTS

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0  # a TLS error: no shared version or cipher, bad alert, not TLS at all
        self.aborted = 0  # the connection closed or timed out before the handshake ended


class MetricsStore:
    """One process's counters, by (site, route) and by upstream, kept across reloads."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteCounters] = {}
        self.upstreams: dict[str, UpstreamCounters] = {}
        self.handshakes = HandshakeCounts()

    def route(self, site: str, label: str) -> RouteCounters:
        counters = self.routes.get((site, label))
        if counters is None:
            counters = self.routes[site, label] = RouteCounters(site, label)
        return counters

    def upstream(self, name: str) -> UpstreamCounters:
        counters = self.upstreams.get(name)
        if counters is None:
            counters = self.upstreams[name] = UpstreamCounters(name)
        return counters

    def sink(self, plan: Plan) -> MetricsSink:
        """The `ExchangeLog` of a pipeline serving `plan`."""
        sink = MetricsSink(self)
        for upstream in plan.upstreams.values():
            sink.upstream_counters(upstream)
        sink.route_counters(plan.unrouted)
        return sink

    def count_handshakes(self, context: ssl.SSLContext) -> None:
        """Count the handshakes of connections accepted with the server context `context`."""
        context.sslobject_class = _counting_ssl_object(self.handshakes)


class MetricsSink:
    """The `ExchangeLog` that counts finished exchanges into a `MetricsStore`.

    Counter objects are found by the identity of the route and upstream objects (a plan's
    routes are frozen, hashing them by value would cost more than the counting); the sink
    keeps the objects it saw alive, so an identity is never reused while it is known.
    """

    def __init__(self, store: MetricsStore) -> None:
        self.store = store
        self._routes: dict[int, RouteCounters] = {}
        self._upstreams: dict[int, UpstreamCounters] = {}
        self._known: list[object] = []

    def route_counters(self, route: CompiledRoute) -> RouteCounters:
        counters = self.store.route(route.site, route.label)
        self._routes[id(route)] = counters
        self._known.append(route)
        return counters

    def upstream_counters(self, upstream: UpstreamPlan) -> UpstreamCounters:
        counters = self.store.upstream(upstream.name)
        self._upstreams[id(upstream)] = counters
        self._known.append(upstream)
        return counters

    def log_exchange(self, ex: Exchange) -> None:
        ctx = ex.ctx
        route = ctx.route
        counters = self._routes.get(id(route))
        if counters is None:
            if route is None:  # the pipeline sets it before logging: never seen
                return
            counters = self.route_counters(route)
        status = ex.status
        counters.requests[status // 100 if status < 1000 else 0] += 1
        duration = time.monotonic() - ctx.started
        counters.duration[bisect_left(DURATION_BUCKETS, duration)] += 1
        counters.duration_sum += duration
        counters.received += ctx.head.head_size + ex.received
        counters.sent += ex.bytes_out
        upstream = ctx.upstream
        if upstream is None:
            return
        latency = ex.latency
        if latency is None and not ex.retried and not ctx.tried:
            return
        ups = self._upstreams.get(id(upstream))
        if ups is None:
            ups = self.upstream_counters(upstream)
        if latency is not None:
            ups.response[bisect_left(DURATION_BUCKETS, latency)] += 1
            ups.response_sum += latency
        if ex.retried or ctx.tried:
            ups.retries += retries_of(ex)


def retries_of(ex: Exchange) -> int:
    """How many attempts of `ex` came after a failed one.

    `ctx.tried` lists the servers whose attempt failed; each was followed by an attempt on
    another server, except the last one when no other server could take the request (then
    it is also the server of the last attempt). `ex.retried`: one more attempt on a fresh
    connection to the same server (a pooled connection the origin had closed).
    """
    ctx = ex.ctx
    tried = ctx.tried
    retries = len(tried) + (1 if ex.retried else 0)
    if tried and ctx.upstream is not None and _last_attempt_failed(ctx):
        retries -= 1
    return retries


def _last_attempt_failed(ctx: RequestContext) -> bool:
    assert ctx.upstream is not None
    return ctx.upstream.runtime.server_plan(ctx.tried[-1]) is ctx.server


def _counting_ssl_object(counts: HandshakeCounts) -> type[ssl.SSLObject]:
    """An SSLObject class counting its handshake's outcome into `counts`.

    asyncio and uvloop make one SSL object per connection (`SSLContext.wrap_bio`, which
    instantiates `sslobject_class`) and call `do_handshake` until it stops asking for more
    data: it returns (finished) or raises an SSLError (refused). An object released before
    either — the peer closed, reset or timed out mid-handshake, or never sent a ClientHello —
    is counted as aborted when it is released (CPython frees it with its connection).
    """

    class CountingSSLObject(ssl.SSLObject):
        _ended = False

        def do_handshake(self) -> None:
            if self._ended:
                super().do_handshake()
                return
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError:
                self._ended = True
                counts.failed += 1
                raise
            self._ended = True
            counts.ok += 1

        def __del__(self) -> None:
            if not self._ended:
                counts.aborted += 1

    return CountingSSLObject


# -- snapshots: plain data for the supervisor and the exposition --------------------------


class ServerGauge(TypedDict):
    upstream: str
    server: str
    up: int  # 1: usable (health checks and passive tracking allow it), 0: not
    in_flight: int  # this process's requests in flight to it


class Snapshot(TypedDict):
    """One process's metrics at one moment, JSON-able.

    Counters: `routes` rows are [site, route, requests by status class, duration buckets
    (not cumulative), duration sum, bytes received, bytes sent]; `upstreams` rows are
    [upstream, response-time buckets, response-time sum, retries]; `handshakes` by result.
    Gauges: `connections`, `queues` (by upstream), `servers`.
    """

    routes: list[tuple[str, str, list[int], list[int], float, int, int]]
    upstreams: list[tuple[str, list[int], float, int]]
    handshakes: dict[str, int]
    connections: int
    queues: dict[str, int]
    servers: list[ServerGauge]


def take_snapshot(store: MetricsStore, plan: Plan, connections: int) -> Snapshot:
    """`store`'s counters and the gauges of `plan`'s upstreams as they are now."""
    return Snapshot(
        routes=[
            (
                c.site,
                c.route,
                list(c.requests),
                list(c.duration),
                c.duration_sum,
                c.received,
                c.sent,
            )
            for c in store.routes.values()
        ],
        upstreams=[
            (u.name, list(u.response), u.response_sum, u.retries) for u in store.upstreams.values()
        ],
        handshakes={result: getattr(store.handshakes, result) for result in HANDSHAKE_RESULTS},
        connections=connections,
        queues={name: len(up.runtime.room) for name, up in plan.upstreams.items()},
        servers=list(_server_gauges(plan.upstreams.values())),
    )


def _server_gauges(upstreams: Iterable[UpstreamPlan]) -> Iterable[ServerGauge]:
    for upstream in upstreams:
        for state in upstream.runtime.states:
            yield ServerGauge(
                upstream=upstream.name,
                server=state.label,
                up=1 if state.usable else 0,
                in_flight=state.in_flight,
            )


def metrics_message(snapshot: Snapshot) -> dict[str, Any]:
    """The channel message carrying a worker's snapshot to its supervisor."""
    return {"type": "metrics", "snapshot": snapshot}


class MetricsReporter:
    """Sends a worker's snapshots (`metrics_message`) every `interval` seconds while it runs,
    and a last one when it stops, so the supervisor keeps every count of a graceful exit."""

    def __init__(
        self,
        take: Callable[[], Snapshot],
        send: Callable[[dict[str, Any]], None],
        interval: float = REPORT_INTERVAL,
    ) -> None:
        self._take = take
        self._send = send
        self._interval = interval
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def _tick(self) -> None:
        self._report()
        self.start()

    def _report(self) -> None:
        try:
            self._send(metrics_message(self._take()))
        except Exception:  # a failed report must not stop the next one
            log.exception("sending the metrics snapshot failed")

    def stop(self) -> None:
        """No more periodic reports; one last report now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._report()
