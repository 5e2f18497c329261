"""`SupervisedAdmin`: the admin source and control of a node run by a supervisor.

Supervisor facts (version, workers, configuration in force, reload) come from the
supervisor's `status()` / `reload()` (seen through `SupervisorFacts`, so this module does not
import the runtime package); server state comes from the node's shared state
(`bastion.state.NodeState`), which every worker writes: in-flight counts summed over the
workers, the checker's health verdict, ejections, drains. Drain and enable write the drained
flag there; every worker reads it before its next pick. `supervised_admin_server` builds the
admin listener the supervisor starts as one of its components.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol, cast

from bastion.admin.api import AdminApi, Route
from bastion.admin.server import AdminServer
from bastion.admin.source import (
    HealthName,
    ReloadResult,
    ServerInfo,
    ServerStateName,
    SiteInfo,
    StatusInfo,
    UpstreamInfo,
    WorkerInfo,
)
from bastion.admin.views import site_infos
from bastion.config import BastionConfig
from bastion.state import NodeState, ServerView


class ServingGeneration(Protocol):
    @property
    def config(self) -> BastionConfig: ...


class SupervisorFacts(Protocol):
    """What the admin API needs of runtime.supervisor.Supervisor."""

    @property
    def generation(self) -> ServingGeneration: ...

    def status(self) -> dict[str, Any]: ...

    async def reload(self) -> dict[str, Any]: ...


class SupervisedAdmin:
    """AdminSource and AdminControl of a supervisor and its node's shared state."""

    def __init__(self, supervisor: SupervisorFacts, node: NodeState) -> None:
        self._supervisor = supervisor
        self._node = node

    def status(self) -> StatusInfo:
        facts = self._supervisor.status()
        config = facts["config"]
        last = facts["last_reload"]
        return StatusInfo(
            version=facts["version"],
            pid=facts["pid"],
            started=facts["started"],
            uptime_s=round(facts["uptime"], 3),
            config_path=config["path"],
            config_hash=config["sha256"],
            generation=facts["generation"],
            workers=[
                WorkerInfo(
                    pid=worker["pid"],
                    generation=worker["generation"],
                    state=_worker_state(worker),
                )
                for worker in facts["workers"]
            ],
            last_reload=_reload_result(last) if last is not None else None,
        )

    def upstreams(self) -> list[UpstreamInfo]:
        config = self._supervisor.generation.config
        by_upstream: dict[str, list[ServerInfo]] = {name: [] for name in config.upstream}
        now = time.time()
        for view in self._node.servers(generation=self._node.generation or None):
            if view.upstream in by_upstream:
                by_upstream[view.upstream].append(_server_info(view, now))
        return [
            UpstreamInfo(name=name, balance=config.upstream[name].balance, servers=servers)
            for name, servers in by_upstream.items()
        ]

    def sites(self) -> list[SiteInfo]:
        return site_infos(self._supervisor.generation.config)

    async def reload(self) -> ReloadResult:
        return _reload_result(await self._supervisor.reload())

    def drain(self, upstream: str, index: int) -> bool:
        return self._node.drain(upstream, index)

    def enable(self, upstream: str, index: int) -> bool:
        return self._node.enable(upstream, index)


def _server_info(view: ServerView, now: float) -> ServerInfo:
    return ServerInfo(
        index=view.index,
        label=view.label,
        state=cast(ServerStateName, view.state),
        health=cast(HealthName, view.health),
        health_detail=view.health_detail,
        ejected_until=view.ejected_until if view.ejected_until > now else None,
        in_flight=view.in_flight,
        latency_ms=round(view.latency * 1000.0, 3),
        weight=view.weight,
        max_conns=view.max_conns,
        backup=view.backup,
        drained=view.drained,
    )


def _reload_result(facts: dict[str, Any]) -> ReloadResult:
    return ReloadResult(
        ok=bool(facts["ok"]),
        time=facts["time"],
        error=facts["error"],
        config_hash=facts["sha256"],
        generation=facts["generation"],
    )


def supervised_admin_server(
    supervisor: SupervisorFacts, node: NodeState, extra: Iterable[Route] = ()
) -> AdminServer | None:
    """The admin listener for `supervisor`'s node (None when `admin.listen` is "off"); the
    token is read from the configuration in force at each call, so a reload can change it."""
    settings = supervisor.generation.config.admin
    if settings.listen is None:
        return None
    admin = SupervisedAdmin(supervisor, node)
    api = AdminApi(admin, admin, lambda: supervisor.generation.config.admin.bearer_token, extra)
    return AdminServer(api, settings.listen)


def _worker_state(worker: dict[str, Any]) -> str:
    """An old generation's worker finishing its requests after a reload is "stopping"."""
    if worker.get("retiring"):
        return "stopping"
    return "serving" if worker["ready"] else "starting"
