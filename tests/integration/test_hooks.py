"""Python hooks over sockets: each capability of the hook API, failing hooks in every phase,
and hooks that cannot be loaded (`bastion check`, reload).

The hooks are in tests/support/hooks_for_tests.py, loaded by name like a user's would be.
What a hook did is read where a client or an origin sees it: the origin's /echo returns the
request headers it received, responses carry the headers and bodies hooks wrote, and
`RecordLog` writes what `on_log` got to a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from bastion.runtime.server import ProxyServer
from tests.support.certs import TestPKI
from tests.support.client import RawClient, http_get, request_bytes
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import running_proxy, single_route_config

HOOKS = "tests.support.hooks_for_tests"
REPO = Path(__file__).resolve().parents[2]


def hooks_route(*entries: str, options: str = "") -> str:
    """Route keys: `hooks = [...]` (entries are TOML values) and `hook_options`."""
    route = f"hooks = [{', '.join(entries)}]"
    if options:
        route += f"\n  hook_options = {options}"
    return route


def hook(name: str, options: str | None = None) -> str:
    """One `hooks` entry: a string, or a table with its own options."""
    if options is None:
        return f'"{HOOKS}:{name}"'
    return f'{{ hook = "{HOOKS}:{name}", options = {options} }}'


@asynccontextmanager
async def proxied(
    route: str = "", *, server: str = "", path: str = "/", h2c: bool = False
) -> AsyncIterator[tuple[AutonomousOrigin, ProxyServer]]:
    """An origin, and bastion in front of it with one route carrying `route` keys."""
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=route, server=server, path=path)
        if h2c:
            toml = toml.replace('address = "127.0.0.1:0"', 'address = "127.0.0.1:0"\nhttp2 = "h2c"')
        async with running_proxy(toml) as proxy:
            yield origin, proxy


def seen_headers(response_json: dict[str, Any], prefix: str = "x-hook-") -> dict[str, str]:
    """Headers the origin received whose names start with `prefix`."""
    return {name: value for name, value in response_json["headers"] if name.startswith(prefix)}


def two_upstreams(a: str, b: str, routes: str, server: str = "") -> str:
    return f"""
[server]
{server}
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
{routes}
[upstream.a]
servers = ["http://{a}"]
[upstream.b]
servers = ["http://{b}"]
"""


# -- reading who the client is ---------------------------------------------------------


async def test_hook_reads_client_address_request_and_route() -> None:
    async with proxied(hooks_route(hook("ReportClient")), path="/api") as (origin, proxy):
        async with RawClient(proxy.ports[0]) as client:
            own_port = client.stream._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            await client.send(request_bytes("GET", "/api/echo?a=1", host="app.test"))
            response = await client.read_response()
    assert response.status == 200
    seen = seen_headers(response.json())
    assert seen["x-hook-client-ip"] == "127.0.0.1"
    assert seen["x-hook-client-port"] == str(own_port)
    assert (seen["x-hook-scheme"], seen["x-hook-method"], seen["x-hook-http-version"]) == (
        "http",
        "GET",
        "1.1",
    )
    assert (seen["x-hook-host"], seen["x-hook-path"], seen["x-hook-query"]) == (
        "app.test",
        "/api/echo",
        "a=1",
    )
    assert (seen["x-hook-site"], seen["x-hook-route"], seen["x-hook-upstream"]) == (
        "*",
        "/api",
        "app",
    )
    assert seen["x-hook-request-id"] == origin.requests[0].header("x-request-id")
    assert "x-hook-tls" not in seen and "x-hook-cert-subject" not in seen


async def test_hook_reads_the_tls_session_and_client_certificate(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    site = pki.server_cert("a.test")
    alice = pki.client_cert("alice@example.test")
    client_auth = f'client_auth = "required", client_ca = "{pki.client_ca_file}"'
    toml = f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
tls = true
[[site]]
hosts = ["a.test"]
tls = {{ certificate = "{site.certificate}", key = "{site.key}", {client_auth} }}
  [[site.route]]
  upstream = "app"
  {hooks_route(hook("ReportClient"))}
[upstream.app]
servers = ["http://{{origin}}"]
"""
    context = pki.client_context(alice)
    context.set_alpn_protocols(["http/1.1"])
    async with (
        AutonomousOrigin() as origin,
        running_proxy(toml.replace("{origin}", origin.address)) as proxy,
    ):
        async with RawClient(proxy.ports[0], ssl=context, server_hostname="a.test") as client:
            await client.send(request_bytes("GET", "/echo", host="a.test"))
            response = await client.read_response()
    assert response.status == 200
    seen = seen_headers(response.json())
    leaf = alice.certificate.read_text().split("-----END CERTIFICATE-----")[0]
    der = ssl.PEM_cert_to_DER_cert(leaf + "-----END CERTIFICATE-----\n")
    assert seen["x-hook-cert-fingerprint"] == hashlib.sha256(der).hexdigest()
    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    assert seen["x-hook-cert-subject"] == subject
    assert seen["x-hook-scheme"] == "https"
    assert seen["x-hook-tls"].startswith("TLSv1.") and seen["x-hook-tls"].endswith("sni=a.test")


