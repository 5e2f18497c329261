"""The configuration models: defaults, converted values, normalisation, immutability."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from bastion.config.model import (
    BastionConfig,
    KeepaliveSettings,
    ListenSettings,
    LogSettings,
    RedirectSettings,
    RouteSettings,
    ServerSettings,
    SiteSettings,
    UpstreamServer,
    UpstreamSettings,
    UpstreamTimeouts,
)
from bastion.units import Address


def build_config() -> BastionConfig:
    """A config built in code, with ready-made values (as tests of other packages do)."""
    return BastionConfig.model_validate(
        {
            "listen": [ListenSettings(address=Address("127.0.0.1", 0))],
            "site": [{"hosts": ["*"], "route": [{"upstream": "app"}]}],
            "upstream": {"app": {"servers": ["http://127.0.0.1:9000"]}},
        }
    )


def test_defaults_are_converted_values() -> None:
    server = ServerSettings()
    assert server.graceful_timeout == 30.0
    assert server.trusted_proxies == ()
    assert server.max_header_size == 32 * 1024
    assert server.max_uri_size == 8 * 1024
    assert (server.header_timeout, server.keepalive_timeout, server.body_timeout) == (30, 75, 60)
    assert LogSettings() == LogSettings(access="stdout", format="combined", level="info")
    assert UpstreamTimeouts() == UpstreamTimeouts(connect=5.0, read=60.0, write=60.0, idle=60.0)
    assert KeepaliveSettings() == KeepaliveSettings(max_idle=32, idle_timeout=30.0)


def test_route_defaults() -> None:
    route = RouteSettings(upstream="app")
    assert route.path == "/"
    assert route.path_regex is None
    assert route.methods is None
    assert route.redirect is None
    assert route.strip_prefix is False
    assert route.forwarded == "both"
    assert route.max_body == 100 * 1024 * 1024
    assert route.websocket is True


def test_code_may_pass_converted_values() -> None:
    server = ServerSettings.model_validate(
        {"graceful_timeout": 2.5, "trusted_proxies": [ipaddress.ip_network("10.0.0.0/8")]}
    )
    assert server.graceful_timeout == 2.5
    assert server.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)


def test_code_may_pass_unit_strings_too() -> None:
    server = ServerSettings.model_validate({"graceful_timeout": "250ms", "max_uri_size": "1KB"})
    assert (server.graceful_timeout, server.max_uri_size) == (0.25, 1024)


def test_models_are_frozen() -> None:
    config = build_config()
    with pytest.raises(ValidationError):
        config.server.graceful_timeout = 1.0
    with pytest.raises(TypeError):
        config.upstream["other"] = config.upstream["app"]  # type: ignore[index]


def test_config_is_hashable_and_compares_by_value() -> None:
    assert hash(build_config()) == hash(build_config())
    assert build_config() == build_config()
    assert build_config().source == ""


def test_upstreams_read_like_a_mapping() -> None:
    config = build_config()
    assert list(config.upstream) == ["app"]
    assert "app" in config.upstream
    assert config.upstream.get("web") is None
    assert config.model_dump()["upstream"]["app"]["servers"] == (
        {
            "url": "http://127.0.0.1:9000",
            "srv": None,
            "scheme": "http",
            "weight": 1,
            "max_conns": 0,
            "backup": False,
        },
    )


@pytest.mark.parametrize(
    ("given", "scheme", "host", "port"),
    [
        ("http://10.0.0.5:8080", "http", "10.0.0.5", 8080),
        ("http://App.Internal", "http", "app.internal", 80),
        ("http://[::1]:81/", "http", "::1", 81),
        ({"url": "HTTP://origin:9000"}, "http", "origin", 9000),
        ("https://api.internal", "https", "api.internal", 443),
        ("HTTPS://[fd00::7]:8443/", "https", "fd00::7", 8443),
        ({"url": "https://10.0.0.5:443"}, "https", "10.0.0.5", 443),
    ],
)
def test_upstream_server_url_is_split(given: object, scheme: str, host: str, port: int) -> None:
    server = UpstreamServer.model_validate(given)
    assert (server.scheme, server.host, server.port) == (scheme, host, port)
    assert server.address == Address(host, port)


def test_hosts_are_lowercased_and_normalised() -> None:
    site = SiteSettings.model_validate(
        {
            "hosts": [
                "Example.COM",
                "*.Apps.Example.com",
                "*",
                "bücher.de",
                "example.org.",
                "[::1]",
            ],
            "route": [{"upstream": "app"}],
        }
    )
    assert site.hosts == (
        "example.com",
        "*.apps.example.com",
        "*",
        "xn--bcher-kva.de",
        "example.org",
        "[::1]",
    )


def test_methods_are_uppercased() -> None:
    route = RouteSettings.model_validate({"upstream": "app", "methods": ["get", "Post"]})
    assert route.methods == ("GET", "POST")


def test_redirect_accepts_known_placeholders_and_escaped_braces() -> None:
    redirect = RedirectSettings(to="https://{host}{uri}?from={path}&q={query}&{{x}}&{scheme}")
    assert redirect.status == 301


def test_path_regex_alone_keeps_the_default_path() -> None:
    route = RouteSettings.model_validate({"upstream": "app", "path_regex": r"^/api/v\d+/"})
    assert route.path_regex == r"^/api/v\d+/"
    assert route.path == "/"


def test_a_redirect_route_needs_no_upstream() -> None:
    route = RouteSettings.model_validate({"redirect": {"to": "https://{host}{uri}", "status": 308}})
    assert route.redirect == RedirectSettings(to="https://{host}{uri}", status=308)
    assert route.upstream is None


def test_same_ephemeral_listen_address_may_repeat() -> None:
    config = BastionConfig.model_validate(
        {
            "listen": [{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:0"}],
            "site": [{"hosts": ["*"], "route": [{"redirect": {"to": "https://{host}{uri}"}}]}],
        }
    )
    assert len(config.listen) == 2
    assert dict(config.upstream) == {}


def test_upstream_settings_need_servers() -> None:
    with pytest.raises(ValidationError):
        UpstreamSettings.model_validate({"servers": []})
