"""Builds a route's filter chain from its settings, once per plan, and the plan itself.

The order here is the order filters run within each phase. Server-wide filters (the
`[server] hooks`) run before every route's own, in every phase.
"""

from __future__ import annotations

from bastion.config.model import BastionConfig, RouteSettings, SiteSettings
from bastion.filters.client_cert import ClientCertificates
from bastion.filters.forwarded import ForwardedHeaders
from bastion.filters.header_policy import header_policy_filters
from bastion.filters.hooks import (
    HookSetupError,
    hook_config_error,
    route_hook_filters,
    server_hook_filters,
)
from bastion.filters.hsts import StrictTransportSecurity
from bastion.filters.redirect import Redirect
from bastion.filters.rewrite import SentHost, rewrite_filters
from bastion.filters.strip_prefix import StripPrefix
from bastion.proxy.phases import Filter
from bastion.proxy.plan import Plan, Upstreams, build_plan


def compile_plan(config: BastionConfig) -> Plan:
    """The plan `config` is served by, every filter built: what `bastion run` and a reload
    serve and what `bastion check` tries. ConfigError when a filter cannot be made (a hook
    refusing its options), naming its key path."""
    try:
        return build_plan(config, route_filters, server_filters)
    except HookSetupError as failure:
        raise hook_config_error(config, failure) from None


def server_filters(config: BastionConfig, upstreams: Upstreams) -> tuple[Filter, ...]:
    return server_hook_filters(config, upstreams)


def route_filters(
    site: SiteSettings, route: RouteSettings, upstreams: Upstreams
) -> tuple[Filter, ...]:
    filters: list[Filter] = []
    if route.redirect is not None:
        filters.append(Redirect(route.redirect.to, route.redirect.status))
    if route.strip_prefix:
        filters.append(StripPrefix(route.path.encode()))
    filters.append(ForwardedHeaders(route.forwarded))
    tls = site.tls
    if tls is not None and tls.client_auth != "off":
        send = route.client_cert_headers if route.client_cert_headers is not None else True
        filters.append(ClientCertificates(tls.client_auth, tls.client_ca, send))
    # After forwarded and client_cert (their headers may be edited), before hsts (the
    # site's tls.hsts wins over an origin's header the policy left).
    filters.extend(header_policy_filters(route.headers))
    if tls is not None and tls.hsts:
        filters.append(StrictTransportSecurity(tls.hsts))
    rewriting = rewrite_filters(route.rewrite) if route.upstream is not None else ()
    filters.extend(rewriting)
    # Last: user hooks see (and may override) what every built-in filter did.
    filters.extend(route_hook_filters(route, upstreams))
    if rewriting:
        filters.append(SentHost())  # after every edit of the Host the origin gets
    return tuple(filters)
