"""The PROXY protocol over real sockets: v1 and v2 headers in front of plain and TLS listeners
(the real client reaching X-Forwarded-For, Forwarded and the access log; trust; refusals;
split and slow headers), and v1 and v2 headers towards origins that parse them (before TLS,
from health checks, and origin connections never shared between two clients)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import ssl
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from bastion.http.proxy_protocol import Endpoint, v1_header, v2_header
from tests.support.certs import TestPKI
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy
from tests.support.proxy_protocol_origin import ProxyProtocolOrigin

CLIENT = Endpoint("203.0.113.7", 51000)
CLIENT6 = Endpoint("2001:db8::7", 4000)
BALANCER_VIP = Endpoint("198.51.100.1", 443)
BALANCER_VIP6 = Endpoint("2001:db8::1", 443)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path)


def config(
    origin: str,
    *,
    trusted: str = '["127.0.0.1"]',
    listen: str = "proxy_protocol = true",
    upstream: str = "",
    server: str = "",
    log: str = 'access = "off"',
    site_tls: str = "",
) -> str:
    return f"""
[server]
trusted_proxies = {trusted}
{server}
[log]
{log}
[[listen]]
address = "127.0.0.1:0"
{listen}
[[site]]
hosts = ["*"]
{site_tls}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{origin}"]
{upstream}
"""


def tls_site(pki: TestPKI, extra: str = "") -> str:
    cert = pki.server_cert("localhost", "a.test")
    return f'tls = {{ certificate = "{cert.certificate}", key = "{cert.key}"{extra} }}'


# -- a client that speaks first with a PROXY header ------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def get(path: str = "/echo", host: str = "a.test", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def proxied_get(
    port: int,
    header: bytes,
    *,
    pieces: int = 1,
    pause: float = 0.0,
    extra: str = "",
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Send `header` (in `pieces` writes), then (over TLS with `tls`) one GET /echo; the
    origin's JSON echo of what it received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        step = max(1, -(-len(header) // pieces))
        for start in range(0, len(header), step):
            writer.write(header[start : start + step])
            await writer.drain()
            await asyncio.sleep(pause)
        if tls is not None:
            await writer.start_tls(tls, server_hostname="a.test")
        writer.write(get(extra=extra))
        async with asyncio.timeout(5):
            status, _, body = await read_response(reader)
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]
    finally:
        writer.close()


def seen_headers(echo: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in echo["headers"]}


async def closed_without_answer(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    """True when the server closes (FIN or RST) having sent nothing."""
    async with asyncio.timeout(timeout):
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True


# -- PROXY in: who the client is -------------------------------------------------------------


@pytest.mark.parametrize("writer", [v1_header, v2_header], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("source", "destination"), [(CLIENT, BALANCER_VIP), (CLIENT6, BALANCER_VIP6)], ids=["4", "6"]
)
async def test_the_real_client_reaches_forwarding_headers_and_the_access_log(
    tmp_path: Path, writer: Any, source: Endpoint, destination: Endpoint
) -> None:
    log_path = tmp_path / "access.log"
    log = f'access = "{log_path}"\nformat = "json"'
    async with AutonomousOrigin() as origin:
        async with running_proxy(config(origin.url, log=log)) as proxy:
            echo = await proxied_get(proxy.ports[0], writer(source, destination))
    headers = seen_headers(echo)
    assert headers["x-forwarded-for"] == source.address
    assert headers["x-real-ip"] == source.address
    shown = f'"[{source.address}]"' if ":" in source.address else source.address
    assert headers["forwarded"].startswith(f"for={shown};")
    assert headers["x-forwarded-port"] == "443"  # the port the client connected to
    record = json.loads(log_path.read_text().splitlines()[0])
    assert record["client_ip"] == source.address


async def test_untrusted_peer_must_send_the_header_but_is_not_believed() -> None:
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, trusted='["10.99.0.0/16"]')
        async with running_proxy(toml) as proxy:
            echo = await proxied_get(proxy.ports[0], v1_header(CLIENT, BALANCER_VIP))
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
            writer.write(get())
            refused = await closed_without_answer(reader)
            writer.close()
    assert seen_headers(echo)["x-forwarded-for"] == "127.0.0.1"
    assert refused  # the header is required from everyone


@pytest.mark.parametrize(
    "header",
    [v2_header(None, None), v1_header(None, None), v2_header(Endpoint("unix"), Endpoint(""))],
    ids=["v2-LOCAL", "v1-UNKNOWN", "v2-UNSPEC"],
)
async def test_headers_without_a_client_leave_the_tcp_peer(header: bytes) -> None:
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        echo = await proxied_get(proxy.ports[0], header)
    assert seen_headers(echo)["x-forwarded-for"] == "127.0.0.1"


async def test_a_trusted_proxy_behind_the_balancer_has_its_forwarded_for_believed() -> None:
    """Balancer → CDN edge → bastion: the PROXY source is the edge, itself trusted, so its
    X-Forwarded-For names the client; an untrusted PROXY source's is dropped as spoofable."""
    edge = Endpoint("198.51.100.20", 6000)
    trusted = '["127.0.0.1", "198.51.100.0/24"]'
    async with AutonomousOrigin() as origin:
        async with running_proxy(config(origin.url, trusted=trusted)) as proxy:
            port = proxy.ports[0]
            via_edge = await proxied_get(
                port, v2_header(edge, BALANCER_VIP), extra="X-Forwarded-For: 192.0.2.9\r\n"
            )
            spoofed = await proxied_get(
                port, v2_header(CLIENT, BALANCER_VIP), extra="X-Forwarded-For: 6.6.6.6\r\n"
            )
    assert seen_headers(via_edge)["x-forwarded-for"] == "192.0.2.9, 198.51.100.20"
    assert seen_headers(via_edge)["x-real-ip"] == "192.0.2.9"
    assert seen_headers(spoofed)["x-forwarded-for"] == "203.0.113.7"


