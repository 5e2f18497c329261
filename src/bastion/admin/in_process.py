"""`InProcessAdmin`: the admin source and control over one in-process proxy's own runtime.

Used where one process serves everything (the integration tests, a proxy run without a
supervisor): facts come from the serving plan's upstream runtimes and the configuration,
drain and enable go to the runtime (`UpstreamRuntime.set_drained`), reload calls the proxy's
own `reload`. The proxy is seen through `LocalProxy`, so this module does not import the
runtime package that starts it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from bastion import __version__
from bastion.admin.api import AdminApi, Route
from bastion.admin.metrics import local_metrics_route
from bastion.admin.server import AdminServer
from bastion.admin.source import ReloadResult, SiteInfo, StatusInfo, UpstreamInfo, WorkerInfo
from bastion.admin.views import file_hash, reload_result, runtime_upstream, site_infos
from bastion.config import BastionConfig, load_config
from bastion.errors import ConfigError
from bastion.net.downstream import PipelineRef
from bastion.observe.metrics import Snapshot


class LocalProxy(Protocol):
    """What InProcessAdmin needs of the proxy (runtime.server.ProxyServer has it)."""

    @property
    def config(self) -> BastionConfig: ...

    @property
    def pipeline_ref(self) -> PipelineRef: ...

    def reload(self, path: str | os.PathLike[str]) -> bool: ...

    def metrics_snapshot(self) -> Snapshot: ...


class InProcessAdmin:
    """AdminSource and AdminControl of a single serving process."""

    def __init__(self, proxy: LocalProxy) -> None:
        self._proxy = proxy
        self._started = time.time()
        self._path = proxy.config.source
        self._hash = file_hash(self._path)
        self._generation = 1
        self._last_reload: ReloadResult | None = None

    # -- AdminSource --------------------------------------------------------------------

    def status(self) -> StatusInfo:
        now = time.time()
        return StatusInfo(
            version=__version__,
            pid=os.getpid(),
            started=self._started,
            uptime_s=round(now - self._started, 3),
            config_path=self._path,
            config_hash=self._hash,
            generation=self._generation,
            workers=[WorkerInfo(pid=os.getpid(), generation=self._generation, state="serving")],
            last_reload=self._last_reload,
        )

    def upstreams(self) -> list[UpstreamInfo]:
        plan = self._proxy.pipeline_ref.pipeline.plan
        settings = self._proxy.config.upstream
        monotonic_now, wall_now = time.monotonic(), time.time()
        return [
            runtime_upstream(
                upstream.runtime,
                settings[name].balance if name in settings else "",
                monotonic_now,
                wall_now,
            )
            for name, upstream in plan.upstreams.items()
        ]

    def sites(self) -> list[SiteInfo]:
        return site_infos(self._proxy.config)

    # -- AdminControl -------------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        path = self._path
        digest = file_hash(path)
        error: str | None = None
        if digest is None:
            error = f"cannot read the configuration file {path or '(none: started from text)'}"
        else:
            try:
                load_config(path)  # the problems, as text; the proxy loads it again to apply
            except ConfigError as problems:
                error = str(problems)
            else:
                if not self._proxy.reload(Path(path)):
                    error = "the configuration could not be applied: see the error log"
        if error is None:
            self._generation += 1
            self._hash = digest
        self._last_reload = reload_result(
            error is None, time.time(), error, digest, self._generation
        )
        return self._last_reload

    def drain(self, upstream: str, index: int) -> bool:
        return self._set_drained(upstream, index, drained=True)

    def enable(self, upstream: str, index: int) -> bool:
        return self._set_drained(upstream, index, drained=False)

    def _set_drained(self, upstream: str, index: int, *, drained: bool) -> bool:
        found = self._proxy.pipeline_ref.pipeline.plan.upstreams.get(upstream)
        return found is not None and found.runtime.set_drained(index, drained)


async def start_local_admin(proxy: LocalProxy, extra: Iterable[Route] = ()) -> AdminServer | None:
    """The admin listener of a proxy serving alone (in-process tests): started only when its
    configuration has an `[admin]` table that does not turn it off. Under a supervisor the
    supervisor serves the admin API instead. The token is read anew for each call, so a
    reload can change it; `admin.listen` changes need a restart. `extra`: more routes
    (`/metrics`)."""
    config = proxy.config
    if "admin" not in config.model_fields_set or config.admin.listen is None:
        return None
    local = InProcessAdmin(proxy)
    metrics = local_metrics_route(proxy)
    api = AdminApi(local, local, lambda: proxy.config.admin.bearer_token, (metrics,))
    server = AdminServer(api, config.admin.listen)
    await server.start()
    return server
