"""Metrics across processes, in the Prometheus text format.

Workers send snapshots (`observe.metrics.Snapshot`, a channel message `{"type": "metrics",
"snapshot": ...}`) about every second; `MetricsAggregate` keeps the latest one per worker
and, when a worker is gone (died, replaced, or retired by a reload), folds its last counters
into a "retired" total, so a counter summed over the node never goes backwards. Gauges come
from live workers only.

`render_metrics` merges snapshots and renders them with prometheus_client: a custom
`Collector` yields Counter, Gauge and Histogram families (docs/metrics.md lists them).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bastion.observe.metrics import (
    DURATION_BUCKETS,
    HANDSHAKE_RESULTS,
    STATUS_CLASSES,
    ServerGauge,
    Snapshot,
)

__all__ = ["CONTENT_TYPE_LATEST", "MetricsAggregate", "merge_snapshots", "render_metrics"]

RouteKey = tuple[str, str]
BUCKET_LABELS = (*(repr(float(bound)) for bound in DURATION_BUCKETS), "+Inf")


def empty_snapshot() -> Snapshot:
    return Snapshot(
        routes=[],
        upstreams=[],
        handshakes=dict.fromkeys(HANDSHAKE_RESULTS, 0),
        connections=0,
        queues={},
        servers=[],
    )


def _add(into: list[int], more: Iterable[int]) -> None:
    for index, value in enumerate(more):
        if index < len(into):
            into[index] += value


def merge_snapshots(snapshots: Iterable[Snapshot], *, gauges: bool = True) -> Snapshot:
    """One snapshot of several processes: counters and gauges summed, except a server's
    `up`, which is the lowest any process reports (all share health verdicts through the
    node state; without it, a server ejected by one worker shows as down). Without
    `gauges`, only the counters are merged (a retired worker's gauges mean nothing)."""
    routes: dict[RouteKey, list[Any]] = {}
    upstreams: dict[str, list[Any]] = {}
    merged = empty_snapshot()
    servers: dict[tuple[str, str], ServerGauge] = {}
    for snapshot in snapshots:
        for site, route, requests, duration, duration_sum, received, sent in snapshot["routes"]:
            row = routes.get((site, route))
            if row is None:
                routes[site, route] = row = [
                    site, route, [0] * STATUS_CLASSES, [0] * len(BUCKET_LABELS), 0.0, 0, 0
                ]  # fmt: skip
            _add(row[2], requests)
            _add(row[3], duration)
            row[4] += duration_sum
            row[5] += received
            row[6] += sent
        for name, response, response_sum, retries in snapshot["upstreams"]:
            up = upstreams.get(name)
            if up is None:
                upstreams[name] = up = [name, [0] * len(BUCKET_LABELS), 0.0, 0]
            _add(up[1], response)
            up[2] += response_sum
            up[3] += retries
        for result, count in snapshot["handshakes"].items():
            merged["handshakes"][result] = merged["handshakes"].get(result, 0) + count
        if gauges:
            _merge_gauges(merged, servers, snapshot)
    merged["routes"] = [tuple(row) for row in routes.values()]
    merged["upstreams"] = [tuple(row) for row in upstreams.values()]
    merged["servers"] = list(servers.values())
    return merged


def _merge_gauges(
    merged: Snapshot, servers: dict[tuple[str, str], ServerGauge], snapshot: Snapshot
) -> None:
    merged["connections"] += snapshot["connections"]
    for name, length in snapshot["queues"].items():
        merged["queues"][name] = merged["queues"].get(name, 0) + length
    for server in snapshot["servers"]:
        key = (server["upstream"], server["server"])
        seen = servers.get(key)
        if seen is None:
            servers[key] = ServerGauge(**server)
        else:
            seen["up"] = min(seen["up"], server["up"])
            seen["in_flight"] += server["in_flight"]


class MetricsAggregate:
    """The supervisor's view: the latest snapshot of each live worker, and the counters of
    the workers that are gone."""

    def __init__(self, gone: Callable[[Any], bool] | None = None) -> None:
        self.live: dict[Hashable, Snapshot] = {}
        self.retired = empty_snapshot()
        # Whether a worker (the key its snapshots came with) is gone; those are retired
        # when the metrics are read (the supervisor passes "its channel is closed").
        self._gone = gone

    def update(self, worker: Hashable, snapshot: Snapshot) -> None:
        """A worker's latest snapshot (its counters only grow while it lives)."""
        self.live[worker] = snapshot

    def on_message(self, message: dict[str, Any], worker: Hashable) -> None:
        """The channel handler of `{"type": "metrics", "snapshot": {...}}` messages (the
        worker is the channel it came by: `handlers.on("metrics", aggregate.on_message)`)."""
        snapshot = message.get("snapshot")
        if isinstance(snapshot, dict):
            self.update(worker, snapshot)  # type: ignore[arg-type]

    def retire(self, worker: Hashable) -> None:
        """`worker` is gone: keep its last counters in the retired total, drop its gauges."""
        last = self.live.pop(worker, None)
        if last is not None:
            self.retired = merge_snapshots([self.retired, last], gauges=False)

    def merged(self) -> Snapshot:
        if self._gone is not None:
            for worker in [worker for worker in self.live if self._gone(worker)]:
                self.retire(worker)
        counters = merge_snapshots([self.retired, *self.live.values()], gauges=False)
        live = merge_snapshots(self.live.values())
        counters["connections"] = live["connections"]
        counters["queues"] = live["queues"]
        counters["servers"] = live["servers"]
        return counters

    def render(self) -> bytes:
        return render_metrics([self.merged()])


class SnapshotCollector(Collector):
    """Yields the metric families of a merged snapshot, asked for on each scrape."""

    def __init__(self, source: Callable[[], Snapshot]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        snapshot = self.source()
        yield from _route_families(snapshot)
        yield from _upstream_families(snapshot)
        yield from _gauge_families(snapshot)
        handshakes = CounterMetricFamily(
            "bastion_tls_handshakes",
            "TLS handshakes with clients by result: ok, failed (a TLS error), aborted "
            "(closed or timed out before the end).",
            labels=["result"],
        )
        for result in HANDSHAKE_RESULTS:
            handshakes.add_metric([result], snapshot["handshakes"].get(result, 0))
        yield handshakes


def _route_families(snapshot: Snapshot) -> Iterator[Metric]:
    labels = ["site", "route"]
    requests = CounterMetricFamily(
        "bastion_requests",
        "Requests finished, by site, route and status class (none: no response was sent).",
        labels=[*labels, "code_class"],
    )
    duration = HistogramMetricFamily(
        "bastion_request_duration_seconds",
        "Time from a request's head arriving to its last response byte sent.",
        labels=labels,
    )
    received = CounterMetricFamily(
        "bastion_received_bytes", "Request bytes received (heads and bodies).", labels=labels
    )
    sent = CounterMetricFamily("bastion_sent_bytes", "Response body bytes sent.", labels=labels)
    for site, route, by_class, buckets, duration_sum, received_bytes, sent_bytes in snapshot[
        "routes"
    ]:
        for index, count in enumerate(by_class):
            if count or 1 <= index <= 5:
                code_class = f"{index}xx" if index else "none"
                requests.add_metric([site, route, code_class], count)
        duration.add_metric([site, route], _cumulative(buckets), duration_sum)
        received.add_metric([site, route], received_bytes)
        sent.add_metric([site, route], sent_bytes)
    yield from (requests, duration, received, sent)


def _upstream_families(snapshot: Snapshot) -> Iterator[Metric]:
    response = HistogramMetricFamily(
        "bastion_upstream_response_seconds",
        "Time from choosing a server (connecting included) to its response head.",
        labels=["upstream"],
    )
    retries = CounterMetricFamily(
        "bastion_upstream_retries",
        "Attempts sent again after a failed one (another server or a fresh connection).",
        labels=["upstream"],
    )
    for name, buckets, response_sum, retry_count in snapshot["upstreams"]:
        response.add_metric([name], _cumulative(buckets), response_sum)
        retries.add_metric([name], retry_count)
    yield from (response, retries)


def _gauge_families(snapshot: Snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "bastion_upstream_server_up",
        "1 when health checks and passive tracking let the server take requests, else 0.",
        labels=["upstream", "server"],
    )
    in_flight = GaugeMetricFamily(
        "bastion_upstream_server_in_flight",
        "Requests sent to the server and not finished, over all workers.",
        labels=["upstream", "server"],
    )
    for server in snapshot["servers"]:
        up.add_metric([server["upstream"], server["server"]], server["up"])
        in_flight.add_metric([server["upstream"], server["server"]], server["in_flight"])
    queue = GaugeMetricFamily(
        "bastion_upstream_queue_length",
        "Requests waiting for a server below max_conns.",
        labels=["upstream"],
    )
    for name, length in snapshot["queues"].items():
        queue.add_metric([name], length)
    connections = GaugeMetricFamily(
        "bastion_connections_active", "Open client connections (after their TLS handshake)."
    )
    connections.add_metric([], snapshot["connections"])
    yield from (up, in_flight, queue, connections)


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    total = 0
    cumulative = []
    for label, count in zip(BUCKET_LABELS, buckets, strict=False):
        total += count
        cumulative.append((label, float(total)))
    return cumulative


def render_metrics(snapshots: Iterable[Snapshot]) -> bytes:
    """The Prometheus text exposition (`CONTENT_TYPE_LATEST`) of `snapshots` merged: one
    per live process, or an aggregate's merged one."""
    merged = merge_snapshots(list(snapshots))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: merged))
    return generate_latest(registry)
