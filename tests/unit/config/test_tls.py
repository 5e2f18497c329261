"""The TLS keys: listeners, a site's certificate and client auth, TLS towards upstreams.

Certificates are real files (trustme, see conftest.py); every problem is checked with its key
path and message, as a user reads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import BastionConfig, load_config, parse_config
from bastion.config.model import (
    ListenSettings,
    RouteSettings,
    SiteSettings,
    SiteTLS,
    UpstreamSettings,
    UpstreamTLS,
)
from bastion.errors import ConfigError
from bastion.units import Address

FULL_TLS = """\
[[listen]]
address = "0.0.0.0:443"
tls = true

[[listen]]
address = "0.0.0.0:80"
redirect_to_https = true

[[site]]
hosts = ["a.test"]
  [site.tls]
  certificate = "site.pem"
  key = "site.key"
  client_auth = "optional"
  client_ca = "ca.pem"
  min_version = "1.3"
  hsts = "max-age=31536000; includeSubDomains"

  [[site.route]]
  path = "/api"
  upstream = "api"
  client_cert_headers = false

  [[site.route]]
  upstream = "api"

[[site]]
hosts = ["c.test"]
tls = { certificate = "chain.pem", key = "chain.key" }
  [[site.route]]
  upstream = "plain"

[upstream.api]
servers = ["https://api.internal", "https://10.0.0.7:8443", "http://10.0.0.8"]
  [upstream.api.tls]
  ca = "ca.pem"
  server_name = "API.Internal"
  certificate = "../certs-client/client.pem"
  key = "/ABSOLUTE/client.key"

[upstream.plain]
servers = ["http://10.0.0.9"]
tls = { verify = false }
"""


def tls_text(
    *,
    listen: str = "tls = true",
    site_tls: str = 'certificate = "site.pem"\nkey = "site.key"',
    route: str = "",
    upstream: str = "",
) -> str:
    """One TLS listener, one site with a `[site.tls]` table, one route, one upstream."""
    site_table = f"[site.tls]\n{site_tls}\n" if site_tls else ""
    return f"""
[[listen]]
address = "127.0.0.1:8443"
{listen}

[[site]]
hosts = ["a.test"]
{site_table}
  [[site.route]]
  upstream = "app"
{route}

[upstream.app]
servers = ["https://10.0.0.5"]
{upstream}
"""


def problems_in(cert_dir: Path, text: str) -> list[str]:
    """The problems of `text` read as edge.toml with file paths taken from `cert_dir`."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "edge.toml", base_dir=cert_dir)
    return [str(problem) for problem in caught.value.problems]


@pytest.fixture
def client_pair(cert_dir: Path) -> Path:
    """cert_dir's site certificate and key copied to ../certs-client and /ABSOLUTE stand-in."""
    client_dir = cert_dir.parent / "certs-client"
    client_dir.mkdir(exist_ok=True)
    (client_dir / "client.pem").write_bytes((cert_dir / "site.pem").read_bytes())
    (client_dir / "client.key").write_bytes((cert_dir / "site.key").read_bytes())
    return client_dir


def test_full_tls_config_from_a_file(cert_dir: Path, client_pair: Path) -> None:
    path = cert_dir / "edge.toml"
    path.write_text(FULL_TLS.replace("/ABSOLUTE", str(client_pair)))
    config = load_config(path)
    https, plain = config.listen
    assert (https.tls, https.redirect_to_https) == (True, False)
    assert (plain.tls, plain.redirect_to_https) == (False, True)
    tls = config.site[0].tls
    assert tls is not None
    assert (tls.certificate, tls.key, tls.client_ca) == (
        cert_dir / "site.pem",
        cert_dir / "site.key",
        cert_dir / "ca.pem",
    )
    assert (tls.client_auth, tls.min_version) == ("optional", "1.3")
    assert tls.hsts == "max-age=31536000; includeSubDomains"
    assert [route.client_cert_headers for route in config.site[0].route] == [False, None]
    assert config.site[1].tls == SiteTLS(
        certificate=cert_dir / "chain.pem", key=cert_dir / "chain.key"
    )
    api = config.upstream["api"]
    assert [(s.scheme, s.host, s.port) for s in api.servers] == [
        ("https", "api.internal", 443),
        ("https", "10.0.0.7", 8443),
        ("http", "10.0.0.8", 80),
    ]
    assert api.servers[0].address == Address("api.internal", 443)
    assert api.tls == UpstreamTLS(
        verify=True,
        ca=cert_dir / "ca.pem",
        server_name="api.internal",
        certificate=cert_dir / "../certs-client/client.pem",
        key=client_pair / "client.key",
    )
    assert config.upstream["plain"].tls.verify is False


