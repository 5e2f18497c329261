"""Python hooks plugged into the request lifecycle, and what a failing hook costs.

Each hook method a hook overrides becomes one small filter on the phase it belongs to, so a
route pays only for the methods its hooks have (nothing without hooks):

| hook method | phase | filter |
|---|---|---|
| `on_request` of a server hook | `request_received` (before routing) | `OnRequestBeforeRouting` |
| the upstream a server hook chose | `request_headers` | `ChosenUpstream` |
| `on_request` of a route hook | `request_headers` | `OnRequest` |
| `before_upstream` | `upstream_request` | `BeforeUpstream` |
| `on_response` | `response_headers` | `OnResponse` |
| `wants_body` + `on_body_chunk` | `response_body` | `BodyChunks` |
| `on_log` | `request_finished` | `OnLog` |

A hook that raises is logged once (traceback, hook, phase, request id) and the request pays:
in the header phases it is answered 500 (a `ProxyError` of kind `HOOK_FAILED`); in the body
the client connection is cut, as bytes are out; in `on_log` nothing more. After a failure no
hook runs for that request any more, except `on_log`, so bastion's own error answer cannot
fail again.

Hooks are made here, once per plan (at start, on reload, and by `bastion check`): a hook
that cannot be made raises `HookSetupError`, which `hook_config_error` turns into a
`ConfigError` naming the entry's key path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.config.hooks import HookSpec
from bastion.config.load import key_path
from bastion.config.model import BastionConfig, RouteSettings, ServerSettings
from bastion.errors import ConfigError, ConfigProblem, ErrorKind, ProxyError
from bastion.hooks import invoke
from bastion.hooks.hook import Hook
from bastion.hooks.loading import make_hook, overrides
from bastion.hooks.request import Request
from bastion.hooks.response import Response
from bastion.http.events import Headers, ResponseHead
from bastion.proxy.context import RequestContext
from bastion.proxy.exchange import Exchange
from bastion.proxy.phases import BodyTransform, Filter, LocalReply
from bastion.proxy.plan import Upstreams

log = logging.getLogger(__name__)


class HookSetupError(Exception):
    """A configured hook that cannot be made; `spec` is its entry in the configuration."""

    def __init__(self, spec: HookSpec, message: str) -> None:
        super().__init__(message)
        self.spec = spec
        self.message = message


class HookPhase(Filter):
    """One hook method on its phase; subclasses override the phase they serve."""

    def __init__(self, hook: Hook, label: str, upstreams: Upstreams) -> None:
        self.hook = hook
        self.label = label  # the configured "package.module:Name"
        self.name = f"hook {label}"
        self.upstreams = upstreams

    def request(self, ctx: RequestContext) -> Request:
        return invoke.request_of(ctx, self.upstreams)

    def failed(self, request: Request, method: str, outcome: str) -> ProxyError:
        """Log the exception being handled and stand every hook aside for this request."""
        log.exception(
            "hook %s failed in %s (request %s): %s",
            self.label,
            method,
            request.request_id,
            outcome,
        )
        invoke.mark_failed(request)
        return ProxyError(ErrorKind.HOOK_FAILED, f"hook {self.label} failed in {method}")


class OnRequestBeforeRouting(HookPhase):
    def request_received(self, ctx: RequestContext) -> LocalReply | None:
        request = self.request(ctx)
        if invoke.has_failed(request):
            return None
        try:
            return invoke.on_request(self.hook, request, before_routing=True)
        except Exception:
            raise self.failed(request, "on_request", "answered 500") from None


class ChosenUpstream(Filter):
    """After routing: the upstream a server hook chose before it replaces the route's."""

    name = "hook upstream choice"

    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        invoke.apply_choice(ctx)
        return None


class OnRequest(HookPhase):
    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        request = self.request(ctx)
        if invoke.has_failed(request):
            return None
        try:
            return invoke.on_request(self.hook, request, before_routing=False)
        except Exception:
            raise self.failed(request, "on_request", "answered 500") from None


class BeforeUpstream(HookPhase):
    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        request = self.request(ctx)
        if invoke.has_failed(request):
            return
        try:
            invoke.before_upstream(self.hook, request, headers)
        except Exception:
            raise self.failed(request, "before_upstream", "answered 500") from None


class OnResponse(HookPhase):
    def response_headers(self, ctx: RequestContext, head: ResponseHead) -> None:
        request = self.request(ctx)
        if invoke.has_failed(request):
            return
        try:
            invoke.on_response(self.hook, request, head)
        except Exception:
            raise self.failed(request, "on_response", "answered 500") from None