# -- request and response headers ------------------------------------------------------


async def test_hook_sets_and_removes_request_headers_in_both_request_phases() -> None:
    options = (
        '{ set = { x-added = "yes", x-replaced = "new" }, remove = ["x-secret"], '
        'origin_set = { x-last-word = "hook" }, origin_remove = ["x-forwarded-for"] }'
    )
    async with proxied(hooks_route(hook("EditRequest", options))) as (origin, proxy):
        sent = [("X-Replaced", "old"), ("X-Replaced", "older"), ("X-Secret", "pw")]
        response = await http_get(proxy.ports[0], "/echo", headers=sent)
    assert response.status == 200
    seen = origin.requests[0]
    assert seen.headers_named("x-added") == ["yes"]
    assert seen.headers_named("x-replaced") == ["new"]
    assert seen.header("x-secret") is None
    assert seen.header("x-last-word") == "hook"
    # before_upstream saw the list the origin gets: forwarding headers in, hop-by-hop out.
    origin_saw = (seen.header("x-hook-origin-saw") or "").split(",")
    assert "x-forwarded-for" in origin_saw and "x-forwarded-proto" in origin_saw
    assert seen.header("x-forwarded-for") is None  # removed there, not added back
    assert seen.header("x-real-ip") == "127.0.0.1"


