"""Builds a route's filter chain from its settings, once per plan.

The order here is the order filters run within each phase.
"""

from __future__ import annotations

from bastion.config.model import RouteSettings, SiteSettings
from bastion.filters.client_cert import ClientCertificates
from bastion.filters.forwarded import ForwardedHeaders
from bastion.filters.hsts import StrictTransportSecurity
from bastion.filters.redirect import Redirect
from bastion.filters.strip_prefix import StripPrefix
from bastion.proxy.phases import Filter
from bastion.proxy.plan import Upstreams


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
    if tls is not None and tls.hsts:
        filters.append(StrictTransportSecurity(tls.hsts))
    return tuple(filters)
