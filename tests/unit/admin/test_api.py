"""The admin routes without sockets: a fake source and control behind `AdminApi.handle`."""

from __future__ import annotations

import json
from typing import Any

from bastion.admin.api import AdminApi, Route
from bastion.admin.messages import Request, Response, json_response
from bastion.admin.source import (
    ReloadResult,
    ServerInfo,
    SiteInfo,
    StatusInfo,
    UpstreamInfo,
)

LOCAL = {"host": "127.0.0.1:9901"}


def server(index: int, drained: bool = False) -> ServerInfo:
    return ServerInfo(
        index=index,
        label=f"10.0.0.{index}:80",
        state="drained" if drained else "up",
        health="unchecked",
        health_detail="",
        ejected_until=None,
        in_flight=0,
        latency_ms=0.0,
        weight=1,
        max_conns=0,
        backup=False,
        drained=drained,
    )


class FakeNode:
    """AdminSource and AdminControl over a dict of drained flags."""

    def __init__(self) -> None:
        self.drained = {0: False, 1: False}
        self.reload_ok = True
        self.reloads = 0

    def status(self) -> StatusInfo:
        return StatusInfo(
            version="1",
            pid=1,
            started=0.0,
            uptime_s=1.0,
            config_path="/etc/bastion.toml",
            config_hash=None,
            generation=1,
            workers=[],
            last_reload=None,
        )

    def upstreams(self) -> list[UpstreamInfo]:
        servers = [server(index, drained) for index, drained in self.drained.items()]
        return [UpstreamInfo(name="app", balance="round_robin", servers=servers)]

    def sites(self) -> list[SiteInfo]:
        return []

    async def reload(self) -> ReloadResult:
        self.reloads += 1
        error = None if self.reload_ok else "edge.toml: listen[0].address: bad"
        return ReloadResult(
            ok=self.reload_ok, time=0.0, error=error, config_hash=None, generation=1
        )

    def drain(self, upstream: str, index: int) -> bool:
        return self._set(upstream, index, True)

    def enable(self, upstream: str, index: int) -> bool:
        return self._set(upstream, index, False)

    def _set(self, upstream: str, index: int, drained: bool) -> bool:
        if upstream != "app" or index not in self.drained:
            return False
        self.drained[index] = drained
        return True


def api(node: FakeNode, token: str | None = None, extra: tuple[Route, ...] = ()) -> AdminApi:
    return AdminApi(node, node, lambda: token, extra)


async def call(admin: AdminApi, method: str, path: str, **headers: str) -> tuple[int, Any]:
    response = await admin.handle(Request(method, path, {**LOCAL, **headers}, "127.0.0.1"))
    if response.content_type == "application/json":
        return response.status, json.loads(response.body)
    return response.status, response.body


async def test_drain_and_enable_answer_with_the_server() -> None:
    node = FakeNode()
    admin = api(node)
    assert await call(admin, "POST", "/api/upstreams/app/servers/1/drain") == (
        200,
        server(1, drained=True),
    )
    assert node.drained == {0: False, 1: True}
    status, body = await call(admin, "POST", "/api/upstreams/app/servers/1/enable")
    assert (status, body["drained"], node.drained[1]) == (200, False, False)


async def test_unknown_servers_and_bad_indexes_are_404() -> None:
    admin = api(FakeNode())
    for path in (
        "/api/upstreams/db/servers/0/drain",
        "/api/upstreams/app/servers/9/drain",
        "/api/upstreams/app/servers/-1/drain",
        "/api/upstreams/app/servers/one/drain",
        "/api/upstreams/app/servers//drain",
    ):
        status, body = await call(admin, "POST", path)
        assert status == 404, path
        assert set(body) == {"error"}


async def test_reload_is_200_when_it_worked_and_422_with_the_problems_when_not() -> None:
    node = FakeNode()
    admin = api(node)
    assert (await call(admin, "POST", "/api/reload"))[0] == 200
    node.reload_ok = False
    status, body = await call(admin, "POST", "/api/reload")
    assert (status, body["ok"], body["error"]) == (422, False, "edge.toml: listen[0].address: bad")
    assert node.reloads == 2


async def test_404_and_405() -> None:
    admin = api(FakeNode())
    assert await call(admin, "GET", "/api/nope") == (
        404,
        {"error": "no such admin endpoint: /api/nope"},
    )
    response = await admin.handle(Request("PUT", "/api/upstreams", LOCAL, "127.0.0.1"))
    assert response.status == 405
    assert dict(response.headers) == {"Allow": "GET"}
    response = await admin.handle(
        Request("GET", "/api/upstreams/app/servers/0/drain", LOCAL, "127.0.0.1")
    )
    assert (response.status, dict(response.headers)) == (405, {"Allow": "POST"})


async def test_refusals_come_before_routing() -> None:
    admin = api(FakeNode(), token="t" * 20)
    assert (await call(admin, "GET", "/api/nope"))[0] == 401  # no hint of what exists
    node = FakeNode()
    remote = await api(node).handle(Request("POST", "/api/reload", LOCAL, "192.0.2.7"))
    assert remote.status == 403 and node.reloads == 0
    cross = await call(api(node), "POST", "/api/reload", origin="http://evil.example")
    assert cross[0] == 403 and node.reloads == 0


async def test_the_dashboard_is_served_without_credentials() -> None:
    admin = api(FakeNode(), token="t" * 20)
    for path, kind in (
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ):
        response = await admin.handle(Request("GET", path, {}, "192.0.2.7"))
        assert response.status == 200
        assert response.content_type.startswith(kind)
        assert response.body
        assert "default-src 'none'" in dict(response.headers)["Content-Security-Policy"]
    posted = await admin.handle(Request("POST", "/", {}, None))
    assert (posted.status, dict(posted.headers)) == (405, {"Allow": "GET"})
    page = (await admin.handle(Request("GET", "/", {}, None))).body
    assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from elsewhere


async def test_extra_routes_plug_in() -> None:
    async def metrics(request: Request, params: dict[str, str]) -> Response:
        return Response(200, b"up 1\n", "text/plain; version=0.0.4")

    admin = api(FakeNode(), extra=(Route("GET", "/metrics", metrics),))
    assert await call(admin, "GET", "/metrics") == (200, b"up 1\n")
    assert json_response(200, {"a": 1}).body == b'{"a":1}'
