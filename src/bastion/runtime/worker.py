"""One worker process: `python -m bastion.runtime.worker ...`, spawned by the supervisor.

The supervisor passes everything by inherited file descriptor and argv (`worker_argv` builds
the command line, `parse_args` reads it back):

    --config PATH          the configuration file (names it in errors; relative paths in it)
    --config-fd FD         the exact bytes the supervisor validated (a memfd), read once
    --generation N --index I
    --channel FD           this worker's end of the supervisor socketpair (runtime/channel.py)
    --listen FD[,FD...]    the listening sockets of each `[[listen]]`, in listener order
    --shared NAME=FD       further descriptors every worker gets (e.g. shared node state)
    --user NAME            drop to this user (and its primary group) before serving

The worker builds its `ProxyServer` as root (private keys are often readable by root only),
drops privileges, starts serving on the inherited sockets under uvloop and says `ready`.
SIGTERM: stop accepting, say `draining`, let in-flight requests finish (graceful_timeout),
exit 0. The same happens when the supervisor goes away (the channel reaches EOF), so no worker
outlives it. SIGUSR1 reopens the access log. SIGINT and SIGHUP are the supervisor's business
(a terminal sends them to the whole process group): ignored here.

What it must not know: other workers, reload, respawning.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pwd
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.observe.logs import setup_error_log
from bastion.observe.metrics import MetricsReporter
from bastion.runtime.channel import Channel
from bastion.runtime.server import ProxyServer
from bastion.state import NodeState

log = logging.getLogger(__name__)
STATE_FD_NAME = "state"  # the per-node shared state region among the --shared fds


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    config_path: Path
    config_fd: int
    generation: int
    index: int
    channel_fd: int
    listen_fds: tuple[tuple[int, ...], ...]
    shared_fds: Mapping[str, int]
    user: str | None


def worker_argv(args: WorkerArgs) -> list[str]:
    """The command line that starts a worker with `args` (the fds must be passed along)."""
    argv = [sys.executable, "-m", "bastion.runtime.worker", "--config", str(args.config_path)]
    argv += ["--config-fd", str(args.config_fd), "--channel", str(args.channel_fd)]
    argv += ["--generation", str(args.generation), "--index", str(args.index)]
    for fds in args.listen_fds:
        argv += ["--listen", ",".join(map(str, fds))]
    for name, fd in args.shared_fds.items():
        argv += ["--shared", f"{name}={fd}"]
    if args.user is not None:
        argv += ["--user", args.user]
    return argv


def parse_args(argv: Sequence[str]) -> WorkerArgs:
    parser = argparse.ArgumentParser(prog="bastion.runtime.worker")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--config-fd", required=True, type=int)
    parser.add_argument("--channel", required=True, type=int)
    parser.add_argument("--generation", required=True, type=int)
    parser.add_argument("--index", required=True, type=int)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--shared", action="append", default=[])
    parser.add_argument("--user")
    parsed = parser.parse_args(argv)
    shared = dict(item.split("=", 1) for item in parsed.shared)
    return WorkerArgs(
        config_path=parsed.config,
        config_fd=parsed.config_fd,
        generation=parsed.generation,
        index=parsed.index,
        channel_fd=parsed.channel,
        listen_fds=tuple(tuple(int(fd) for fd in item.split(",")) for item in parsed.listen),
        shared_fds={name: int(fd) for name, fd in shared.items()},
        user=parsed.user,
    )


def read_config_text(fd: int) -> str:
    """The whole content of the config memfd (from offset 0), then the fd is closed."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8")


def drop_privileges(user: str) -> None:
    """Become `user` with its primary group and no supplementary groups."""
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


async def serve(args: WorkerArgs) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    config = parse_config(
        read_config_text(args.config_fd), str(args.config_path), base_dir=args.config_path.parent
    )
    setup_error_log(config.log.level)
    channel = Channel(socket.socket(fileno=args.channel_fd), peer="supervisor")
    await channel.start()
    sockets = [[socket.socket(fileno=fd) for fd in fds] for fds in args.listen_fds]
    state_fd = args.shared_fds.get(STATE_FD_NAME)
    node = NodeState.attach(state_fd) if state_fd is not None else None
    # One worker runs the active health checks for the node; the others read its verdicts.
    server = ProxyServer(config, node_state=node, runs_checks=args.index == 0)
    loop.add_signal_handler(signal.SIGUSR1, server.access_log.reopen)
    await server.start(sockets, before_serving=_privileges_dropper(args.user))
    channel.send({"type": "ready", "pid": os.getpid()})
    reporter = MetricsReporter(server.metrics_snapshot, channel.send)  # every second
    reporter.start()
    await _first_of(stopping.wait(), channel.closed.wait())
    if channel.closed.is_set() and not stopping.is_set():
        log.warning("worker %d: the supervisor is gone, stopping", args.index)
    if server.gate is not None:
        server.gate.close()
    channel.send({"type": "draining", "pid": os.getpid()})
    await server.stop()
    reporter.stop()  # a last snapshot: the supervisor keeps every count
    channel.close()
    if node is not None:
        node.close()  # frees this worker's in-flight column
    return 0


def _privileges_dropper(user: str | None) -> Callable[[], None] | None:
    if user is None:
        return None
    return lambda: drop_privileges(user)


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_error_log("info")
    try:
        return uvloop.run(serve(args))
    except ConfigError as error:
        log.error("worker %d: %s", args.index, error)
        return 1
    except OSError as error:
        log.error("worker %d: cannot start: %s", args.index, error)
        return 1


def exit_now(status: int) -> None:
    """Exit without the interpreter's teardown (everything is flushed and closed by then):
    a stopping worker is waited for by its supervisor, and by whoever stops bastion."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
