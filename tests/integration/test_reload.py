"""Reload: a new generation of workers takes over without losing a request.

The load test runs the real `bastion run` (tests.support.subprocess_proxy) with two workers
and a load client in this process: keep-alive connections looping over requests, fresh
connections, and slow requests that are in flight while the configuration changes. Each of
five SIGHUPs changes a response header, so fresh connections show which configuration served
them. The client behaves like a browser: a request on a *reused* keep-alive connection that
the server closed before any response byte is sent again on a new connection (RFC 9112
9.3.1); everything else — a reset, a connection closed mid-response, a 5xx — is a failure.

The other tests drive a `Supervisor` inside the test process (real worker processes, no
signal handlers) to read `status()` and `reload()` results directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from bastion.runtime.supervisor import Supervisor
from tests.support.certs import TestPKI
from tests.support.client import http_get
from tests.support.origins import AutonomousOrigin
from tests.support.subprocess_proxy import (
    BastionProcess,
    bastion_process,
    free_port,
    without_admin,
)

LISTEN = '"127.0.0.1:0"'
POLL = 0.02


def config(origin_url: str, generation_tag: str, *, listen: str = LISTEN, extra: str = "") -> str:
    return f"""
[server]
workers = 2
graceful_timeout = "5s"
[log]
access = "off"
[[listen]]
address = {listen}
{extra}
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
  [site.route.headers.response]
  set = {{ X-Config = "{generation_tag}" }}
[upstream.app]
servers = ["{origin_url}"]
timeouts = {{ connect = "1s", read = "5s" }}
"""


class ClosedBeforeResponseError(Exception):
    """The server closed the connection before sending any byte of the response."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_response(reader: asyncio.StreamReader) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise ClosedBeforeResponseError from None
        raise
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return Response(status, headers, body)


def request(target: str, close: bool = False) -> bytes:
    connection = "close" if close else "keep-alive"
    return f"GET {target} HTTP/1.1\r\nHost: test\r\nConnection: {connection}\r\n\r\n".encode()


@dataclass
class Load:
    ok: int = 0
    slow_ok: int = 0
    resent: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self, response: Response, what: str) -> None:
        if response.status != 200:
            self.failures.append(f"{what}: status {response.status}")
        else:
            self.ok += 1


async def keepalive_client(port: int, load: Load) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    reused = False
    while not load.stop.is_set():
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            reused = False
        assert reader is not None
        try:
            writer.write(request("/echo"))
            response = await asyncio.wait_for(read_response(reader), 10.0)
        except ClosedBeforeResponseError:
            if not reused:
                load.failures.append("keep-alive: a new connection closed before responding")
            load.resent += 1
            writer.close()
            writer = None
            continue
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            load.failures.append(f"keep-alive: {error!r}")
            writer.close()
            writer = None
            continue
        load.check(response, "keep-alive")
        reused = True
        if response.headers.get("connection") == "close":
            writer.close()
            writer = None
        await asyncio.sleep(0.002)
    if writer is not None:
        writer.close()


async def one_shot(port: int, target: str) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request(target, close=True))
        return await asyncio.wait_for(read_response(reader), 10.0)
    finally:
        writer.close()


async def fresh_client(port: int, load: Load, target: str) -> None:
    while not load.stop.is_set():
        try:
            response = await one_shot(port, target)
        except (
            OSError,
            asyncio.IncompleteReadError,
            ClosedBeforeResponseError,
            TimeoutError,
        ) as error:
            load.failures.append(f"{target}: {error!r}")
            continue
        load.check(response, target)
        if target.startswith("/delay"):
            load.slow_ok += 1
        await asyncio.sleep(0.005)


async def wait_reloaded(bastion: BastionProcess, generation: int, timeout: float = 15.0) -> None:
    line = f"(generation {generation})"
    async with asyncio.timeout(timeout):
        while line not in bastion.stderr_text():
            assert "reload failed" not in bastion.stderr_text(), bastion.stderr_text()
            await asyncio.sleep(POLL)


