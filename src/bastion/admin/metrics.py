"""`GET /metrics` on the admin listener: the Prometheus text exposition.

The route is one of the admin API's `extra` routes, so it passes the same access rule as
`/api/` (bearer token when `admin.token` is set, loopback clients otherwise). It serves an
in-process proxy's own snapshot (`local_metrics_route`) or a supervisor's aggregate of its
workers' snapshots (`aggregate_metrics_route`), rendered by `observe.metrics_export`
(docs/metrics.md). prometheus_client is imported when a route is made, so worker processes,
which serve no admin listener, never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bastion.admin.api import Params, Route
from bastion.admin.messages import Request, Response
from bastion.admin.openapi import REFUSALS
from bastion.observe.metrics import Snapshot


class SnapshotSource(Protocol):
    """An in-process proxy (runtime.server.ProxyServer)."""

    def metrics_snapshot(self) -> Snapshot: ...


class AggregateSource(Protocol):
    """A supervisor's `observe.metrics_export.MetricsAggregate`."""

    def render(self) -> bytes: ...


def metrics_route(render: Callable[[], bytes]) -> Route:
    """The `GET /metrics` route answering with `render()`, a Prometheus text exposition
    (e.g. a supervisor's `MetricsAggregate.render`)."""
    from bastion.observe.metrics_export import CONTENT_TYPE_LATEST

    async def metrics(request: Request, params: Params) -> Response:
        return Response(200, render(), CONTENT_TYPE_LATEST)

    return Route("GET", "/metrics", metrics, METRICS_OPERATION)


# The route's entry in /api/openapi.json.
METRICS_OPERATION: dict[str, object] = {
    "operationId": "getMetrics",
    "summary": "Prometheus metrics, summed over every worker (docs/metrics.md)",
    "responses": {
        "200": {
            "description": "The Prometheus text exposition format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **REFUSALS,
    },
}


def local_metrics_route(proxy: SnapshotSource) -> Route:
    """`GET /metrics` of an in-process proxy: its own snapshot, rendered at each call."""
    from bastion.observe.metrics_export import render_metrics

    return metrics_route(lambda: render_metrics([proxy.metrics_snapshot()]))


def aggregate_metrics_route(aggregate: AggregateSource) -> Route:
    """`GET /metrics` of a supervisor: its workers' snapshots added up."""
    return metrics_route(aggregate.render)
