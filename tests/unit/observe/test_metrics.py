"""Metrics accounting and exposition without sockets: the sink's counters per route and
upstream, snapshots, merging across workers (a retired worker's counters are kept), and the
Prometheus text the exposition renders."""

from __future__ import annotations

import asyncio
import gc
import ssl
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.config import parse_config
from bastion.filters.chain import compile_plan
from bastion.http.events import Framing, RequestHead
from bastion.observe.metrics import (
    DURATION_BUCKETS,
    MetricsReporter,
    MetricsStore,
    Snapshot,
    metrics_message,
    take_snapshot,
)
from bastion.observe.metrics_export import (
    CONTENT_TYPE_LATEST,
    MetricsAggregate,
    merge_snapshots,
    render_metrics,
)
from bastion.proxy.context import ClientInfo, RequestContext
from bastion.proxy.exchange import Exchange
from bastion.proxy.plan import Plan

CONFIG = """
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["shop.test"]
  [[site.route]]
  path = "/api"
  upstream = "app"
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
"""


@pytest.fixture
def plan() -> Plan:
    return compile_plan(parse_config(CONFIG, "test.toml"))


def _route(plan: Plan, label: str) -> object:
    match = plan.router.match(b"shop.test", label.encode(), b"GET")
    assert match is not None and not hasattr(match, "allowed")
    return match.rule.target  # type: ignore[union-attr]


def finished(
    plan: Plan,
    label: str | None,
    *,
    status: int,
    age: float = 0.0,
    latency: float | None = None,
    head_size: int = 100,
    received: int = 0,
    sent: int = 0,
) -> Exchange:
    """An exchange as the pipeline hands it to its log sinks."""
    head = RequestHead(
        method=b"GET",
        target=b"/",
        http_version=b"1.1",
        headers=[],
        framing=Framing.NONE,
        content_length=None,
        keep_alive=True,
        host=b"shop.test",
        head_size=head_size,
    )
    client = ClientInfo("127.0.0.1", 5000, 80, b"http", False)
    ctx = RequestContext(head, client, time.monotonic() - age)
    ex = Exchange(ctx, None, asyncio.get_running_loop())  # type: ignore[arg-type]
    if label is None:
        ctx.route = plan.unrouted
    else:
        ctx.route = _route(plan, label)  # type: ignore[assignment]
        ctx.upstream = plan.upstreams["app"]
    ex.status = status
    ex.latency = latency
    ex.received = received
    ex.bytes_out = sent
    return ex


async def test_sink_counts_requests_by_route_and_status_class(plan: Plan) -> None:
    store = MetricsStore()
    sink = store.sink(plan)
    for status in (200, 201, 404, 502, 0):
        sink.log_exchange(finished(plan, "/api", status=status))
    sink.log_exchange(finished(plan, "/", status=301))
    sink.log_exchange(finished(plan, None, status=404))
    api = store.routes["shop.test", "/api"]
    assert api.requests[:6] == [1, 0, 2, 0, 1, 1]
    assert store.routes["shop.test", "/"].requests[3] == 1
    assert store.routes["-", "-"].requests[4] == 1


async def test_sink_buckets_durations_and_counts_bytes(plan: Plan) -> None:
    store = MetricsStore()
    sink = store.sink(plan)
    sink.log_exchange(finished(plan, "/api", status=200, age=0.3, head_size=80, received=20))
    sink.log_exchange(finished(plan, "/api", status=200, age=0.0, sent=1000, latency=0.04))
    api = store.routes["shop.test", "/api"]
    slow = DURATION_BUCKETS.index(0.5)  # 0.25 < 0.3 <= 0.5
    assert api.duration[slow] == 1
    assert api.duration[0] == 1  # well under a millisecond
    assert sum(api.duration) == 2
    assert 0.3 <= api.duration_sum < 0.4
    assert api.received == 80 + 20 + 100
    assert api.sent == 1000
    app = store.upstreams["app"]
    assert app.response[DURATION_BUCKETS.index(0.05)] == 1  # 0.025 < 0.04 <= 0.05
    assert sum(app.response) == 1  # the first exchange had no response from the origin
    assert app.response_sum == pytest.approx(0.04)


