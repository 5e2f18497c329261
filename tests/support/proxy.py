"""Start bastion in-process for integration tests, on 127.0.0.1 port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bastion.config import parse_config
from bastion.runtime.server import ProxyServer


def single_route_config(
    origin: str,
    *,
    route: str = "",
    upstream: str = "",
    server: str = "",
    log: str = 'access = "off"',
    hosts: str = '["*"]',
    path: str = "/",
) -> str:
    """A config with one listener, one site, one route to one upstream at `origin`."""
    return f"""
[server]
{server}
[log]
{log}
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = {hosts}
  [[site.route]]
  path = "{path}"
  upstream = "app"
  {route}
[upstream.app]
servers = ["http://{origin}"]
{upstream}
"""


@asynccontextmanager
async def running_proxy(toml: str, source: str = "test.toml") -> AsyncIterator[ProxyServer]:
    """A started ProxyServer; `.ports[0]` is its listener."""
    server = ProxyServer(parse_config(toml, source))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(graceful_timeout=2.0)
