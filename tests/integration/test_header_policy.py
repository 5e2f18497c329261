"""A route's header policy over sockets: what the origin receives (set, removed, templated,
Host replaced, forwarding headers removed after bastion added them), what the client receives
(set, removed, hide_origin, the security preset next to the origin's own values, bastion's own
error answers), over HTTP/1.1 and HTTP/2, and a refused edit reported by `bastion check`.

The origin's /echo returns the request headers it received; /set-headers?hdr=Name:Value
answers with the headers it is asked for (see tests/support/origins.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

from tests.support.certs import TestPKI
from tests.support.client import RawClient, http_get
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy, single_route_config

HOST = "app.test"


def origin_saw(echo: dict[str, object], name: str) -> list[str]:
    """Every value of request header `name` the origin received, in order."""
    pairs = echo["headers"]
    assert isinstance(pairs, list)
    return [value for key, value in pairs if key == name]


def set_headers_path(*fields: tuple[str, str]) -> str:
    """An /set-headers target making the origin answer with `fields`."""
    return "/set-headers?" + "&".join(f"hdr={quote(f'{n}:{v}', safe='')}" for n, v in fields)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- what the origin sees --------------------------------------------------------------------

REQUEST_EDITS = """
  [site.route.headers.request]
  set = { X-Tenant = "blue", Host = "app.internal", X-Forwarded-Proto = "https" }
  remove = ["Cookie", "X-Forwarded-For", "Forwarded", "X-Real-IP"]
"""


async def test_origin_sees_set_and_removed_request_headers() -> None:
    client_headers = [
        ("X-Tenant", "red"),
        ("Cookie", "a=1"),
        ("Accept", "*/*"),
        ("X-Tenant", "green"),
        ("Cookie", "b=2"),
    ]
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=REQUEST_EDITS)
        async with running_proxy(toml) as proxy:
            response = await http_get(proxy.ports[0], "/echo", host=HOST, headers=client_headers)
    assert response.status == 200
    echo = response.json()
    assert origin_saw(echo, "x-tenant") == ["blue"]
    assert origin_saw(echo, "host") == ["app.internal"]
    assert origin_saw(echo, "cookie") == []
    assert origin_saw(echo, "accept") == ["*/*"]
    # bastion added these (the route's forwarded = "both"); the policy ran after it
    for removed in ("x-forwarded-for", "forwarded", "x-real-ip"):
        assert origin_saw(echo, removed) == []
    assert origin_saw(echo, "x-forwarded-proto") == ["https"]  # replaced, not added twice
    assert origin_saw(echo, "x-forwarded-host") == [HOST]  # the Host the client sent
    assert origin_saw(echo, "via") == ["1.1 bastion"]
    assert len(origin_saw(echo, "x-request-id")) == 1


async def test_without_a_policy_the_same_request_goes_through_unchanged() -> None:
    """The control for the test above: the client's headers and bastion's do arrive."""
    async with AutonomousOrigin() as origin:
        async with running_proxy(single_route_config(origin.address)) as proxy:
            headers = [("X-Tenant", "red"), ("Cookie", "a=1")]
            response = await http_get(proxy.ports[0], "/echo", host=HOST, headers=headers)
    echo = response.json()
    assert origin_saw(echo, "x-tenant") == ["red"]
    assert origin_saw(echo, "cookie") == ["a=1"]
    assert origin_saw(echo, "host") == [HOST]
    assert origin_saw(echo, "x-forwarded-for") == ["127.0.0.1"]


async def test_placeholders_are_filled_per_request() -> None:
    route = """
  [site.route.headers.request.set]
  X-Original-URL = "{scheme}://{host}{uri}"
  X-Client = "{client_ip}"
  X-Trace = "id={request_id}"
  X-Braces = "{{literal}}"
"""
    async with AutonomousOrigin() as origin:
        async with running_proxy(single_route_config(origin.address, route=route)) as proxy:
            port = proxy.ports[0]
            first = (await http_get(port, "/echo?q=1", host=HOST)).json()
            second = (await http_get(port, "/echo/x", host="other.test")).json()
    assert origin_saw(first, "x-original-url") == [f"http://{HOST}/echo?q=1"]
    assert origin_saw(second, "x-original-url") == ["http://other.test/echo/x"]
    assert origin_saw(first, "x-client") == ["127.0.0.1"]
    assert origin_saw(first, "x-braces") == ["{literal}"]
    for echo in (first, second):
        assert origin_saw(echo, "x-trace") == [f"id={origin_saw(echo, 'x-request-id')[0]}"]
    assert origin_saw(first, "x-trace") != origin_saw(second, "x-trace")


async def test_a_set_host_reaches_an_origin_when_the_client_sent_none() -> None:
    """HTTP/1.0 allows no Host; bastion then sends one itself, unless the policy set it."""
    route = 'headers.request.set = { Host = "app.internal" }'
    async with AutonomousOrigin() as origin:
        async with running_proxy(single_route_config(origin.address, route=route)) as proxy:
            async with RawClient(proxy.ports[0]) as client:
                await client.send(b"GET /echo HTTP/1.0\r\n\r\n")
                response = await client.read_response()
    assert response.status == 200
    assert origin_saw(response.json(), "host") == ["app.internal"]


# -- what the client sees --------------------------------------------------------------------

RESPONSE_EDITS = """
  [site.route.headers.response]
  set = { Cache-Control = "no-store", X-Served-For = "{host}" }
  remove = ["X-Debug"]
