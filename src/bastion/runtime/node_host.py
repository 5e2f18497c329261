"""The supervisor's side of the per-node shared state (bastion.state) and the admin listener.

`SharedNode` creates the region once, sized from the first configuration, and plugs into a
`Supervisor` through its seams: the region's fd goes to every worker (`shared_fds`), a worker
that exited gives its in-flight column back (`exit_listeners`), and each new generation of
workers (start, reload) begins a node generation, with the generation's plan bound to the
region so the admin API lists the servers of the configuration in force before its workers
have served anything. `supervised_components` adds the admin listener (API, dashboard,
/metrics) over the same region.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bastion.admin.metrics import aggregate_metrics_route
from bastion.admin.supervised import supervised_admin_server
from bastion.config.model import BastionConfig
from bastion.runtime.worker import STATE_FD_NAME
from bastion.state import NodeState

if TYPE_CHECKING:
    from bastion.runtime.generation import Generation
    from bastion.runtime.supervisor import Component, Supervisor, WorkerProcess

log = logging.getLogger(__name__)


def region_sizes(config: BastionConfig) -> tuple[int, int]:
    """(server slots, learned-session entries) the configuration needs at least."""
    servers = sum(len(upstream.servers) for upstream in config.upstream.values())
    sessions = sum(
        upstream.sticky.max_entries
        for upstream in config.upstream.values()
        if upstream.sticky is not None and upstream.sticky.learn is not None
    )
    return servers, sessions


class SharedNode:
    """The node's region, as the supervisor holds it."""

    def __init__(self, config: BastionConfig) -> None:
        servers, sessions = region_sizes(config)
        self.node = NodeState.create(servers=servers, sessions=sessions)

    def plug_into(self, supervisor: Supervisor) -> None:
        supervisor.shared_fds[STATE_FD_NAME] = self.node.fd
        supervisor.exit_listeners.append(self._worker_exited)
        supervisor.generation_listeners.append(self._new_generation)

    def _worker_exited(self, worker: WorkerProcess) -> None:
        self.node.release_worker(worker.pid)

    def _new_generation(self, generation: Generation) -> None:
        self.node.begin_generation()
        for upstream in generation.plan.upstreams.values():
            upstream.runtime.share(self.node)

    def close(self) -> None:
        self.node.close()


def admin_component(supervisor: Supervisor, shared: SharedNode) -> Component:
    """The admin listener of a supervised node (the caller checked `admin.listen` is on).
    It stays on the address it started with: a reload that moves it only says so."""
    started_on = supervisor.generation.config.admin.listen

    def warn_if_moved(generation: Generation) -> None:
        if generation.config.admin.listen != started_on:
            log.warning("reload: admin.listen changes take effect after a restart")

    supervisor.generation_listeners.append(warn_if_moved)
    extra = (aggregate_metrics_route(supervisor.metrics),)
    server = supervised_admin_server(supervisor, shared.node, extra=extra)
    if server is None:
        raise ValueError('admin.listen is "off": no admin listener to start')
    return server
