"""The JSON views both admin implementations build: sites and routes from a configuration,
servers from an upstream's live runtime, a reload's result, a file's hash.

Pure functions over objects handed in: no sockets, no asyncio, no clock of their own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bastion.admin.source import (
    HealthName,
    ReloadResult,
    RouteInfo,
    ServerInfo,
    ServerStateName,
    SiteInfo,
    UpstreamInfo,
)
from bastion.config import BastionConfig
from bastion.proxy.upstream_runtime import UpstreamRuntime


def file_hash(path: str) -> str | None:
    """sha256 (hex) of the file's bytes; None when there is no such readable file."""
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def site_infos(config: BastionConfig) -> list[SiteInfo]:
    """Every site with its routes, in file order."""
    return [
        SiteInfo(
            hosts=list(site.hosts),
            tls=site.tls is not None,
            routes=[
                RouteInfo(
                    path=route.path_regex if route.path_regex is not None else route.path,
                    regex=route.path_regex is not None,
                    methods=list(route.methods) if route.methods is not None else None,
                    upstream=route.upstream,
                    redirect=route.redirect.to if route.redirect is not None else None,
                )
                for route in site.route
            ],
        )
        for site in config.site
    ]


def server_state(drained: bool, health: HealthName, ejected: bool) -> ServerStateName:
    """The one word for a server: the first of drained, down, ejected that applies, else up."""
    if drained:
        return "drained"
    if health == "down":
        return "down"
    return "ejected" if ejected else "up"


def runtime_upstream(
    runtime: UpstreamRuntime, balance: str, monotonic_now: float, wall_now: float
) -> UpstreamInfo:
    """One upstream as its in-process runtime knows it (times: monotonic → wall clock)."""
    servers: list[ServerInfo] = []
    for state in runtime.states:
        health = runtime.healths.get(state.index)
        verdict: HealthName = "unchecked"
        ejected_until: float | None = None
        drained = False
        if health is not None:
            drained = health.drained
            if health.active is not None:
                verdict = "up" if health.active.up else "down"
            passive = health.passive
            if passive is not None and passive.ejected:
                ejected_until = wall_now + max(passive.ejected_until - monotonic_now, 0.0)
        servers.append(
            ServerInfo(
                index=state.index,
                label=state.label,
                state=server_state(drained, verdict, ejected_until is not None),
                health=verdict,
                health_detail=runtime.check_details.get(state.index, ""),
                ejected_until=ejected_until,
                in_flight=state.in_flight,
                latency_ms=round(state.latency * 1000.0, 3),
                weight=state.weight,
                max_conns=state.max_conns,
                backup=state.backup,
                drained=drained,
            )
        )
    return UpstreamInfo(name=runtime.name, balance=balance, servers=servers)


def reload_result(
    ok: bool, when: float, error: str | None, config_hash: str | None, generation: int
) -> ReloadResult:
    return ReloadResult(
        ok=ok, time=when, error=error, config_hash=config_hash, generation=generation
    )
