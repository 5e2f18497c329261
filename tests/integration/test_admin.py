"""The admin API over real sockets: every endpoint with and without the token, the loopback
rule, drain and enable with live traffic, reload (good and broken files), and the guards
(JSON errors, 404, 405, 413, cross-origin POSTs, a re-pointed Host).

bastion runs in-process (`ProxyServer`) with an `[admin]` table on 127.0.0.1 port 0; the
admin listener is then `proxy.admin`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from bastion.admin.metrics import METRICS_OPERATION
from bastion.admin.openapi import openapi_document
from bastion.config import load_config
from bastion.runtime.server import ProxyServer
from tests.support.admin import TOKEN, admin_url, config_text
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy


def check_schema(document: Any, schema_name: str) -> None:
    """Validate a response body against the OpenAPI document's schema of that name."""
    spec = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    jsonschema.validate(document, schema)


@asynccontextmanager
async def running_from_file(path: Path) -> AsyncIterator[ProxyServer]:
    proxy = ProxyServer(load_config(path))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop(graceful_timeout=2.0)


# (method, path, expected status with access, schema of the body)
ENDPOINTS = [
    ("GET", "/api/status", 200, "Status"),
    ("GET", "/api/upstreams", 200, "Upstreams"),
    ("GET", "/api/sites", 200, "Sites"),
    ("POST", "/api/upstreams/app/servers/0/drain", 200, "Server"),
    ("POST", "/api/upstreams/app/servers/0/enable", 200, "Server"),
    ("POST", "/api/reload", 422, "ReloadResult"),  # started from text: no file to read again
    ("GET", "/api/openapi.json", 200, None),
]


async def test_every_endpoint_from_loopback_without_a_token() -> None:
    async with AutonomousOrigin() as origin, running_proxy(config_text([origin.address])) as proxy:
        async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
            for method, path, status, schema in ENDPOINTS:
                response = await admin.request(method, path)
                assert response.status_code == status, (path, response.text)
                assert response.headers["content-type"] == "application/json"
                assert response.headers["cache-control"] == "no-store"
                if schema is not None:
                    check_schema(response.json(), schema)
            served = (await admin.get("/api/openapi.json")).json()
            assert served == openapi_document({"/metrics": {"get": METRICS_OPERATION}})


