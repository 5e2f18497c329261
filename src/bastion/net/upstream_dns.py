"""Keeps an upstream's DNS-named servers current: the bridge from `resolver` to the runtime.

An upstream whose servers are all IP literals gets nothing here (no task, no cost). For the
others, `UpstreamDns` runs one `ServerSetWatcher` per named entry (a host name, or an SRV
name), every `resolve` interval of the upstream, and hands the runtime the whole set each time
an entry's addresses change: the static servers, then every entry's resolved addresses. A host
name's addresses each take the entry's weight and limits; an SRV name's lowest priority is
primary and the others backups, its weights multiply the entry's. A failed resolution keeps
the last good addresses (the watcher's rule); a name never resolved gives no server yet.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable

import dns.asyncresolver

from bastion.net.resolver import (
    DnsTarget,
    ResolvedServer,
    ResolveError,
    Scheme,
    ServerSetWatcher,
    make_srv_resolver,
    resolve_target,
)
from bastion.proxy.plan import Plan, UpstreamPlan
from bastion.proxy.server_set import NamedEntry, ServerSpec
from bastion.units import Address

log = logging.getLogger(__name__)


def entry_specs(entry: NamedEntry, servers: Iterable[ResolvedServer]) -> list[ServerSpec]:
    """The servers one named entry stands for, given what its name resolved to."""
    found = list(servers)
    if not entry.srv:
        return [entry.spec(s.address, s.port, s.host_name) for s in found]
    primary = min((s.priority for s in found), default=0)
    specs = []
    for s in found:
        spec = entry.spec(s.address, s.port, s.host_name, s.weight)
        if s.priority != primary and not spec.backup:
            spec = ServerSpec(
                spec.scheme,
                spec.address,
                spec.port,
                spec.identity,
                spec.tls_name,
                spec.weight,
                spec.max_conns,
                backup=True,
            )
        specs.append(spec)
    return specs


def _target(entry: NamedEntry) -> DnsTarget:
    scheme: Scheme = "https" if entry.scheme == "https" else "http"
    if entry.srv:
        return DnsTarget.for_srv(entry.name, scheme)
    return DnsTarget(scheme, entry.name, entry.port)


class UpstreamDns:
    """The watchers of one upstream's named servers, feeding its runtime."""

    def __init__(
        self, upstream: UpstreamPlan, srv_resolver: dns.asyncresolver.Resolver | None
    ) -> None:
        self.upstream = upstream
        runtime = upstream.runtime
        self._resolved: dict[NamedEntry, list[ServerSpec]] = {}
        resolve = functools.partial(resolve_target, srv_resolver=srv_resolver)
        self._watchers = [
            ServerSetWatcher(
                [_target(entry)],
                upstream.resolve,
                functools.partial(self._changed, entry),
                resolve=resolve,
                label=f"upstream {upstream.name}",
            )
            for entry in runtime.named
        ]

    def seed(self, previous: UpstreamDns) -> None:
        """Start from what `previous` (the same upstream before a reload) resolved."""
        for entry, specs in previous._resolved.items():
            if entry in self.upstream.runtime.named:
                self._resolved[entry] = specs
        if self._resolved:
            self._apply()

    async def start(self) -> None:
        """Resolve every name once (in parallel), then keep re-resolving."""
        rounds = await asyncio.gather(*(watcher.start() for watcher in self._watchers))
        for failures in rounds:
            for target, why in failures.items():
                log.error(
                    "upstream %s: %s does not resolve (%s): no server from it until it does",
                    self.upstream.name,
                    target,
                    why,
                )

    async def stop(self) -> None:
        for watcher in self._watchers:
            await watcher.stop()

    def _changed(self, entry: NamedEntry, servers: list[ResolvedServer]) -> None:
        self._resolved[entry] = entry_specs(entry, servers)
        self._apply()

    def _apply(self) -> None:
        runtime = self.upstream.runtime
        named = [spec for entry in runtime.named for spec in self._resolved.get(entry, [])]
        runtime.replace_servers([*runtime.static, *named])


class DnsWatchers:
    """Every upstream's `UpstreamDns` for one plan; nothing for upstreams without names."""

    def __init__(self, plan: Plan, resolver: Address | None) -> None:
        named = [up for up in plan.upstreams.values() if up.runtime.named]
        needs_srv = any(entry.srv for up in named for entry in up.runtime.named)
        srv_resolver = None
        try:
            if needs_srv and resolver is not None:
                srv_resolver = make_srv_resolver(resolver.host, resolver.port)
            elif needs_srv:
                srv_resolver = make_srv_resolver()
        except ResolveError as error:
            log.error("%s; SRV names will not resolve", error)
        self.upstreams = {up.name: UpstreamDns(up, srv_resolver) for up in named}

    def seed(self, previous: DnsWatchers | None) -> None:
        """After a reload: start each upstream from the addresses the old plan had."""
        if previous is not None:
            for name, dns_ in self.upstreams.items():
                old = previous.upstreams.get(name)
                if old is not None:
                    dns_.seed(old)

    async def start(self) -> None:
        await asyncio.gather(*(upstream.start() for upstream in self.upstreams.values()))

    async def stop(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.stop()
