"""Signals sent to a running `bastion run`: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the
configuration file, SIGUSR1 reopens the access log.

Each test starts bastion as a child process (`tests.support.subprocess_proxy`) in front of
AutonomousOrigins and judges it by what is visible from outside: responses on the wire, refused
connections, the exit status, error-log lines on stderr and the access-log file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.client import NoResponseError, RawClient, http_get, request_bytes
from tests.support.origins import AutonomousOrigin
from tests.support.subprocess_proxy import BastionProcess, bastion_process, without_admin

LISTEN = '"127.0.0.1:0"'
POLL = 0.01


def error_log_mark(bastion: BastionProcess) -> int:
    """How many complete lines bastion's stderr holds now."""
    return bastion.stderr_text().count("\n")


async def stderr_line(
    bastion: BastionProcess, fragment: str, *, after: int = 0, timeout: float = 2.0
) -> str:
    """The first complete stderr line, from line index `after` on, containing `fragment`."""
    async with asyncio.timeout(timeout):
        while True:
            lines = bastion.stderr_text().split("\n")[:-1]
            found = [line for line in lines[after:] if fragment in line]
            if found:
                return found[0]
            if bastion.process.poll() is not None:
                raise AssertionError(f"bastion ended without {fragment!r}:\n{lines}")
            await asyncio.sleep(POLL)


async def exit_status(bastion: BastionProcess, timeout: float) -> int:
    """Bastion's exit status, once it ends within `timeout` (origins keep serving meanwhile)."""
    async with asyncio.timeout(timeout):
        while (status := bastion.process.poll()) is None:
            await asyncio.sleep(POLL)
    return status


def rewrite_config(bastion: BastionProcess, tmp_path: Path, toml: str) -> Path:
    """Replace the running config file with `toml`, keeping the listener bastion is on."""
    path = tmp_path / "bastion.toml"
    path.write_text(without_admin(toml.replace(LISTEN, f'"127.0.0.1:{bastion.port}"')))
    return path


def proxy_config(
    origin_url: str,
    *,
    graceful_timeout: str = "2s",
    access: str = "off",
    extra_routes: str = "",
) -> str:
    return f"""
[server]
graceful_timeout = "{graceful_timeout}"
[log]
access = "{access}"
format = "json"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
{extra_routes}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{origin_url}"]
timeouts = {{ connect = "1s", read = "6s" }}
"""


