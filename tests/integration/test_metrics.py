"""Metrics after real traffic through an in-process bastion: requests by site, route and
status class, duration histograms, bytes, upstream response times and retries, server
health and in-flight counts, the queue, client connections and TLS handshakes — read as
the Prometheus text exposition and parsed back with prometheus_client's parser; `/metrics`
on the admin listener; and with several workers, snapshots sent over the supervisor
channel and added up, a retired or killed worker's counts kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bastion.observe.metrics import MetricsReporter
from bastion.observe.metrics_export import CONTENT_TYPE_LATEST, MetricsAggregate, render_metrics
from bastion.runtime.channel import Channel, MessageHandlers
from bastion.runtime.server import ProxyServer
from bastion.runtime.supervisor import Supervisor
from tests.support.certs import TestPKI
from tests.support.client import RawClient, http_get, http_request, request_bytes
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(proxy: ProxyServer) -> Samples:
    return parse(render_metrics([proxy.metrics_snapshot()]).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def sites_config(origin: str, extra_upstream: str = "") -> str:
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["shop.test"]
  [[site.route]]
  path = "/status"
  upstream = "app"
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{origin}]
{extra_upstream}
"""


async def test_requests_durations_and_bytes_by_route(tmp_path: Path) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(sites_config(f'"{origin.url}"')) as proxy,
    ):
        port = proxy.ports[0]
        for _ in range(3):
            assert (await http_get(port, "/status/200", host="shop.test")).status == 200
        assert (await http_get(port, "/status/503", host="shop.test")).status == 503
        assert (await http_get(port, "/status/404", host="shop.test")).status == 404
        assert (await http_get(port, "/delay?s=0.3", host="shop.test")).status == 200
        assert (await http_get(port, "/", host="elsewhere.test")).status == 404  # no route
        body = b"x" * 1000
        response = await http_request(port, "POST", "/upload", host="shop.test", body=body)
        assert response.status == 200
        samples = scrape(proxy)

    api = {"site": "shop.test", "route": "/status"}
    root = {"site": "shop.test", "route": "/"}
    assert value(samples, "bastion_requests_total", **api, code_class="2xx") == 3
    assert value(samples, "bastion_requests_total", **api, code_class="5xx") == 1
    assert value(samples, "bastion_requests_total", **api, code_class="4xx") == 1
    assert value(samples, "bastion_requests_total", **api, code_class="3xx") == 0
    assert value(samples, "bastion_requests_total", **root, code_class="2xx") == 2
    assert value(samples, "bastion_requests_total", **root, code_class="4xx") == 0
    unrouted = {"site": "-", "route": "-"}
    assert value(samples, "bastion_requests_total", **unrouted, code_class="4xx") == 1
    # the /delay request: over 0.25 s, under 0.5 s; the others well under 0.25 s
    duration = "bastion_request_duration_seconds"
    assert value(samples, f"{duration}_count", **root) == 2
    assert value(samples, f"{duration}_bucket", **root, le="0.25") == 1
    assert value(samples, f"{duration}_bucket", **root, le="0.5") == 2
    assert value(samples, f"{duration}_bucket", **root, le="+Inf") == 2
    assert 0.3 <= value(samples, f"{duration}_sum", **root) < 1.0
    assert value(samples, f"{duration}_count", **api) == 5
    # bytes: the upload's body counts in, every response body out
    assert value(samples, "bastion_received_bytes_total", **root) > 1000
    assert value(samples, "bastion_received_bytes_total", **api) < 1000
    assert value(samples, "bastion_sent_bytes_total", **api) > 0
    upstream = "bastion_upstream_response_seconds"
    assert value(samples, f"{upstream}_count", upstream="app") == 7
    assert value(samples, f"{upstream}_bucket", upstream="app", le="0.25") == 6
    assert value(samples, "bastion_upstream_retries_total", upstream="app") == 0
    server = {"upstream": "app", "server": origin.address}
    assert value(samples, "bastion_upstream_server_up", **server) == 1
    assert value(samples, "bastion_upstream_server_in_flight", **server) == 0
    assert value(samples, "bastion_upstream_queue_length", upstream="app") == 0


