"""The supervisor: what `bastion run` is. It owns the listening sockets and the workers.

It validates the configuration (load + `compile_plan`), binds every listener itself (it
stays root, so a reload can bind new ports), then spawns `server.workers` worker processes
(`python -m bastion.runtime.worker`: a fresh interpreter, not a fork) that serve on the
inherited sockets. Every worker has a channel (runtime/channel.py); `handlers` dispatches
the messages of all of them. A *generation* is one validated configuration and its workers.

- A worker that exits unexpectedly is replaced (same generation and index), at once the
  first time, with a growing delay when it keeps dying within seconds of its start.
- SIGHUP (or `await reload()`): the file is read and validated first and new listener
  addresses are bound; on error nothing changes and the error is kept in `last_reload`. On
  success a new generation starts; once all its workers are `ready` the old ones get SIGTERM
  (they stop accepting, say `draining`, finish in-flight requests within graceful_timeout).
  The listening sockets stay open here throughout, so no connection is refused or reset;
  listeners the new file removed are closed once the old generation has exited.
- SIGTERM/SIGINT: every worker gets SIGTERM, the listening sockets close, and the supervisor
  exits 0 once the workers have (SIGKILL after graceful_timeout and a margin).
- SIGUSR1: forwarded to the workers, which reopen the access log (the supervisor writes
  only the error log to stderr, which needs no reopening).

`status()` and `reload()` are the interface of the admin API. `components` are things that
live as long as the supervisor (the admin listener): made by the `component_makers` given to
the constructor, started before the first workers are spawned and stopped on the way out.
`shared_fds` are descriptors every worker inherits (`--shared NAME=FD`), e.g. the per-node
shared state region; `exit_listeners` are called with each worker that has exited (reaped),
`generation_listeners` with each validated generation before its workers are spawned.

What it must not know: HTTP, the proxy core; the workers are processes with a channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bastion import __version__
from bastion.errors import ConfigError
from bastion.observe.metrics_export import MetricsAggregate
from bastion.runtime.channel import Channel, Message, MessageHandlers
from bastion.runtime.generation import (
    Generation,
    close_sockets,
    file_sha256,
    prepare_generation,
)
from bastion.runtime.worker import WorkerArgs, worker_argv

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""How long a new generation's workers may take to say `ready` before a reload gives up."""
DRAINING_TIMEOUT = 2.0
"""How long a reload waits for the old workers to stop accepting before it reports success."""
STOP_MARGIN = 5.0
"""Beyond graceful_timeout, how long a stop waits for workers before SIGKILL."""
QUICK_DEATH = 2.0
"""A worker that exits within this many seconds of its start died 'at once'."""
MAX_BACKOFF = 30.0