class BodyChunks(HookPhase):
    def response_body(self, ctx: RequestContext, head: ResponseHead) -> BodyTransform | None:
        request = self.request(ctx)
        if invoke.has_failed(request):
            return None
        try:
            response = invoke.wants_body(self.hook, request, head)
        except Exception:
            raise self.failed(request, "wants_body", "answered 500") from None
        return None if response is None else ChunkTransform(self, request, response)


class ChunkTransform:
    """A response body through one hook's `on_body_chunk` (a `BodyTransform`)."""

    __slots__ = ("phase", "request", "response")

    def __init__(self, phase: BodyChunks, request: Request, response: Response) -> None:
        self.phase = phase
        self.request = request
        self.response = response

    def feed(self, data: bytes) -> bytes:
        return self._call(data, last=False)

    def end(self) -> bytes:
        return self._call(b"", last=True)

    def _call(self, chunk: bytes, *, last: bool) -> bytes:
        try:
            return invoke.on_body_chunk(self.phase.hook, self.request, self.response, chunk, last)
        except Exception:
            outcome = "client connection cut (the response had started)"
            raise self.phase.failed(self.request, "on_body_chunk", outcome) from None


class OnLog(HookPhase):
    def request_finished(self, ex: Exchange) -> None:
        request = self.request(ex.ctx)
        try:
            invoke.on_log(self.hook, request, ex)
        except Exception:
            log.exception(
                "hook %s failed in on_log (request %s): nothing else affected",
                self.label,
                request.request_id,
            )


def route_hook_filters(route: RouteSettings, upstreams: Upstreams) -> tuple[Filter, ...]:
    """The filters of a route's hooks, in list order (raises HookSetupError)."""
    return _hook_filters(route.hooks, route.hook_options, upstreams, server=False)


def server_hook_filters(config: BastionConfig, upstreams: Upstreams) -> tuple[Filter, ...]:
    """The filters of `[server] hooks`, which every request meets (raises HookSetupError)."""
    server = config.server
    return _hook_filters(server.hooks, server.hook_options, upstreams, server=True)


def _hook_filters(
    specs: Sequence[HookSpec],
    default_options: Mapping[str, Any],
    upstreams: Upstreams,
    *,
    server: bool,
) -> tuple[Filter, ...]:
    filters: list[Filter] = []
    for spec in specs:
        options = spec.options if spec.options is not None else default_options
        try:
            hook = make_hook(spec.hook, options)
        except ValueError as error:
            raise HookSetupError(spec, str(error)) from None
        filters += _phases_of(hook, spec.hook, upstreams, server=server)
    if server and any(isinstance(f, OnRequestBeforeRouting) for f in filters):
        filters.insert(0, ChosenUpstream())
    return tuple(filters)


def _phases_of(hook: Hook, label: str, upstreams: Upstreams, *, server: bool) -> list[Filter]:
    """One filter per method `hook` overrides."""
    phases: list[Filter] = []
    if overrides(hook, "on_request"):
        kind = OnRequestBeforeRouting if server else OnRequest
        phases.append(kind(hook, label, upstreams))
    if overrides(hook, "before_upstream"):
        phases.append(BeforeUpstream(hook, label, upstreams))
    if overrides(hook, "on_response"):
        phases.append(OnResponse(hook, label, upstreams))
    if overrides(hook, "on_body_chunk"):
        phases.append(BodyChunks(hook, label, upstreams))
    if overrides(hook, "on_log"):
        phases.append(OnLog(hook, label, upstreams))
    return phases


def hook_config_error(config: BastionConfig, failure: HookSetupError) -> ConfigError:
    """The ConfigError for a hook that could not be made, at its entry's key path."""
    where = key_path(_spec_location(config, failure.spec))
    return ConfigError([ConfigProblem(config.source or "<config>", where, failure.message)])


def _spec_location(config: BastionConfig, spec: HookSpec) -> tuple[str | int, ...]:
    located = _index_in(config.server, spec)
    if located is not None:
        return ("server", *located)
    for s, site in enumerate(config.site):
        for r, route in enumerate(site.route):
            located = _index_in(route, spec)
            if located is not None:
                return ("site", s, "route", r, *located)
    return ()


def _index_in(owner: ServerSettings | RouteSettings, spec: HookSpec) -> tuple[str, int] | None:
    for index, entry in enumerate(owner.hooks):
        if entry is spec:
            return ("hooks", index)
    return None
