"""The `[upstream.NAME]` tables: an upstream's servers, and how bastion talks to them.

`UpstreamServer` splits its URL once (scheme, host, port); `Upstreams` is the frozen mapping
of upstreams by name that `BastionConfig.upstream` holds. Like every model, these are frozen,
forbid unknown keys and describe every field. This module must not know about files, TOML,
how problems are shown, nor the connection pool that uses these settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StrictInt,
    model_validator,
)

from bastion.config.balancing import (
    BalanceName,
    HashKey,
    HealthSettings,
    PassiveSettings,
    QueueSettings,
    StickySettings,
)
from bastion.config.tls import UpstreamTLS
from bastion.config.values import (
    DocType,
    Duration,
    FrozenMapping,
    PositiveDuration,
    UpstreamName,
    parse_server_url,
)
from bastion.units import Address, describe_value, is_ip_literal


def _server_url(url: str | None) -> str | None:
    if url is not None:
        parse_server_url(url)
    return url


_SRV_NAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?"
)


_SRV_PREFIX = re.compile(r"_[A-Za-z0-9-]+\._(tcp|udp|tls)\.", re.IGNORECASE)  # RFC 2782


def _srv_name(name: str | None) -> str | None:
    if name is not None and not (_SRV_NAME.fullmatch(name) and _SRV_PREFIX.match(name)):
        raise ValueError(f'expected an SRV name like "_http._tcp.app.internal", got {name!r}')
    return name.lower().removesuffix(".") if name is not None else None


class UpstreamServer(BaseModel):
    """One origin server: a `"http://host:port"` or `"https://host:port"` string, or a
    `{ url = "...", weight = 1, max_conns = 0, backup = false }` table, or an SRV name
    `{ srv = "_http._tcp.app.internal", scheme = "http" }`.

    A host name (in `url` or `srv`) stands for every address it resolves to, re-resolved every
    `resolve` interval of the upstream; an IP literal is one fixed server.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str | None, AfterValidator(_server_url), DocType("URL")] = Field(
        default=None,
        description='`"http://host:port"` or `"https://host:port"` (port 80 or 443 when left '
        "out); give `url` or `srv`.",
    )
    srv: Annotated[str | None, AfterValidator(_srv_name), DocType("SRV name")] = Field(
        default=None,
        description='An SRV name such as `"_http._tcp.app.internal"`: every target it lists is '
        "a server (the lowest priority primary, the others backups); give `url` or `srv`.",
    )
    scheme: Literal["http", "https"] | None = Field(
        default=None,
        description='How to speak to the server(s): with `srv`, "http" (default) or "https"; '
        "with `url`, its scheme.",
    )
    weight: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(
        default=1, description="Share of requests relative to the other servers."
    )
    max_conns: Annotated[StrictInt, Field(ge=0)] = Field(
        default=0,
        description="Most requests in flight to this server (0: no limit); beyond it requests "
        "wait in the upstream's queue.",
    )
    backup: bool = Field(
        default=False, description="Used only when every other (primary) server is down."
    )
    _protocol: str = PrivateAttr("http")
    _host: str = PrivateAttr("")
    _port: int = PrivateAttr(80)

    @model_validator(mode="before")
    @classmethod
    def _from_url_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            parse_server_url(data)
            return {"url": data}
        if isinstance(data, dict | UpstreamServer):
            return data
        raise ValueError(
            'expected a server URL like "http://10.0.0.5:8080" or a table { url = "..." }, '
            f"got {describe_value(data)}"
        )

    @model_validator(mode="after")
    def _split_url(self) -> UpstreamServer:
        if (self.url is None) == (self.srv is None):
            raise ValueError('give exactly one of "url" or "srv"')
        if self.url is not None:
            self._protocol, self._host, self._port = parse_server_url(self.url)
            if self.scheme not in (None, self._protocol):
                raise ValueError(f'"scheme" {self.scheme!r} differs from the URL\'s')
        else:
            assert self.srv is not None
            self._protocol, self._host, self._port = self.scheme or "http", self.srv, 0
        # `scheme` reads as the scheme spoken whichever way it was given (frozen: set once).
        object.__setattr__(self, "scheme", self._protocol)
        return self

    @property
    def protocol(self) -> str:
        """ "http" or "https": the URL's scheme, or `scheme` of an SRV entry."""
        return self._protocol

    @property
    def host(self) -> str:
        """The URL's host (a name or an IP literal), or the SRV name."""
        return self._host

    @property
    def port(self) -> int:
        """The URL's port; 0 for an SRV entry (each record carries its own)."""
        return self._port

    @property
    def is_srv(self) -> bool:
        return self.srv is not None

    @property
    def is_name(self) -> bool:
        """Whether DNS says which servers this entry stands for (a host name or SRV name)."""
        return self.srv is not None or not is_ip_literal(self._host)

    @property
    def address(self) -> Address:
        return Address(self._host, self._port)


