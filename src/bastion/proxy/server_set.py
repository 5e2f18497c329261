"""What an upstream's servers are, as the runtime holds them while DNS changes the set.

`ServerSpec` describes one server to run (an address, its TLS name, its weight and limits) and
`ServerPlan` is how the connector reaches it. `LiveServer` is the balancers' `ServerState` that
carries both, so a request in flight keeps its server's plan after the server left the set.
`NamedEntry` is a configured server that DNS expands (a host name, or an SRV name); the net
layer resolves it and hands the runtime whole sets of `ServerSpec`s. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.balance.server import ServerState

if TYPE_CHECKING:
    from bastion.config.model import UpstreamServer, UpstreamSettings, UpstreamTLS


@dataclass(frozen=True, slots=True, eq=False)
class ServerPlan:
    """One origin server address, with the keep-alive limits of its upstream.

    Compared by identity (hashing it is on the hot path); `pool_key` says which servers may
    share idle connections (with `proxy_protocol`, only connections whose PROXY header is the
    request's own are reused: the connector matches them).
    """

    host: str
    port: int
    label: str  # "host:port", for logs
    max_idle: int
    idle_timeout: float
    tls: UpstreamTLS | None = None  # how to speak TLS to it (https servers), else None
    tls_name: str = ""  # the DNS name a resolved address stands for (SNI, certificate), or ""
    proxy_protocol: str | None = None  # "v1" or "v2": each connection starts with a PROXY header

    @property
    def pool_key(self) -> str:
        return self.label if self.tls is None else "https://" + self.label


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server of the current set: `key` (scheme, address, port) says which stay."""

    scheme: str
    address: str  # an IP literal, or a host name left to the connector (static entries)
    port: int
    identity: str  # what a sticky cookie names: the same for the same server everywhere
    tls_name: str = ""
    weight: int = 1
    max_conns: int = 0
    backup: bool = False

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.scheme, self.address, self.port)

    @property
    def label(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NamedEntry:
    """A configured server whose addresses come from DNS: `name:port`, or an SRV name."""

    scheme: str
    name: str
    port: int  # 0 for an SRV name
    srv: bool
    weight: int
    max_conns: int
    backup: bool

    @classmethod
    def of(cls, server: UpstreamServer) -> NamedEntry:
        return cls(
            server.protocol,
            server.host,
            server.port,
            server.is_srv,
            server.weight,
            server.max_conns,
            server.backup,
        )

    def spec(self, address: str, port: int, host_name: str, weight: int = 1) -> ServerSpec:
        """The server for one resolved address (`weight` multiplies the entry's)."""
        host = f"[{address}]" if ":" in address else address
        return ServerSpec(
            self.scheme,
            address,
            port,
            identity=f"{self.scheme}://{host}:{port}",
            tls_name=host_name,
            weight=min(self.weight * max(weight, 1), 100_000),
            max_conns=self.max_conns,
            backup=self.backup,
        )


class LiveServer(ServerState):
    """A server of the current (or a past) set: its state, its spec and how to reach it."""

    __slots__ = ("plan", "spec")

    def __init__(self, index: int, spec: ServerSpec, plan: ServerPlan) -> None:
        super().__init__(
            index, spec.label, weight=spec.weight, max_conns=spec.max_conns, backup=spec.backup
        )
        self.spec = spec
        self.plan = plan


def static_specs(settings: UpstreamSettings) -> tuple[ServerSpec, ...]:
    """The configured servers given by IP literal: they never change."""
    return tuple(
        ServerSpec(
            s.protocol,
            s.host,
            s.port,
            identity=s.url or "",
            weight=s.weight,
            max_conns=s.max_conns,
            backup=s.backup,
        )
        for s in settings.servers
        if not s.is_name
    )


def named_entries(settings: UpstreamSettings) -> tuple[NamedEntry, ...]:
    """The configured servers that DNS expands, in order."""
    return tuple(NamedEntry.of(s) for s in settings.servers if s.is_name)


def server_plan(spec: ServerSpec, settings: UpstreamSettings) -> ServerPlan:
    """How the connector reaches `spec`, with the upstream's keep-alive and TLS settings."""
    keepalive = settings.keepalive
    return ServerPlan(
        host=spec.address,
        port=spec.port,
        label=spec.label,
        max_idle=keepalive.max_idle,
        idle_timeout=keepalive.idle_timeout,
        tls=settings.tls if spec.scheme == "https" else None,
        tls_name=spec.tls_name,
        proxy_protocol=settings.proxy_protocol,
    )
