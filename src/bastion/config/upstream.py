"""The `[upstream.NAME]` tables: an upstream's servers, and how bastion talks to them.

`UpstreamServer` splits its URL once (scheme, host, port); `Upstreams` is the frozen mapping
of upstreams by name that `BastionConfig.upstream` holds. Like every model, these are frozen,
forbid unknown keys and describe every field. This module must not know about files, TOML,
how problems are shown, nor the connection pool that uses these settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

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

from bastion.config.tls import UpstreamTLS
from bastion.config.values import (
    DocType,
    FrozenMapping,
    PositiveDuration,
    UpstreamName,
    parse_server_url,
)
from bastion.units import Address, describe_value


def _server_url(url: str) -> str:
    parse_server_url(url)
    return url


class UpstreamServer(BaseModel):
    """One origin server: a `"http://host:port"` or `"https://host:port"` string, or a
    `{ url = "..." }` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, AfterValidator(_server_url), DocType("URL")] = Field(
        description='`"http://host:port"` or `"https://host:port"` (port 80 or 443 when left out).'
    )
    _scheme: str = PrivateAttr("http")
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
        self._scheme, self._host, self._port = parse_server_url(self.url)
        return self

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

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
        'or `{ url = "..." }` tables.'
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


def _frozen_upstreams(upstreams: Mapping[str, UpstreamSettings]) -> FrozenMapping[UpstreamSettings]:
    return FrozenMapping(upstreams)


Upstreams = Annotated[
    Mapping[UpstreamName, UpstreamSettings],
    AfterValidator(_frozen_upstreams),
    PlainSerializer(dict, return_type=dict[str, UpstreamSettings]),
    DocType("tables by name"),
]