class ClosingOrigin:
    """Accepts connections and closes each at once: every attempt on it fails."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ClosingOrigin:
        self.server = await asyncio.start_server(self._close, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.transport.abort()


async def test_retries_and_a_failing_server() -> None:
    async with AutonomousOrigin() as origin, ClosingOrigin() as closing:
        servers = f'"{closing.url}", "{origin.url}"'
        config = sites_config(servers, 'balance = "round_robin"\nretries = 1')
        async with running_proxy(config) as proxy:
            for _ in range(4):
                response = await http_get(proxy.ports[0], "/status/200", host="shop.test")
                assert response.status == 200
            samples = scrape(proxy)
    # each attempt on the closing server failed and was sent again to the other one
    assert closing.accepted >= 1
    retries = value(samples, "bastion_upstream_retries_total", upstream="app")
    assert retries == closing.accepted
    assert value(samples, "bastion_upstream_response_seconds_count", upstream="app") == 4
    routed = {"site": "shop.test", "route": "/status"}
    assert value(samples, "bastion_requests_total", **routed, code_class="2xx") == 4
    live = {"upstream": "app", "server": origin.address}
    assert value(samples, "bastion_upstream_server_up", **live) == 1


async def test_in_flight_queue_and_connections_while_requests_wait() -> None:
    async with AutonomousOrigin() as origin:
        server = f'{{ url = "{origin.url}", max_conns = 1 }}'
        async with running_proxy(sites_config(server, "queue = { max = 10 }")) as proxy:
            port = proxy.ports[0]
            clients = [RawClient(port) for _ in range(3)]
            for client in clients:
                await client.__aenter__()
                await client.send(request_bytes("GET", "/delay?s=0.5", host="shop.test"))
            try:
                for _ in range(50):
                    samples = scrape(proxy)
                    if value(samples, "bastion_upstream_queue_length", upstream="app") == 2:
                        break
                    await asyncio.sleep(0.02)
                busy = {"upstream": "app", "server": origin.address}
                assert value(samples, "bastion_upstream_queue_length", upstream="app") == 2
                assert value(samples, "bastion_upstream_server_in_flight", **busy) == 1
                assert value(samples, "bastion_connections_active") == 3
                for client in clients:
                    assert (await client.read_response(timeout=5)).status == 200
            finally:
                for client in clients:
                    await client.__aexit__(None, None, None)
            for _ in range(50):
                samples = scrape(proxy)
                if value(samples, "bastion_connections_active") == 0:
                    break
                await asyncio.sleep(0.02)
            assert value(samples, "bastion_connections_active") == 0
            assert value(samples, "bastion_upstream_queue_length", upstream="app") == 0
            assert value(samples, "bastion_upstream_server_in_flight", **busy) == 0


def tls_config(pki: TestPKI, origin: str) -> str:
    cert = pki.server_cert("shop.test")
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
tls = true
[[site]]
hosts = ["shop.test"]
tls = {{ certificate = "{cert.certificate}", key = "{cert.key}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{origin}"]
"""


async def test_tls_handshakes_by_result(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    async with AutonomousOrigin() as origin, running_proxy(tls_config(pki, origin.url)) as proxy:
        port = proxy.ports[0]
        context = pki.client_context()
        for _ in range(2):
            async with RawClient(port, ssl=context, server_hostname="shop.test") as client:
                await client.send(request_bytes("GET", "/status/200", host="shop.test"))
                assert (await client.read_response()).status == 200
        # plain HTTP on the TLS port: a TLS error
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("GET", "/", host="shop.test"))
        await reader.read()
        writer.close()
        # a client that does not trust the certificate gives up mid-handshake
        with contextlib.suppress(ssl.SSLError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl.create_default_context(), server_hostname="shop.test"
            )
        # connected, then closed without a word
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        expected = {"ok": 2, "failed": 1, "aborted": 2}
        for _ in range(100):
            samples = scrape(proxy)
            found = {
                result: value(samples, "bastion_tls_handshakes_total", result=result)
                for result in expected
            }
            if found == expected:
                break
            await asyncio.sleep(0.02)
        assert found == expected


