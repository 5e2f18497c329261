"""The request-lifecycle phases a feature (filter) plugs into, and the local reply.

A filter subclasses `Filter` and overrides only the phases it needs; the plan records, per
route, which filters implement which phase, so the core never asks "is feature X on?". Header
phases may answer the request themselves by returning a `LocalReply`. Filters are built once
per route and are immutable; per-request state lives on the `RequestContext` (or in the
`BodyTransform` a filter returns for one response).

The phases, in the order a request meets them:

1. `request_received` — before routing; only server-wide filters (hooks) get it.
2. `request_headers` — after routing; may answer.
3. `upstream_request` — the last edit of the header list the origin sees.
4. `response_headers` — the response head, proxied or local, before the client sees it.
5. `response_body` — a proxied response with a body: a filter may return a `BodyTransform`
   through which every body byte then passes (the core drops Content-Length and frames the
   body chunked).
6. `request_finished` — the request is over and logged (hooks' `on_log`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bastion.http.events import Headers, ResponseHead

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.exchange import Exchange


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response bastion makes itself (redirect, error, refusal)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    flag: str = "local"


class BodyTransform(Protocol):
    """Rewrites one response body as it streams: bytes in, bytes out, bounded memory.

    `feed` may hold back a tail (e.g. a URL cut in two by a read) and return less than it
    was given, even nothing; `end` returns what is left. Raising `ProxyError` (or any
    exception) ends the exchange: the client connection is cut, as the body is unusable.
    """

    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...


class Filter:
    """Base of every feature; each phase is a no-op until a subclass overrides it."""

    name = "filter"

    def request_received(self, ctx: RequestContext) -> LocalReply | None:
        """Before routing (server-wide filters only): may edit the request, or answer."""
        return None

    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        """After routing: may edit `ctx`, or answer with a LocalReply."""
        return None

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        """Last edit of the header list the origin will see."""

    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        """Edit the response head before it goes to the client (proxied and local)."""

    def response_body(self, ctx: RequestContext, head: ResponseHead) -> BodyTransform | None:
        """A proxied response with a body: return a transform to rewrite it, or None."""
        return None

    def request_finished(self, ex: Exchange) -> None:
        """The request is over and logged: read-only look at how it went."""


def implementing(filters: tuple[Filter, ...], phase: str) -> tuple[Filter, ...]:
    """The filters that override `phase` — computed once per route, at plan time."""
    base = getattr(Filter, phase)
    return tuple(f for f in filters if getattr(type(f), phase) is not base)