def test_full_tls_config_survives_a_json_round_trip(cert_dir: Path, client_pair: Path) -> None:
    text = FULL_TLS.replace("/ABSOLUTE", str(client_pair))
    config = parse_config(text, "edge.toml", base_dir=cert_dir)
    dumped = config.model_dump(mode="json", exclude_unset=True)
    assert dumped["site"][0]["tls"]["certificate"] == str(cert_dir / "site.pem")
    again = BastionConfig.model_validate(dumped, context={"source": "edge.toml"})
    assert again == config
    assert hash(again) == hash(config)


def test_tls_defaults() -> None:
    listen = ListenSettings(address=Address("127.0.0.1", 0))
    assert (listen.tls, listen.redirect_to_https) == (False, False)
    assert RouteSettings(upstream="app").client_cert_headers is None
    assert SiteSettings.model_validate({"hosts": ["*"], "route": [{"upstream": "a"}]}).tls is None
    upstream = UpstreamSettings.model_validate({"servers": ["http://10.0.0.5"]})
    assert upstream.tls == UpstreamTLS()
    assert (upstream.tls.verify, upstream.tls.ca, upstream.tls.server_name) == (True, None, None)
    assert (upstream.tls.certificate, upstream.tls.key) == (None, None)


def test_site_tls_defaults(cert_dir: Path) -> None:
    tls = SiteTLS(certificate=cert_dir / "site.pem", key=cert_dir / "site.key")
    assert (tls.client_auth, tls.client_ca, tls.min_version, tls.hsts) == (
        "off",
        None,
        "1.2",
        None,
    )


def test_paths_are_relative_to_the_config_file(
    cert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = cert_dir / "conf"
    nested.mkdir(exist_ok=True)
    (nested / "edge.toml").write_text(
        tls_text(site_tls='certificate = "../site.pem"\nkey = "../site.key"')
    )
    monkeypatch.chdir(cert_dir.parent)
    config = load_config(Path(cert_dir.name) / "conf" / "edge.toml")
    monkeypatch.chdir(nested)  # later changes of directory do not matter
    tls = config.site[0].tls
    assert tls is not None
    assert (tls.certificate, tls.key) == (nested / "../site.pem", nested / "../site.key")
    assert tls.certificate.resolve() == (cert_dir / "site.pem").resolve()


def test_parsed_text_takes_paths_from_the_current_directory(
    cert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(cert_dir)
    config = parse_config(tls_text(), "edge.toml")
    tls = config.site[0].tls
    assert tls is not None
    assert (tls.certificate, tls.key) == (cert_dir / "site.pem", cert_dir / "site.key")


def test_absolute_paths_stay_as_they_are(cert_dir: Path, tmp_path: Path) -> None:
    site_tls = f'certificate = "{cert_dir / "site.pem"}"\nkey = "{cert_dir / "site.key"}"'
    config = parse_config(tls_text(site_tls=site_tls), "edge.toml", base_dir=tmp_path)
    tls = config.site[0].tls
    assert tls is not None
    assert (tls.certificate, tls.key) == (cert_dir / "site.pem", cert_dir / "site.key")


def test_certificate_and_key_in_one_file(cert_dir: Path) -> None:
    text = tls_text(site_tls='certificate = "combined.pem"\nkey = "combined.pem"')
    assert parse_config(text, "edge.toml", base_dir=cert_dir).site[0].tls is not None


def test_https_servers_need_no_tls_table_and_plain_ones_may_have_one(cert_dir: Path) -> None:
    config = parse_config(tls_text(), "edge.toml", base_dir=cert_dir)
    assert config.upstream["app"].servers[0].port == 443
    text = tls_text(upstream="tls = { verify = false }").replace("https://", "http://")
    config = parse_config(text, "edge.toml", base_dir=cert_dir)
    assert config.upstream["app"].tls.verify is False


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        (
            "tls = true\nredirect_to_https = true",
            "edge.toml: listen[0].redirect_to_https: give either tls or redirect_to_https, "
            "not both",
        ),
        (
            "http2 = true",
            'edge.toml: listen[0].http2: a plain listener speaks HTTP/2 only as "h2c" '
            "(prior knowledge)",
        ),
        (
            'tls = true\nhttp2 = "h2c"',
            'edge.toml: listen[0].http2: "h2c" is cleartext HTTP/2; on a TLS listener use true',
        ),
        ('http2 = "yes"', "edge.toml: listen[0].http2: expected"),
        ("proxy_protocol = 1", "edge.toml: listen[0].proxy_protocol: expected a boolean"),
        ('tls = "yes"', 'edge.toml: listen[0].tls: expected a boolean, got "yes"'),
        ("redirect_to_https = 1", "edge.toml: listen[0].redirect_to_https: expected a boolean"),
    ],
)
def test_bad_listeners(cert_dir: Path, listen: str, problem: str) -> None:
    assert [line[: len(problem)] for line in problems_in(cert_dir, tls_text(listen=listen))] == [
        problem
    ]