async def test_retries_count_attempts_after_a_failed_one(plan: Plan) -> None:
    store = MetricsStore()
    sink = store.sink(plan)
    runtime = plan.upstreams["app"].runtime
    first, second = runtime.states
    # failed on the first server, served by the second
    ex = finished(plan, "/api", status=200, latency=0.01)
    ex.ctx.tried = (first,)
    ex.ctx.server = runtime.server_plan(second)
    sink.log_exchange(ex)
    assert store.upstreams["app"].retries == 1
    # both failed: the last failure had no attempt after it
    ex = finished(plan, "/api", status=502)
    ex.ctx.tried = (first, second)
    ex.ctx.server = runtime.server_plan(second)
    sink.log_exchange(ex)
    assert store.upstreams["app"].retries == 2
    # a stale pooled connection, sent again on a fresh one
    ex = finished(plan, "/api", status=200, latency=0.01)
    ex.retried = True
    sink.log_exchange(ex)
    assert store.upstreams["app"].retries == 3


async def test_counters_outlive_a_new_plan(plan: Plan) -> None:
    store = MetricsStore()
    store.sink(plan).log_exchange(finished(plan, "/api", status=200))
    newer = compile_plan(parse_config(CONFIG, "test.toml"))
    store.sink(newer).log_exchange(finished(newer, "/api", status=200))
    assert store.routes["shop.test", "/api"].requests[2] == 2


async def test_snapshot_reads_gauges_of_the_plan(plan: Plan) -> None:
    store = MetricsStore()
    store.sink(plan).log_exchange(finished(plan, "/api", status=200))
    first, second = plan.upstreams["app"].runtime.states
    first.in_flight = 3
    second.usable = False
    snapshot = take_snapshot(store, plan, connections=7)
    assert snapshot["connections"] == 7
    assert snapshot["queues"] == {"app": 0}
    assert [(s["server"], s["up"], s["in_flight"]) for s in snapshot["servers"]] == [
        ("127.0.0.1:1", 1, 3),
        ("127.0.0.1:2", 0, 0),
    ]
    message = metrics_message(snapshot)
    assert message["type"] == "metrics"


def _snapshot(
    requests_2xx: int, *, connections: int = 0, in_flight: int = 0, up: int = 1
) -> Snapshot:
    requests = [0] * 10
    requests[2] = requests_2xx
    buckets = [0] * (len(DURATION_BUCKETS) + 1)
    buckets[3] = requests_2xx
    return Snapshot(
        routes=[("shop.test", "/api", requests, buckets, 0.01 * requests_2xx, 10, 20)],
        upstreams=[("app", list(buckets), 0.005 * requests_2xx, 1)],
        handshakes={"ok": requests_2xx, "failed": 1, "aborted": 0},
        connections=connections,
        queues={"app": 1},
        servers=[{"upstream": "app", "server": "s1", "up": up, "in_flight": in_flight}],
    )


def test_merge_sums_counters_and_gauges() -> None:
    merged = merge_snapshots(
        [_snapshot(3, connections=2, in_flight=1), _snapshot(4, in_flight=2, up=0)]
    )
    site, route, requests, buckets, duration_sum, received, sent = merged["routes"][0]
    assert (site, route, requests[2], buckets[3], received, sent) == (
        "shop.test",
        "/api",
        7,
        7,
        20,
        40,
    )
    assert duration_sum == pytest.approx(0.07)
    assert merged["upstreams"][0][3] == 2
    assert merged["handshakes"] == {"ok": 7, "failed": 2, "aborted": 0}
    assert merged["connections"] == 2
    assert merged["queues"] == {"app": 2}
    assert merged["servers"] == [{"upstream": "app", "server": "s1", "up": 0, "in_flight": 3}]


def test_aggregate_keeps_a_retired_workers_counters() -> None:
    aggregate = MetricsAggregate()
    aggregate.on_message(metrics_message(_snapshot(5, connections=3)), "w1")
    aggregate.update("w2", _snapshot(2, connections=1))
    assert aggregate.merged()["routes"][0][2][2] == 7
    aggregate.retire("w1")  # died: its replacement starts from zero
    aggregate.update("w1b", _snapshot(1))
    merged = aggregate.merged()
    assert merged["routes"][0][2][2] == 8  # never backwards
    assert merged["handshakes"]["ok"] == 8
    assert merged["connections"] == 1  # gauges of live workers only
    aggregate.retire("w2")
    aggregate.retire("w1b")
    aggregate.retire("unknown")
    merged = aggregate.merged()
    assert merged["routes"][0][2][2] == 8
    assert merged["servers"] == [] and merged["connections"] == 0