@pytest.mark.parametrize("misuse", ["framing", "crlf", "unknown_upstream", "not_a_reply"])
async def test_a_hook_misusing_the_api_gets_500_and_nothing_reaches_the_origin(
    misuse: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with proxied(hooks_route(hook("Misuse", f'{{ do = "{misuse}" }}'))) as (origin, proxy):
        response = await http_get(proxy.ports[0], "/echo")
    assert response.status == 500
    assert origin.requests == []
    (record,) = hook_failures(caplog)
    assert "failed in on_request" in record.getMessage()


async def test_hook_sets_and_removes_response_headers() -> None:
    options = '{ set = { x-frame-options = "DENY" }, remove = ["x-powered-by", "server"] }'
    async with proxied(hooks_route(hook("EditResponse", options))) as (_origin, proxy):
        target = "/set-headers?x-powered-by=PHP&server=Apache&x-app=kept"
        response = await http_get(proxy.ports[0], target)
    assert response.status == 200
    assert response.header("x-frame-options") == b"DENY"
    assert response.header("x-powered-by") is None and response.header("server") is None
    assert response.header("x-app") == b"kept"
    assert response.header("x-hook-status") == b"200"
    assert response.body == b"ok\n"


# -- the path, the route, the upstream ------------------------------------------------


async def test_hook_rewrites_the_path_and_query_the_origin_sees() -> None:
    options = '{ from = "/old", to = "/echo/new", query = "v=2" }'
    async with proxied(hooks_route(hook("RewritePath", options))) as (_origin, proxy):
        rewritten = await http_get(proxy.ports[0], "/old/page?v=1")
        untouched = await http_get(proxy.ports[0], "/echo/other?v=1")
    assert rewritten.json()["target"] == "/echo/new/page?v=2"
    assert untouched.json()["target"] == "/echo/other?v=1"


async def test_a_bad_path_from_a_hook_is_refused_with_500() -> None:
    options = '{ from = "/old", to = "/../../etc" }'
    async with proxied(hooks_route(hook("RewritePath", options))) as (origin, proxy):
        response = await http_get(proxy.ports[0], "/old/passwd")
    assert response.status == 500
    assert origin.requests == []


async def test_server_hook_changes_path_and_host_before_routing() -> None:
    routes = """
[[site]]
hosts = ["one.test"]
  [[site.route]]
  path = "/a"
  upstream = "a"
  [[site.route]]
  path = "/b"
  upstream = "b"
  strip_prefix = true
[[site]]
hosts = ["two.test"]
  [[site.route]]
  upstream = "b"
"""
    server = f"hooks = [{hook('RerouteByHeader')}]"
    async with AutonomousOrigin() as a, AutonomousOrigin() as b:
        toml = two_upstreams(a.address, b.address, routes, server)
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            by_path = await http_get(port, "/a/echo", "one.test", [("X-Go-Path", "/b/echo")])
            by_host = await http_get(port, "/a/echo", "one.test", [("X-Go-Host", "two.test")])
            neither = await http_get(port, "/a/echo", "one.test")
    # The new path chose route /b, whose strip_prefix applied to it.
    assert by_path.json()["target"] == "/echo"
    assert dict(by_path.json()["headers"])["x-forwarded-prefix"] == "/b"
    # The new host chose the other site; the origin gets it as Host.
    assert by_host.json()["target"] == "/a/echo"
    assert dict(by_host.json()["headers"])["host"] == "two.test"
    assert neither.json()["target"] == "/a/echo"
    assert [len(a.requests), len(b.requests)] == [1, 2]


@pytest.mark.parametrize("where", ["route", "server"])
async def test_hook_chooses_the_upstream(where: str) -> None:
    entry = hook("ChooseUpstream")
    routes = f"""
[[site]]
hosts = ["*"]
  [[site.route]]
  upstream = "a"
  {hooks_route(entry) if where == "route" else ""}
"""
    server = f"hooks = [{entry}]" if where == "server" else ""
    async with AutonomousOrigin() as a, AutonomousOrigin() as b:
        async with running_proxy(two_upstreams(a.address, b.address, routes, server)) as proxy:
            to_b = await http_get(proxy.ports[0], "/echo", headers=[("X-Upstream", "b")])
            to_a = await http_get(proxy.ports[0], "/echo")
            unknown = await http_get(proxy.ports[0], "/echo", headers=[("X-Upstream", "c")])
    assert (to_b.status, to_a.status, unknown.status) == (200, 200, 500)
    assert [r.target for r in a.requests] == ["/echo"]
    assert [r.target for r in b.requests] == ["/echo"]
    assert b"request id: " in unknown.body


async def test_hook_answers_directly_without_contacting_the_origin(tmp_path: Path) -> None:
    log_file = tmp_path / "hook.log"
    entries = (
        hook("AnswerDirectly", '{ path = "/hello", status = 403 }'),
        hook("EditResponse", "{}"),
        hook("RecordLog", f'{{ log_file = "{log_file}" }}'),
    )
    async with proxied(hooks_route(*entries)) as (origin, proxy):
        response = await http_get(proxy.ports[0], "/hello")
        passed = await http_get(proxy.ports[0], "/echo")
    assert response.status == 403
    assert response.body == b"answered by a hook for 127.0.0.1\n"
    assert response.header("x-hook") == b"reply"
    assert response.header("content-type") == b"text/plain; charset=utf-8"
    assert response.header("x-hook-status") == b"403"  # on_response sees bastion's answers
    assert passed.status == 200
    assert [r.target for r in origin.requests] == ["/echo"]
    flags = [json.loads(line)["flag"] for line in log_file.read_text().splitlines()]
    assert flags == ["hook_reply", "ok"]


# -- bodies ---------------------------------------------------------------------------


async def test_body_hook_transforms_a_streamed_body_and_leaves_others_alone() -> None:
    async with proxied(hooks_route(hook("Uppercase"))) as (_origin, proxy):
        streamed = await http_get(proxy.ports[0], "/stream?n=3&interval=0.05")
        binary = await http_get(proxy.ports[0], "/bytes?n=1000")
        fixed = await http_get(proxy.ports[0], "/set-headers?x-a=1")  # text/plain, a length
    assert streamed.status == 200
    assert streamed.chunked and streamed.complete
    assert len(streamed.chunk_sizes) >= 3  # each piece went on as it came
    assert streamed.body == b"CHUNK 0\nCHUNK 1\nCHUNK 2\n[END]"
    # A text body with Content-Length: the length is unknown once rewritten.
    assert fixed.chunked and fixed.header("content-length") is None
    assert fixed.body == b"OK\n[END]"
    # wants_body said no: untouched, Content-Length kept.
    assert binary.framing == "content-length" and binary.body_len == 1000
    assert binary.body == pattern_bytes(1000)


async def test_body_hook_may_hold_back_until_the_last_call() -> None:
    async with proxied(hooks_route(hook("HoldBack"))) as (_origin, proxy):
        response = await http_get(proxy.ports[0], "/bytes?n=300000&chunk=7000")
    assert response.status == 200
    assert response.body == b"held 300000 bytes\n"


async def test_body_hook_over_http2() -> None:
    async with proxied(hooks_route(hook("Uppercase")), h2c=True) as (_origin, proxy):
        async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
            url = f"http://127.0.0.1:{proxy.ports[0]}/stream?n=4&interval=0.02"
            response = await client.get(url)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.content == b"CHUNK 0\nCHUNK 1\nCHUNK 2\nCHUNK 3\n[END]"


# -- after the request ------------------------------------------------------------------


async def test_on_log_gets_the_entry_and_the_requests_state(tmp_path: Path) -> None:
    log_file = tmp_path / "hook.log"
    route = hooks_route(hook("RecordLog"), options=f'{{ log_file = "{log_file}" }}')
    async with proxied(route) as (origin, proxy):
        response = await http_get(proxy.ports[0], "/bytes?n=1234")
    assert response.status == 200
    (entry,) = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert entry["request_id"] == origin.requests[0].header("x-request-id")
    assert (entry["status"], entry["bytes_out"], entry["flag"]) == (200, 1234, "ok")
    assert (entry["upstream"], entry["server"]) == ("app", origin.address)
    assert 0 < entry["duration"] < 5
    assert entry["state"] == {"seen_path": "/bytes"}


async def test_server_hooks_see_the_answers_to_requests_no_route_took(tmp_path: Path) -> None:
    log_file = tmp_path / "hook.log"
    server = (
        f"hooks = [{hook('EditResponse')}, {hook('RecordLog')}]\n"
        f'hook_options = {{ log_file = "{log_file}" }}'
    )
    async with proxied(server=server, path="/app") as (origin, proxy):
        response = await http_get(proxy.ports[0], "/elsewhere")
    assert response.status == 404
    assert response.header("x-hook-status") == b"404"
    (entry,) = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert (entry["status"], entry["flag"], entry["upstream"]) == (404, "no_route", None)
    assert entry["state"] == {"seen_path": "/elsewhere"}
    assert origin.requests == []


async def test_hook_options_reach_hooks_given_as_strings_tables_and_factories() -> None:
    route = hooks_route(
        hook("EditResponse"),
        hook("EditResponse", '{ set = { x-own = "table" } }'),
        hook("make_tagger", '{ tag = "factory" }'),
        options='{ set = { x-shared = "hook_options" } }',
    )
    async with proxied(route) as (_, proxy):
        response = await http_get(proxy.ports[0], "/echo")
    assert response.header("x-shared") == b"hook_options"
    assert response.header("x-own") == b"table"
    assert response.header("x-tag") == b"factory"


# -- failing hooks ---------------------------------------------------------------------


def hook_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bastion.filters.hooks"]


@pytest.mark.parametrize("method", ["on_request", "before_upstream", "on_response"])
async def test_a_hook_failing_in_a_header_phase_is_a_500_for_that_request_only(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = hook("Fail", f'{{ in = "{method}", path = "/fail" }}')
    async with proxied(hooks_route(failing, hook("EditResponse"))) as (origin, proxy):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("GET", "/fail"))
            failed = await client.read_response()
            await client.send(request_bytes("GET", "/echo"))
            next_on_same_connection = await client.read_response()
        fresh = await http_get(proxy.ports[0], "/echo")
    assert failed.status == 500
    request_id = failed.header("x-request-id")
    assert request_id and b"request id: " + request_id in failed.body
    assert failed.header("x-hook-status") is None  # no hook runs after one failed
    assert (next_on_same_connection.status, fresh.status) == (200, 200)
    assert next_on_same_connection.header("x-hook-status") == b"200"
    reached = [r.target for r in origin.requests]
    assert reached == (["/fail"] if method == "on_response" else []) + ["/echo", "/echo"]
    (record,) = hook_failures(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    message = record.getMessage()
    assert f"hook {HOOKS}:Fail failed in {method} (request {request_id.decode()})" in message
    assert f"RuntimeError: boom in {method}" in caplog.text


async def test_a_hook_failing_on_the_retry_to_another_server_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first server answers 502, the request goes to the other one, and the hook fails
    # there: the hook's failure is the answer, not the first server's 502.
    failing = hook("Fail", '{ in = "before_upstream", after = 1 }')
    async with AutonomousOrigin() as first, AutonomousOrigin() as second:
        toml = single_route_config(first.address, route=hooks_route(failing)).replace(
            f'servers = ["http://{first.address}"]',
            f'servers = ["http://{first.address}", "http://{second.address}"]',
        )
        async with running_proxy(toml) as proxy:
            response = await http_get(proxy.ports[0], "/status/502")
    assert response.status == 500
    assert len(first.requests) + len(second.requests) == 1  # only the first attempt went out
    assert len(hook_failures(caplog)) == 1


async def test_a_hook_failing_for_a_request_that_waited_in_the_queue_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = hooks_route(hook("Fail", '{ in = "before_upstream", path = "/fail" }'))
    async with AutonomousOrigin() as origin:
        toml = single_route_config(origin.address, route=route).replace(
            f'servers = ["http://{origin.address}"]',
            f'servers = [{{ url = "http://{origin.address}", max_conns = 1 }}]',
        )
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            async with RawClient(port) as busy, RawClient(port) as queued:
                await busy.send(request_bytes("GET", "/delay?s=0.3"))
                await asyncio.sleep(0.1)  # the one slot is taken: the next request waits
                await queued.send(request_bytes("GET", "/fail"))
                failed = await queued.read_response()
                assert (await busy.read_response()).status == 200
            after = await http_get(port, "/echo")
    assert failed.status == 500
    assert after.status == 200
    assert [r.target for r in origin.requests] == ["/delay?s=0.3", "/echo"]
    assert "failed in before_upstream" in hook_failures(caplog)[0].getMessage()


async def test_a_hook_failing_on_bastions_own_error_answer_still_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = hooks_route(hook("Fail", '{ in = "on_response" }'))
    toml = single_route_config("127.0.0.1:9", route=route)  # nothing listens: a 502 first
    async with running_proxy(toml) as proxy:
        response = await http_get(proxy.ports[0], "/echo")
    assert response.status == 500
    assert b"request id: " in response.body
    assert len(hook_failures(caplog)) == 1


async def test_a_server_hook_failing_before_routing_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = hook("Fail", '{ in = "on_request" }')
    async with proxied(server=f"hooks = [{failing}]") as (origin, proxy):
        response = await http_get(proxy.ports[0], "/echo")
    assert response.status == 500
    assert origin.requests == []
    assert "failed in on_request" in hook_failures(caplog)[0].getMessage()


async def test_a_hook_failing_mid_body_cuts_the_client_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first piece passes (and reaches the client), the second fails.
    route = hooks_route(hook("Fail", '{ in = "on_body_chunk", path = "/stream", skip = 1 }'))
    async with proxied(route) as (_, proxy):
        async with RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("GET", "/stream?n=3&interval=0.2"))
            response = await client.read_response()
            assert await client.wait_closed()
        after = await http_get(proxy.ports[0], "/echo")
    assert response.status == 200  # the head was out before the body failed
    assert response.chunked and not response.complete
    assert response.body == b"chunk 0\n"
    assert after.status == 200
    (record,) = hook_failures(caplog)
    assert "failed in on_body_chunk" in record.getMessage()
    assert "client connection cut" in record.getMessage()


async def test_a_hook_failing_in_on_log_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with proxied(hooks_route(hook("Fail", '{ in = "on_log" }'))) as (_, proxy):
        async with RawClient(proxy.ports[0]) as client:
            for _ in range(2):
                await client.send(request_bytes("GET", "/echo"))
                assert (await client.read_response()).status == 200
    failures = hook_failures(caplog)
    assert len(failures) == 2
    assert all("failed in on_log" in r.getMessage() for r in failures)


# -- hooks that cannot be loaded ----------------------------------------------------------


def bastion_check(
    config: str, directory: Path, pythonpath: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """`bastion check` as a user runs it, with `pythonpath` on PYTHONPATH."""
    path = directory / "bastion.toml"
    path.write_text(config)
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=directory,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("route", "server", "expected"),
    [
        (
            hooks_route('"nowhere.hooks:Thing"'),
            "",
            "site[0].route[0].hooks[0]: cannot import \"nowhere.hooks\": No module named 'nowhere'",
        ),
        (
            hooks_route(f'"{HOOKS}:Missing"'),
            "",
            f'site[0].route[0].hooks[0]: module "{HOOKS}" has no attribute "Missing"',
        ),
        (
            hooks_route('"no_colon_here"'),
            "",
            'site[0].route[0].hooks[0]: expected a hook as "package.module:Name"',
        ),
        (
            hooks_route(hook("NeedsOption")),
            "",
            f'site[0].route[0].hooks[0]: "{HOOKS}:NeedsOption": the "required" option is missing',
        ),
        (
            "",
            f"hooks = [{hook('ReportClient')}, {hook('NotAHook')}]",
            f'server.hooks[1]: "{HOOKS}:NotAHook" made a NotAHook, not a bastion.hooks.Hook',
        ),
        (
            hooks_route(hook("ReportClient", "{}"), options="{ a = 1 }"),
            "",
            "site[0].route[0].hook_options: hook_options goes to the hooks listed without",
        ),
    ],
)
def test_bastion_check_names_the_hook_that_cannot_be_loaded(
    route: str, server: str, expected: str, tmp_path: Path
) -> None:
    outcome = bastion_check(
        single_route_config("127.0.0.1:9", route=route, server=server), tmp_path
    )
    assert outcome.returncode == 1, outcome
    assert f"{tmp_path / 'bastion.toml'}: {expected}" in outcome.stderr
    assert "Traceback" not in outcome.stderr


def test_bastion_check_accepts_loadable_hooks(tmp_path: Path) -> None:
    route = hooks_route(hook("NeedsOption", "{ required = true }"), hook("Uppercase"))
    outcome = bastion_check(single_route_config("127.0.0.1:9", route=route), tmp_path)
    assert outcome.returncode == 0, outcome.stderr


async def test_reload_makes_new_hook_instances_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"

    def config(tag: str, entry: str = "make_tagger") -> str:
        route = hooks_route(hook(entry, f'{{ tag = "{tag}" }}'))
        return single_route_config(origin.address, route=route)

    async with AutonomousOrigin() as origin:
        async with running_proxy(config("first")) as proxy:
            port = proxy.ports[0]
            assert (await http_get(port, "/echo")).header("x-tag") == b"first"
            path.write_text(config("second"))
            assert proxy.reload(path)
            assert (await http_get(port, "/echo")).header("x-tag") == b"second"
            path.write_text(config("third", entry="NeedsOption"))
            assert not proxy.reload(path)
            assert (await http_get(port, "/echo")).header("x-tag") == b"second"
