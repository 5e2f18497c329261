"""What the admin API reads and what it controls: two Protocols and the JSON shapes they give.

The admin server knows nothing of how bastion runs. It is handed an `AdminSource` (facts to
show) and an `AdminControl` (actions) and serialises what they return as JSON. Two
implementations exist: `in_process.InProcessAdmin` over one in-process `ProxyServer`'s
runtime (tests, a single process), and one in the supervisor over the node's shared state.

The TypedDicts below are the JSON bodies exactly; `openapi.py` documents the same shapes and a
test keeps them in step. Times are Unix seconds (floats), durations seconds unless the key
says `_ms`.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypedDict

ServerStateName = Literal["up", "down", "ejected", "drained"]
HealthName = Literal["up", "down", "unchecked"]


class ServerInfo(TypedDict):
    """One server of an upstream, as `GET /api/upstreams` shows it."""

    index: int  # stable id within the upstream: the {index} of drain / enable
    label: str  # "host:port"
    state: ServerStateName  # the first that applies: drained, down, ejected, up
    health: HealthName  # the active checks' verdict ("unchecked": no checks configured)
    health_detail: str  # what the last check saw, "" when none
    ejected_until: float | None  # end of a passive ejection, None when not ejected
    in_flight: int  # requests sent and not finished (node-wide)
    latency_ms: float  # moving average of response times, 0 when none seen
    weight: int
    max_conns: int  # 0: no limit
    backup: bool  # used only when no primary server is usable
    drained: bool


class UpstreamInfo(TypedDict):
    name: str
    balance: str
    servers: list[ServerInfo]


class RouteInfo(TypedDict):
    path: str  # the prefix, or the regular expression when `regex`
    regex: bool
    methods: list[str] | None  # None: every method
    upstream: str | None
    redirect: str | None  # the redirect target template


class SiteInfo(TypedDict):
    hosts: list[str]
    tls: bool
    routes: list[RouteInfo]


class ReloadResult(TypedDict):
    ok: bool
    time: float  # when the reload ended
    error: str | None  # every problem found, one per line; None when ok
    config_hash: str | None  # sha256 of the file read (hex), None when it could not be read
    generation: int  # the configuration generation serving after this reload


class WorkerInfo(TypedDict):
    pid: int
    generation: int
    state: str  # "starting", "serving" or "stopping"


class StatusInfo(TypedDict):
    version: str
    pid: int  # the process serving the admin API
    started: float
    uptime_s: float
    config_path: str
    config_hash: str | None  # sha256 of the configuration file now serving
    generation: int
    workers: list[WorkerInfo]
    last_reload: ReloadResult | None  # None until the first reload


class AdminSource(Protocol):
    """Facts the admin API shows."""

    def status(self) -> StatusInfo: ...

    def upstreams(self) -> list[UpstreamInfo]: ...

    def sites(self) -> list[SiteInfo]: ...


class AdminControl(Protocol):
    """Actions the admin API takes."""

    async def reload(self) -> ReloadResult:
        """Load, validate and apply the configuration file again; the old one stays on error."""
        ...

    def drain(self, upstream: str, index: int) -> bool:
        """Send the server no new requests (its in-flight ones finish); False: no such server."""
        ...

    def enable(self, upstream: str, index: int) -> bool:
        """Undo `drain`; False: no such server."""
        ...