async def test_every_endpoint_needs_the_token_when_one_is_set() -> None:
    admin_table = f'listen = "127.0.0.1:0"\ntoken = "{TOKEN}"'
    async with AutonomousOrigin() as origin:
        async with running_proxy(config_text([origin.address], admin_table)) as proxy:
            async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
                for method, path, status, schema in ENDPOINTS:
                    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
                        refused = await admin.request(method, path, headers=headers)
                        assert refused.status_code == 401, (path, headers)
                        assert refused.headers["www-authenticate"].startswith("Bearer")
                        check_schema(refused.json(), "Error")
                    allowed = await admin.request(
                        method, path, headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                    assert allowed.status_code == status, (path, allowed.text)
                    if schema is not None:
                        check_schema(allowed.json(), schema)
                # The dashboard's files hold no secret: the page asks for the token itself.
                page = await admin.get("/")
                assert page.status_code == 200
                assert "text/html" in page.headers["content-type"]


async def test_status_and_views() -> None:
    async with AutonomousOrigin() as one, AutonomousOrigin() as two:
        text = config_text([one.address, two.address])
        async with running_proxy(text) as proxy:
            async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
                status = (await admin.get("/api/status")).json()
                upstreams = (await admin.get("/api/upstreams")).json()["upstreams"]
                sites = (await admin.get("/api/sites")).json()["sites"]
    assert status["version"] and status["uptime_s"] >= 0
    assert status["generation"] == 1 and status["last_reload"] is None
    assert [worker["state"] for worker in status["workers"]] == ["serving"]
    assert upstreams == [
        {
            "name": "app",
            "balance": "round_robin",
            "servers": [
                {
                    "index": index,
                    "label": origin.address,
                    "state": "up",
                    "health": "unchecked",
                    "health_detail": "",
                    "ejected_until": None,
                    "in_flight": 0,
                    "latency_ms": 0.0,
                    "weight": 1,
                    "max_conns": 0,
                    "backup": False,
                    "drained": False,
                }
                for index, origin in enumerate((one, two))
            ],
        }
    ]
    assert sites == [
        {
            "hosts": ["*"],
            "tls": False,
            "routes": [
                {"path": "/", "regex": False, "methods": None, "upstream": "app", "redirect": None}
            ],
        }
    ]


async def test_errors_are_json_with_the_right_status() -> None:
    async with AutonomousOrigin() as origin, running_proxy(config_text([origin.address])) as proxy:
        async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
            missing = await admin.get("/api/nothing")
            assert (missing.status_code, missing.json()) == (
                404,
                {"error": "no such admin endpoint: /api/nothing"},
            )
            wrong_method = await admin.get("/api/reload")
            assert wrong_method.status_code == 405
            assert wrong_method.headers["allow"] == "POST"
            assert (await admin.delete("/api/status")).headers["allow"] == "GET"
            for path in (
                "/api/upstreams/nope/servers/0/drain",
                "/api/upstreams/app/servers/7/drain",
                "/api/upstreams/app/servers/x/enable",
            ):
                unknown = await admin.post(path)
                assert unknown.status_code == 404, path
                check_schema(unknown.json(), "Error")
            too_big = await admin.post("/api/reload", content=b"x" * 100_000)
            assert too_big.status_code == 413
            assert "error" in too_big.json()


async def test_browser_guards() -> None:
    async with AutonomousOrigin() as origin, running_proxy(config_text([origin.address])) as proxy:
        async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
            port = proxy.admin.port if proxy.admin else 0
            cross = await admin.post(
                "/api/upstreams/app/servers/0/drain", headers={"Origin": "http://evil.example"}
            )
            assert cross.status_code == 403
            same = await admin.post(
                "/api/upstreams/app/servers/0/drain",
                headers={"Origin": f"http://127.0.0.1:{port}"},
            )
            assert same.status_code == 200
            rebound = await admin.get("/api/status", headers={"Host": f"evil.example:{port}"})
            assert rebound.status_code == 403
            local = await admin.get("/api/status", headers={"Host": f"localhost:{port}"})
            assert local.status_code == 200


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP: only picks the outgoing address
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_a_client_that_is_not_on_loopback(token: str | None) -> None:
    """The admin listener on this machine's non-loopback address: its clients' address is not
    loopback either, so without a token they are refused; with one, the token decides."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    table = f'listen = "{address}:0"' + (f'\ntoken = "{token}"' if token else "")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(config_text([origin.address], table)) as proxy,
    ):
        assert proxy.admin is not None
        url = f"http://{address}:{proxy.admin.port}"
        async with httpx.AsyncClient(base_url=url) as admin:
            refused = await admin.get("/api/status")
            if token is None:
                assert refused.status_code == 403
                assert "loopback" in refused.json()["error"]
            else:
                assert refused.status_code == 401
                bearer = {"Authorization": f"Bearer {token}"}
                assert (await admin.get("/api/status", headers=bearer)).status_code == 200
            assert (await admin.get("/")).status_code == 200  # the page itself is public


async def test_admin_listen_off_and_no_table() -> None:
    async with AutonomousOrigin() as origin:
        async with running_proxy(config_text([origin.address], 'listen = "off"')) as proxy:
            assert proxy.admin is None
        without = config_text([origin.address], "").replace("[admin]\n", "")
        async with running_proxy(without) as proxy:
            assert proxy.admin is None  # in-process: only with an [admin] table


async def test_drain_sends_new_requests_elsewhere_and_finishes_in_flight() -> None:
    async with AutonomousOrigin() as zero, AutonomousOrigin() as one:
        async with running_proxy(config_text([zero.address, one.address])) as proxy:
            proxy_url = f"http://127.0.0.1:{proxy.ports[0]}"
            async with (
                httpx.AsyncClient(base_url=admin_url(proxy)) as admin,
                httpx.AsyncClient(base_url=proxy_url, timeout=10) as client,
            ):
                # Put a slow request on server 0: with server 1 drained, it must go there.
                assert (await admin.post("/api/upstreams/app/servers/1/drain")).is_success
                slow = asyncio.create_task(client.get("/delay?s=1.5"))
                while not zero.requests:
                    await asyncio.sleep(0.01)
                assert (await admin.post("/api/upstreams/app/servers/1/enable")).is_success

                drained = await admin.post("/api/upstreams/app/servers/0/drain")
                assert drained.json()["state"] == "drained"
                assert drained.json()["in_flight"] == 1
                before = len(zero.requests)
                for _ in range(10):
                    assert (await client.get("/echo")).status_code == 200
                assert len(zero.requests) == before  # none of the new ones
                assert len(one.requests) == 10
                servers = (await admin.get("/api/upstreams")).json()["upstreams"][0]["servers"]
                assert [s["state"] for s in servers] == ["drained", "up"]
                assert [s["drained"] for s in servers] == [True, False]

                finished = await slow  # the in-flight request on the drained server finishes
                assert (finished.status_code, finished.text) == (200, "ok")

                assert (await admin.post("/api/upstreams/app/servers/0/enable")).is_success
                for _ in range(10):
                    assert (await client.get("/echo")).status_code == 200
                assert len(zero.requests) == before + 5
                servers = (await admin.get("/api/upstreams")).json()["upstreams"][0]["servers"]
                assert [s["state"] for s in servers] == ["up", "up"]


async def test_drained_servers_stay_drained_across_a_reload(tmp_path: Path) -> None:
    async with AutonomousOrigin() as zero, AutonomousOrigin() as one:
        path = tmp_path / "bastion.toml"
        path.write_text(config_text([zero.address, one.address]))
        async with running_from_file(path) as proxy:
            async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
                assert (await admin.post("/api/upstreams/app/servers/0/drain")).is_success
                assert (await admin.post("/api/reload")).status_code == 200
                servers = (await admin.get("/api/upstreams")).json()["upstreams"][0]["servers"]
                assert [s["state"] for s in servers] == ["drained", "up"]


async def test_reload_reports_success_and_keeps_the_old_config_on_error(tmp_path: Path) -> None:
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        path = tmp_path / "bastion.toml"
        path.write_text(config_text([first.address]))
        async with running_from_file(path) as proxy:
            proxy_url = f"http://127.0.0.1:{proxy.ports[0]}"
            async with (
                httpx.AsyncClient(base_url=admin_url(proxy)) as admin,
                httpx.AsyncClient(base_url=proxy_url) as client,
            ):
                status = (await admin.get("/api/status")).json()
                assert status["config_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
                assert status["config_path"] == str(path)

                path.write_text(config_text([second.address]))
                reloaded = await admin.post("/api/reload")
                assert reloaded.status_code == 200
                result = reloaded.json()
                check_schema(result, "ReloadResult")
                new_hash = hashlib.sha256(path.read_bytes()).hexdigest()
                assert (result["ok"], result["error"], result["generation"]) == (True, None, 2)
                assert result["config_hash"] == new_hash
                await client.get("/echo")
                assert len(second.requests) == 1

                path.write_text(config_text([second.address]).replace('"app"\n', '"ap"\n', 1))
                broken = await admin.post("/api/reload")
                assert broken.status_code == 422
                failure = broken.json()
                assert failure["ok"] is False and failure["generation"] == 2
                assert 'site[0].route[0].upstream: route names upstream "ap"' in failure["error"]
                await client.get("/echo")
                assert len(second.requests) == 2  # the old configuration still serves

                status = (await admin.get("/api/status")).json()
                assert status["last_reload"] == failure
                assert status["config_hash"] == new_hash


async def test_a_token_from_a_token_file_and_a_new_one_after_reload(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        (tmp_path / "token").write_text(TOKEN + "\n")
        path = tmp_path / "bastion.toml"
        path.write_text(
            config_text([origin.address], 'listen = "127.0.0.1:0"\ntoken_file = "token"')
        )
        async with running_from_file(path) as proxy:
            async with httpx.AsyncClient(base_url=admin_url(proxy)) as admin:
                bearer = {"Authorization": f"Bearer {TOKEN}"}
                assert (await admin.get("/api/status")).status_code == 401
                assert (await admin.get("/api/status", headers=bearer)).status_code == 200
                (tmp_path / "token").write_text("rotated-token-0123456789\n")
                assert (await admin.post("/api/reload", headers=bearer)).status_code == 200
                assert (await admin.get("/api/status", headers=bearer)).status_code == 401
                rotated = {"Authorization": "Bearer rotated-token-0123456789"}
                assert (await admin.get("/api/status", headers=rotated)).status_code == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/status HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ],
)
async def test_malformed_requests_get_a_json_400(request_bytes: bytes) -> None:
    async with AutonomousOrigin() as origin, running_proxy(config_text([origin.address])) as proxy:
        assert proxy.admin is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.admin.port)
        writer.write(request_bytes)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert "error" in json.loads(body)


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with AutonomousOrigin() as origin, running_proxy(config_text([origin.address])) as proxy:
        assert proxy.admin is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.admin.port)
        request = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        writer.write(request * 2 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