class Component(Protocol):
    """Something that lives as long as the supervisor (e.g. the admin listener)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ComponentMaker = Callable[["Supervisor"], Component]


@dataclass(slots=True, eq=False)
class WorkerProcess:
    index: int
    generation: Generation
    process: asyncio.subprocess.Process
    channel: Channel
    restarts: int
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        if not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "generation": self.generation.number,
            "started": self.started,
            "restarts": self.restarts,
            "ready": self.ready.is_set(),
            "retiring": self.retired,
        }


class Supervisor:
    """Listeners, workers, signals and reloads of one `bastion run`."""

    def __init__(self, path: Path, component_makers: Sequence[ComponentMaker] = ()) -> None:
        self.path = path
        self.handlers = MessageHandlers()
        self.handlers.on("ready", self._on_ready)
        self.handlers.on("draining", self._on_draining)
        # Workers' metrics snapshots; a worker whose channel closed is retired (its last
        # counters kept): docs/metrics.md. The admin listener serves `metrics.render()`.
        self.metrics = MetricsAggregate(gone=lambda channel: channel.closed.is_set())
        self.handlers.on("metrics", self.metrics.on_message)
        self.shared_fds: dict[str, int] = {}
        self.exit_listeners: list[Callable[[WorkerProcess], None]] = []
        # Told of each generation before its workers are spawned (the first one included).
        self.generation_listeners: list[Callable[[Generation], None]] = []
        self.components: list[Component] = []
        self._component_makers = list(component_makers)
        self.started = time.time()
        self.generation = prepare_generation(path, 1, {})  # raises ConfigError / OSError: no start
        self.workers: list[WorkerProcess] = []
        self.retiring: set[WorkerProcess] = set()
        self.last_reload: dict[str, Any] | None = None
        self._by_channel: dict[Channel, WorkerProcess] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._quick_deaths: dict[int, int] = {}
        self._last_reopen = 0.0
        self._serving = False  # the first generation is ready: replace workers that die

    # -- the interface of the admin API --------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Version, process, configuration in force, workers and the last reload result."""
        return {
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started,
            "uptime": time.time() - self.started,
            "config": {"path": str(self.path), "sha256": self.generation.sha256},
            "generation": self.generation.number,
            "workers": [w.describe() for w in [*self.workers, *self.retiring]],
            "last_reload": self.last_reload,
        }

    async def reload(self) -> dict[str, Any]:
        """Re-read the file; a new generation of workers if it is valid. The result is kept."""
        async with self._reload_lock:
            if self._stopping.is_set():
                return self._record(False, "bastion is stopping", None)
            return await self._reload()

    def add_component(self, make: ComponentMaker) -> None:
        """Start `make(self)` with the supervisor, once the first workers serve."""
        self._component_makers.append(make)

    def worker_of(self, channel: Channel) -> WorkerProcess | None:
        """The worker at the other end of `channel` (for message handlers)."""
        return self._by_channel.get(channel)

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to stop gracefully (what SIGTERM does)."""
        self._stopping.set()

    async def run(self, handle_signals: bool = True) -> int:
        """Serve until stopped; 0, or 1 when the first workers could not start. Without
        `handle_signals` (a supervisor inside another program, e.g. a test) only `stop()`,
        `reload()` and `reopen_logs()` drive it."""
        if handle_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
            loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: self._own(self.reload()))
            loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        count = self.generation.worker_count()
        for listener in self.generation_listeners:
            listener(self.generation)
        # Components first (the admin listener binds here): one that cannot start stops
        # `bastion run` before any worker has served.
        for make in self._component_makers:
            component = make(self)
            await component.start()
            self.components.append(component)
        async with self._reload_lock:  # a SIGHUP now waits for the first workers
            self.workers = [await self._spawn(self.generation, index, 0) for index in range(count)]
            failure = await self._wait_ready(self.workers)
        if failure is not None:
            log.error("cannot start: %s", failure)
            self._stopping.set()
            await self._stop()
            return 1
        self._serving = True
        log.info("supervisor %d: %d workers, generation 1", os.getpid(), count)
        await self._stopping.wait()
        await self._stop()
        return 0

    async def _stop(self) -> None:
        log.info("stopping: letting in-flight requests finish")
        async with self._reload_lock:  # a reload under way finishes (bounded) first
            await self._stop_all()

    async def _stop_all(self) -> None:
        workers = [*self.workers, *self.retiring]
        for worker in workers:
            worker.retired = True
            worker.signal(signal.SIGTERM)
        close_sockets(self.generation.sockets)
        for component in reversed(self.components):
            await component.stop()
        timeout = self.generation.config.server.graceful_timeout + STOP_MARGIN
        await self._wait_exited(workers, timeout)
        for task in list(self._tasks):
            task.cancel()
        os.close(self.generation.config_fd)
        log.info("stopped")

    async def _wait_exited(self, workers: Sequence[WorkerProcess], timeout: float) -> None:
        pending = [w.exited.wait() for w in workers]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*pending)
        except TimeoutError:
            for worker in workers:
                if not worker.exited.is_set():
                    log.error(
                        "worker %d (pid %d) did not stop: killing it", worker.index, worker.pid
                    )
                    worker.signal(signal.SIGKILL)
                    await worker.exited.wait()

    def reopen_logs(self) -> None:
        """SIGUSR1: the workers reopen their access log files."""
        self._last_reopen = time.monotonic()
        for worker in [*self.workers, *self.retiring]:
            if worker.ready.is_set():  # not ready: SIGUSR1 would still end it; sent on ready
                worker.signal(signal.SIGUSR1)

    def _own(self, coroutine: Any) -> None:
        """Run a coroutine as a task owned here: kept until done, its failure logged."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor task failed", exc_info=task.exception())

    # -- reload ----------------------------------------------------------------------------

    async def _reload(self) -> dict[str, Any]:
        old = self.generation
        try:
            new = prepare_generation(self.path, old.number + 1, old.bound())
        except (ConfigError, OSError) as error:
            log.error("reload failed, keeping the running configuration:\n%s", error)
            return self._record(False, str(error), file_sha256(self.path))
        count = new.worker_count()
        for listener in self.generation_listeners:
            listener(new)
        workers = [await self._spawn(new, index, 0) for index in range(count)]
        failure = await self._wait_ready(workers)
        if failure is not None:
            for worker in workers:
                worker.retired = True
                worker.signal(signal.SIGKILL)
            close_sockets(new.sockets, keep=old.sockets)
            os.close(new.config_fd)
            log.error("reload failed, keeping the running configuration: %s", failure)
            return self._record(False, failure, new.sha256)
        retiring, self.workers, self.generation = self.workers, workers, new
        await self._retire(retiring)
        self._own(self._forget(old, retiring))
        log.info("configuration reloaded from %s (generation %d)", self.path, new.number)
        return self._record(True, None, new.sha256)

    async def _wait_ready(self, workers: Sequence[WorkerProcess]) -> str | None:
        """None once every worker is ready; else what went wrong."""
        for worker in workers:
            waits = [asyncio.ensure_future(e.wait()) for e in (worker.ready, worker.exited)]
            _, pending = await asyncio.wait(
                waits, timeout=READY_TIMEOUT, return_when="FIRST_COMPLETED"
            )
            for wait in pending:
                wait.cancel()
            if not worker.ready.is_set():
                if worker.exited.is_set():
                    status = worker.process.returncode
                    return f"worker {worker.index} exited with status {status} before serving"
                return f"worker {worker.index} not ready within {READY_TIMEOUT:g}s"
        return None

    async def _retire(self, workers: Sequence[WorkerProcess]) -> None:
        """SIGTERM the old workers; return once they stopped accepting (bounded)."""
        for worker in workers:
            worker.retired = True
            self.retiring.add(worker)
            worker.signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(self._stopped_accepting(w)) for w in workers]
        if waits:
            await asyncio.wait(waits, timeout=DRAINING_TIMEOUT)
            for wait in waits:
                wait.cancel()

    @staticmethod
    async def _stopped_accepting(worker: WorkerProcess) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in (worker.draining, worker.exited)]
        try:
            await asyncio.wait(waits, return_when="FIRST_COMPLETED")
        finally:
            for wait in waits:
                wait.cancel()

    async def _forget(self, old: Generation, workers: Sequence[WorkerProcess]) -> None:
        """Once the old generation has exited: close the listeners the new one dropped."""
        await self._wait_exited(workers, old.config.server.graceful_timeout + STOP_MARGIN)
        self.retiring.difference_update(workers)
        close_sockets(old.sockets, keep=self.generation.sockets)
        os.close(old.config_fd)

    def _record(self, ok: bool, error: str | None, sha256: str | None) -> dict[str, Any]:
        self.last_reload = {
            "time": time.time(),
            "ok": ok,
            "error": error,
            "sha256": sha256,
            "generation": self.generation.number,
        }
        return self.last_reload

    # -- workers ---------------------------------------------------------------------------

    async def _spawn(self, generation: Generation, index: int, restarts: int) -> WorkerProcess:
        ours, theirs = socket.socketpair()
        listen_fds = tuple(tuple(sock.fileno() for sock in socks) for socks in generation.sockets)
        args = WorkerArgs(
            config_path=self.path,
            config_fd=generation.config_fd,
            generation=generation.number,
            index=index,
            channel_fd=theirs.fileno(),
            listen_fds=listen_fds,
            shared_fds=dict(self.shared_fds),
            user=generation.config.server.user,
        )
        fds = [theirs.fileno(), generation.config_fd, *(fd for fds in listen_fds for fd in fds)]
        try:
            process = await asyncio.create_subprocess_exec(
                *worker_argv(args),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=[*fds, *self.shared_fds.values()],
            )
        finally:
            theirs.close()
        channel = Channel(
            ours, self.handlers, peer=f"worker {index} (generation {generation.number})"
        )
        worker = WorkerProcess(index, generation, process, channel, restarts)
        self._by_channel[channel] = worker
        await channel.start()
        self._own(self._watch(worker))
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        status = await worker.process.wait()
        worker.exited.set()
        worker.channel.close()
        self._by_channel.pop(worker.channel, None)
        for listener in self.exit_listeners:
            listener(worker)
        if worker.retired or not self._is_current(worker) or self._stopping.is_set():
            return
        if not self._serving:
            return
        lived = time.monotonic() - worker.started_monotonic
        quick = self._quick_deaths.get(worker.index, 0) + 1 if lived < QUICK_DEATH else 0
        self._quick_deaths[worker.index] = quick
        delay = 0.0 if quick <= 1 else min(MAX_BACKOFF, 0.5 * 2 ** (quick - 2))
        log.error(
            "worker %d (pid %d) exited unexpectedly with status %s after %.1fs; "
            "starting a new one%s",
            worker.index,
            worker.pid,
            status,
            lived,
            f" in {delay:g}s (it keeps dying at once)" if delay else "",
        )
        if delay:
            await asyncio.sleep(delay)
        if self._stopping.is_set() or not self._is_current(worker):
            return
        self.workers[worker.index] = await self._spawn(
            worker.generation, worker.index, worker.restarts + 1
        )

    def _is_current(self, worker: WorkerProcess) -> bool:
        return worker.index < len(self.workers) and self.workers[worker.index] is worker

    def _on_ready(self, message: Message, channel: Channel) -> None:
        worker = self._by_channel.get(channel)
        if worker is None:
            return
        worker.ready.set()
        if worker.started_monotonic < self._last_reopen:  # a SIGUSR1 came while it started
            worker.signal(signal.SIGUSR1)

    def _on_draining(self, message: Message, channel: Channel) -> None:
        worker = self._by_channel.get(channel)
        if worker is not None:
            worker.draining.set()
