"""Calling a hook in each phase: the views prepared, the result checked and converted.

This is the side bastion uses (bastion.filters.hooks), not hook authors. Each function
puts the request's view in the right stage, calls one hook method and turns what it
returned into what the core expects. Whatever the hook raises goes through untouched: the
caller decides what a failure means for the request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bastion.hooks.hook import Hook, LogEntry, Reply
from bastion.hooks.request import Request, Stage
from bastion.hooks.response import Response
from bastion.http.events import Headers, ResponseHead
from bastion.proxy.phases import LocalReply

if TYPE_CHECKING:
    from bastion.proxy.context import RequestContext
    from bastion.proxy.exchange import Exchange
    from bastion.proxy.plan import UpstreamPlan

HOOK_REPLY_FLAG = "hook_reply"  # the access-log flag of a request a hook answered


def request_of(ctx: RequestContext, upstreams: Mapping[str, UpstreamPlan]) -> Request:
    """The request's view, made on first use (before routing when ctx has no route yet)."""
    request = ctx.hook_request
    if isinstance(request, Request):
        return request
    stage = Stage.BEFORE_ROUTING if ctx.route is None else Stage.ROUTED
    made = Request(ctx, upstreams, stage)
    ctx.hook_request = made
    return made


def has_failed(request: Request) -> bool:
    """Whether a hook failed during this request (the others then stand aside)."""
    return request._failed


def mark_failed(request: Request) -> None:
    request._failed = True


def on_request(hook: Hook, request: Request, *, before_routing: bool) -> LocalReply | None:
    request._enter(Stage.BEFORE_ROUTING if before_routing else Stage.ROUTED)
    reply = hook.on_request(request)
    if reply is None:
        return None
    if not isinstance(reply, Reply):
        raise TypeError(f"on_request returned {type(reply).__name__}, expected a Reply or None")
    return LocalReply(reply.status, list(reply.headers), reply.body, HOOK_REPLY_FLAG)


def apply_choice(ctx: RequestContext) -> None:
    """After routing: the upstream a server hook chose before it replaces the route's."""
    request = ctx.hook_request
    if isinstance(request, Request) and request._chosen is not None:
        ctx.upstream = request._chosen


def before_upstream(hook: Hook, request: Request, headers: Headers) -> None:
    request._enter(Stage.TO_ORIGIN, headers)
    try:
        hook.before_upstream(request)
    finally:
        request._enter(Stage.ANSWERING)


def response_of(request: Request, head: ResponseHead) -> Response:
    """The view of `head`, shared by the hooks of this request (a new head, a new view)."""
    response = request._response
    if response is None or not response._is_for(head):
        response = request._response = Response(head)
    return response


def on_response(hook: Hook, request: Request, head: ResponseHead) -> None:
    request._enter(Stage.ANSWERING)
    hook.on_response(request, response_of(request, head))


def wants_body(hook: Hook, request: Request, head: ResponseHead) -> Response | None:
    """The response view when `hook` wants to see this body, else None."""
    request._enter(Stage.ANSWERING)
    response = response_of(request, head)
    return response if hook.wants_body(request, response) else None


def on_body_chunk(
    hook: Hook, request: Request, response: Response, chunk: bytes, last: bool
) -> bytes:
    response._seal()
    out = hook.on_body_chunk(request, response, chunk, last)
    if not isinstance(out, bytes):
        if isinstance(out, bytearray | memoryview):
            return bytes(out)
        raise TypeError(f"on_body_chunk returned {type(out).__name__}, expected bytes")
    return out


def on_log(hook: Hook, request: Request, ex: Exchange) -> None:
    request._enter(Stage.ANSWERING)
    response = request._response
    if response is not None:
        response._seal()
    entry = request._log_entry
    if entry is None:
        entry = request._log_entry = log_entry(ex)
    hook.on_log(request, entry)


def log_entry(ex: Exchange) -> LogEntry:
    ctx = ex.ctx
    return LogEntry(
        request_id=ctx.request_id,
        status=ex.status,
        bytes_out=ex.bytes_out,
        duration=time.monotonic() - ctx.started,
        upstream=ctx.upstream.name if ctx.upstream is not None else None,
        server=ctx.server.label if ctx.server is not None else None,
        flag=ctx.flag,
    )