async def test_counters_survive_a_reload(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        config = sites_config(f'"{origin.url}"')
        path = tmp_path / "bastion.toml"
        path.write_text(config)
        async with running_proxy(config) as proxy:
            port = proxy.ports[0]
            assert (await http_get(port, "/status/200", host="shop.test")).status == 200
            assert (await http_get(port, "/x", host="shop.test")).status == 200
            path.write_text(config.replace('path = "/status"', 'path = "/v2"'))
            assert proxy.reload(path)
            assert (await http_get(port, "/x", host="shop.test")).status == 200
            assert (await http_get(port, "/v2/status/200", host="shop.test")).status == 200
            samples = scrape(proxy)
    root = {"site": "shop.test", "route": "/"}
    assert value(samples, "bastion_requests_total", **root, code_class="2xx") == 2
    gone = {"site": "shop.test", "route": "/status"}  # a removed route keeps its counts
    assert value(samples, "bastion_requests_total", **gone, code_class="2xx") == 1
    v2 = {"site": "shop.test", "route": "/v2"}
    assert value(samples, "bastion_requests_total", **v2, code_class="2xx") == 1


async def test_metrics_endpoint_on_the_admin_listener() -> None:
    token = "metrics-token-0123456789"
    async with AutonomousOrigin() as origin:
        config = sites_config(f'"{origin.url}"').replace(
            "[[listen]]", f'[admin]\nlisten = "127.0.0.1:0"\ntoken = "{token}"\n[[listen]]', 1
        )
        async with running_proxy(config) as proxy:
            for _ in range(2):
                assert (await http_get(proxy.ports[0], "/x", host="shop.test")).status == 200
            assert proxy.admin is not None
            url = f"http://127.0.0.1:{proxy.admin.port}/metrics"
            auth = {"authorization": f"Bearer {token}"}
            async with httpx.AsyncClient() as client:
                refused = await client.get(url)
                response = await client.get(url, headers=auth)
                drain = url.replace("/metrics", "/api/upstreams/app/servers/0/drain")
                assert (await client.post(drain, headers=auth)).status_code == 200
                drained = await client.get(url, headers=auth)
    assert refused.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = parse(response.text)
    root = {"site": "shop.test", "route": "/"}
    assert value(samples, "bastion_requests_total", **root, code_class="2xx") == 2
    assert value(samples, "bastion_request_duration_seconds_count", **root) == 2
    server = {"upstream": "app", "server": origin.address}
    assert value(samples, "bastion_upstream_server_up", **server) == 1
    assert value(parse(drained.text), "bastion_upstream_server_up", **server) == 0  # drained


async def test_worker_snapshots_reach_the_supervisor_over_the_channel() -> None:
    """The multi-worker path: a worker's reporter sends snapshots through its channel (a
    socketpair), the supervisor's aggregate adds them up and keeps a gone worker's counts."""
    async with (
        AutonomousOrigin() as origin,
        running_proxy(sites_config(f'"{origin.url}"')) as proxy,
    ):
        handlers = MessageHandlers()
        aggregate = MetricsAggregate(gone=lambda channel: channel.closed.is_set())
        handlers.on("metrics", aggregate.on_message)
        ours, theirs = socket.socketpair()
        supervisor_end = Channel(ours, handlers, peer="worker 0")
        worker_end = Channel(theirs, peer="supervisor")
        await supervisor_end.start()
        await worker_end.start()
        reporter = MetricsReporter(proxy.metrics_snapshot, worker_end.send, interval=0.05)
        reporter.start()
        for _ in range(3):
            assert (await http_get(proxy.ports[0], "/x", host="shop.test")).status == 200

        def requests_2xx() -> int:
            rows = aggregate.merged()["routes"]
            return sum(row[2][2] for row in rows if row[1] == "/")

        for _ in range(100):
            if requests_2xx() == 3:
                break
            await asyncio.sleep(0.02)
        assert requests_2xx() == 3
        assert aggregate.merged()["servers"][0]["server"] == origin.address
        assert (await http_get(proxy.ports[0], "/x", host="shop.test")).status == 200
        reporter.stop()  # the last snapshot, then the worker goes away
        worker_end.close()
        await asyncio.wait_for(supervisor_end.closed.wait(), 5)
        assert requests_2xx() == 4  # kept after the worker is gone
        assert aggregate.live == {}
        assert aggregate.merged()["servers"] == []


# -- several workers: a Supervisor in this process ----------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def supervisor(path: Path) -> AsyncIterator[Supervisor]:
    running = Supervisor(path)
    task = asyncio.create_task(running.run(handle_signals=False))
    try:
        async with asyncio.timeout(20.0):
            while not (running.workers and all(w.ready.is_set() for w in running.workers)):
                assert not task.done(), "the supervisor ended at start"
                await asyncio.sleep(0.05)
        yield running
    finally:
        running.stop()
        assert await asyncio.wait_for(task, 20.0) == 0


async def counted(running: Supervisor, expected: int) -> int:
    """The node's 2xx count on route "/", once it reaches `expected` (snapshots come every
    second) or after a bounded wait."""
    labels = {"site": "shop.test", "route": "/", "code_class": "2xx"}
    key = ("bastion_requests_total", frozenset(labels.items()))
    found = 0
    for _ in range(100):
        found = int(parse(running.metrics.render().decode()).get(key, 0))
        if found >= expected:
            break
        await asyncio.sleep(0.05)
    return found


async def test_workers_metrics_add_up_across_reloads_and_a_killed_worker(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "bastion.toml"
    async with AutonomousOrigin() as origin:
        text = sites_config(f'"{origin.url}"').replace("127.0.0.1:0", f"127.0.0.1:{port}")
        path.write_text("[server]\nworkers = 2\n" + text)
        async with supervisor(path) as running:
            for _ in range(6):
                assert (await http_get(port, "/x", host="shop.test")).status == 200
            assert await counted(running, 6) == 6
            for _ in range(100):  # both workers report, busy or not
                if len(running.metrics.live) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(running.metrics.live) == 2
            result = await running.reload()  # a new generation; the old one's counts stay
            assert result["ok"], result
            for _ in range(4):
                assert (await http_get(port, "/x", host="shop.test")).status == 200
            assert await counted(running, 10) == 10
            victim = running.workers[0]
            await asyncio.sleep(1.2)  # its latest counts reported
            os.kill(victim.pid, signal.SIGKILL)
            await asyncio.wait_for(victim.exited.wait(), 10)
            assert await counted(running, 10) == 10  # never backwards
            for _ in range(2):
                assert (await http_get(port, "/x", host="shop.test")).status == 200
            assert await counted(running, 12) == 12
            samples = parse(running.metrics.render().decode())
    server = {"upstream": "app", "server": origin.address}
    assert value(samples, "bastion_upstream_server_in_flight", **server) == 0
    assert (
        value(samples, "bastion_request_duration_seconds_count", site="shop.test", route="/") == 12
    )
