"""The process model of `bastion run`: a supervisor and `server.workers` worker processes.

Each test starts the real command (`tests.support.subprocess_proxy`) and judges it from
outside: the supervisor's children in /proc, their uid, the files they hold open, responses
on the wire, exit statuses. `server.max_connections` is checked in-process.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.config import parse_config
from bastion.runtime.server import ProxyServer
from tests.support.client import RawClient, http_get, request_bytes
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy, single_route_config
from tests.support.subprocess_proxy import (
    BastionProcess,
    bastion_process,
    free_port,
    without_admin,
)

POLL = 0.02


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (the supervisor's workers)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


async def wait_workers(bastion: BastionProcess, count: int, timeout: float = 10.0) -> set[int]:
    """The supervisor's children once there are `count` of them, each ready to serve."""
    async with asyncio.timeout(timeout):
        while True:
            pids = children(bastion.pid)
            ready = bastion.stderr_text().count("info bastion.runtime.server: listening on")
            if len(pids) == count and ready >= count:
                return pids
            await asyncio.sleep(POLL)


def status_field(pid: int, field: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise LookupError(field)


def open_files(pid: int) -> set[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    found = set()
    for fd in fd_dir.iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile
    return found


def config(origin_url: str, *, workers: int = 2, server: str = "", log: str = "") -> str:
    return f"""
[server]
workers = {workers}
graceful_timeout = "3s"
{server}
[log]
access = "off"
format = "json"
{log}
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{origin_url}"]
"""


async def test_two_workers_and_a_killed_one_is_replaced(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        async with bastion_process(config(origin.url), tmp_path) as bastion:
            pids = await wait_workers(bastion, 2)
            killed = min(pids)
            os.kill(killed, signal.SIGKILL)
            statuses = []
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:  # requests keep succeeding meanwhile
                statuses.append((await http_get(bastion.port, "/echo")).status)
                now = children(bastion.pid)
                if len(now) == 2 and killed not in now:
                    break
                await asyncio.sleep(0.05)
            replaced = await wait_workers(bastion, 2)
            after = await http_get(bastion.port, "/echo")
    assert len(pids) == 2
    assert killed not in replaced and len(replaced - pids) == 1
    assert set(statuses) == {200} and after.status == 200
    assert "exited unexpectedly" in bastion.stderr_text()


async def test_sigterm_finishes_in_flight_requests_and_leaves_no_worker(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        async with bastion_process(config(origin.url), tmp_path) as bastion:
            pids = await wait_workers(bastion, 2)
            async with RawClient(bastion.port) as client:
                await client.send(request_bytes("GET", "/delay?s=1"))
                async with asyncio.timeout(2.0):
                    while not origin.requests:
                        await asyncio.sleep(POLL)
                os.kill(bastion.pid, signal.SIGTERM)
                response = await client.read_response(timeout=3.0)
            async with asyncio.timeout(5.0):
                while bastion.process.poll() is None:
                    await asyncio.sleep(POLL)
    assert (response.status, response.body) == (200, b"ok")
    assert bastion.process.returncode == 0, bastion.stderr_text()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "workers left behind"


async def test_sigusr1_makes_every_worker_reopen_the_access_log(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    async with AutonomousOrigin() as origin:
        toml = config(origin.url).replace('access = "off"', f'access = "{log_path}"')
        async with bastion_process(toml, tmp_path) as bastion:
            pids = await wait_workers(bastion, 2)
            held_before = [open_files(pid) for pid in pids]
            log_path.rename(rotated)
            os.kill(bastion.pid, signal.SIGUSR1)
            async with asyncio.timeout(3.0):
                while not all(str(log_path) in open_files(pid) for pid in pids):
                    await asyncio.sleep(POLL)
            held_after = [open_files(pid) for pid in pids]
            for index in range(10):
                assert (await http_get(bastion.port, f"/echo?n={index}")).status == 200
    assert all(str(log_path) in files for files in held_before)
    assert not any(str(rotated) in files for files in held_after)
    async with asyncio.timeout(2.0):
        while len(log_path.read_text().splitlines()) < 10:
            await asyncio.sleep(POLL)
    assert rotated.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_workers_run_as_server_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, server='user = "nobody"')
        async with bastion_process(toml, tmp_path) as bastion:
            pids = await wait_workers(bastion, 2)
            response = await http_get(bastion.port, "/echo")
            uids = [status_field(pid, "Uid") for pid in pids]
            gids = [status_field(pid, "Gid") for pid in pids]
            groups = [status_field(pid, "Groups") for pid in pids]
            supervisor_uid = status_field(bastion.pid, "Uid")
    assert response.status == 200
    assert uids == [[str(nobody.pw_uid)] * 4] * 2
    assert gids == [[str(nobody.pw_gid)] * 4] * 2
    assert groups == [[], []]
    assert supervisor_uid == ["0"] * 4  # it stays root to bind new ports on reload


def test_an_unknown_server_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(config("http://127.0.0.1:9", server='user = "no-such-user-here"'))
    finished = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert finished.returncode == 1
    assert f'{path}: server.user: no such user "no-such-user-here"' in finished.stderr


async def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        port = free_port()
        path = tmp_path / "bastion.toml"
        path.write_text(
            without_admin(config(origin.url).replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        )
        with (tmp_path / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "bastion.cli", "run", "-c", str(path)],
                stdin=subprocess.DEVNULL,
                stderr=stderr,
            )
        bastion = BastionProcess(process, port, tmp_path / "stderr")
        try:
            pids = await wait_workers(bastion, 2)
        finally:
            process.kill()
            process.wait(5.0)
        async with asyncio.timeout(5.0):
            while any(Path(f"/proc/{pid}").exists() for pid in pids):
                await asyncio.sleep(POLL)
    assert "the supervisor is gone" in bastion.stderr_text()


async def test_max_connections_leaves_extra_connections_in_the_backlog() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.url.removeprefix("http://"), server="max_connections = 2")
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            first, second, third = RawClient(port), RawClient(port), RawClient(port)
            for client in (first, second):
                await client.__aenter__()
                await client.send(request_bytes("GET", "/echo"))
                assert (await client.read_response()).status == 200
            await third.__aenter__()  # the kernel completes the handshake: backlog
            await third.send(request_bytes("GET", "/echo?third"))
            await asyncio.sleep(0.3)
            waited = [r.target for r in origin.requests]
            await first.close()
            response = await third.read_response(timeout=3.0)
            await second.close()
            await third.close()
    assert "/echo?third" not in waited, "a third connection was served beyond max_connections"
    assert response.status == 200


# -- what an old worker does with its connections when it stops (reload, SIGTERM) ---------


def blocking_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(3.0)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; ConnectionResetError on a reset."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


async def test_a_request_crossing_the_stop_on_an_idle_connection_sees_eof_not_reset() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.url.removeprefix("http://"))
        server = ProxyServer(parse_config(toml, "test.toml"))
        await server.start()
        sock = blocking_client(server.ports[0])
        try:
            sock.sendall(request_bytes("GET", "/echo"))
            await asyncio.sleep(0.2)  # served: the connection is idle, kept alive
            first = sock.recv(65536)
            sock.sendall(request_bytes("GET", "/echo?second"))
            server.registry.drain()  # the stop begins before the loop read that request
            rest = await asyncio.to_thread(read_until_closed, sock)
            await server.stop(graceful_timeout=2.0)
        finally:
            sock.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b""  # a clean EOF: the client sends the request again elsewhere


async def test_a_connection_accepted_just_before_the_stop_is_still_served() -> None:
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.url.removeprefix("http://"))
        server = ProxyServer(parse_config(toml, "test.toml"))
        await server.start()
        sock = blocking_client(server.ports[0])
        try:
            await asyncio.sleep(0.2)  # accepted; its request is still on its way
            stopping = asyncio.create_task(server.stop(graceful_timeout=2.0))
            await asyncio.sleep(0)
            sock.sendall(request_bytes("GET", "/echo?late"))
            response = await asyncio.to_thread(read_until_closed, sock)
            await stopping
        finally:
            sock.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    assert [r.target for r in origin.requests] == ["/echo?late"]
