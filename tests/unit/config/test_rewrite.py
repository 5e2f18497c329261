"""The route's `rewrite` table: defaults, normalised internal URLs, errors at their key path."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.config.model import RewriteSettings, RouteSettings
from bastion.errors import ConfigError

BASE = """
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/legacy"
  {route}
[upstream.app]
servers = ["http://127.0.0.1:9000"]
"""


def problems_of(route: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.format(route=route), "edge.toml")
    return str(caught.value).splitlines()


def test_defaults_rewrite_redirects_and_cookies_but_not_bodies() -> None:
    rewrite = RouteSettings(upstream="app").rewrite
    assert rewrite == RewriteSettings(
        redirects=True, cookies=True, body=False, internal_urls=(), cookie_domain="public"
    )


def test_inline_table_and_subtable_spellings_are_the_same() -> None:
    inline = parse_config(
        BASE.format(route='upstream = "app"\n  rewrite = { body = true, cookie_domain = "drop" }'),
        "edge.toml",
    )
    table = parse_config(
        BASE.format(
            route='upstream = "app"\n  [site.route.rewrite]\n  body = true\n'
            '  cookie_domain = "drop"'
        ),
        "edge.toml",
    )
    assert inline.site[0].route[0].rewrite == table.site[0].route[0].rewrite
    assert table.site[0].route[0].rewrite.body is True


def test_internal_urls_are_normalised() -> None:
    config = parse_config(
        BASE.format(
            route='upstream = "app"\n  rewrite = { internal_urls = '
            '["HTTP://Intranet-App:8080", "https://[::1]", "http://app.internal/"] }'
        ),
        "edge.toml",
    )
    assert config.site[0].route[0].rewrite.internal_urls == (
        "http://intranet-app:8080",
        "https://[::1]:443",
        "http://app.internal:80",
    )


@pytest.mark.parametrize(
    "url", ["ftp://x", "http://x/path", "http://", "http://x:99999", "intranet:8080", "http://u@x"]
)
def test_bad_internal_url_names_its_key_path(url: str) -> None:
    problems = problems_of(f'upstream = "app"\n  rewrite = {{ internal_urls = ["{url}"] }}')
    assert problems == [
        "edge.toml: site[0].route[0].rewrite.internal_urls[0]: expected an internal URL like "
        '"http://intranet-app:8080" (http or https, a host, an optional port, no path), '
        f'got "{url}"'
    ]


def test_unknown_keys_and_wrong_types_are_rejected() -> None:
    problems = problems_of(
        'upstream = "app"\n  rewrite = { body = "yes", cookie_domain = "none", location = true }'
    )
    assert problems == [
        'edge.toml: site[0].route[0].rewrite.body: expected a boolean, got "yes"',
        'edge.toml: site[0].route[0].rewrite.cookie_domain: expected one of "public", "drop", '
        'got "none"',
        'edge.toml: site[0].route[0].rewrite.location: unknown key "location" (allowed here: '
        "redirects, cookies, body, internal_urls, cookie_domain)",
    ]


def test_rewrite_on_a_redirect_route_is_an_error() -> None:
    problems = problems_of('redirect = { to = "https://x.test{uri}" }\n  rewrite = { body = true }')
    assert problems == [
        "edge.toml: site[0].route[0].rewrite: rewrite applies to routes with an upstream"
    ]
