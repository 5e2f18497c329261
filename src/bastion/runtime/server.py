"""Wires one serving process: plan, pipeline, listeners, logs, graceful stop and reload.

`ProxyServer` is what each worker of `bastion run` starts (on the listening sockets the
supervisor bound and passed down) and what the integration tests start in-process (it then
binds every listener itself; port 0 allowed, `ports` tells the real ones). It serves until
`stop()`, and swaps in a new plan on `reload()` without touching open connections. Beyond
`server.max_connections` open connections it stops accepting until some close
(`listen_sockets.AcceptGate`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence

from bastion.admin import AdminServer, start_local_admin
from bastion.config import BastionConfig, load_config
from bastion.config.model import ListenSettings
from bastion.errors import ConfigError
from bastion.filters.chain import compile_plan
from bastion.http.h2_server import H2Limits
from bastion.net.downstream import ClientConnection, ConnectionRegistry, PipelineRef
from bastion.net.health_check import HealthChecker
from bastion.net.listener import connection_factory
from bastion.net.proxy_header import ProxyProtocolListener
from bastion.net.tls import ListenerTLS, SiteCertificate
from bastion.net.upstream import UpstreamConnector
from bastion.net.upstream_dns import DnsWatchers
from bastion.observe.access_log import AccessLog
from bastion.observe.metrics import MetricsStore, Snapshot, take_snapshot
from bastion.observe.request_log import AccessLogger
from bastion.proxy.context import ListenerInfo
from bastion.proxy.pipeline import Pipeline
from bastion.proxy.plan import Plan
from bastion.proxy.ports import ExchangeLog
from bastion.runtime.listen_sockets import AcceptGate, ServedSocket, bind_listener, describe
from bastion.state import NodeState

log = logging.getLogger(__name__)


class ProxyServer:
    """A running bastion: listeners, the current pipeline, the origin connection pool."""

    def __init__(
        self,
        config: BastionConfig,
        *,
        node_state: NodeState | None = None,
        runs_checks: bool = True,
    ) -> None:
        self.config = config
        self.node_state = node_state  # shared with the node's other workers (bastion.state)
        self.runs_checks = runs_checks  # this process probes the servers (one per node)
        self.loop = asyncio.get_running_loop()
        self.connector = UpstreamConnector(self.loop)
        self.registry = CountingRegistry()
        self.metrics = MetricsStore()  # counters outlive reloads
        self.access_log = AccessLog(
            config.log.access, config.log.format, schedule=self.loop.call_soon
        )
        self.pipeline_ref = PipelineRef(self._pipeline(config))
        self.checkers: list[HealthChecker] = []
        self.dns = DnsWatchers(self.pipeline_ref.pipeline.plan, config.server.resolver)
        self._dns_swaps: set[asyncio.Task[None]] = set()
        self.gate: AcceptGate | None = None
        self.admin: AdminServer | None = None  # in-process only: a supervisor serves its own
        self.stopped = asyncio.Event()

    def _pipeline(self, config: BastionConfig) -> Pipeline:
        plan = compile_plan(config)
        if self.node_state is not None:
            for upstream in plan.upstreams.values():
                upstream.runtime.share(self.node_state)
        sinks: list[ExchangeLog] = [self.metrics.sink(plan)]
        if self.access_log.enabled:
            sinks.append(AccessLogger(self.access_log))
        return Pipeline(plan, self.connector, sinks)

    def _start_checks(self, plan: Plan) -> None:
        """Active health checks of the upstreams that have them (the old ones stop)."""
        for checker in self.checkers:
            checker.stop()
        self.checkers = [
            HealthChecker(upstream, upstream.health, self.connector, upstream.runtime)
            for upstream in plan.upstreams.values()
            if upstream.health is not None and self.runs_checks
        ]
        for checker in self.checkers:
            checker.start()

    async def _swap_dns(self, old: DnsWatchers, new: DnsWatchers) -> None:
        await old.stop()
        await new.start()

    async def start(
        self,
        sockets: Sequence[Sequence[socket.socket]] | None = None,
        before_serving: Callable[[], None] | None = None,
    ) -> None:
        """Serve every listener: on `sockets` (one list per `[[listen]]`, in order; this
        server owns and closes them), or on sockets it binds itself. `before_serving` runs
        once the certificates are read, before anything else (a worker drops privileges)."""
        alone = sockets is None  # not a supervisor's worker: serve the admin API too
        if sockets is None:
            sockets = self._bind_all()
        if len(sockets) != len(self.config.listen):
            raise ValueError(f"{len(sockets)} socket lists for {len(self.config.listen)} listeners")
        served = [
            item
            for listen, socks in zip(self.config.listen, sockets, strict=True)
            for item in self._served(listen, socks)
        ]
        if before_serving is not None:
            before_serving()
        await self.dns.start()  # the first resolution, before serving
        self._start_checks(self.pipeline_ref.pipeline.plan)
        self.gate = AcceptGate(served, self.config.server.max_connections)
        self.registry.on_change = self.gate.connections_changed
        await self.gate.open()
        for item in served:
            log.info("listening on %s", describe(item.sock))
        if alone:
            self.admin = await start_local_admin(self)

    def _bind_all(self) -> list[list[socket.socket]]:
        bound: list[list[socket.socket]] = []
        try:
            for listen in self.config.listen:
                bound.append(bind_listener(listen.address))
        except OSError:
            for sock in (sock for socks in bound for sock in socks):
                sock.close()
            raise
        return bound

    def _served(self, listen: ListenSettings, socks: Sequence[socket.socket]) -> list[ServedSocket]:
        """How one listener's connections are served: protocol factory and TLS."""
        tls = listener_tls(self.config, listen.offers_h2) if listen.tls else None
        context = tls.context if tls is not None else None
        if context is not None:
            self.metrics.count_handshakes(context)
        info = ListenerInfo(
            scheme=b"https" if listen.tls else b"http",
            redirect_to_https=listen.redirect_to_https,
            accepts_handshake=tls.version_allowed if tls is not None else None,
        )
        # PROXY comes before TLS: such a listener accepts plain TCP and starts TLS itself.
        proxy = ProxyProtocolListener(context) if listen.proxy_protocol else None
        if proxy is not None:
            context = None
        factory = connection_factory(
            self.pipeline_ref, self.registry, info, listen.offers_h2, H2Limits(), proxy
        )
        handshake_timeout = self.config.server.header_timeout if context else None
        return [ServedSocket(sock, factory, context, handshake_timeout) for sock in socks]

    def metrics_snapshot(self) -> Snapshot:
        """This process's metrics now (observe.metrics_export renders them)."""
        plan = self.pipeline_ref.pipeline.plan
        return take_snapshot(self.metrics, plan, len(self.registry.connections))

    @property
    def ports(self) -> list[int]:
        """The TCP ports actually bound, in listener order (useful with port 0)."""
        served = self.gate.served if self.gate is not None else []
        return [item.sock.getsockname()[1] for item in served if item.sock.family != socket.AF_UNIX]

    def reload(self, path: str | os.PathLike[str]) -> bool:
        """Serve new requests by a freshly loaded config; keep the old one on error."""
        try:
            config = load_config(path)
            pipeline = self._pipeline(config)
        except ConfigError as error:
            log.error("reload failed, keeping the running configuration:\n%s", error)
            return False
        if config.listen != self.config.listen:  # addresses, tls, http2, proxy_protocol...
            log.warning("reload: listener changes take effect after a restart")
        dns = DnsWatchers(pipeline.plan, config.server.resolver)
        dns.seed(self.dns)  # serve by the addresses known so far while re-resolving
        old_upstreams = self.pipeline_ref.pipeline.plan.upstreams
        for name, upstream in pipeline.plan.upstreams.items():
            if name in old_upstreams:
                upstream.runtime.inherit(old_upstreams[name].runtime)
        self.config = config
        self.pipeline_ref.pipeline = pipeline
        self._start_checks(pipeline.plan)
        swap = self.loop.create_task(self._swap_dns(self.dns, dns))
        self._dns_swaps.add(swap)
        swap.add_done_callback(self._dns_swaps.discard)
        self.dns = dns
        log.info("configuration reloaded from %s", path)
        return True

    async def stop(self, graceful_timeout: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close everything."""
        timeout = (
            self.config.server.graceful_timeout if graceful_timeout is None else graceful_timeout
        )
        for checker in self.checkers:
            checker.stop()
        for swap in list(self._dns_swaps):
            swap.cancel()
        await self.dns.stop()
        if self.gate is not None:
            self.gate.close()
        if self.admin is not None:
            await self.admin.stop()
        drained = self.registry.drain()
        try:
            await asyncio.wait_for(drained.wait(), timeout)
        except TimeoutError:
            log.warning(
                "graceful stop: %d connections still busy after %gs, closing them",
                len(self.registry.connections),
                timeout,
            )
            for conn in list(self.registry.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        self.connector.close()
        self.access_log.flush()
        self.access_log.close()
        self.stopped.set()


def listener_tls(config: BastionConfig, http2: bool) -> ListenerTLS:
    """The TLS contexts of a TLS listener: every site with a certificate, chosen by SNI."""
    sites = [
        SiteCertificate(
            hosts=tuple(site.hosts),
            certificate=site.tls.certificate,
            key=site.tls.key,
            min_version=site.tls.min_version,
            client_auth=site.tls.client_auth,
            client_ca=site.tls.client_ca,
        )
        for site in config.site
        if site.tls is not None
    ]
    return ListenerTLS(sites, ["h2", "http/1.1"] if http2 else ["http/1.1"])


class CountingRegistry(ConnectionRegistry):
    """The open client connections, telling `on_change` their number as it changes."""

    def __init__(self) -> None:
        super().__init__()
        self.on_change: Callable[[int], None] | None = None

    def add(self, conn: ClientConnection) -> None:
        super().add(conn)
        if self.on_change is not None:
            self.on_change(len(self.connections))

    def discard(self, conn: ClientConnection) -> None:
        super().discard(conn)
        if self.on_change is not None:
            self.on_change(len(self.connections))