@pytest.mark.parametrize("version", [1, 2])
async def test_a_header_split_over_many_writes_is_read(version: int) -> None:
    header = (v1_header if version == 1 else v2_header)(CLIENT, BALANCER_VIP)
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        echo = await proxied_get(proxy.ports[0], header, pieces=len(header), pause=0.005)
    assert seen_headers(echo)["x-forwarded-for"] == CLIENT.address


async def test_header_and_request_in_one_write() -> None:
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        writer.write(v1_header(CLIENT, BALANCER_VIP) + get() + get())
        first = await read_response(reader)
        second = await read_response(reader)
        writer.close()
    assert [json.loads(r[2])["request_no"] for r in (first, second)] == [1, 2]
    assert {seen_headers(json.loads(r[2]))["x-forwarded-for"] for r in (first, second)} == {
        CLIENT.address
    }


@pytest.mark.parametrize(
    "data",
    [
        get(),  # a plain HTTP client: the balancer sends no PROXY header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x08" + bytes(8),
        b"PROXY " + b"x" * 200,
    ],
    ids=["http", "tls", "v1-short", "v2-short", "v1-long"],
)
async def test_a_connection_without_a_valid_header_is_closed_unanswered(
    data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.net.proxy_header")
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        writer.write(data)
        assert await closed_without_answer(reader)
        writer.close()
    assert origin.requests == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "from 127.0.0.1 without a valid PROXY protocol header" in warnings[0]


async def test_refusal_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.net.proxy_header")
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
            writer.write(get())
            assert await closed_without_answer(reader)
            writer.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_a_slow_header_is_cut_at_the_header_timeout() -> None:
    """One deadline for the whole header: trickling bytes does not extend it."""
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, server='header_timeout = "600ms"')
        async with running_proxy(toml) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
            started = asyncio.get_running_loop().time()
            header = v1_header(CLIENT, BALANCER_VIP)
            with suppress(ConnectionError):
                for byte in header[:-2]:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    if reader.at_eof():
                        break
            assert await closed_without_answer(reader)
            elapsed = asyncio.get_running_loop().time() - started
            writer.close()
    assert 0.5 < elapsed < 1.5
    assert origin.requests == []


