"""A generation: one validated configuration, ready for a set of workers to serve.

`prepare_generation` reads the file once, validates it the way `bastion check` does
(`parse_config` + `compile_plan`, and that `server.user` can be switched to), binds the
listener addresses not bound yet and keeps the exact bytes in a memfd for the workers, so
what they run is what was validated and hashed (sha256 of the file's bytes). Sockets of
addresses already bound by the previous generation are reused as they are: a reload never
closes a listening socket that stays. On any failure nothing is left open.

What it must not know: workers, processes, signals.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.config import BastionConfig, parse_config
from bastion.errors import ConfigError, ConfigProblem
from bastion.filters.chain import compile_plan
from bastion.proxy.plan import Plan
from bastion.runtime.listen_sockets import bind_listener, describe

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Generation:
    """One validated configuration: its text, hash and listening sockets (by listener)."""

    number: int
    config: BastionConfig
    text: str
    sha256: str
    sockets: list[list[socket.socket]]
    config_fd: int
    plan: Plan  # compiled here to validate; the node state binds its servers (node_host.py)

    def bound(self) -> dict[str, list[socket.socket]]:
        """Its sockets by listener address (what the next generation may reuse)."""
        listen = self.config.listen
        return {str(item.address): socks for item, socks in zip(listen, self.sockets, strict=True)}

    def worker_count(self) -> int:
        workers = self.config.server.workers
        return len(os.sched_getaffinity(0)) if workers == "auto" else workers


def prepare_generation(
    path: Path, number: int, bound: Mapping[str, list[socket.socket]]
) -> Generation:
    """Read, validate and bind; raises ConfigError or OSError (then nothing new stays open)."""
    raw = read_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), "", "cannot read: not UTF-8 text")]) from None
    config = parse_config(text, str(path), base_dir=path.parent)
    plan = compile_plan(config)
    check_user(config, str(path))
    sockets = _bind(config, bound)
    config_fd = os.memfd_create("bastion-config", os.MFD_CLOEXEC)
    os.write(config_fd, raw)
    sha256 = hashlib.sha256(raw).hexdigest()
    return Generation(number, config, text, sha256, sockets, config_fd, plan)


def _bind(
    config: BastionConfig, bound: Mapping[str, list[socket.socket]]
) -> list[list[socket.socket]]:
    known = dict(bound)
    fresh: list[socket.socket] = []
    sockets: list[list[socket.socket]] = []
    try:
        for listen in config.listen:
            key = str(listen.address)
            if key not in known:
                known[key] = bind_listener(listen.address)
                fresh.extend(known[key])
            sockets.append(known[key])
    except OSError:
        for sock in fresh:
            sock.close()
        raise
    for sock in fresh:
        log.info("bound %s", describe(sock))
    return sockets


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {reason}")]) from None


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def close_sockets(
    sockets: Sequence[Sequence[socket.socket]], keep: Sequence[Sequence[socket.socket]] = ()
) -> None:
    """Close `sockets` except those also in `keep` (still used by another generation)."""
    kept = {id(sock) for socks in keep for sock in socks}
    for sock in (sock for socks in sockets for sock in socks):
        if id(sock) not in kept and sock.fileno() >= 0:
            log.info("closing listener %s", describe(sock))
            sock.close()


def check_user(config: BastionConfig, source: str) -> None:
    """`server.user` must exist, and only root can become another user."""
    user = config.server.user
    if user is None:
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        problem = ConfigProblem(source, "server.user", f'no such user "{user}"')
        raise ConfigError([problem]) from None
    if os.geteuid() != 0:
        message = f'switching to user "{user}" needs bastion to be started as root'
        raise ConfigError([ConfigProblem(source, "server.user", message)])