class UpstreamTimeouts(BaseModel):
    """An upstream's `timeouts = { ... }`: how long to wait for its servers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: PositiveDuration = Field(
        default=5.0, description="Time to open a connection to a server."
    )
    read: PositiveDuration = Field(
        default=60.0, description="Longest wait for the server's response head or next body bytes."
    )
    write: PositiveDuration = Field(
        default=60.0, description="Longest wait for the server to accept more request bytes."
    )
    idle: PositiveDuration = Field(
        default=60.0,
        description="How long an upgraded (WebSocket) tunnel may stay silent both ways.",
    )


class KeepaliveSettings(BaseModel):
    """An upstream's `keepalive = { ... }`: idle connections kept per server for reuse."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_idle: Annotated[StrictInt, Field(ge=0)] = Field(
        default=32, description="Most idle connections kept per server (0: no pooling)."
    )
    idle_timeout: PositiveDuration = Field(
        default=30.0, description="How long an idle pooled connection is kept."
    )


class UpstreamSettings(BaseModel):
    """A named group of origin servers that routes proxy to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: Annotated[
        tuple[UpstreamServer, ...], Field(min_length=1), DocType("list of URLs or tables")
    ] = Field(
        description='The origin servers: `"http://host:port"` or `"https://host:port"` strings, '
        'or `{ url = "..." }` / `{ srv = "..." }` tables.'
    )
    timeouts: UpstreamTimeouts = Field(
        default=UpstreamTimeouts(), description="Timeouts towards the servers."
    )
    keepalive: KeepaliveSettings = Field(
        default=KeepaliveSettings(), description="Idle connection pool per server."
    )
    tls: UpstreamTLS = Field(
        default=UpstreamTLS(), description="TLS towards the `https://` servers."
    )
    balance: BalanceName = Field(
        default="round_robin",
        description='How a server is chosen: "round_robin" (smooth, weighted), "least_conn", '
        '"random_two" (power of two choices), "ewma" (latency-aware), "hash" (consistent).',
    )
    hash_key: HashKey = Field(default="ip", description='With `balance = "hash"`: what is hashed.')
    sticky: StickySettings | None = Field(
        default=None, description="Keep each client on one server (sticky sessions)."
    )
    health: HealthSettings | None = Field(
        default=None, description="Active HTTP health checks (none when left out)."
    )
    passive: PassiveSettings = Field(
        default=PassiveSettings(), description="Ejection of servers that fail real requests."
    )
    retries: Annotated[StrictInt, Field(ge=0, le=10)] = Field(
        default=2,
        description="Extra attempts on another server: after a failed connection for any "
        "request, after 502/503/timeouts only for idempotent requests whose body can be replayed.",
    )
    retry_budget: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.2, description="Retries allowed as a share of requests (0.2: 20% extra)."
    )
    queue: QueueSettings = Field(
        default=QueueSettings(), description="Waiting room for when every server is at `max_conns`."
    )
    slow_start: Duration = Field(
        default=0.0, description="Ramp a recovered server's share of requests over this time."
    )
    resolve: PositiveDuration = Field(
        default=30.0,
        description="How often the host names and SRV names among `servers` are resolved "
        "again (a failed resolution keeps the last good addresses).",
    )
    pin_auth: bool = Field(
        default=True,
        description="Bind a client connection to its server connection once the server asks "
        "for NTLM or Negotiate (Windows integrated authentication).",
    )
    proxy_protocol: Literal["v1", "v2"] | None = Field(
        default=None,
        description='Send a PROXY protocol header (`"v1"` text or `"v2"` binary) first on '
        "every connection to the servers (before TLS), naming the client; health checks "
        "send v1 `UNKNOWN` / v2 `LOCAL`. A connection carrying a client's header is reused "
        "only for requests with the same header.",
    )

    @model_validator(mode="after")
    def _some_primary(self) -> UpstreamSettings:
        if all(server.backup for server in self.servers):
            raise ValueError("every server is a backup: at least one must be a primary")
        return self


def _frozen_upstreams(upstreams: Mapping[str, UpstreamSettings]) -> FrozenMapping[UpstreamSettings]:
    return FrozenMapping(upstreams)


Upstreams = Annotated[
    Mapping[UpstreamName, UpstreamSettings],
    AfterValidator(_frozen_upstreams),
    PlainSerializer(dict, return_type=dict[str, UpstreamSettings]),
    DocType("tables by name"),
]