async def wait_refused(port: int, timeout: float = 1.0) -> float:
    """Connect until the port refuses; the monotonic time of the first refusal."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except ConnectionRefusedError:
                return time.monotonic()
            writer.close()
            await asyncio.sleep(0.01)


async def wait_for_requests(origin: AutonomousOrigin, count: int, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while len(origin.requests) < count:
            await asyncio.sleep(0.005)


# -- SIGTERM / SIGINT: graceful stop -----------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_stop_signal_lets_in_flight_request_finish(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with AutonomousOrigin() as origin:
        toml = proxy_config(origin.url, graceful_timeout="2s")
        async with bastion_process(toml, tmp_path) as bastion, RawClient(bastion.port) as client:
            await client.send(request_bytes("GET", "/delay?s=1"))
            await wait_for_requests(origin, 1)
            signalled = time.monotonic()
            os.kill(bastion.pid, signum)
            refused_at = await wait_refused(bastion.port)
            response = await client.read_response(timeout=3.0)
            answered_at = time.monotonic()
            status = await exit_status(bastion, timeout=2.0)
            exited_at = time.monotonic()
    assert (response.status, response.body) == (200, b"ok")
    assert refused_at < answered_at, "new connections were accepted while draining"
    assert status == 0, bastion.stderr_text()
    assert exited_at - signalled < 2.0, "exit took the whole graceful_timeout"
    assert "Traceback" not in bastion.stderr_text()


async def test_stop_closes_idle_keepalive_connections_at_once(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        toml = proxy_config(origin.url, graceful_timeout="10s")
        async with bastion_process(toml, tmp_path) as bastion, RawClient(bastion.port) as client:
            await client.send(request_bytes("GET", "/echo"))
            assert (await client.read_response()).status == 200
            signalled = time.monotonic()
            os.kill(bastion.pid, signal.SIGTERM)
            assert await client.wait_closed(timeout=1.0)
            status = await exit_status(bastion, timeout=1.0)
    assert status == 0, bastion.stderr_text()
    assert time.monotonic() - signalled < 1.5


async def test_graceful_timeout_cuts_a_slow_request_and_exits_0(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        toml = proxy_config(origin.url, graceful_timeout="500ms")
        async with bastion_process(toml, tmp_path) as bastion, RawClient(bastion.port) as client:
            await client.send(request_bytes("GET", "/delay?s=5"))
            await wait_for_requests(origin, 1)
            signalled = time.monotonic()
            os.kill(bastion.pid, signal.SIGTERM)
            with pytest.raises(NoResponseError):
                await client.read_response(timeout=3.0)
            cut_after = time.monotonic() - signalled
            status = await exit_status(bastion, timeout=2.0)
            exited_after = time.monotonic() - signalled
    assert status == 0, bastion.stderr_text()
    assert 0.4 <= cut_after < 1.2, f"in-flight request cut after {cut_after:.2f}s"
    assert exited_after < 1.5, f"exited {exited_after:.2f}s after SIGTERM"
    busy = [line for line in bastion.stderr_text().splitlines() if "still busy" in line]
    assert busy and " warning " in busy[0], bastion.stderr_text()


# -- SIGHUP: reload -----------------------------------------------------------------------

REDIRECT_ROUTE = '  [[site.route]]\n  path = "/old"\n  redirect = { to = "/new" }\n'


async def test_sighup_reload_sends_new_requests_by_the_new_config(tmp_path: Path) -> None:
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        toml = proxy_config(first.url)
        async with bastion_process(toml, tmp_path) as bastion, RawClient(bastion.port) as kept:
            await kept.send(request_bytes("GET", "/echo?before"))
            assert (await kept.read_response()).status == 200
            await kept.send(request_bytes("GET", "/delay?s=0.3"))  # in flight over the reload
            await wait_for_requests(first, 2)
            rewrite_config(bastion, tmp_path, proxy_config(second.url, extra_routes=REDIRECT_ROUTE))
            mark = error_log_mark(bastion)
            os.kill(bastion.pid, signal.SIGHUP)
            await stderr_line(bastion, "configuration reloaded", after=mark, timeout=10.0)
            in_flight = await kept.read_response()
            # The kept connection belonged to the old workers: closed after its response.
            assert await kept.wait_closed(timeout=2.0)
            on_new_connection = await http_get(bastion.port, "/echo?fresh")
            redirected = await http_get(bastion.port, "/old")
    assert (in_flight.status, in_flight.body) == (200, b"ok")
    assert on_new_connection.status == 200
    assert [r.target for r in first.requests] == ["/echo?before", "/delay?s=0.3"]
    assert [r.target for r in second.requests] == ["/echo?fresh"]
    assert redirected.status == 301
    assert redirected.header("location") == b"/new"
    assert "Traceback" not in bastion.stderr_text(), bastion.stderr_text()


async def test_sighup_with_a_broken_config_keeps_the_old_one(tmp_path: Path) -> None:
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        broken = proxy_config(second.url).replace('upstream = "app"', 'upstream = "ap"')
        async with bastion_process(proxy_config(first.url), tmp_path) as bastion:
            config_path = rewrite_config(bastion, tmp_path, broken)
            mark = error_log_mark(bastion)
            os.kill(bastion.pid, signal.SIGHUP)
            error_line = await stderr_line(bastion, "reload failed", after=mark)
            response = await http_get(bastion.port, "/echo")
            assert bastion.process.poll() is None, "a broken reload stopped bastion"
    assert " error " in error_line
    assert f"{config_path}: site[0].route[0].upstream" in error_line
    assert '"ap"' in error_line
    assert response.status == 200
    assert len(first.requests) == 1
    assert second.requests == []
    assert "Traceback" not in bastion.stderr_text()


# -- SIGUSR1: reopen the access log -------------------------------------------------------


async def read_lines(path: Path, count: int, timeout: float = 2.0) -> list[str]:
    """The file's lines once it holds at least `count` of them."""
    async with asyncio.timeout(timeout):
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= count:
                return lines
            await asyncio.sleep(POLL)


async def wait_exists(path: Path, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(POLL)


async def test_sigusr1_reopens_the_access_log_after_rotation(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    async with AutonomousOrigin() as origin:
        toml = proxy_config(origin.url, access=str(log_path))
        async with bastion_process(toml, tmp_path) as bastion:
            assert (await http_get(bastion.port, "/echo?first")).status == 200
            await read_lines(log_path, 1)
            log_path.rename(rotated)
            os.kill(bastion.pid, signal.SIGUSR1)
            await wait_exists(log_path)  # reopened: created again at the original path
            assert (await http_get(bastion.port, "/echo?second")).status == 200
            new_lines = await read_lines(log_path, 1)
            old_lines = rotated.read_text().splitlines()
    assert len(old_lines) == 1 and '"target":"/echo?first"' in old_lines[0]
    assert len(new_lines) == 1 and '"target":"/echo?second"' in new_lines[0]
