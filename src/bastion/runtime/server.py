"""Wires one serving process: plan, pipeline, listeners, logs, graceful stop and reload.

`ProxyServer` is what `bastion run` starts and what the integration tests start in-process:
it binds every listener (port 0 allowed; `addresses` tells the real ones), serves until
`stop()`, and swaps in a new plan on `reload()` without touching open connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from bastion.config import BastionConfig, load_config
from bastion.errors import ConfigError
from bastion.filters.chain import compile_plan
from bastion.http.h2_server import H2Limits
from bastion.net.downstream import ConnectionRegistry, PipelineRef
from bastion.net.health_check import HealthChecker
from bastion.net.listener import connection_factory
from bastion.net.proxy_header import ProxyProtocolListener
from bastion.net.tls import ListenerTLS, SiteCertificate
from bastion.net.upstream import UpstreamConnector
from bastion.net.upstream_dns import DnsWatchers
from bastion.observe.access_log import AccessLog
from bastion.observe.request_log import AccessLogger
from bastion.proxy.context import ListenerInfo
from bastion.proxy.pipeline import Pipeline
from bastion.proxy.plan import Plan

log = logging.getLogger(__name__)


class ProxyServer:
    """A running bastion: listeners, the current pipeline, the origin connection pool."""

    def __init__(self, config: BastionConfig) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.connector = UpstreamConnector(self.loop)
        self.registry = ConnectionRegistry()
        self.access_log = AccessLog(
            config.log.access, config.log.format, schedule=self.loop.call_soon
        )
        self.pipeline_ref = PipelineRef(self._pipeline(config))
        self.checkers: list[HealthChecker] = []
        self.dns = DnsWatchers(self.pipeline_ref.pipeline.plan, config.server.resolver)
        self._dns_swaps: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.Server] = []
        self.stopped = asyncio.Event()

    def _pipeline(self, config: BastionConfig) -> Pipeline:
        plan = compile_plan(config)
        sinks = [AccessLogger(self.access_log)] if self.access_log.enabled else []
        return Pipeline(plan, self.connector, sinks)

    def _start_checks(self, plan: Plan) -> None:
        """Active health checks of the upstreams that have them (the old ones stop)."""
        for checker in self.checkers:
            checker.stop()
        self.checkers = [
            HealthChecker(upstream, upstream.health, self.connector, upstream.runtime)
            for upstream in plan.upstreams.values()
            if upstream.health is not None
        ]
        for checker in self.checkers:
            checker.start()

    async def _swap_dns(self, old: DnsWatchers, new: DnsWatchers) -> None:
        await old.stop()
        await new.start()

    async def start(self) -> None:
        await self.dns.start()  # the first resolution, before serving
        self._start_checks(self.pipeline_ref.pipeline.plan)
        for listen in self.config.listen:
            address = listen.address
            tls = listener_tls(self.config, listen.offers_h2) if listen.tls else None
            context = tls.context if tls is not None else None
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
            if address.unix_path is not None:
                server = await self.loop.create_unix_server(factory, address.unix_path, ssl=context)
            else:
                server = await self.loop.create_server(
                    factory,
                    address.host,
                    address.port,
                    reuse_address=True,
                    backlog=1024,
                    ssl=context,
                    ssl_handshake_timeout=self.config.server.header_timeout if context else None,
                )
            self.servers.append(server)
            log.info("listening on %s", ", ".join(self.addresses_of(server)))

    @staticmethod
    def addresses_of(server: asyncio.Server) -> list[str]:
        found = []
        for sock in server.sockets:
            name = sock.getsockname()
            found.append(f"{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix:{name}")
        return found

    @property
    def ports(self) -> list[int]:
        """The TCP ports actually bound, in listener order (useful with port 0)."""
        return [s.sockets[0].getsockname()[1] for s in self.servers if s.sockets]

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
        for server in self.servers:
            server.close()
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


async def serve_forever(path: Path) -> int:
    """`bastion run`: serve until SIGTERM/SIGINT; SIGHUP reloads, SIGUSR1 reopens logs."""
    import signal

    config = load_config(path)
    server = ProxyServer(config)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    # Before the listeners announce themselves: a signal sent as soon as "listening on"
    # appears must find its handler (SIGHUP's default action would end the process).
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: server.reload(path))
    loop.add_signal_handler(signal.SIGUSR1, server.access_log.reopen)
    await server.start()
    await stopping.wait()
    log.info("stopping: letting in-flight requests finish")
    await server.stop()
    log.info("stopped")
    return 0