def test_tls_listener_needs_a_site_with_a_certificate(cert_dir: Path) -> None:
    text = tls_text(site_tls="") + '[[listen]]\naddress = "127.0.0.1:9443"\ntls = true\n'
    assert problems_in(cert_dir, text) == [
        f"edge.toml: listen[{i}].tls: a TLS listener needs at least one site with "
        "tls.certificate and tls.key; no site has a tls table"
        for i in (0, 1)
    ]


def test_plain_listener_needs_no_certificate(cert_dir: Path) -> None:
    text = tls_text(listen="redirect_to_https = true", site_tls="")
    assert parse_config(text, "edge.toml", base_dir=cert_dir).listen[0].redirect_to_https


def site_problem(cert_dir: Path, site_tls: str) -> str:
    return "\n".join(problems_in(cert_dir, tls_text(site_tls=site_tls)))


PAIR = 'certificate = "site.pem"\nkey = "site.key"\n'


@pytest.mark.parametrize(
    ("site_tls", "problem"),
    [
        ('key = "site.key"', 'edge.toml: site[0].tls: missing required key "certificate"'),
        ('certificate = "site.pem"', 'edge.toml: site[0].tls: missing required key "key"'),
        (
            PAIR + 'client_auth = "required"',
            'edge.toml: site[0].tls: missing required key "client_ca" (client_auth is "required")',
        ),
        (
            PAIR + 'client_auth = "optional"',
            'edge.toml: site[0].tls: missing required key "client_ca" (client_auth is "optional")',
        ),
        (
            PAIR + 'client_ca = "ca.pem"',
            "edge.toml: site[0].tls.client_ca: client_ca is used only with client_auth "
            '"optional" or "required"',
        ),
        (
            PAIR + 'client_auth = "on"',
            'edge.toml: site[0].tls.client_auth: expected one of "off", "optional", "required", '
            'got "on"',
        ),
        (
            PAIR + "min_version = 1.2",
            'edge.toml: site[0].tls.min_version: expected one of "1.2", "1.3", got 1.2',
        ),
        (
            PAIR + 'min_version = "1.1"',
            'edge.toml: site[0].tls.min_version: expected one of "1.2", "1.3", got "1.1"',
        ),
        (
            PAIR + 'ciphers = "HIGH"',
            'edge.toml: site[0].tls.ciphers: unknown key "ciphers" (allowed here: certificate, '
            "key, client_auth, client_ca, min_version, hsts)",
        ),
        (
            'certificate = ""\nkey = "site.key"',
            'edge.toml: site[0].tls.certificate: expected a file path, got ""',
        ),
        (
            'certificate = 5\nkey = "site.key"',
            "edge.toml: site[0].tls.certificate: expected a file path, got 5",
        ),
    ],
)
def test_bad_site_tls_tables(cert_dir: Path, site_tls: str, problem: str) -> None:
    assert site_problem(cert_dir, site_tls) == problem