async def test_five_reloads_under_load_lose_no_request(tmp_path: Path) -> None:
    async with AutonomousOrigin() as origin:
        async with bastion_process(config(origin.url, "0"), tmp_path) as bastion:
            port = bastion.port
            load = Load()
            clients = [
                *(keepalive_client(port, load) for _ in range(4)),
                *(fresh_client(port, load, "/echo") for _ in range(2)),
                fresh_client(port, load, "/delay?s=0.4"),
            ]
            tasks = [asyncio.create_task(client) for client in clients]
            seen = []
            try:
                await asyncio.sleep(0.5)
                for generation in range(2, 7):
                    tag = str(generation - 1)
                    path = tmp_path / "bastion.toml"
                    path.write_text(
                        without_admin(config(origin.url, tag, listen=f'"127.0.0.1:{port}"')),
                    )
                    os.kill(bastion.pid, signal.SIGHUP)
                    await wait_reloaded(bastion, generation)
                    seen.append((await one_shot(port, "/echo")).headers.get("x-config"))
                    await asyncio.sleep(0.3)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)
    assert load.failures == []
    assert seen == ["1", "2", "3", "4", "5"]
    assert load.ok > 200 and load.slow_ok >= 5, load
    assert "Traceback" not in bastion.stderr_text()


# -- a Supervisor in this process ----------------------------------------------------------


@contextlib.asynccontextmanager
async def supervisor(path: Path):  # type: ignore[no-untyped-def]
    running = Supervisor(path)
    task = asyncio.create_task(running.run(handle_signals=False))
    try:
        async with asyncio.timeout(15.0):
            while not (running.workers and all(w.ready.is_set() for w in running.workers)):
                assert not task.done(), "the supervisor ended at start"
                await asyncio.sleep(POLL)
        yield running
    finally:
        running.stop()
        assert await asyncio.wait_for(task, 15.0) == 0


async def test_a_broken_reload_keeps_the_old_config_and_is_reported(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "bastion.toml"
    async with AutonomousOrigin() as origin:
        good = config(origin.url, "old", listen=f'"127.0.0.1:{port}"')
        path.write_text(good)
        async with supervisor(path) as running:
            pids = [w.pid for w in running.workers]
            path.write_text(good.replace('upstream = "app"', 'upstream = "ap"'))
            result = await running.reload()
            status = running.status()
            still = await http_get(port, "/echo")
            path.write_text(good.replace('"old"', '"new"'))
            fixed = await running.reload()
            after = await http_get(port, "/echo")
            status_after = running.status()
    assert result["ok"] is False
    assert f"{path}: site[0].route[0].upstream" in result["error"]
    assert result["generation"] == 1
    assert status["last_reload"] == result
    assert [w["pid"] for w in status["workers"]] == pids
    assert still.header("x-config") == b"old"
    assert fixed["ok"] is True and fixed["error"] is None and fixed["generation"] == 2
    assert fixed["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert after.header("x-config") == b"new"
    assert status_after["generation"] == 2
    assert status_after["config"]["sha256"] == fixed["sha256"]
    serving = [w for w in status_after["workers"] if not w["retiring"]]
    assert [w["generation"] for w in serving] == [2, 2]
    assert not set(pids) & {w["pid"] for w in serving}
    assert {w["pid"] for w in status_after["workers"] if w["retiring"]} <= set(pids)


async def peer_certificate_serial(port: int, context: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="test.example"
    )
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    return hash(der)


async def test_certificates_and_listeners_reload(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    first = pki.server_cert("test.example")
    tls_port, extra_port = free_port(), free_port()
    path = tmp_path / "bastion.toml"
    async with AutonomousOrigin() as origin:
        tls_listener = f'[[listen]]\naddress = "127.0.0.1:{tls_port}"\ntls = true\n'
        site_tls = f'[site.tls]\ncertificate = "{first.certificate}"\nkey = "{first.key}"\n'
        text = config(origin.url, "a", listen=f'"127.0.0.1:{free_port()}"', extra=tls_listener)
        text = text.replace('hosts = ["*"]\n', f'hosts = ["*"]\n{site_tls}')
        path.write_text(text)
        context = pki.client_context()
        async with supervisor(path) as running:
            before = await peer_certificate_serial(tls_port, context)
            second = pki.server_cert("test.example")  # a new certificate, same files
            assert second == first
            extra = f'[[listen]]\naddress = "127.0.0.1:{extra_port}"\n'
            path.write_text(text.replace(tls_listener, tls_listener + extra))
            assert (await running.reload())["ok"]
            after = await peer_certificate_serial(tls_port, context)
            on_new_listener = await http_get(extra_port, "/echo")
            path.write_text(text)  # the extra listener goes away again
            assert (await running.reload())["ok"]
            async with asyncio.timeout(10.0):
                while running.retiring:
                    await asyncio.sleep(POLL)
            try:
                await asyncio.open_connection("127.0.0.1", extra_port)
                refused = False
            except ConnectionRefusedError:
                refused = True
    assert before != after
    assert on_new_listener.status == 200
    assert refused
