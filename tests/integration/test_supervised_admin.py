"""The admin API, /metrics and drain of a real `bastion run` with two worker processes:
what the supervisor serves is the whole node (every worker's state and counts)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.support.client import http_get, http_request
from tests.support.origins import AutonomousOrigin
from tests.support.subprocess_proxy import bastion_process, free_port

TOKEN = "supervised-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def config(first: str, second: str, admin_port: int) -> str:
    return f"""
[server]
workers = 2
[log]
access = "off"
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{first}", "{second}"]
"""


async def admin(port: int, method: str, path: str, auth: bool = True) -> tuple[int, Any]:
    response = await http_request(
        port, method, path, host="127.0.0.1", headers=AUTH if auth else ()
    )
    body = json.loads(response.body) if response.body.startswith(b"{") else response.body
    return response.status, body


async def admin_listening(port: int) -> None:
    """Wait (bounded) for the admin listener to accept."""
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"no admin listener on port {port}")


async def test_the_supervisor_serves_the_whole_node(tmp_path: Path) -> None:
    admin_port = free_port()
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        toml = config(first.url, second.url, admin_port)
        async with bastion_process(toml, tmp_path) as bastion:
            await admin_listening(admin_port)
            assert (await admin(admin_port, "GET", "/api/status", auth=False))[0] == 401
            for _ in range(100):  # the admin listener is up before every worker is
                status, facts = await admin(admin_port, "GET", "/api/status")
                assert status == 200
                if [w["state"] for w in facts["workers"]] == ["serving", "serving"]:
                    break
                await asyncio.sleep(0.05)
            assert [w["state"] for w in facts["workers"]] == ["serving", "serving"]
            assert facts["generation"] == 1
            status, listing = await admin(admin_port, "GET", "/api/upstreams")
            servers = listing["upstreams"][0]["servers"]
            assert [s["state"] for s in servers] == ["up", "up"]

            for _ in range(20):  # fresh connections: both workers take some
                assert (await http_get(bastion.port, "/echo")).status == 200
            assert first.requests and second.requests

            assert (await admin(admin_port, "POST", "/api/upstreams/app/servers/0/drain"))[0] == 200
            before = len(first.requests)
            for _ in range(20):
                assert (await http_get(bastion.port, "/echo")).status == 200
            assert len(first.requests) == before  # no worker sends it anything new
            _, listing = await admin(admin_port, "GET", "/api/upstreams")
            assert listing["upstreams"][0]["servers"][0]["state"] == "drained"

            await asyncio.sleep(1.5)  # every worker has sent a snapshot since
            response = await http_request(
                admin_port, "GET", "/metrics", host="127.0.0.1", headers=AUTH
            )
            text = response.body.decode()
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("bastion_requests_total{")
            )
            assert total == 40
            assert 'bastion_upstream_server_up{server="' in text

            status, result = await admin(admin_port, "POST", "/api/reload")
            assert (status, result["ok"], result["generation"]) == (200, True, 2)
            _, listing = await admin(admin_port, "GET", "/api/upstreams")
            assert listing["upstreams"][0]["servers"][0]["state"] == "drained"  # kept


def test_a_taken_admin_port_stops_bastion_before_any_worker_serves(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        taken = occupant.getsockname()[1]
        path = tmp_path / "bastion.toml"
        path.write_text(config("http://127.0.0.1:9", "http://127.0.0.1:9", taken))
        finished = subprocess.run(
            [sys.executable, "-m", "bastion.cli", "run", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert finished.returncode == 1
    assert "cannot start: [Errno 98]" in finished.stderr and str(taken) in finished.stderr
    assert "listening on" not in finished.stderr  # no worker was spawned