@pytest.mark.parametrize(
    "hsts",
    [
        "includeSubDomains",
        "max-age=",
        "max-age=abc",
        'max-age=\\"31536000\\"',
        " max-age=60",
        "max-age=60 includeSubDomains",
        "max-age=60;\\r\\nX-Evil: 1",
        "max-age=60; preload\\u00e9",
    ],
)
def test_bad_hsts_values(cert_dir: Path, hsts: str) -> None:
    problem = site_problem(cert_dir, PAIR + f'hsts = "{hsts}"')
    assert problem.startswith(
        "edge.toml: site[0].tls.hsts: expected a Strict-Transport-Security value starting "
        'with "max-age=" and a number of seconds, like "max-age=31536000", got "'
    )


@pytest.mark.parametrize(
    "hsts", ["max-age=0", "max-age=31536000", "MAX-AGE=60; includeSubDomains; preload"]
)
def test_good_hsts_values(cert_dir: Path, hsts: str) -> None:
    config = parse_config(tls_text(site_tls=PAIR + f'hsts = "{hsts}"'), "e.toml", base_dir=cert_dir)
    assert config.site[0].tls is not None
    assert config.site[0].tls.hsts == hsts


def test_client_auth_with_a_ca_bundle(cert_dir: Path) -> None:
    text = tls_text(site_tls=PAIR + 'client_auth = "required"\nclient_ca = "ca.pem"')
    tls = parse_config(text, "edge.toml", base_dir=cert_dir).site[0].tls
    assert tls is not None
    assert (tls.client_auth, tls.client_ca) == ("required", cert_dir / "ca.pem")


@pytest.mark.parametrize(
    ("site_tls", "key", "problem"),
    [
        (
            'certificate = "nope.pem"\nkey = "site.key"',
            "certificate",
            'cannot read "{dir}/nope.pem": No such file or directory',
        ),
        (
            'certificate = "."\nkey = "site.key"',
            "certificate",
            'cannot read "{dir}": Is a directory',
        ),
        (
            'certificate = "site.key"\nkey = "site.key"',
            "certificate",
            'no PEM certificate in "{dir}/site.key"',
        ),
        (
            'certificate = "empty.pem"\nkey = "site.key"',
            "certificate",
            'no PEM certificate in "{dir}/empty.pem"',
        ),
        (
            'certificate = "garbage.pem"\nkey = "site.key"',
            "certificate",
            'cannot load the certificate in "{dir}/garbage.pem": invalid PEM data',
        ),
        (
            'certificate = "site.pem"\nkey = "nope.key"',
            "key",
            'cannot read "{dir}/nope.key": No such file or directory',
        ),
        (
            'certificate = "site.pem"\nkey = "site.pem"',
            "key",
            'no PEM private key in "{dir}/site.pem"',
        ),
        ('certificate = "site.pem"\nkey = "other.key"', "key", "certificate and key do not match"),
        ('certificate = "chain.pem"\nkey = "site.key"', "key", "certificate and key do not match"),
        (
            'certificate = "site.pem"\nkey = "encrypted.key"',
            "key",
            'the private key in "{dir}/encrypted.key" is encrypted; bastion needs an '
            "unencrypted key",
        ),
        (
            PAIR + 'client_auth = "required"\nclient_ca = "nope.pem"',
            "client_ca",
            'cannot read "{dir}/nope.pem": No such file or directory',
        ),
        (
            PAIR + 'client_auth = "required"\nclient_ca = "site.key"',
            "client_ca",
            'no PEM certificate in "{dir}/site.key"',
        ),
        (
            PAIR + 'client_auth = "optional"\nclient_ca = "garbage.pem"',
            "client_ca",
            'cannot load the certificate in "{dir}/garbage.pem": invalid PEM data',
        ),
    ],
)
def test_unusable_site_files(cert_dir: Path, site_tls: str, key: str, problem: str) -> None:
    expected = f"edge.toml: site[0].tls.{key}: " + problem.format(dir=cert_dir)
    assert site_problem(cert_dir, site_tls) == expected


