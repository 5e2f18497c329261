"""HTTP/2 on the front: ALPN and h2c prior knowledge, streams multiplexed onto the HTTP/1.1
origin pool, flow control with a slow reader, trailers, GOAWAY on graceful stop, and the
connection-level defences over a real socket."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.support.certs import TestPKI
from tests.support.origins import AutonomousOrigin, pattern_bytes
from tests.support.proxy import running_proxy


def h2_config(origin: str, pki: TestPKI | None, *, listen: str = "", server: str = "") -> str:
    if pki is None:
        listener, site_tls = 'http2 = "h2c"', ""
    else:
        cert = pki.server_cert("localhost")
        listener = "tls = true"
        site_tls = f'tls = {{ certificate = "{cert.certificate}", key = "{cert.key}" }}'
    return f"""
[server]
{server}
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
{listener}
{listen}
[[site]]
hosts = ["*"]
{site_tls}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["http://{origin}"]
"""


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path)


def tls_client(pki: TestPKI) -> httpx.AsyncClient:
    context = pki.client_context()
    return httpx.AsyncClient(http2=True, verify=context, timeout=10)


async def test_h2_by_alpn_multiplexes_onto_the_origin_pool(pki: TestPKI) -> None:
    async with AutonomousOrigin() as origin, running_proxy(h2_config(origin.address, pki)) as proxy:
        port = proxy.ports[0]
        async with tls_client(pki) as client:
            url = f"https://localhost:{port}"
            responses = await asyncio.gather(
                *(client.get(f"{url}/echo?n={i}", headers={"cookie": "a=1"}) for i in range(20))
            )
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert all(r.status_code == 200 for r in responses)
    seen = responses[0].json()
    headers = dict(seen["headers"])
    assert headers["host"] == f"localhost:{port}"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["via"] == "2 bastion"
    assert origin.connections_opened <= 20  # streams share pooled HTTP/1.1 connections


async def test_h2c_prior_knowledge_and_http11_on_the_same_listener() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        url = f"http://127.0.0.1:{proxy.ports[0]}/echo"
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            h2_response = await client.get(url)
        async with httpx.AsyncClient() as client:
            h1_response = await client.get(url)
    assert (h2_response.http_version, h2_response.status_code) == ("HTTP/2", 200)
    assert (h1_response.http_version, h1_response.status_code) == ("HTTP/1.1", 200)


async def test_request_and_response_bodies_stream_both_ways(pki: TestPKI) -> None:
    body = pattern_bytes(3_000_000)
    async with AutonomousOrigin() as origin, running_proxy(h2_config(origin.address, pki)) as proxy:
        async with tls_client(pki) as client:
            url = f"https://localhost:{proxy.ports[0]}"
            upload = await client.post(f"{url}/upload", content=body)
            download = await client.get(f"{url}/bytes?n=5000000&chunked=1")
    assert upload.json() == {"body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
    assert download.content == pattern_bytes(5_000_000)


async def test_trailers_and_errors_over_h2(pki: TestPKI) -> None:
    async with AutonomousOrigin() as origin, running_proxy(h2_config(origin.address, pki)) as proxy:
        async with tls_client(pki) as client:
            url = f"https://localhost:{proxy.ports[0]}"
            missing = await client.get(f"{url}/status/404")
            gone = await client.get(f"{url}/close-before-response")
            head = await client.head(f"{url}/head")
    assert missing.status_code == 404
    assert gone.status_code == 502
    assert head.status_code == 200 and head.content == b""


async def test_origin_dying_mid_body_resets_the_stream(pki: TestPKI) -> None:
    async with AutonomousOrigin() as origin, running_proxy(h2_config(origin.address, pki)) as proxy:
        async with tls_client(pki) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(
                    f"https://localhost:{proxy.ports[0]}/close-mid-body?n=100000&send=1000"
                )


def _raw_h2(port: int, context: ssl.SSLContext | None = None):  # type: ignore[no-untyped-def]
    return asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost" if context else None
    )


H2Client = tuple[asyncio.StreamReader, asyncio.StreamWriter, h2.connection.H2Connection]


async def _h2_client(port: int) -> H2Client:
    reader, writer = await _raw_h2(port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    await writer.drain()
    return reader, writer, conn


async def _read_events(
    reader: asyncio.StreamReader, conn: h2.connection.H2Connection, until: type, timeout: float = 5
) -> list[h2.events.Event]:
    seen: list[h2.events.Event] = []
    async with asyncio.timeout(timeout):
        while not any(isinstance(e, until) for e in seen):
            data = await reader.read(65536)
            if not data:
                break
            seen.extend(conn.receive_data(data))
    return seen


async def test_slow_h2_reader_gets_a_large_body_with_flow_control() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        reader, writer, conn = await _h2_client(proxy.ports[0])
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":path", "/bytes?n=8000000"),
                (":scheme", "http"),
                (":authority", "t"),
            ],
            end_stream=True,
        )
        writer.write(conn.data_to_send())
        received = 0
        async with asyncio.timeout(20):
            while True:
                data = await reader.read(65536)
                assert data
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        received += len(event.data)
                        await asyncio.sleep(0.001)  # a slow reader, acknowledging as it goes
                        conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    if isinstance(event, h2.events.StreamEnded):
                        writer.close()
                        assert received == 8_000_000
                        return
                writer.write(conn.data_to_send())


async def test_graceful_stop_sends_goaway() -> None:
    async with AutonomousOrigin() as origin:
        proxy_cm = running_proxy(h2_config(origin.address, None))
        proxy = await proxy_cm.__aenter__()
        reader, _writer, conn = await _h2_client(proxy.ports[0])
        stop = asyncio.create_task(proxy.stop(graceful_timeout=2))
        events = await _read_events(reader, conn, h2.events.ConnectionTerminated)
        await stop
        await proxy_cm.__aexit__(None, None, None)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


async def test_rapid_reset_is_answered_with_goaway_over_a_socket() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        reader, writer, conn = await _h2_client(proxy.ports[0])
        for stream_id in range(1, 2 * 1000, 2):
            conn.send_headers(
                stream_id,
                [
                    (":method", "GET"),
                    (":path", "/delay?s=1"),
                    (":scheme", "http"),
                    (":authority", "t"),
                ],
            )
            conn.reset_stream(stream_id)
        writer.write(conn.data_to_send())
        events = await _read_events(reader, conn, h2.events.ConnectionTerminated)
    terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert terminated and terminated[0].error_code == 0xB  # ENHANCE_YOUR_CALM
    assert len(origin.requests) < 1000


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_http2(pki: TestPKI) -> None:
    async with AutonomousOrigin() as origin, running_proxy(h2_config(origin.address, pki)) as proxy:
        result = await asyncio.to_thread(
            subprocess.run,
            [
                "curl",
                "-sS",
                "--http2",
                "--cacert",
                str(pki.server_ca_file),
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                f"https://localhost:{proxy.ports[0]}/echo",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert result.stdout == "2 200", result.stderr


async def test_expect_100_continue_is_answered_at_once_on_h2() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        reader, writer, conn = await _h2_client(proxy.ports[0])
        conn.send_headers(
            1,
            [
                (":method", "POST"),
                (":path", "/echo"),
                (":scheme", "http"),
                (":authority", "t"),
                ("expect", "100-continue"),
                ("content-length", "5"),
            ],
        )
        writer.write(conn.data_to_send())
        interim = await _read_events(reader, conn, h2.events.InformationalResponseReceived)
        assert any(isinstance(e, h2.events.InformationalResponseReceived) for e in interim)
        conn.send_data(1, b"hello", end_stream=True)
        writer.write(conn.data_to_send())
        events = await _read_events(reader, conn, h2.events.StreamEnded)
        writer.close()
    final = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert final and dict(final[0].headers)[b":status"] == b"200"
    assert origin.requests[0].body_len == 5


@pytest.mark.slow
async def test_slow_h2_reader_keeps_bastion_memory_bounded(tmp_path: Path) -> None:
    from tests.support.subprocess_proxy import bastion_process

    size = 64 * 1024 * 1024
    async with AutonomousOrigin() as origin:
        async with bastion_process(h2_config(origin.address, None), tmp_path) as bastion:
            reader, writer, conn = await _h2_client(bastion.port)
            conn.send_headers(
                1,
                [
                    (":method", "GET"),
                    (":path", f"/bytes?n={size}"),
                    (":scheme", "http"),
                    (":authority", "t"),
                ],
                end_stream=True,
            )
            writer.write(conn.data_to_send())
            bastion.reset_rss_peak()
            baseline = bastion.rss_kib()
            await asyncio.sleep(1.0)  # read nothing: the windows shut, bastion must stop reading
            received = 0
            async with asyncio.timeout(30):
                while received < size:
                    data = await reader.read(1 << 20)
                    assert data
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.DataReceived):
                            received += len(event.data)
                            conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    writer.write(conn.data_to_send())
            writer.close()
            growth_mib = (bastion.rss_peak_kib() - baseline) / 1024
    assert received == size
    assert growth_mib < 24, f"bastion grew by {growth_mib:.1f} MiB for a 64 MiB body"


async def test_response_trailers_reach_an_h2_client() -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        reader, writer, conn = await _h2_client(proxy.ports[0])
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":path", "/trailers"),
                (":scheme", "http"),
                (":authority", "t"),
                ("te", "trailers"),
            ],
            end_stream=True,
        )
        writer.write(conn.data_to_send())
        events = await _read_events(reader, conn, h2.events.StreamEnded)
        writer.close()
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and dict(trailers[0].headers).get(b"x-checksum")


async def test_small_responses_end_the_stream_on_their_last_frame() -> None:
    """A response read whole from the origin goes out as HEADERS + one DATA frame carrying
    END_STREAM (HEADERS alone without a body), not with an extra empty DATA frame."""
    async with (
        AutonomousOrigin() as origin,
        running_proxy(h2_config(origin.address, None)) as proxy,
    ):
        reader, writer, conn = await _h2_client(proxy.ports[0])
        for stream_id, path in ((1, "/bytes?n=13"), (3, "/status/204")):
            conn.send_headers(
                stream_id,
                [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")],
                end_stream=True,
            )
            writer.write(conn.data_to_send())
            events = await _read_events(reader, conn, h2.events.StreamEnded)
            responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
            data = [e for e in events if isinstance(e, h2.events.DataReceived)]
            if stream_id == 1:
                assert [len(e.data) for e in data] == [13]
                assert data[0].stream_ended is not None and responses[0].stream_ended is None
            else:
                assert data == [] and responses[0].stream_ended is not None
        writer.close()