"""


async def test_client_sees_set_and_removed_response_headers() -> None:
    path = set_headers_path(
        ("X-Debug", "1"),
        ("Cache-Control", "max-age=600"),
        ("X-Debug", "2"),
        ("Cache-Control", "public"),
        ("X-Kept", "yes"),
    )
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=RESPONSE_EDITS)
        async with running_proxy(toml) as proxy:
            response = await http_get(proxy.ports[0], path, host=HOST)
            control = await http_get(proxy.ports[0], "/status/404", host=HOST)
    assert response.status == 200 and response.body == b"ok\n"
    assert response.headers_named("x-debug") == []
    assert response.headers_named("cache-control") == [b"no-store"]
    assert response.headers_named("x-served-for") == [HOST.encode()]
    assert response.headers_named("x-kept") == [b"yes"]
    # The origin's own error pages are the application's responses: edited too.
    assert control.status == 404
    assert control.headers_named("cache-control") == [b"no-store"]


ORIGIN_SOFTWARE = (
    ("Server", "Apache/2.4.41 (Ubuntu)"),
    ("X-Powered-By", "PHP/8.1.2"),
    ("X-AspNet-Version", "4.0.30319"),
    ("X-AspNetMvc-Version", "5.2"),
    ("X-Generator", "Drupal 10 (https://www.drupal.org)"),
    ("X-Runtime", "0.012"),
    ("X-App", "kept"),
)


async def test_hide_origin_strips_software_headers_and_adds_nothing_identifying() -> None:
    path = set_headers_path(*ORIGIN_SOFTWARE)
    async with AutonomousOrigin() as origin:
        hidden = single_route_config(origin.address, route="headers.hide_origin = true")
        async with running_proxy(hidden) as proxy:
            response = await http_get(proxy.ports[0], path, host=HOST)
        async with running_proxy(single_route_config(origin.address)) as proxy:
            control = await http_get(proxy.ports[0], path, host=HOST)
    names = {name for name, _ in response.headers}
    assert names == {b"content-type", b"content-length", b"x-app", b"via"}
    assert response.header("via") == b"1.1 bastion"  # RFC 9110 7.6.3; no version in it
    assert control.header("server") == b"Apache/2.4.41 (Ubuntu)"  # passed through when off
    assert control.header("x-powered-by") == b"PHP/8.1.2"


async def test_hide_origin_keeps_a_server_header_the_route_sets() -> None:
    route = 'headers.hide_origin = true\n  headers.response.set = { Server = "web" }'
    async with AutonomousOrigin() as origin:
        async with running_proxy(single_route_config(origin.address, route=route)) as proxy:
            response = await http_get(proxy.ports[0], set_headers_path(*ORIGIN_SOFTWARE))
    assert response.headers_named("server") == [b"web"]
    assert response.headers_named("x-powered-by") == []


async def test_removing_via_drops_the_origin_sides_entries_not_bastions() -> None:
    path = set_headers_path(("Via", "1.1 varnish (Varnish/6.0)"))
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route='headers.response.remove = ["Via"]')
        async with running_proxy(toml) as proxy:
            response = await http_get(proxy.ports[0], path)
        async with running_proxy(single_route_config(origin.address)) as proxy:
            control = await http_get(proxy.ports[0], path)
    assert response.headers_named("via") == [b"1.1 bastion"]
    assert control.headers_named("via") == [b"1.1 varnish (Varnish/6.0), 1.1 bastion"]


SECURITY_CONFIG = """
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/down"
  upstream = "down"
  headers = {{ security = true, response.set = {{ Cache-Control = "max-age=86400" }} }}
  [[site.route]]
  path = "/moved"
  redirect = {{ to = "https://new.test{{uri}}" }}
  headers = {{ security = true, response.set = {{ Cache-Control = "max-age=60" }} }}
  [[site.route]]
  path = "/"
  upstream = "app"
  headers.security = true