def test_both_files_bad_are_both_reported(cert_dir: Path) -> None:
    problems = problems_in(
        cert_dir, tls_text(site_tls='certificate = "nope.pem"\nkey = "site.pem"')
    )
    assert [line.split(": ")[1] for line in problems] == [
        "site[0].tls.certificate",
        "site[0].tls.key",
    ]


@pytest.mark.parametrize(
    ("upstream_tls", "problem"),
    [
        (
            'certificate = "site.pem"',
            'edge.toml: upstream.app.tls: missing required key "key" (give certificate and key, '
            "or neither)",
        ),
        (
            'key = "site.key"',
            'edge.toml: upstream.app.tls: missing required key "certificate" (give certificate '
            "and key, or neither)",
        ),
        (
            'certificate = "site.pem"\nkey = "other.key"',
            "edge.toml: upstream.app.tls.key: certificate and key do not match",
        ),
        (
            'certificate = "nope.pem"\nkey = "site.key"',
            'edge.toml: upstream.app.tls.certificate: cannot read "{dir}/nope.pem": No such file '
            "or directory",
        ),
        (
            'ca = "nope.pem"',
            'edge.toml: upstream.app.tls.ca: cannot read "{dir}/nope.pem": No such file or '
            "directory",
        ),
        (
            'ca = "empty.pem"',
            'edge.toml: upstream.app.tls.ca: no PEM certificate in "{dir}/empty.pem"',
        ),
        (
            'server_name = "api.internal:443"',
            'edge.toml: upstream.app.tls.server_name: expected a host name like "app.internal", '
            'without a port, got "api.internal:443"',
        ),
        (
            'server_name = "*.internal"',
            "edge.toml: upstream.app.tls.server_name: expected a host name like",
        ),
        ('verify = "no"', 'edge.toml: upstream.app.tls.verify: expected a boolean, got "no"'),
        (
            'ciphers = "HIGH"',
            'edge.toml: upstream.app.tls.ciphers: unknown key "ciphers" (allowed here: verify, '
            "ca, server_name, certificate, key)",
        ),
    ],
)
def test_bad_upstream_tls_tables(cert_dir: Path, upstream_tls: str, problem: str) -> None:
    text = tls_text(upstream=f"[upstream.app.tls]\n{upstream_tls}")
    problems = problems_in(cert_dir, text)
    assert len(problems) == 1
    assert problems[0].startswith(problem.format(dir=cert_dir))


def test_upstream_client_certificate_and_ca(cert_dir: Path) -> None:
    text = tls_text(
        upstream='tls = { ca = "ca.pem", certificate = "chain.pem", key = "chain.key", '
        'server_name = "bücher.test" }'
    )
    tls = parse_config(text, "edge.toml", base_dir=cert_dir).upstream["app"].tls
    assert (tls.ca, tls.certificate, tls.key) == (
        cert_dir / "ca.pem",
        cert_dir / "chain.pem",
        cert_dir / "chain.key",
    )
    assert tls.server_name == "xn--bcher-kva.test"


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (
            '  client_cert_headers = "yes"',
            'edge.toml: site[0].route[0].client_cert_headers: expected a boolean, got "yes"',
        ),
    ],
)
def test_bad_route_tls_keys(cert_dir: Path, route: str, problem: str) -> None:
    assert problems_in(cert_dir, tls_text(route=route)) == [problem]


def test_every_tls_problem_is_reported_at_once(cert_dir: Path) -> None:
    text = tls_text(
        listen="tls = true\nredirect_to_https = true",
        site_tls='certificate = "site.pem"\nkey = "other.key"\nclient_auth = "required"',
        route="  client_cert_headers = 1",
        upstream='tls = { ca = "nope.pem", certificate = "site.pem" }',
    )
    assert [line.split(": ")[1] for line in problems_in(cert_dir, text)] == [
        "listen[0].redirect_to_https",
        "site[0].tls.key",
        "site[0].tls",
        "site[0].route[0].client_cert_headers",
        "upstream.app.tls",
        "upstream.app.tls.ca",
    ]
