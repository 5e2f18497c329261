"""Builds a route's filter chain from its settings, once per plan.

The order here is the order filters run within each phase.
"""

from __future__ import annotations

from bastion.config.model import RouteSettings
from bastion.filters.forwarded import ForwardedHeaders
from bastion.filters.redirect import Redirect
from bastion.filters.strip_prefix import StripPrefix
from bastion.proxy.phases import Filter


def route_filters(route: RouteSettings) -> tuple[Filter, ...]:
    filters: list[Filter] = []
    if route.redirect is not None:
        filters.append(Redirect(route.redirect.to, route.redirect.status))
    if route.strip_prefix:
        filters.append(StripPrefix(route.path.encode()))
    filters.append(ForwardedHeaders(route.forwarded))
    return tuple(filters)
