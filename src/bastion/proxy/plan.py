"""The immutable serving plan compiled from a validated configuration.

A `Plan` is built once per (re)load: the router with each route's compiled filter chain,
the upstreams with their servers, and the limits. Nothing is decided from configuration per
request: the core reads precomputed fields. A reload builds a whole new Plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bastion.config.balancing import status_bounds
from bastion.config.model import (
    BastionConfig,
    RouteSettings,
    SiteSettings,
    UpstreamSettings,
)
from bastion.http.forwarded import TrustedProxies
from bastion.proxy.phases import Filter, implementing
from bastion.proxy.router import Router, RouteRule, SiteRules
from bastion.proxy.server_set import ServerPlan as ServerPlan
from bastion.proxy.upstream_runtime import UpstreamRuntime


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """What one upstream's checks send and accept."""

    path: str
    interval: float
    timeout: float
    low: int  # lowest passing status
    high: int  # highest passing status


@dataclass(frozen=True, slots=True)
class UpstreamPlan:
    """A named group of origin servers and how bastion talks to them."""

    name: str
    runtime: UpstreamRuntime  # the live state: servers, their choice, health, stickiness, queue
    connect_timeout: float
    read_timeout: float
    write_timeout: float
    tunnel_idle_timeout: float
    health: CheckSpec | None = None  # active checks, run by the server for every upstream
    pin_auth: bool = True
    resolve: float = 30.0  # how often DNS names among the servers are resolved again

    @property
    def servers(self) -> tuple[ServerPlan, ...]:
        """The current servers (DNS may change them: ask again rather than keep this)."""
        runtime = self.runtime
        return tuple(runtime.server_plan(state) for state in runtime.states)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """One route with its filter chain split by phase."""

    label: str  # the route's path or regex, for logs
    site: str
    client_auth: str  # the site's client-certificate mode: "off", "optional", "required"
    upstream: UpstreamPlan | None
    max_body: int
    websocket: bool
    request_filters: tuple[Filter, ...]
    upstream_filters: tuple[Filter, ...]
    response_filters: tuple[Filter, ...]
    body_filters: tuple[Filter, ...] = ()
    finished_filters: tuple[Filter, ...] = ()
    routed: bool = True  # False: `Plan.unrouted`, the stand-in for requests no route took


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_size: int
    max_uri_size: int
    header_timeout: float
    keepalive_timeout: float
    body_timeout: float
    graceful_timeout: float


@dataclass(frozen=True, slots=True)
class Plan:
    router: Router[CompiledRoute]
    upstreams: dict[str, UpstreamPlan]
    limits: Limits
    trusted: TrustedProxies
    client_auth_anywhere: bool = False  # some site checks client certificates
    # Server-wide filters (hooks) that see every request before routing.
    received_filters: tuple[Filter, ...] = ()
    # Answers to requests no route took (404, 405, a bad target, a reply before routing)
    # still pass the server-wide filters' response and log phases through this stand-in.
    unrouted: CompiledRoute = field(default_factory=lambda: _unrouted(()))


Upstreams = Mapping[str, UpstreamPlan]
FilterBuilder = Callable[[SiteSettings, RouteSettings, Upstreams], tuple[Filter, ...]]
ServerFilterBuilder = Callable[[BastionConfig, Upstreams], tuple[Filter, ...]]


def _no_server_filters(config: BastionConfig, upstreams: Upstreams) -> tuple[Filter, ...]:
    return ()


def build_plan(
    config: BastionConfig,
    route_filters: FilterBuilder,
    server_filters: ServerFilterBuilder = _no_server_filters,
) -> Plan:
    """Compile `config`; `route_filters` builds each route's filters and `server_filters`
    those every request meets (both from bastion.filters). Server-wide filters run first
    in every phase, and alone before routing (`request_received`)."""
    upstreams = {name: _upstream_plan(name, up) for name, up in config.upstream.items()}
    everywhere = server_filters(config, upstreams)
    sites = []
    for site in config.site:
        site_name = site.hosts[0]
        client_auth = site.tls.client_auth if site.tls is not None else "off"
        rules = tuple(
            _route_rule(
                route,
                site_name,
                client_auth,
                upstreams,
                everywhere + route_filters(site, route, upstreams),
            )
            for route in site.route
        )
        sites.append(SiteRules(hosts=tuple(site.hosts), routes=rules, name=site_name))
    server = config.server
    limits = Limits(
        max_header_size=server.max_header_size,
        max_uri_size=server.max_uri_size,
        header_timeout=server.header_timeout,
        keepalive_timeout=server.keepalive_timeout,
        body_timeout=server.body_timeout,
        graceful_timeout=server.graceful_timeout,
    )
    return Plan(
        router=Router(sites),
        upstreams=upstreams,
        limits=limits,
        trusted=TrustedProxies(list(server.trusted_proxies)),
        client_auth_anywhere=any(
            site.tls is not None and site.tls.client_auth != "off" for site in config.site
        ),
        received_filters=implementing(everywhere, "request_received"),
        unrouted=_unrouted(everywhere),
    )


def _unrouted(everywhere: tuple[Filter, ...]) -> CompiledRoute:
    return CompiledRoute(
        label="-",
        site="-",
        client_auth="off",
        upstream=None,
        max_body=0,
        websocket=False,
        request_filters=(),
        upstream_filters=(),
        response_filters=implementing(everywhere, "response_headers"),
        finished_filters=implementing(everywhere, "request_finished"),
        routed=False,
    )


def _upstream_plan(name: str, settings: UpstreamSettings) -> UpstreamPlan:
    health = settings.health
    check = None
    if health is not None:
        low, high = status_bounds(health.expect_status)
        check = CheckSpec(health.path, health.interval, health.timeout, low, high)
    return UpstreamPlan(
        name=name,
        runtime=UpstreamRuntime(name, settings),
        connect_timeout=settings.timeouts.connect,
        read_timeout=settings.timeouts.read,
        write_timeout=settings.timeouts.write,
        tunnel_idle_timeout=settings.timeouts.idle,
        health=check,
        pin_auth=settings.pin_auth,
        resolve=settings.resolve,
    )


def _route_rule(
    route: RouteSettings,
    site_name: str,
    client_auth: str,
    upstreams: dict[str, UpstreamPlan],
    filters: tuple[Filter, ...],
) -> RouteRule[CompiledRoute]:
    compiled = CompiledRoute(
        label=route.path_regex or route.path,
        site=site_name,
        client_auth=client_auth,
        upstream=upstreams[route.upstream] if route.upstream else None,
        max_body=route.max_body,
        websocket=route.websocket,
        request_filters=implementing(filters, "request_headers"),
        upstream_filters=implementing(filters, "upstream_request"),
        response_filters=implementing(filters, "response_headers"),
        body_filters=implementing(filters, "response_body"),
        finished_filters=implementing(filters, "request_finished"),
    )
    methods = _methods(route.methods)
    if route.path_regex is not None:
        return RouteRule(
            target=compiled,
            prefix=None,
            regex=re.compile(route.path_regex.encode()),
            methods=methods,
        )
    return RouteRule(target=compiled, prefix=route.path.encode(), methods=methods)


def _methods(configured: tuple[str, ...] | None) -> frozenset[bytes] | None:
    """The methods a route accepts; HEAD comes with GET, as every server treats it."""
    if not configured:
        return None
    methods = {m.encode() for m in configured}
    if b"GET" in methods:
        methods.add(b"HEAD")
    return frozenset(methods)
