"""The access log (JSON and nginx combined, to a file or stdout) and the error log, as a user
reads them after real requests through the proxy.

Most tests run bastion in-process (`running_proxy`), whose stop at the end of the `async with`
flushes and closes the access log; the error-log test runs `bastion run` as a child process and
reads its stderr.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import RawClient, http_get, request_bytes
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import running_proxy, single_route_config
from tests.support.subprocess_proxy import bastion_process

SHORT_TIMEOUTS = 'timeouts = { connect = "500ms", read = "2s" }'
COMBINED = re.compile(
    r"^(?P<addr>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]"
    r' "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+)'
    r' "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"(?P<rest>.*)$'
)
"""nginx's `log_format combined`; whatever bastion appends after it lands in `rest`."""


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def json_log(path: Path, fmt: str = "json") -> str:
    return f'access = "{path}"\nformat = "{fmt}"'


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- JSON ---------------------------------------------------------------------------------


async def test_json_line_of_a_proxied_request(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    body = pattern_bytes(300)
    async with AutonomousOrigin() as origin:
        config = single_route_config(
            origin.address, log=json_log(log_path), path="/api", route="strip_prefix = true"
        )
        async with running_proxy(config) as proxy, RawClient(proxy.ports[0]) as client:
            request = request_bytes("POST", "/api/delay?s=0.1", headers=[("x-a", "b")], body=body)
            await client.send(request)
            response = await client.read_response()
    [record] = log_records(log_path)
    seen = origin.requests[0]
    assert (response.status, response.body, seen.target) == (200, b"ok", "/delay?s=0.1")
    assert record["request_id"] == seen.header("x-request-id") != "-"
    assert {k: record[k] for k in ("route", "upstream", "upstream_server", "flag")} == {
        "route": "/api",
        "upstream": "app",
        "upstream_server": origin.address,
        "flag": "ok",
    }
    assert (record["status"], record["upstream_status"]) == (200, 200)
    assert (record["method"], record["target"]) == ("POST", "/api/delay?s=0.1")
    assert record["bytes_in"] == len(request)
    assert record["bytes_out"] == len(b"ok")
    assert 0 <= record["connect_ms"] < record["first_byte_ms"] <= record["duration_ms"]
    assert 100 <= record["first_byte_ms"] < 1000


async def test_json_bytes_in_counts_request_line_headers_and_body(tmp_path: Path) -> None:
    """Like nginx's $request_length: every byte of the request, head and body."""
    log_path = tmp_path / "access.log"
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log=json_log(log_path))
        async with running_proxy(config) as proxy, RawClient(proxy.ports[0]) as client:
            get = request_bytes("GET", "/echo", headers=[("accept", "*/*")])
            post = request_bytes("POST", "/upload", body=pattern_bytes(1000))
            for request in (get, post):
                await client.send(request)
                assert (await client.read_response()).status == 200
    assert [r["bytes_in"] for r in log_records(log_path)] == [len(get), len(post)]


async def test_json_line_of_a_request_on_a_pooled_origin_connection(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log=json_log(log_path))
        async with running_proxy(config) as proxy, RawClient(proxy.ports[0]) as client:
            for _ in range(2):
                await client.send(request_bytes("GET", "/bytes?n=5000"))
                assert (await client.read_response()).status == 200
    first, second = log_records(log_path)
    assert origin.connections_opened == 1, "the second request should reuse the origin connection"
    assert first["connect_ms"] is not None and first["connect_ms"] >= 0
    assert second["connect_ms"] == 0
    assert first["bytes_out"] == second["bytes_out"] == 5000
    assert first["request_id"] != second["request_id"]


async def test_json_line_of_a_connect_failure(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    dead = f"127.0.0.1:{closed_port()}"
    config = single_route_config(dead, log=json_log(log_path), upstream=SHORT_TIMEOUTS)
    async with running_proxy(config) as proxy:
        response = await http_get(proxy.ports[0], "/x")
    [record] = log_records(log_path)
    assert response.status == 502
    assert record["flag"] == "upstream_connect_failed"
    assert (record["status"], record["upstream_status"]) == (502, 0)
    assert record["upstream_server"] == dead
    assert record["first_byte_ms"] is None
    assert response.header("x-request-id") == record["request_id"].encode()
    assert record["request_id"].encode() in response.body


async def test_json_line_of_a_request_no_route_matches(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log=json_log(log_path), path="/api")
        async with running_proxy(config) as proxy:
            response = await http_get(proxy.ports[0], "/elsewhere")
    [record] = log_records(log_path)
    assert response.status == 404
    assert origin.requests == []
    assert record["flag"] == "no_route"
    assert (record["status"], record["route"], record["upstream_server"]) == (404, "-", "-")
    assert record["connect_ms"] is None
    assert record["bytes_out"] == len(response.body)


# -- combined -----------------------------------------------------------------------------


async def test_combined_line_has_nginx_layout(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    headers = [("referer", "http://test/from"), ("user-agent", "probe/1.0")]
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log=json_log(log_path, "combined"))
        async with running_proxy(config) as proxy:
            response = await http_get(proxy.ports[0], "/bytes?n=1234", headers=headers)
    [line] = log_path.read_text().splitlines()
    match = COMBINED.match(line)
    assert match is not None, line
    assert match["addr"] == "127.0.0.1"
    assert match["request"] == "GET /bytes?n=1234 HTTP/1.1"
    assert (match["status"], match["bytes"]) == ("200", "1234")
    assert (match["referer"], match["agent"]) == ("http://test/from", "probe/1.0")
    assert response.status == 200
    assert f" rid={origin.requests[0].header('x-request-id')} " in match["rest"]
    assert f" us={origin.address}" in match["rest"]


async def test_combined_line_escapes_quotes_and_raw_bytes(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    agent = b'evil" 200 0 "-" "forged\xff'
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log=json_log(log_path, "combined"))
        async with running_proxy(config) as proxy:
            await http_get(proxy.ports[0], "/echo", headers=[(b"user-agent", agent)])
    [line] = log_path.read_bytes().decode("ascii").splitlines()
    match = COMBINED.match(line)
    assert match is not None, line
    assert match["agent"] == r"evil\x22 200 0 \x22-\x22 \x22forged\xFF"


async def test_access_log_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    async with AutonomousOrigin() as origin:
        config = single_route_config(origin.address, log='access = "stdout"\nformat = "json"')
        async with running_proxy(config) as proxy:
            response = await http_get(proxy.ports[0], "/echo")
    out = capfd.readouterr().out
    [record] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert response.status == 200
    assert record["request_id"] == origin.requests[0].header("x-request-id")
    assert record["flag"] == "ok"


# -- error log ----------------------------------------------------------------------------


async def test_error_log_has_a_warning_for_a_502(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{closed_port()}"
    config = single_route_config(dead, upstream=SHORT_TIMEOUTS, log='access = "off"')
    async with bastion_process(config, tmp_path) as bastion:
        response = await http_get(bastion.port, "/x")
    request_id = response.header("x-request-id")
    assert response.status == 502 and request_id is not None
    warnings = [line for line in bastion.stderr_text().splitlines() if " warning " in line]
    assert any(request_id.decode() in line and dead in line for line in warnings), warnings
    assert "Traceback" not in bastion.stderr_text()
