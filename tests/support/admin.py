"""Configurations with an `[admin]` table for tests of the admin API and dashboard."""

from __future__ import annotations

from bastion.runtime.server import ProxyServer

TOKEN = "test-token-0123456789"


def config_text(origins: list[str], admin: str = 'listen = "127.0.0.1:0"') -> str:
    """One listener, one route to upstream "app" over `origins`, and `[admin]` with `admin`."""
    servers = ", ".join(f'"http://{origin}"' for origin in origins)
    return f"""
[log]
access = "off"
[admin]
{admin}
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = [{servers}]
"""


def admin_url(proxy: ProxyServer) -> str:
    """The in-process admin listener's base URL."""
    assert proxy.admin is not None
    return f"http://127.0.0.1:{proxy.admin.port}"