async def test_a_connection_that_closes_before_any_byte_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A balancer's TCP health check connects and closes."""
    caplog.set_level(logging.WARNING, logger="bastion.net.proxy_header")
    async with AutonomousOrigin() as origin, running_proxy(config(origin.url)) as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
        writer.close()
        await writer.wait_closed()
        echo = await proxied_get(proxy.ports[0], v1_header(CLIENT, BALANCER_VIP))
    assert seen_headers(echo)["x-forwarded-for"] == CLIENT.address
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


# -- PROXY in, then TLS ----------------------------------------------------------------------


@pytest.mark.parametrize("writer", [v1_header, v2_header], ids=["v1", "v2"])
async def test_tls_listener_reads_the_header_before_the_handshake(
    pki: TestPKI, writer: Any
) -> None:
    listen = "proxy_protocol = true\ntls = true"
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, listen=listen, site_tls=tls_site(pki))
        async with running_proxy(toml) as proxy:
            context = pki.client_context()
            context.set_alpn_protocols(["http/1.1"])
            echo = await proxied_get(proxy.ports[0], writer(CLIENT, BALANCER_VIP), tls=context)
    headers = seen_headers(echo)
    assert headers["x-forwarded-for"] == CLIENT.address
    assert headers["x-forwarded-proto"] == "https"


async def tls_after_header_in_one_write(
    port: int, header: bytes, context: ssl.SSLContext, request: bytes
) -> tuple[bytes, ssl.SSLObject]:
    """The PROXY header and the ClientHello in one TCP write, as balancers often send them;
    then `request` over the TLS session; the response bytes up to the end of its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="a.test")
    with suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    writer.write(header + outgoing.read())
    async with asyncio.timeout(5):
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                data = await reader.read(65536)
                assert data, "closed during the handshake"
                incoming.write(data)
        tls.write(request)
        writer.write(outgoing.read())
        response = b""
        while b"\r\n\r\n" not in response or not response.endswith(b"}"):
            data = await reader.read(65536)
            assert data, response
            incoming.write(data)
            with suppress(ssl.SSLWantReadError):
                while chunk := tls.read(65536):
                    response += chunk
    writer.close()
    return response, tls


async def test_header_and_client_hello_in_one_write(pki: TestPKI) -> None:
    listen = "proxy_protocol = true\ntls = true"
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, listen=listen, site_tls=tls_site(pki))
        async with running_proxy(toml) as proxy:
            context = pki.client_context()
            context.set_alpn_protocols(["http/1.1"])
            header = v2_header(CLIENT, BALANCER_VIP, [(0x02, b"a.test")])
            response, tls = await tls_after_header_in_one_write(
                proxy.ports[0], header, context, get()
            )
    assert response.startswith(b"HTTP/1.1 200 ")
    echo = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert seen_headers(echo)["x-forwarded-for"] == CLIENT.address
    assert tls.selected_alpn_protocol() == "http/1.1"


async def test_sni_and_client_certificates_work_behind_the_header(pki: TestPKI) -> None:
    other = pki.server_cert("b.test")
    extra_site = f"""
