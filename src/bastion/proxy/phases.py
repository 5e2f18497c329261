"""The request-lifecycle phases a feature (filter) plugs into, and the local reply.

A filter subclasses `Filter` and overrides only the phases it needs; the plan records, per
route, which filters implement which phase, so the core never asks "is feature X on?". Header
phases may answer the request themselves by returning a `LocalReply`. Filters are built once
per route and are immutable; per-request state lives on the `RequestContext`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.http.events import Headers, ResponseHead

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response bastion makes itself (redirect, error, refusal)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    flag: str = "local"


class Filter:
    """Base of every feature; each phase is a no-op until a subclass overrides it."""

    name = "filter"

    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        """After routing: may edit `ctx`, or answer with a LocalReply."""
        return None

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        """Last edit of the header list the origin will see."""

    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        """Edit the response head before it goes to the client (proxied and local)."""


def implementing(filters: tuple[Filter, ...], phase: str) -> tuple[Filter, ...]:
    """The filters that override `phase` — computed once per route, at plan time."""
    base = getattr(Filter, phase)
    return tuple(f for f in filters if getattr(type(f), phase) is not base)