[upstream.app]
servers = ["http://{origin}"]
[upstream.down]
servers = ["http://127.0.0.1:{closed}"]
retries = 0
"""
PRESET = {
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"SAMEORIGIN",
    b"referrer-policy": b"strict-origin-when-cross-origin",
}


async def test_security_preset_fills_in_without_overriding_the_origin() -> None:
    own = set_headers_path(("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
    csp = set_headers_path(("Content-Security-Policy", "frame-ancestors https://partner.test"))
    async with AutonomousOrigin() as origin:
        toml = SECURITY_CONFIG.format(origin=origin.address, closed=closed_port())
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            bare = await http_get(port, "/echo", host=HOST)
            with_own = await http_get(port, own, host=HOST)
            with_csp = await http_get(port, csp, host=HOST)
    assert {name: bare.header(name) for name in PRESET} == PRESET
    assert with_own.headers_named("x-frame-options") == [b"DENY"]
    assert with_own.headers_named("referrer-policy") == [b"no-referrer"]
    assert with_own.header("x-content-type-options") == b"nosniff"
    assert with_csp.header("x-frame-options") is None  # its frame-ancestors decides
    assert with_csp.header("x-content-type-options") == b"nosniff"


async def test_bastions_error_answers_get_the_preset_but_not_the_routes_values() -> None:
    async with AutonomousOrigin() as origin:
        toml = SECURITY_CONFIG.format(origin=origin.address, closed=closed_port())
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            failed = await http_get(port, "/down/page", host=HOST)
            redirected = await http_get(port, "/moved/page", host=HOST)
    assert failed.status == 502
    assert failed.header("cache-control") is None  # a day-long 502 in some cache: no
    assert {name: failed.header(name) for name in PRESET} == PRESET
    assert redirected.status == 301
    assert redirected.header("location") == b"https://new.test/moved/page"
    assert redirected.header("cache-control") == b"max-age=60"
    assert {name: redirected.header(name) for name in PRESET} == PRESET


# -- HTTP/2 ----------------------------------------------------------------------------------


H2_CONFIG = """
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
tls = true
[[site]]
hosts = ["*"]
tls = {{ certificate = "{certificate}", key = "{key}", hsts = "max-age=60" }}
  [[site.route]]
  path = "/"
  upstream = "app"
  headers.hide_origin = true
  headers.security = true
  headers.request.set = {{ Host = "app.internal", X-Scheme = "{{scheme}}" }}
  headers.request.remove = ["Cookie"]
  headers.response.set = {{ Cache-Control = "no-store" }}
  headers.response.remove = ["Strict-Transport-Security"]
[upstream.app]
servers = ["http://{origin}"]
"""


async def test_the_policy_applies_to_http2_streams(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    cert = pki.server_cert("localhost")
    path = set_headers_path(
        ("Server", "gunicorn"),
        ("X-Frame-Options", "DENY"),
        ("Strict-Transport-Security", "max-age=1"),
    )
    async with AutonomousOrigin() as origin:
        toml = H2_CONFIG.format(certificate=cert.certificate, key=cert.key, origin=origin.address)
        async with running_proxy(toml) as proxy:
            url = f"https://localhost:{proxy.ports[0]}"
            async with httpx.AsyncClient(http2=True, verify=pki.client_context()) as client:
                echo = await client.get(f"{url}/echo", headers={"cookie": "a=1"})
                edited = await client.get(f"{url}{path}")
    assert echo.http_version == "HTTP/2" and edited.http_version == "HTTP/2"
    seen = echo.json()
    assert origin_saw(seen, "host") == ["app.internal"]
    assert origin_saw(seen, "x-scheme") == ["https"]
    assert origin_saw(seen, "cookie") == []
    assert "server" not in edited.headers
    assert edited.headers.get_list("x-frame-options") == ["DENY"]
    assert edited.headers["x-content-type-options"] == "nosniff"
    assert edited.headers.get_list("cache-control") == ["no-store"]
    # The policy removed the origin's HSTS; the site's tls.hsts, which runs after it, stays.
    assert edited.headers.get_list("strict-transport-security") == ["max-age=60"]


# -- refused edits ---------------------------------------------------------------------------


def test_bastion_check_names_the_key_of_a_refused_edit(tmp_path: Path) -> None:
    route = (
        'headers.request.set = { X-Ok = "1", "Transfer-Encoding" = "chunked" }\n'
        '  headers.response.set = { "X-Bad" = "{remote_addr}" }'
    )
    path = tmp_path / "bastion.toml"
    path.write_text(single_route_config("127.0.0.1:9", route=route))
    finished = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 1, finished
    assert f"{path}: site[0].route[0].headers.response.set.X-Bad: unknown placeholder" in (
        finished.stderr
    )
    assert "Traceback" not in finished.stderr
    path.write_text(single_route_config("127.0.0.1:9", route=route.splitlines()[0]))
    finished = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert finished.returncode == 1, finished
    assert (
        f"{path}: site[0].route[0].headers.request.set.Transfer-Encoding: cannot set "
        "Transfer-Encoding: frames the message body" in finished.stderr
    )
