"""TLS termination: SNI certificates, versions, ALPN, HSTS, redirect_to_https, forwarded
proto, client certificates (mTLS) and 421, TLS to origins — over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.support.certs import TestPKI
from tests.support.client import RawClient, request_bytes
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path)


def tls_config(
    pki: TestPKI,
    origin: str,
    *,
    extra_site: str = "",
    site_tls: str = "",
    route: str = "",
    listen: str = "",
    log: str = 'access = "off"',
    upstream: str = "",
) -> str:
    a = pki.server_cert("a.test")
    b = pki.server_cert("*.b.test")
    fallback = pki.server_cert("default.test")
    return f"""
[log]
{log}
[[listen]]
address = "127.0.0.1:0"
tls = true
{listen}
[[site]]
hosts = ["a.test"]
tls = {{ certificate = "{a.certificate}", key = "{a.key}" {site_tls} }}
  [[site.route]]
  path = "/"
  upstream = "app"
  {route}
[[site]]
hosts = ["*.b.test"]
tls = {{ certificate = "{b.certificate}", key = "{b.key}", min_version = "1.3" }}
  [[site.route]]
  path = "/"
  upstream = "app"
[[site]]
hosts = ["*"]
tls = {{ certificate = "{fallback.certificate}", key = "{fallback.key}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
{extra_site}
[upstream.app]
servers = ["{origin}"]
{upstream}
"""


async def tls_get(
    port: int,
    pki: TestPKI,
    name: str | None,
    target: str = "/echo",
    *,
    host: str | None = None,
    cert=None,
    headers=(),
) -> tuple[object, dict[str, object]]:
    """One request over TLS; returns the response and the TLS facts the client saw."""
    context = pki.client_context(cert)
    context.set_alpn_protocols(["http/1.1"])  # a raw HTTP/1.1 client
    if name is None:
        context.check_hostname = False
    async with RawClient(port, ssl=context, server_hostname=name) as client:
        ssl_object = client.stream._transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        facts = {
            "names": [name for _, name in ssl_object.getpeercert()["subjectAltName"]],
            "alpn": ssl_object.selected_alpn_protocol(),
            "version": ssl_object.version(),
        }
        await client.send(request_bytes("GET", target, host=host or name or "x", headers=headers))
        return await client.read_response(), facts


async def test_sni_picks_each_sites_certificate_and_no_sni_gets_the_default(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        port = proxy.ports[0]
        _, a = await tls_get(port, pki, "a.test")
        _, b = await tls_get(port, pki, "x.b.test")
        _, none = await tls_get(port, pki, None, host="a.test")
        assert a["names"] == ["a.test"]
        assert b["names"] == ["*.b.test"]
        assert none["names"] == ["default.test"]  # the catch-all site's certificate
        assert a["alpn"] == "http/1.1"
        response, _ = await tls_get(port, pki, "a.test")
        assert response.status == 200  # type: ignore[attr-defined]


async def test_origin_is_told_the_client_came_over_https(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        await tls_get(proxy.ports[0], pki, "a.test")
    seen = origin.requests[0]
    assert seen.header("x-forwarded-proto") == "https"
    assert "proto=https" in (seen.header("forwarded") or "")


async def test_min_version_13_site_refuses_tls12_clients(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        context = pki.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        # The version is settled before SNI picks the site: bastion closes right after.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.ports[0], ssl=context, server_hostname="x.b.test"
            )
            writer.write(request_bytes("GET", "/echo", host="x.b.test"))
            await reader.readexactly(1)
        assert origin.requests == []
        # The same TLS 1.2 client is fine for a site without the requirement.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", proxy.ports[0], ssl=context, server_hostname="a.test"
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()


async def test_min_version_13_site_refuses_tls12_clients_over_h2_too(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        context = pki.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["h2"])
        # Closed right after the handshake: bastion's SETTINGS frame never comes.
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.ports[0], ssl=context, server_hostname="x.b.test"
            )
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(9))
            await asyncio.wait_for(reader.readexactly(9), 5)
        assert origin.requests == []


async def test_intermediate_profile_refuses_tls11_and_weak_ciphers(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        context = pki.client_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers("AES128-SHA")  # no forward secrecy: not in the profile
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection(
                "127.0.0.1", proxy.ports[0], ssl=context, server_hostname="a.test"
            )


async def test_hsts_is_sent_over_tls(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(
            tls_config(pki, f"http://{origin.address}", site_tls=', hsts = "max-age=31536000"')
        ) as proxy,
    ):
        response, _ = await tls_get(proxy.ports[0], pki, "a.test")
        other, _ = await tls_get(proxy.ports[0], pki, "x.b.test")
    assert response.header("strict-transport-security") == b"max-age=31536000"  # type: ignore[attr-defined]
    assert other.header("strict-transport-security") is None  # type: ignore[attr-defined]


async def test_redirect_to_https_listener_answers_308(pki: TestPKI) -> None:
    async with AutonomousOrigin() as origin:
        toml = f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
redirect_to_https = true
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["http://{origin.address}"]
"""
        async with running_proxy(toml) as proxy, RawClient(proxy.ports[0]) as client:
            await client.send(request_bytes("GET", "/a/b?c=1", host="shop.example:8080"))
            response = await client.read_response()
    assert response.status == 308
    assert response.header("location") == b"https://shop.example/a/b?c=1"
    assert origin.requests == []


async def test_openssl_s_client_sees_sni_certificate_and_alpn(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        result = await asyncio.to_thread(
            subprocess.run,
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{proxy.ports[0]}",
                "-servername",
                "a.test",
                "-alpn",
                "h2,http/1.1",
                "-CAfile",
                str(pki.server_ca_file),
            ],
            input=b"",
            capture_output=True,
            timeout=10,
        )
    output = (result.stdout + result.stderr).decode("latin-1")
    assert "Verify return code: 0 (ok)" in output
    assert "DNS:a.test" in output or "CN = a.test" in output or "subject=" in output
    assert "ALPN protocol: h2" in output  # HTTP/2 is offered by default on TLS listeners


async def test_tls_details_are_in_the_json_access_log(pki: TestPKI, tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    async with AutonomousOrigin() as origin:
        toml = tls_config(
            pki, f"http://{origin.address}", log=f'access = "{log_path}"\nformat = "json"'
        )
        async with running_proxy(toml) as proxy:
            await tls_get(proxy.ports[0], pki, "a.test")
    record = json.loads(log_path.read_text().splitlines()[0])
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert record["tls_cipher"]
    assert record["alpn"] == "http/1.1"


# -- client certificates ---------------------------------------------------------------


def mtls_config(pki: TestPKI, origin: str, mode: str, route: str = "") -> str:
    return tls_config(
        pki,
        origin,
        site_tls=f', client_auth = "{mode}", client_ca = "{pki.client_ca_file}"',
        route=route,
    )


async def test_required_client_certificate_reaches_the_origin_as_headers(pki: TestPKI) -> None:
    client = pki.client_cert("alice@example.test")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        response, _ = await tls_get(
            proxy.ports[0],
            pki,
            "a.test",
            cert=client,
            headers=[("X-Client-Cert-Verify", "SUCCESS"), ("X-Client-Cert-Subject", "CN=mallory")],
        )
        assert response.status == 200  # type: ignore[attr-defined]
    seen = origin.requests[0]
    assert seen.header("x-client-cert-verify") == "SUCCESS"
    assert seen.headers_named("x-client-cert-subject") != ["CN=mallory"]
    assert len(seen.headers_named("x-client-cert-subject")) == 1
    pem = unquote(seen.header("x-client-cert") or "")
    assert (
        pem
        == client.certificate.read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n"
    )
    assert (seen.header("client-cert") or "").startswith(":")


async def test_required_client_certificate_missing_is_refused(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        response, _ = await tls_get(proxy.ports[0], pki, "a.test")
    assert response.status == 400  # type: ignore[attr-defined]
    assert b"client certificate" in response.body  # type: ignore[attr-defined]
    assert origin.requests == []


async def test_certificate_from_an_unknown_ca_fails_the_handshake(pki: TestPKI) -> None:
    import trustme

    stranger = pki.client_cert("eve@example.test", ca=trustme.CA())
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            response, _ = await tls_get(proxy.ports[0], pki, "a.test", cert=stranger)
            assert response.status == 200  # type: ignore[attr-defined]  # pragma: no cover
    assert origin.requests == []


async def test_optional_without_certificate_says_none_and_spoofs_are_stripped(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "optional")) as proxy,
    ):
        response, _ = await tls_get(
            proxy.ports[0],
            pki,
            "a.test",
            headers=[("X-Client-Cert", "forged"), ("Client-Cert", ":AAAA:")],
        )
        assert response.status == 200  # type: ignore[attr-defined]
    seen = origin.requests[0]
    assert seen.header("x-client-cert-verify") == "NONE"
    assert seen.header("x-client-cert") is None
    assert seen.header("client-cert") is None


async def test_spoofed_client_cert_headers_are_stripped_on_plain_routes_too(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        await tls_get(
            proxy.ports[0],
            pki,
            "x.b.test",
            headers=[("X-Client-Cert-Verify", "SUCCESS"), ("SSL-Client-Cert", "x")],
        )
    seen = origin.requests[0]
    assert seen.header("x-client-cert-verify") is None
    assert seen.header("ssl-client-cert") is None


async def test_host_of_another_site_than_the_sni_gets_421_when_mtls_is_involved(
    pki: TestPKI,
) -> None:
    client = pki.client_cert("alice@example.test")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        # Handshake for x.b.test (no client auth), then ask for the mTLS site a.test.
        response, _ = await tls_get(proxy.ports[0], pki, "x.b.test", host="a.test", cert=client)
        assert response.status == 421  # type: ignore[attr-defined]
        # Between two sites without client auth the Host simply routes.
        fine, _ = await tls_get(proxy.ports[0], pki, "x.b.test", host="other.test")
        assert fine.status == 200  # type: ignore[attr-defined]


# -- TLS to origins ---------------------------------------------------------------------


async def test_https_origin_verified_against_a_configured_ca(pki: TestPKI) -> None:
    origin_cert = pki.server_cert("origin.internal")
    context = pki.server_context(origin_cert)
    async with AutonomousOrigin(ssl=context) as origin:
        toml = tls_config(
            pki,
            f"https://{origin.address}",
            upstream=f'tls = {{ ca = "{pki.server_ca_file}", server_name = "origin.internal" }}',
        )
        async with running_proxy(toml) as proxy:
            response, _ = await tls_get(proxy.ports[0], pki, "a.test")
    assert response.status == 200  # type: ignore[attr-defined]
    assert origin.requests[0].target == "/echo"


async def test_https_origin_failing_verification_is_a_502(
    pki: TestPKI, caplog: pytest.LogCaptureFixture
) -> None:
    origin_cert = pki.server_cert("origin.internal")
    async with AutonomousOrigin(ssl=pki.server_context(origin_cert)) as origin:
        # System CAs do not know the test CA: verification fails.
        toml = tls_config(
            pki, f"https://{origin.address}", upstream='tls = { server_name = "origin.internal" }'
        )
        async with running_proxy(toml) as proxy:
            response, _ = await tls_get(proxy.ports[0], pki, "a.test")
    assert response.status == 502  # type: ignore[attr-defined]
    assert origin.requests == []
    # The error log says which server failed and why, so an operator can fix it.
    assert any(
        "TLS certificate of" in r.getMessage() and "unable to get local issuer" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


async def test_https_origin_with_verification_off(pki: TestPKI) -> None:
    origin_cert = pki.server_cert("origin.internal")
    async with AutonomousOrigin(ssl=pki.server_context(origin_cert)) as origin:
        toml = tls_config(pki, f"https://{origin.address}", upstream="tls = { verify = false }")
        async with running_proxy(toml) as proxy:
            response, _ = await tls_get(proxy.ports[0], pki, "a.test")
    assert response.status == 200  # type: ignore[attr-defined]


def _resumed_handshake(port: int, context: ssl.SSLContext) -> tuple[bool, bool]:
    """Two connections with the same client session; (first reused, second reused)."""
    import socket

    def one(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="a.test", session=session) as tls:
                tls.sendall(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass  # reading lets the TLS 1.3 session ticket arrive
                return tls.session, tls.session_reused

    session, first = one(None)
    _, second = one(session)
    return first, second


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_sessions_resume(pki: TestPKI, version: ssl.TLSVersion) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}")) as proxy,
    ):
        context = pki.client_context()
        context.minimum_version = context.maximum_version = version
        first, second = await asyncio.to_thread(_resumed_handshake, proxy.ports[0], context)
    assert (first, second) == (False, True)


async def test_full_chain_through_an_intermediate_ca_verifies(pki: TestPKI, tmp_path: Path) -> None:
    intermediate = pki.server_ca.create_child_ca()
    leaf = intermediate.issue_cert("chain.test")
    chain_file, key_file = tmp_path / "chain.crt", tmp_path / "chain.key"
    chain_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(key_file)
    extra = f"""
[[site]]
hosts = ["chain.test"]
tls = {{ certificate = "{chain_file}", key = "{key_file}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
"""
    async with (
        AutonomousOrigin() as origin,
        running_proxy(tls_config(pki, f"http://{origin.address}", extra_site=extra)) as proxy,
    ):
        response, facts = await tls_get(proxy.ports[0], pki, "chain.test")
    assert response.status == 200  # type: ignore[attr-defined]
    assert facts["names"] == ["chain.test"]  # verified against the root: the chain was sent


async def test_bastion_presents_its_client_certificate_to_an_origin_that_requires_one(
    pki: TestPKI,
) -> None:
    origin_cert = pki.server_cert("origin.internal")
    context = pki.server_context(origin_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(pki.client_ca_file))
    proxy_identity = pki.client_cert("bastion.internal")
    async with AutonomousOrigin(ssl=context) as origin:
        with_cert = tls_config(
            pki,
            f"https://{origin.address}",
            upstream=(
                f'tls = {{ ca = "{pki.server_ca_file}", server_name = "origin.internal", '
                f'certificate = "{proxy_identity.certificate}", key = "{proxy_identity.key}" }}'
            ),
        )
        async with running_proxy(with_cert) as proxy:
            accepted, _ = await tls_get(proxy.ports[0], pki, "a.test")
        without_cert = tls_config(
            pki,
            f"https://{origin.address}",
            upstream=f'tls = {{ ca = "{pki.server_ca_file}", server_name = "origin.internal" }}',
        )
        async with running_proxy(without_cert) as proxy:
            refused, _ = await tls_get(proxy.ports[0], pki, "a.test")
    assert accepted.status == 200  # type: ignore[attr-defined]
    assert refused.status == 502  # type: ignore[attr-defined]


async def test_client_certificate_through_an_intermediate_sends_the_chain(pki: TestPKI) -> None:
    intermediate = pki.client_ca.create_child_ca()
    client = pki.client_cert("bob@example.test", ca=intermediate)  # leaf + intermediate
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        response, _ = await tls_get(proxy.ports[0], pki, "a.test", cert=client)
        assert response.status == 200  # type: ignore[attr-defined]
    seen = origin.requests[0]
    assert seen.header("x-client-cert-verify") == "SUCCESS"
    intermediate_der = ssl.PEM_cert_to_DER_cert(intermediate.cert_pem.bytes().decode())
    # RFC 9440: the chain without the leaf, each certificate a structured-field byte sequence
    expected = ":" + base64.b64encode(intermediate_der).decode() + ":"
    assert seen.header("client-cert-chain") == expected


async def test_a_client_certificate_without_intermediates_sends_no_chain(pki: TestPKI) -> None:
    client = pki.client_cert("carol@example.test")
    async with (
        AutonomousOrigin() as origin,
        running_proxy(mtls_config(pki, f"http://{origin.address}", "required")) as proxy,
    ):
        response, _ = await tls_get(proxy.ports[0], pki, "a.test", cert=client)
        assert response.status == 200  # type: ignore[attr-defined]
    assert origin.requests[0].header("client-cert") is not None
    assert origin.requests[0].header("client-cert-chain") is None
