"""The admin API's routes: (method, path template) → handler, and the checks before them.

`AdminApi.handle(request)` answers one parsed request: static dashboard files are public;
every `/api/` call first passes `access.admit` (token or loopback) and, for POST, the
same-origin guard; then the route table picks the handler. An unknown path is 404, a known
path with another method 405 with `Allow`. Every error body is `{"error": "..."}`.

`AdminApi.routes` is what `openapi.py` documents (a test keeps both equal). More routes (the
metrics endpoint) are added by passing `extra` routes, each with its OpenAPI `operation`,
which joins the served document. Nothing here touches sockets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from bastion.admin.access import admit, same_origin
from bastion.admin.messages import Request, Response, error_response, json_response
from bastion.admin.openapi import openapi_document
from bastion.admin.source import AdminControl, AdminSource, ServerInfo
from bastion.admin.static import StaticFiles

ALLOW_GET = (("Allow", "GET"),)
Params = dict[str, str]
Handler = Callable[[Request, Params], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str  # "/api/upstreams/{name}/servers/{index}/drain"
    handler: Handler
    operation: dict[str, Any] | None = None  # its OpenAPI operation (extra routes only)

    def match(self, path: str) -> Params | None:
        """The template's parameters when `path` fits it."""
        want, got = self.template.split("/"), path.split("/")
        if len(want) != len(got):
            return None
        params: Params = {}
        for pattern, segment in zip(want, got, strict=True):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not segment:
                    return None
                params[pattern[1:-1]] = unquote(segment)
            elif pattern != segment:
                return None
        return params


class AdminApi:
    """Routes admin requests to the source and control handed in."""

    def __init__(
        self,
        source: AdminSource,
        control: AdminControl,
        token: Callable[[], str | None],
        extra: Iterable[Route] = (),
    ) -> None:
        self._source = source
        self._control = control
        self._token = token
        self._static = StaticFiles()
        self.routes: tuple[Route, ...] = (
            Route("GET", "/api/status", self._status),
            Route("GET", "/api/upstreams", self._upstreams),
            Route("GET", "/api/sites", self._sites),
            Route("POST", "/api/upstreams/{name}/servers/{index}/drain", self._drain),
            Route("POST", "/api/upstreams/{name}/servers/{index}/enable", self._enable),
            Route("POST", "/api/reload", self._reload),
            Route("GET", "/api/openapi.json", self._openapi),
            *extra,
        )
        extra_paths: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            if route.operation is not None:
                extra_paths.setdefault(route.template, {})[route.method.lower()] = route.operation
        self._openapi_body = json_response(200, openapi_document(extra_paths))

    async def handle(self, request: Request) -> Response:
        if request.path in self._static:
            if request.method != "GET":
                return error_response(405, f"{request.method} is not allowed here", ALLOW_GET)
            return self._static.response(request.path)
        refusal = admit(
            self._token(),
            peer_host=request.peer_host,
            host=request.headers.get("host"),
            authorization=request.headers.get("authorization"),
        )
        if refusal is not None:
            return error_response(refusal.status, refusal.message, refusal.headers)
        if request.method == "POST" and not same_origin(
            request.headers.get("origin"), request.headers.get("host")
        ):
            return error_response(403, "cross-origin request refused")
        return await self._route(request)

    async def _route(self, request: Request) -> Response:
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            if route.method == request.method:
                return await route.handler(request, params)
            allowed.append(route.method)
        if allowed:
            return error_response(
                405,
                f"{request.method} is not allowed here",
                (("Allow", ", ".join(sorted(set(allowed)))),),
            )
        return error_response(404, f"no such admin endpoint: {request.path}")

    # -- handlers -----------------------------------------------------------------------

    async def _status(self, request: Request, params: Params) -> Response:
        return json_response(200, self._source.status())

    async def _upstreams(self, request: Request, params: Params) -> Response:
        return json_response(200, {"upstreams": self._source.upstreams()})

    async def _sites(self, request: Request, params: Params) -> Response:
        return json_response(200, {"sites": self._source.sites()})

    async def _openapi(self, request: Request, params: Params) -> Response:
        return self._openapi_body

    async def _reload(self, request: Request, params: Params) -> Response:
        result = await self._control.reload()
        return json_response(200 if result["ok"] else 422, result)

    async def _drain(self, request: Request, params: Params) -> Response:
        return self._set_drained(params, self._control.drain)

    async def _enable(self, request: Request, params: Params) -> Response:
        return self._set_drained(params, self._control.enable)

    def _set_drained(self, params: Params, action: Callable[[str, int], bool]) -> Response:
        name, index_text = params["name"], params["index"]
        index = int(index_text) if index_text.isdigit() else -1
        if index < 0 or not action(name, index):
            return error_response(404, f"no server {index_text} in upstream {name!r}")
        server = self._server(name, index)
        if server is None:
            return error_response(404, f"no server {index_text} in upstream {name!r}")
        return json_response(200, server)

    def _server(self, name: str, index: int) -> ServerInfo | None:
        for upstream in self._source.upstreams():
            if upstream["name"] == name:
                return next((s for s in upstream["servers"] if s["index"] == index), None)
        return None
