"""Loading a TOML file: the values it yields, and every kind of problem, told to a person."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from bastion.config import BastionConfig, load_config, parse_config
from bastion.config.load import key_path
from bastion.errors import ConfigError
from bastion.units import Address

MINIMAL = """\
[[listen]]
address = "0.0.0.0:8080"

[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"

[upstream.app]
servers = ["http://10.0.0.5:8080"]
"""

FULL = """\
[server]
graceful_timeout = "10s"
trusted_proxies = ["10.0.0.0/8", "192.168.1.7", "fd00::/8"]
max_header_size = "16KB"
max_uri_size = 4096
header_timeout = "5s"
keepalive_timeout = "2m"
body_timeout = "1500ms"

[log]
access = "/var/log/bastion/access.log"
format = "json"
level = "debug"

[[listen]]
address = "0.0.0.0:80"

[[listen]]
address = "unix:/run/bastion.sock"

[[site]]
hosts = ["Example.com", "*.example.com"]
  [[site.route]]
  path = "/api"
  methods = ["get", "POST"]
  upstream = "api"
  strip_prefix = true
  forwarded = "rfc7239"
  max_body = "1MB"
  websocket = false

  [[site.route]]
  path_regex = "^/static/.*\\\\.css$"
  upstream = "web"

  [[site.route]]
  redirect = { to = "https://{host}{uri}", status = 308 }

[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "web"

[upstream.api]
servers = ["http://10.0.0.5:8080", { url = "http://10.0.0.6" }]
timeouts = { connect = "1s", read = "30s", write = "20s", idle = "1h" }
keepalive = { max_idle = 0, idle_timeout = "10s" }

[upstream.web]
servers = ["http://[fd00::5]:9000"]

[upstream.unused]
servers = ["http://spare:8000"]
"""


def config_text(*, top: str = "", listen: str = "", route: str = "", upstream: str = "") -> str:
    """The minimal config, with lines added to its top, [[listen]], route and upstream."""
    return f"""{top}
[[listen]]
address = "127.0.0.1:8080"
{listen}

[[site]]
hosts = ["example.com"]
  [[site.route]]
  upstream = "app"
{route}

[upstream.app]
servers = ["http://10.0.0.5:8080"]
{upstream}
"""


def problems_of(text: str, source: str = "edge.toml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    return [str(problem) for problem in caught.value.problems]


def test_minimal_config_from_the_contract() -> None:
    config = parse_config(MINIMAL, "bastion.toml")
    assert config.source == "bastion.toml"
    assert config.listen[0].address == Address("0.0.0.0", 8080)
    assert config.site[0].hosts == ("*",)
    assert config.site[0].route[0].upstream == "app"
    server = config.upstream["app"].servers[0]
    assert (server.url, server.scheme, server.host, server.port) == (
        "http://10.0.0.5:8080",
        "http",
        "10.0.0.5",
        8080,
    )
    assert config.server.graceful_timeout == 30.0
    assert config.log.access == "stdout"
    assert config.upstream["app"].timeouts.connect == 5.0
    assert config.upstream["app"].keepalive.max_idle == 32


def test_full_config_converts_every_unit() -> None:
    config = parse_config(FULL, "full.toml")
    server = config.server
    assert server.graceful_timeout == 10.0
    assert server.trusted_proxies == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.1.7/32", "fd00::/8")
    )
    assert (server.max_header_size, server.max_uri_size) == (16384, 4096)
    assert (server.header_timeout, server.keepalive_timeout, server.body_timeout) == (5, 120, 1.5)
    assert (config.log.access, config.log.format, config.log.level) == (
        "/var/log/bastion/access.log",
        "json",
        "debug",
    )
    assert config.listen[1].address == Address("", 0, "/run/bastion.sock")
    api_route, css_route, redirect_route = config.site[0].route
    assert config.site[0].hosts == ("example.com", "*.example.com")
    assert api_route.methods == ("GET", "POST")
    assert (api_route.strip_prefix, api_route.forwarded, api_route.max_body) == (
        True,
        "rfc7239",
        1024 * 1024,
    )
    assert api_route.websocket is False
    assert css_route.path_regex == r"^/static/.*\.css$"
    assert redirect_route.redirect is not None
    assert (redirect_route.redirect.to, redirect_route.redirect.status) == (
        "https://{host}{uri}",
        308,
    )
    api = config.upstream["api"]
    assert [(s.host, s.port) for s in api.servers] == [("10.0.0.5", 8080), ("10.0.0.6", 80)]
    assert (api.timeouts.connect, api.timeouts.idle, api.keepalive.max_idle) == (1.0, 3600, 0)
    assert config.upstream["web"].servers[0].address == Address("fd00::5", 9000)


def test_full_config_survives_a_json_round_trip() -> None:
    config = parse_config(FULL, "full.toml")
    dumped = config.model_dump(mode="json", exclude_unset=True)
    again = BastionConfig.model_validate(dumped, context={"source": "full.toml"})
    assert again == config
    assert hash(again) == hash(config)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(MINIMAL)
    config = load_config(path)
    assert config.source == str(path)
    assert config == parse_config(MINIMAL, str(path))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            config_text(top="tlz = 1"),
            'edge.toml: tlz: unknown key "tlz" (allowed here: server, log, admin, listen, site, '
            "upstream)",
        ),
        (
            config_text(top="[admin]\nport = 9901"),
            'edge.toml: admin.port: unknown key "port" (allowed here: listen, token, token_file)',
        ),
        (
            config_text(top="[server]\nworker = 4"),
            'edge.toml: server.worker: unknown key "worker" (allowed here: workers, user, '
            "max_connections, graceful_timeout, trusted_proxies, max_header_size, max_uri_size, "
            "header_timeout, keepalive_timeout, body_timeout, resolver, hooks, hook_options)",
        ),
        (
            config_text(listen="tlz = true"),
            'edge.toml: listen[0].tlz: unknown key "tlz" (allowed here: address, tls, '
            "redirect_to_https, http2, proxy_protocol)",
        ),
        (
            config_text(route="  cache = true"),
            'edge.toml: site[0].route[0].cache: unknown key "cache"',
        ),
        (
            config_text(upstream="send_proxy = true"),
            'edge.toml: upstream.app.send_proxy: unknown key "send_proxy" (allowed here: '
            "servers, timeouts, keepalive, tls, balance, hash_key, sticky, health, passive, "
            "retries, retry_budget, queue, slow_start, resolve, pin_auth, proxy_protocol)",
        ),
        (
            config_text(upstream='timeouts = { connect = "1s", total = "9s" }'),
            'edge.toml: upstream.app.timeouts.total: unknown key "total" (allowed here: connect, '
            "read, write, idle)",
        ),
        (
            config_text().replace(
                'servers = ["http://10.0.0.5:8080"]',
                'servers = [{ url = "http://10.0.0.5:8080", priority = 3 }]',
            ),
            'edge.toml: upstream.app.servers[0].priority: unknown key "priority" (allowed here: '
            "url, srv, scheme, weight, max_conns, backup)",
        ),
    ],
)
def test_unknown_keys_at_every_depth(text: str, problem: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (config_text(route='  websocket = "yes"'), 'expected a boolean, got "yes"'),
        (config_text(route="  strip_prefix = 1"), "expected a boolean, got 1"),
        (config_text(top="[log]\naccess = 5"), "log.access: expected a string, got 5"),
        (config_text(top="server = 5"), "server: expected a table, got 5"),
        (config_text(route='  methods = "GET"'), 'methods: expected a list, got "GET"'),
        (
            config_text(upstream='keepalive = { max_idle = "3" }'),
            'upstream.app.keepalive.max_idle: expected an integer, got "3"',
        ),
        (
            config_text(upstream="keepalive = { max_idle = -1 }"),
            "upstream.app.keepalive.max_idle: expected a number of at least 0, got -1",
        ),
        (
            config_text(top='[log]\nformat = "xml"'),
            'log.format: expected one of "combined", "json", got "xml"',
        ),
        (
            config_text(route='  redirect = { to = "https://x{uri}", status = 200 }'),
            "redirect.status: expected one of 301, 302, 303, 307, 308, got 200",
        ),
    ],
)
def test_wrong_types(text: str, problem: str) -> None:
    assert any(problem in line for line in problems_of(text))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            config_text(top='[server]\ngraceful_timeout = "5 parsecs"'),
            'edge.toml: server.graceful_timeout: expected a duration like "5s" or "250ms", '
            'got "5 parsecs"',
        ),
        (
            config_text(top="[server]\ngraceful_timeout = 30"),
            'edge.toml: server.graceful_timeout: expected a duration like "5s" or "250ms", got 30',
        ),
        (
            config_text(top='[server]\nheader_timeout = "0s"'),
            'edge.toml: server.header_timeout: expected a duration greater than 0, got "0s"',
        ),
        (
            config_text(top='[server]\nmax_uri_size = "8 pages"'),
            'edge.toml: server.max_uri_size: expected a size like "64KB" or "10MB", or an '
            'integer of bytes, got "8 pages"',
        ),
        (
            config_text(route="  max_body = 1.5"),
            "edge.toml: site[0].route[0].max_body: expected a size like",
        ),
        (
            config_text(top='[server]\ntrusted_proxies = ["10.1.2.3/8"]'),
            'edge.toml: server.trusted_proxies[0]: "10.1.2.3/8" has host bits set; '
            'did you mean "10.0.0.0/8"?',
        ),
        (
            config_text().replace('"127.0.0.1:8080"', '"localhost"'),
            'edge.toml: listen[0].address: expected an address like "127.0.0.1:8080", '
            '"[::1]:8080" or "unix:/path", got "localhost"',
        ),
        (
            config_text().replace('"127.0.0.1:8080"', '"127.0.0.1:70000"'),
            'edge.toml: listen[0].address: expected a port from 0 to 65535, got "70000"',
        ),
    ],
)
def test_bad_units(text: str, problem: str) -> None:
    assert any(line.startswith(problem) for line in problems_of(text))


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (
            '"ftp://10.0.0.5"',
            'edge.toml: upstream.app.servers[0]: expected a server URL like "http://10.0.0.5:8080"',
        ),
        (
            '{ url = "https://10.0.0.5/app" }',
            "edge.toml: upstream.app.servers[0].url: a server URL names only scheme, host and port",
        ),
        ('"https://10.0.0.5:0"', "servers[0]: a server port must be 1 to 65535"),
        ('"10.0.0.5:8080"', 'servers[0]: expected a server URL like "http://10.0.0.5:8080"'),
        ('"http://10.0.0.5/app"', "servers[0]: a server URL names only scheme, host and port"),
        ('"http://10.0.0.5:0"', "servers[0]: a server port must be 1 to 65535"),
        ("5", 'servers[0]: expected a server URL like "http://10.0.0.5:8080" or a table'),
    ],
)
def test_bad_upstream_servers(server: str, problem: str) -> None:
    text = config_text().replace('["http://10.0.0.5:8080"]', f"[{server}]")
    assert any(problem in line for line in problems_of(text))


def test_route_naming_a_missing_upstream_lists_the_defined_ones() -> None:
    text = config_text(upstream='[upstream.web]\nservers = ["http://10.0.0.7"]')
    text = text.replace('upstream = "app"', 'upstream = "api"')
    assert problems_of(text) == [
        'edge.toml: site[0].route[0].upstream: route names upstream "api" which is not '
        "defined (defined: app, web)"
    ]


def test_every_dangling_route_is_reported() -> None:
    text = MINIMAL.replace('[upstream.app]\nservers = ["http://10.0.0.5:8080"]\n', "")
    text += '\n[[site]]\nhosts = ["b.example"]\n[[site.route]]\nupstream = "app"\n'
    problems = problems_of(text)
    assert [line.split(": ")[1] for line in problems] == [
        "site[0].route[0].upstream",
        "site[1].route[0].upstream",
    ]
    assert problems[0].endswith("(defined: none)")


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (
            '  path = "/api"\n  path_regex = "^/api"',
            "edge.toml: site[0].route[0].path_regex: give either path or path_regex, not both",
        ),
        (
            '  path_regex = "^/api"\n  strip_prefix = true',
            "edge.toml: site[0].route[0].strip_prefix: strip_prefix works with path, "
            "not path_regex",
        ),
        (
            '  path_regex = "(["',
            "edge.toml: site[0].route[0].path_regex: invalid regular expression: "
            "unterminated character set at position 1",
        ),
        (
            '  redirect = { to = "https://{host}{uri}" }',
            "edge.toml: site[0].route[0]: give either upstream or redirect, not both",
        ),
        (
            '  redirect = { to = "https://{hots}{uri}" }',
            'edge.toml: site[0].route[0].redirect.to: unknown placeholder "{hots}" '
            "(known: {scheme}, {host}, {uri}, {path}, {query})",
        ),
        ('  redirect = { to = "https://{host" }', "redirect.to: expected '}' before end of string"),
        ('  path = "api"', 'site[0].route[0].path: expected a path starting with "/"'),
        ('  methods = ["GE T"]', 'methods[0]: expected an HTTP method like "GET", got "GE T"'),
        ("  methods = []", "site[0].route[0].methods: expected at least 1 entry, got none"),
    ],
)
def test_bad_routes(route: str, problem: str) -> None:
    assert any(problem in line for line in problems_of(config_text(route=route)))


def test_route_with_neither_upstream_nor_redirect() -> None:
    text = config_text().replace('  upstream = "app"', '  path = "/"')
    assert problems_of(text) == [
        'edge.toml: site[0].route[0]: missing required key "upstream" (or "redirect")'
    ]


@pytest.mark.parametrize(
    ("hosts", "problem"),
    [
        ('["example.com:8080"]', "hosts[0]: a host takes no port"),
        ('[""]', "hosts[0]: a host cannot be empty"),
        ('["a.*.example.com"]', 'hosts[0]: "*" is allowed only as the whole first label'),
        ('["*example.com"]', 'hosts[0]: "*" is allowed only as the whole first label'),
        ('["exa mple.com"]', 'hosts[0]: expected a host name like "example.com"'),
        ("[]", "site[0].hosts: expected at least 1 entry, got none"),
        ('["a.example", "A.example"]', 'hosts[1]: host "a.example" is already listed by this site'),
    ],
)
def test_bad_hosts(hosts: str, problem: str) -> None:
    text = config_text().replace('hosts = ["example.com"]', f"hosts = {hosts}")
    assert any(problem in line for line in problems_of(text))


def test_host_served_by_two_sites() -> None:
    text = MINIMAL + '\n[[site]]\nhosts = ["*"]\n[[site.route]]\nupstream = "app"\n'
    assert problems_of(text) == [
        'edge.toml: site[1].hosts[0]: host "*" is already listed by site[0]'
    ]


def test_listen_address_given_twice() -> None:
    text = config_text(listen='[[listen]]\naddress = "127.0.0.1:8080"')
    assert problems_of(text) == [
        'edge.toml: listen[1].address: address "127.0.0.1:8080" is already used by listen[0]'
    ]


def test_missing_required_keys() -> None:
    assert problems_of("") == [
        'edge.toml: missing required key "listen"',
        'edge.toml: missing required key "site"',
    ]
    text = config_text().replace('hosts = ["example.com"]', "")
    assert problems_of(text) == ['edge.toml: site[0]: missing required key "hosts"']


def test_every_problem_is_reported_at_once() -> None:
    text = config_text(
        top='[server]\ngraceful_timeout = "soon"\nworkers = 0',
        listen="http2 = true",
        route='  websocket = "yes"',
        upstream='balance = "fastest"',
    )
    problems = problems_of(text)
    assert [line.split(": ")[1] for line in problems] == [
        "server.workers",
        "server.graceful_timeout",
        "listen[0].http2",
        "site[0].route[0].websocket",
        "upstream.app.balance",
    ]


def test_problems_never_show_pydantic_wording() -> None:
    text = config_text(
        top='[server]\ngraceful_timeout = "soon"\nmax_header_size = true\n[log]\nlevel = 3',
        route="  methods = [1]\n  path_regex = 5\n  redirect = 7",
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "edge.toml")
    message = str(caught.value)
    for pydantic_words in ("Input should", "Value error", "pydantic", "type=", "validation error"):
        assert pydantic_words not in message
    assert all(line.startswith("edge.toml: ") for line in message.splitlines())


def test_broken_toml_names_the_line() -> None:
    text = '[[listen]]\naddress = "0.0.0.0:8080"\n\n[[site]\nhosts = ["*"]\n'
    assert problems_of(text, "broken.toml") == [
        "broken.toml:4: invalid TOML: Expected ']]' at the end of an array declaration (column 7)"
    ]


def test_toml_broken_at_the_end_names_the_last_line() -> None:
    problems = problems_of('[[listen]]\naddress = "0.0.0.0:8080"\nhosts = [', "end.toml")
    assert len(problems) == 1
    assert problems[0].startswith("end.toml:3: invalid TOML: ")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\naccess = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read: not UTF-8 text (line 2)"


def test_problems_from_a_file_name_it(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(config_text(route='  max_body = "lots"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.key_path) == (str(path), "site[0].route[0].max_body")
    assert str(problem).startswith(f"{path}: site[0].route[0].max_body: expected a size")


def test_key_paths_quote_keys_that_toml_would() -> None:
    assert key_path(("upstream", "my app", "servers", 0)) == 'upstream."my app".servers[0]'
    assert key_path(("upstream", "a b", "[key]")) == 'upstream."a b"'
    text = MINIMAL.replace("[upstream.app]", '[upstream."my app"]').replace('"app"', '"my app"')
    assert problems_of(text) == [
        'edge.toml: upstream."my app": an upstream name uses letters, digits, "_", "-" and ".", '
        'got "my app"'
    ]


def test_proxy_protocol_keys() -> None:
    text = config_text(
        top='[server]\ntrusted_proxies = ["10.0.0.0/8"]',
        listen="proxy_protocol = true",
        upstream='proxy_protocol = "v2"',
    )
    config = parse_config(text, "edge.toml")
    assert config.listen[0].proxy_protocol is True
    assert config.upstream["app"].proxy_protocol == "v2"
    defaults = parse_config(config_text(), "edge.toml")
    assert defaults.listen[0].proxy_protocol is False
    assert defaults.upstream["app"].proxy_protocol is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            config_text(listen="proxy_protocol = true"),
            "edge.toml: listen[0].proxy_protocol: server.trusted_proxies is empty, so no PROXY "
            "header would be believed: list the balancer's addresses there",
        ),
        (
            config_text(
                top='[server]\ntrusted_proxies = ["10.0.0.0/8"]',
                listen="proxy_protocol = 1",
            ),
            "edge.toml: listen[0].proxy_protocol: expected a boolean, got 1",
        ),
        (
            config_text(
                top='[server]\ntrusted_proxies = ["10.0.0.0/8"]',
                listen='proxy_protocol = true\n[[listen]]\naddress = "unix:/run/b.sock"\n'
                "proxy_protocol = true",
            ),
            "edge.toml: listen[1].proxy_protocol: not on a unix: listener: its peers are never "
            "trusted proxies, so the header would never be believed",
        ),
        (
            config_text(upstream='proxy_protocol = "v3"'),
            'edge.toml: upstream.app.proxy_protocol: expected one of "v1", "v2", got "v3"',
        ),
        (
            config_text(upstream="proxy_protocol = true"),
            'edge.toml: upstream.app.proxy_protocol: expected one of "v1", "v2", got true',
        ),
    ],
)
def test_bad_proxy_protocol_keys(text: str, problem: str) -> None:
    assert problems_of(text) == [problem]