def _families(text: bytes) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    found: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text.decode()):
        found[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return found


def test_exposition_has_every_family_with_cumulative_buckets() -> None:
    text = render_metrics([_snapshot(3, connections=2, in_flight=1), _snapshot(1)])
    assert CONTENT_TYPE_LATEST.startswith("text/plain")
    families = _families(text)
    requests = {s[1]["code_class"]: s[2] for s in families["bastion_requests"]}
    assert requests == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 0}
    buckets = {
        s[1]["le"]: s[2]
        for s in families["bastion_request_duration_seconds"]
        if s[0].endswith("_bucket")
    }
    assert buckets["0.005"] == 0 and buckets["0.01"] == 4 and buckets["+Inf"] == 4
    count = [s for s in families["bastion_request_duration_seconds"] if s[0].endswith("_count")]
    assert count[0][2] == 4
    assert families["bastion_upstream_retries"][0][2] == 2
    assert families["bastion_connections_active"][0][2] == 2
    assert families["bastion_upstream_server_in_flight"][0][1] == {
        "upstream": "app",
        "server": "s1",
    }
    assert {s[1]["result"]: s[2] for s in families["bastion_tls_handshakes"]} == {
        "ok": 4,
        "failed": 2,
        "aborted": 0,
    }
    expected = {
        "bastion_requests",
        "bastion_request_duration_seconds",
        "bastion_received_bytes",
        "bastion_sent_bytes",
        "bastion_upstream_response_seconds",
        "bastion_upstream_retries",
        "bastion_upstream_server_up",
        "bastion_upstream_server_in_flight",
        "bastion_upstream_queue_length",
        "bastion_connections_active",
        "bastion_tls_handshakes",
    }
    assert set(families) == expected
    assert b"bastion_requests_total{" in text and b"bastion_sent_bytes_total{" in text


def test_handshake_outcomes_are_counted_by_the_ssl_objects(tmp_path: object) -> None:
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("a.test").configure_cert(server)
    store = MetricsStore()
    store.count_handshakes(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)

    def pair(
        client_context: ssl.SSLContext,
    ) -> tuple[ssl.SSLObject, ssl.SSLObject, list[ssl.MemoryBIO]]:
        bios = [ssl.MemoryBIO() for _ in range(4)]
        s = server.wrap_bio(bios[0], bios[1], server_side=True)
        c = client_context.wrap_bio(bios[2], bios[3], server_hostname="a.test")
        return s, c, bios

    def pump(s: ssl.SSLObject, c: ssl.SSLObject, bios: list[ssl.MemoryBIO]) -> None:
        for _ in range(10):
            for obj in (c, s):
                try:
                    obj.do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except ssl.SSLError:
                    return
            bios[0].write(bios[3].read())
            bios[2].write(bios[1].read())

    s, c, bios = pair(client)
    pump(s, c, bios)
    assert (store.handshakes.ok, store.handshakes.failed) == (1, 0)
    s, c, bios = pair(client)
    bios[0].write(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on a TLS port
    with pytest.raises(ssl.SSLError):
        s.do_handshake()
    assert store.handshakes.failed == 1
    s, c, bios = pair(client)
    del s, c, bios  # closed before the handshake ended
    gc.collect()
    assert store.handshakes.aborted == 1
    assert store.handshakes.ok == 1


def test_aggregate_retires_workers_found_gone() -> None:
    closed: set[str] = set()
    aggregate = MetricsAggregate(gone=lambda worker: worker in closed)
    aggregate.on_message(metrics_message(_snapshot(5, connections=3)), "w1")
    aggregate.on_message({"type": "metrics"}, "w2")  # no snapshot: ignored
    closed.add("w1")
    merged = aggregate.merged()
    assert merged["routes"][0][2][2] == 5
    assert merged["connections"] == 0
    assert aggregate.live == {}


def test_snapshots_survive_the_channel_as_json(plan: Plan) -> None:
    import json

    sent = json.loads(json.dumps(metrics_message(_snapshot(2, in_flight=1))))
    aggregate = MetricsAggregate()
    aggregate.on_message(sent, "w1")
    aggregate.on_message(json.loads(json.dumps(metrics_message(_snapshot(3)))), "w2")
    families = _families(aggregate.render())
    requests = {s[1]["code_class"]: s[2] for s in families["bastion_requests"]}
    assert requests["2xx"] == 5


async def test_reporter_sends_snapshots_every_interval_and_once_more_on_stop(plan: Plan) -> None:
    store = MetricsStore()
    sent: list[dict[str, object]] = []
    reporter = MetricsReporter(lambda: take_snapshot(store, plan, 0), sent.append, interval=0.02)
    reporter.start()
    await asyncio.sleep(0.09)
    assert 2 <= len(sent) <= 5
    store.sink(plan).log_exchange(finished(plan, "/api", status=200))
    reporter.stop()
    last = sent[-1]
    assert last["type"] == "metrics"
    assert last["snapshot"]["routes"][-1][2][2] == 1  # type: ignore[index]
    count = len(sent)
    await asyncio.sleep(0.05)
    assert len(sent) == count  # stopped