[[site]]
hosts = ["b.test"]
tls = {{ certificate = "{other.certificate}", key = "{other.key}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
"""
    mtls = f', client_auth = "required", client_ca = "{pki.client_ca_file}"'
    listen = "proxy_protocol = true\ntls = true"
    client_cert = pki.client_cert("alice@example.test")
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, listen=listen, site_tls=tls_site(pki, mtls)) + extra_site
        toml = toml.replace('hosts = ["*"]', 'hosts = ["a.test"]')
        async with running_proxy(toml) as proxy:
            context = pki.client_context(client_cert)
            response, tls = await tls_after_header_in_one_write(
                proxy.ports[0], v1_header(CLIENT, BALANCER_VIP), context, get()
            )
            b_context = pki.client_context()
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
            writer.write(v1_header(CLIENT, BALANCER_VIP))
            await writer.start_tls(b_context, server_hostname="b.test")
            b_names = [n for _, n in writer.get_extra_info("peercert")["subjectAltName"]]
            writer.close()
    assert [n for _, n in tls.getpeercert()["subjectAltName"]] == ["localhost", "a.test"]
    assert b_names == ["b.test"]
    echo = json.loads(response.split(b"\r\n\r\n", 1)[1])
    headers = seen_headers(echo)
    assert headers["x-client-cert-verify"] == "SUCCESS"
    assert headers["x-forwarded-for"] == CLIENT.address


async def test_h2_by_alpn_behind_the_header(pki: TestPKI) -> None:
    listen = "proxy_protocol = true\ntls = true"
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, listen=listen, site_tls=tls_site(pki))
        async with running_proxy(toml) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports[0])
            writer.write(v2_header(CLIENT6, BALANCER_VIP6))
            context = pki.client_context()
            context.set_alpn_protocols(["h2"])
            await writer.start_tls(context, server_hostname="a.test")
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            request = [(":method", "GET"), (":path", "/echo"), (":scheme", "https")]
            conn.send_headers(1, [*request, (":authority", "a.test")], end_stream=True)
            writer.write(conn.data_to_send())
            body, status = b"", ""
            async with asyncio.timeout(5):
                while True:
                    data = await reader.read(65536)
                    assert data
                    events = conn.receive_data(data)
                    for event in events:
                        if isinstance(event, h2.events.ResponseReceived):
                            status = dict(event.headers)[b":status"].decode()
                        elif isinstance(event, h2.events.DataReceived):
                            body += event.data
                            conn.acknowledge_received_data(event.flow_controlled_length, 1)
                    writer.write(conn.data_to_send())
                    if any(isinstance(e, h2.events.StreamEnded) for e in events):
                        break
            writer.close()
    assert status == "200"
    assert seen_headers(json.loads(body))["x-forwarded-for"] == CLIENT6.address


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_haproxy_protocol_over_https_and_h2(pki: TestPKI) -> None:
    listen = "proxy_protocol = true\ntls = true"
    async with AutonomousOrigin() as origin:
        toml = config(origin.url, listen=listen, site_tls=tls_site(pki))
        async with running_proxy(toml) as proxy:
            result = await asyncio.to_thread(
                subprocess.run,
                [
                    "curl",
                    "-sS",
                    "--haproxy-protocol",
                    "--http2",
                    "--cacert",
                    str(pki.server_ca_file),
                    "-w",
                    "\n%{http_version} %{http_code}",
                    f"https://localhost:{proxy.ports[0]}/echo",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
    body, _, status = result.stdout.rpartition("\n")
    assert status == "2 200", result.stderr
    assert seen_headers(json.loads(body))["x-forwarded-for"] == "127.0.0.1"


# -- PROXY out ---------------------------------------------------------------------------------


async def direct_get(port: int, count: int = 1) -> tuple[int, list[dict[str, Any]]]:
    """`count` GETs on one keep-alive connection; (the client's own port, the echoes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    echoes = []
    try:
        for _ in range(count):
            writer.write(get())
            async with asyncio.timeout(5):
                status, _, body = await read_response(reader)
            assert status == 200, body
            echoes.append(json.loads(body))
        return writer.get_extra_info("sockname")[1], echoes
    finally:
        writer.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_origins_get_a_header_naming_the_client(version: int) -> None:
    upstream = f'proxy_protocol = "v{version}"'
    async with ProxyProtocolOrigin() as origin:
        toml = config(f"http://{origin.address}", listen="", upstream=upstream)
        async with running_proxy(toml) as proxy:
            proxy_port = proxy.ports[0]
            client_port, (echo,) = await direct_get(proxy_port)
    assert echo["proxy"] == {
        "version": version,
        "command": "PROXY",
        "family": "TCP4",
        "source": ["127.0.0.1", client_port],
        "destination": ["127.0.0.1", proxy_port],
    }
    assert seen_headers(echo)["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize("version", [1, 2])
async def test_proxy_in_and_out_relays_the_balancers_client(version: int) -> None:
    upstream = f'proxy_protocol = "v{version}"'
    async with ProxyProtocolOrigin() as origin:
        toml = config(f"http://{origin.address}", upstream=upstream)
        async with running_proxy(toml) as proxy:
            echo = await proxied_get(proxy.ports[0], v2_header(CLIENT6, BALANCER_VIP6))
    assert echo["proxy"]["family"] == "TCP6"
    assert echo["proxy"]["source"] == [CLIENT6.address, CLIENT6.port]
    assert echo["proxy"]["destination"] == [BALANCER_VIP6.address, BALANCER_VIP6.port]


async def test_https_origin_gets_the_header_before_the_handshake(pki: TestPKI) -> None:
    cert = pki.server_cert("origin.test")
    tls = f'tls = {{ ca = "{pki.server_ca_file}", server_name = "origin.test" }}'
    async with ProxyProtocolOrigin(ssl=pki.server_context(cert)) as origin:
        upstream = f'proxy_protocol = "v2"\n{tls}'
        toml = config(f"https://{origin.address}", listen="", upstream=upstream)
        async with running_proxy(toml) as proxy:
            client_port, echoes = await direct_get(proxy.ports[0], count=2)
    assert [echo["conn_id"] for echo in echoes] == [1, 1]  # kept alive over TLS
    assert echoes[0]["proxy"]["source"] == ["127.0.0.1", client_port]
    assert origin.bad_headers == []


async def test_origin_connections_are_never_shared_between_clients() -> None:
    """Each client connection's requests go on origin connections that carry its own header;
    the same client's keep-alive requests reuse its connection."""
    async with ProxyProtocolOrigin() as origin:
        toml = config(f"http://{origin.address}", listen="", upstream='proxy_protocol = "v1"')
        async with running_proxy(toml) as proxy:
            port = proxy.ports[0]
            readers_writers = [await asyncio.open_connection("127.0.0.1", port) for _ in "ab"]
            seen: list[tuple[int, int]] = []  # (client port, origin connection)
            for _ in range(3):  # a, b, a, b, a, b: each finds the other's connection idle
                for reader, writer in readers_writers:
                    writer.write(get())
                    _, _, body = await read_response(reader)
                    echo = json.loads(body)
                    assert echo["proxy"]["source"][1] == writer.get_extra_info("sockname")[1]
                    seen.append((echo["proxy"]["source"][1], echo["conn_id"]))
            for _, writer in readers_writers:
                writer.close()
    assert len(set(seen)) == 2  # one origin connection per client, reused
    assert len(origin.connections) == 2
    assert [len(conn.requests) for conn in origin.connections] == [3, 3]


@pytest.mark.parametrize(
    ("version", "expected"),
    [(1, ("PROXY", "UNKNOWN")), (2, ("LOCAL", "UNKNOWN"))],
)
async def test_health_checks_send_a_header_without_a_client(
    version: int, expected: tuple[str, str]
) -> None:
    upstream = (
        f'proxy_protocol = "v{version}"\nhealth = {{ path = "/healthz", interval = "100ms" }}'
    )
    async with ProxyProtocolOrigin() as origin:
        toml = config(f"http://{origin.address}", listen="", upstream=upstream)
        async with running_proxy(toml):
            async with asyncio.timeout(5):
                while not origin.connections or not origin.connections[0].requests:
                    await asyncio.sleep(0.02)
    header = origin.connections[0].header
    assert (header.command, header.family) == expected
    assert header.version == version
    assert origin.connections[0].requests[0][1] == "/healthz"
    assert origin.bad_headers == []
