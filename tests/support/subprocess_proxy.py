"""Run bastion as a child process, for tests that observe the process itself (its memory).

`bastion_process(toml, tmp_path)` writes the config to `tmp_path`, starts
`python -m bastion.cli run -c FILE` on a free port, waits until that port accepts, yields a
`BastionProcess` (`.pid`, `.port`, resident-memory readings from /proc) and at the end stops it
with SIGTERM and asserts that it exited with status 0.

The config is written the way `tests.support.proxy.single_route_config` writes it: it must
listen on exactly one `"127.0.0.1:0"`, which is replaced by the free port (a child process
cannot tell its parent which port it got). The child's stderr (the error log) goes to a file
whose text `stderr_text()` returns, for assertion messages.

What it must not know: anything of bastion beyond its command line and config file format.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

HOST = "127.0.0.1"
LISTEN_PLACEHOLDER = f'"{HOST}:0"'
START_ATTEMPTS = 5
POLL_INTERVAL = 0.02


class BastionProcess:
    """A running `bastion run` child process listening on `port`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, stderr_path: Path) -> None:
        self.process = process
        self.pid = process.pid
        self.port = port
        self.stderr_path = stderr_path

    def _status_kib(self, field: str) -> int:
        """A `VmXXX:  1234 kB` line of /proc/PID/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise LookupError(f"{field} not in /proc/{self.pid}/status")

    def rss_kib(self) -> int:
        """Resident memory now (VmRSS), in KiB."""
        return self._status_kib("VmRSS")

    def rss_peak_kib(self) -> int:
        """Highest resident memory since start or since `reset_rss_peak` (VmHWM), in KiB."""
        return self._status_kib("VmHWM")

    def reset_rss_peak(self) -> bool:
        """Make VmHWM restart from the current VmRSS (Linux `clear_refs` 5); False when the
        kernel does not allow it, in which case the peak still counts from process start."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def without_admin(toml: str) -> str:
    """`toml` with the admin listener off unless it configures one: its default address
    (127.0.0.1:9901) is one port, which tests running side by side would fight over."""
    return toml if "[admin]" in toml else toml + '\n[admin]\nlisten = "off"\n'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


async def _start_once(
    config_path: Path, stderr_path: Path, port: int, timeout: float
) -> BastionProcess | None:
    """Start bastion on `port`; None if it exited because the port was taken meanwhile."""
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli", "run", "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    bastion = BastionProcess(process, port, stderr_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if "Address already in use" in bastion.stderr_text():
                return None
            raise AssertionError(
                f"bastion exited with {process.returncode} at start:\n{bastion.stderr_text()}"
            )
        if await _accepts(port):
            return bastion
        await asyncio.sleep(POLL_INTERVAL)
    process.kill()
    await _wait_exit(process, 5.0)
    raise AssertionError(f"bastion did not accept within {timeout}s:\n{bastion.stderr_text()}")


async def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status, polling so that in-process origins keep being served meanwhile."""
    deadline = time.monotonic() + timeout
    while (status := process.poll()) is None and time.monotonic() < deadline:
        await asyncio.sleep(POLL_INTERVAL)
    return status


@asynccontextmanager
async def bastion_process(
    toml: str,
    tmp_path: Path,
    *,
    start_timeout: float = 10.0,
    stop_timeout: float = 10.0,
) -> AsyncIterator[BastionProcess]:
    """A `bastion run` child serving `toml`; stopped by SIGTERM on exit, which must give 0."""
    if toml.count(LISTEN_PLACEHOLDER) != 1:
        raise ValueError(f"the config must listen on exactly one {LISTEN_PLACEHOLDER}")
    config_path = tmp_path / "bastion.toml"
    stderr_path = tmp_path / "bastion.stderr"
    bastion: BastionProcess | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        config_path.write_text(without_admin(toml.replace(LISTEN_PLACEHOLDER, f'"{HOST}:{port}"')))
        bastion = await _start_once(config_path, stderr_path, port, start_timeout)
        if bastion is not None:
            break
    if bastion is None:
        raise AssertionError(f"no free port found in {START_ATTEMPTS} attempts")
    try:
        yield bastion
    finally:
        await _stop(bastion, stop_timeout)


async def _stop(bastion: BastionProcess, timeout: float) -> None:
    process = bastion.process
    if process.poll() is None:
        os.kill(bastion.pid, signal.SIGTERM)
    status = await _wait_exit(process, timeout)
    if status is None:
        process.kill()
        await _wait_exit(process, 5.0)
        raise AssertionError(
            f"bastion did not stop within {timeout}s of SIGTERM:\n{bastion.stderr_text()}"
        )
    assert status == 0, f"bastion exited with {status}:\n{bastion.stderr_text()}"
