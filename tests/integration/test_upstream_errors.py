"""Origin failures as the client sees them, and the request id that ties them to the log.

Refused or unreachable origin → 502; connect or read timeout → 504; origin closing, resetting or
talking nonsense before answering → 502; once the response head is out, any origin failure cuts
the client connection so the truncation is visible. Error answers are small bodies carrying the
status and the request id, which also goes to the origin (X-Request-Id) and into the access log.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.client import RawClient, RawResponse, http_get, request_bytes
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import running_proxy, single_route_config

_REQUEST_ID_LINE = re.compile(r"request id: (\S+)")
_SMALL_BODY = 512


def assert_error_answer(response: RawResponse, status: int) -> str:
    """A complete small error answer naming `status` and the request id; returns that id."""
    assert response.status == status
    assert response.complete
    assert len(response.body) <= _SMALL_BODY
    assert str(status) in response.text
    request_id = response.header("x-request-id")
    assert request_id, "error answers carry x-request-id"
    assert request_id.decode() in response.text
    match = _REQUEST_ID_LINE.search(response.text)
    assert match is not None and match.group(1) == request_id.decode()
    return request_id.decode()


def json_log(path: Path) -> str:
    return f'access = "{path}"\nformat = "json"'


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unused_port() -> int:
    """A loopback port nothing listens on (bound, noted, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def listener_dropping_syns() -> AsyncIterator[str]:
    """A listener that never accepts and whose accept queue is full: Linux drops further SYNs,
    so a connect attempt hangs until the connector's own timeout."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        await asyncio.sleep(0.05)  # let the handshakes that fit complete
        yield f"{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@asynccontextmanager
async def proxy_to(address: str, **config: str) -> AsyncIterator[int]:
    async with running_proxy(single_route_config(address, **config)) as proxy:
        yield proxy.ports[0]


# -- no answer at all: 502 / 504 ---------------------------------------------------------------


async def test_refused_origin_gets_502_with_request_id(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    async with proxy_to(f"127.0.0.1:{unused_port()}", log=json_log(access)) as port:
        response = await http_get(port, "/anything")
    request_id = assert_error_answer(response, 502)
    assert response.text.startswith("502 ")
    [record] = log_records(access)
    assert record["status"] == 502
    assert record["request_id"] == request_id
    assert record["flag"] == "upstream_connect_failed"


async def test_connect_timeout_gets_504() -> None:
    async with (
        listener_dropping_syns() as address,
        proxy_to(address, upstream='timeouts = { connect = "200ms" }') as port,
    ):
        started = time.monotonic()
        response = await http_get(port, "/slow-to-connect", timeout=3.0)
        elapsed = time.monotonic() - started
    assert_error_answer(response, 504)
    assert 0.15 <= elapsed < 1.0


async def test_read_timeout_before_head_gets_504(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    upstream = 'timeouts = { read = "300ms" }'
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, upstream=upstream, log=json_log(access)) as port,
    ):
        started = time.monotonic()
        response = await http_get(port, "/delay?s=2", timeout=3.0)
        elapsed = time.monotonic() - started
    request_id = assert_error_answer(response, 504)
    assert 0.25 <= elapsed < 1.0
    assert origin.requests[0].header("x-request-id") == request_id
    [record] = log_records(access)
    assert (record["status"], record["flag"]) == (504, "upstream_read_timeout")
    assert record["request_id"] == request_id


async def test_origin_closing_before_answering_gets_502() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        response = await http_get(port, "/close-before-response")
    assert_error_answer(response, 502)
    assert [r.target for r in origin.requests] == ["/close-before-response"]


async def test_garbage_instead_of_a_response_gets_502() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        response = await http_get(port, "/garbage")
    assert_error_answer(response, 502)
    assert b"HELLO" not in response.body


async def test_origin_reset_before_answering_gets_502() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        response = await http_get(port, "/reset")
    assert_error_answer(response, 502)


async def test_client_connection_stays_usable_after_an_error_answer() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        await client.send(request_bytes("GET", "/close-before-response"))
        assert_error_answer(await client.read_response(), 502)
        await client.send(request_bytes("GET", "/echo"))
        assert (await client.read_response()).status == 200


# -- failures after the head went out: the truncation must be visible -------------------------


async def test_origin_dying_mid_length_body_cuts_the_client_connection() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        await client.send(request_bytes("GET", "/close-mid-body?n=1000&send=100"))
        response = await client.read_response()
        assert await client.wait_closed(2.0)
    assert response.status == 200
    assert response.header("content-length") == b"1000"
    assert response.complete is False
    assert response.body == pattern_bytes(100)


async def test_origin_dying_mid_chunked_body_sends_no_last_chunk() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        await client.send(request_bytes("GET", "/close-mid-body?send=100&chunked=1"))
        raw = await client.read_until_close(timeout=2.0)
        assert client.closed_by_peer
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    assert body.startswith(b"64\r\n" + pattern_bytes(100))
    assert not body.endswith(b"0\r\n\r\n")
    assert b"\r\n0\r\n" not in body


async def test_origin_dying_mid_chunked_body_parses_as_incomplete() -> None:
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address) as port,
        RawClient(port) as client,
    ):
        await client.send(request_bytes("GET", "/close-mid-body?send=100&chunked=1"))
        response = await client.read_response()
        assert await client.wait_closed(2.0)
    assert response.chunked
    assert response.complete is False
    assert response.body == pattern_bytes(100)


async def test_read_timeout_mid_body_cuts_the_client_connection(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    upstream = 'timeouts = { read = "300ms" }'
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, upstream=upstream, log=json_log(access)) as port,
        RawClient(port) as client,
    ):
        started = time.monotonic()
        await client.send(request_bytes("GET", "/delay-body?s=2"))
        response = await client.read_response(timeout=3.0)
        assert await client.wait_closed(2.0)
        elapsed = time.monotonic() - started
    assert response.status == 200
    assert response.header("content-length") == b"4"
    assert response.complete is False
    assert response.body == b"ab"
    assert 0.25 <= elapsed < 1.5
    [record] = log_records(access)
    assert record["flag"] == "upstream_read_timeout"


# -- X-Request-Id ----------------------------------------------------------------------------


async def test_request_id_is_generated_sent_to_origin_and_logged(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, log=json_log(access)) as port,
    ):
        first = await http_get(port, "/echo")
        second = await http_get(port, "/echo")
    assert first.status == second.status == 200
    ids = [r.header("x-request-id") for r in origin.requests]
    assert all(ids) and len(set(ids)) == 2, ids
    assert [r["request_id"] for r in log_records(access)] == ids


async def test_generated_request_id_in_error_body_is_the_one_the_origin_saw() -> None:
    async with AutonomousOrigin() as origin, proxy_to(origin.address) as port:
        response = await http_get(port, "/close-before-response")
    request_id = assert_error_answer(response, 502)
    assert origin.requests[0].header("x-request-id") == request_id


async def test_untrusted_client_request_id_is_replaced(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    forged = [("X-Request-Id", "client-chosen-id")]
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, log=json_log(access)) as port,
    ):
        ok = await http_get(port, "/echo", headers=forged)
        failed = await http_get(port, "/close-before-response", headers=forged)
    assert ok.status == 200
    seen = [r.headers_named("x-request-id") for r in origin.requests]
    assert all(len(values) == 1 and values != ["client-chosen-id"] for values in seen), seen
    request_id = assert_error_answer(failed, 502)
    assert request_id != "client-chosen-id"
    logged = [r["request_id"] for r in log_records(access)]
    assert len(logged) == 2 and "client-chosen-id" not in logged
    assert logged[1] == request_id


async def test_trusted_client_request_id_is_kept(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    given = [("X-Request-Id", "abc-123")]
    server = 'trusted_proxies = ["127.0.0.1"]'
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, server=server, log=json_log(access)) as port,
    ):
        ok = await http_get(port, "/echo", headers=given)
        failed = await http_get(port, "/close-before-response", headers=given)
    assert ok.status == 200
    # The failed one went out twice: first on the pooled connection, then retried once.
    seen = [r.headers_named("x-request-id") for r in origin.requests]
    assert seen == [["abc-123"]] * len(seen)
    assert assert_error_answer(failed, 502) == "abc-123"
    assert [r["request_id"] for r in log_records(access)] == ["abc-123", "abc-123"]


async def test_error_answer_for_refused_origin_reaches_client_of_trusted_proxy() -> None:
    server = 'trusted_proxies = ["127.0.0.1"]'
    async with proxy_to(f"127.0.0.1:{unused_port()}", server=server) as port:
        response = await http_get(port, "/", headers=[("X-Request-Id", "edge-42")])
    assert assert_error_answer(response, 502) == "edge-42"


async def test_every_origin_failure_reaches_the_log_once(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    paths = ["/close-before-response", "/garbage", "/reset", "/close-mid-body?n=10&send=5"]
    async with (
        AutonomousOrigin() as origin,
        proxy_to(origin.address, log=json_log(access)) as port,
    ):
        for path in paths:
            async with RawClient(port) as client:
                await client.send(request_bytes("GET", path, headers=[("Connection", "close")]))
                await client.read_until_close(timeout=2.0)
        await asyncio.sleep(0.05)
    records = log_records(access)
    assert [r["target"] for r in records] == paths
    assert [r["status"] for r in records][:3] == [502, 502, 502]
    assert records[3]["flag"] == "upstream_aborted_body"
    assert all(r["flag"] != "ok" for r in records)


async def test_origin_that_stops_reading_the_request_body_is_a_504() -> None:
    """`timeouts.write`: an origin that takes the head but never reads the body fills its
    socket buffers; bastion stops reading the client meanwhile and answers 504 in time."""
    from tests.support.origins import ScriptedOrigin

    piece = b"x" * 65536
    async with ScriptedOrigin() as origin:
        toml = single_route_config(origin.address, upstream='timeouts = { write = "300ms" }')
        async with running_proxy(toml) as proxy, RawClient(proxy.ports[0]) as client:
            await client.send(
                b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n"
            )

            async def upload() -> None:
                for _ in range(1500):  # up to ~98 MB, under the default max_body
                    await client.send(piece)

            uploading = asyncio.create_task(upload())
            conn = await origin.accept(timeout=5)
            await conn.read_request_head()  # ...and never a byte of the body
            started = time.monotonic()
            response = await client.read_response(timeout=15)
            waited = time.monotonic() - started
            uploading.cancel()
    assert response.status == 504
    assert waited < 10  # the write timeout, not the 60 s read or body timeouts
