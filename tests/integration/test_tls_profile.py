"""Mozilla "intermediate" key exchange on a TLS listener: DHE-RSA with the RFC 7919 ffdhe2048
group on TLS 1.2, and only X25519, P-256 and P-384 as groups — over real sockets, with
`openssl s_client` as the client; and the facts of the computed ffdhe2048 prime."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from math import factorial
from pathlib import Path

import pytest
import trustme

from bastion.net import tls_groups
from bastion.net.tls_dh import (
    check_ffdhe2048,
    ffdhe2048_pem,
    ffdhe2048_prime,
    floor_e_scaled,
    is_probable_prime,
)
from bastion.net.tls_groups import set_groups
from tests.support.certs import TestPKI
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy

RSA_HOST = "rsa.test"  # chosen by SNI: an RSA certificate, which DHE-RSA needs
DEFAULT_HOST = "default.test"  # the catch-all site: trustme's default ECDSA certificate

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")


def profile_config(pki: TestPKI, origin: str) -> str:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert(RSA_HOST, key_type=trustme.KeyType.RSA)
    rsa_certificate, rsa_key = pki.directory / "rsa.crt", pki.directory / "rsa.key"
    rsa_certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(rsa_key)
    fallback = pki.server_cert(DEFAULT_HOST)
    return f"""
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
tls = true
[[site]]
hosts = ["{RSA_HOST}"]
tls = {{ certificate = "{rsa_certificate}", key = "{rsa_key}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
[[site]]
hosts = ["*"]
tls = {{ certificate = "{fallback.certificate}", key = "{fallback.key}" }}
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["{origin}"]
"""


async def s_client(port: int, host: str, options: Sequence[str]) -> tuple[bool, dict[str, str]]:
    """One `openssl s_client -brief` handshake: whether it was established, and its summary
    lines ("Ciphersuite", "Server Temp Key", ...)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host]
    result = await asyncio.to_thread(
        subprocess.run,
        [*argv, "-brief", *options],
        input=b"",
        capture_output=True,
        timeout=10,
    )
    output = result.stderr.decode("latin-1")
    facts = dict(
        line.split(": ", 1) for line in output.splitlines() if ": " in line and line[0].isalpha()
    )
    return "CONNECTION ESTABLISHED" in output, facts


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path)


@needs_openssl
async def test_tls12_dhe_rsa_client_gets_the_2048_bit_ffdhe_group(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(profile_config(pki, f"http://{origin.address}")) as proxy,
    ):
        options = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
        established, facts = await s_client(proxy.ports[0], RSA_HOST, options)
    assert established, facts
    assert facts["Ciphersuite"] == "DHE-RSA-AES128-GCM-SHA256"
    assert facts["Server Temp Key"] == "DH, 2048 bits"


async def test_python_tls12_client_offering_only_dhe_rsa_negotiates_it(pki: TestPKI) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(profile_config(pki, f"http://{origin.address}")) as proxy,
    ):
        for cipher in ("DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(cipher)
            _, writer = await asyncio.open_connection(
                "127.0.0.1", proxy.ports[0], ssl=context, server_hostname=RSA_HOST
            )
            assert writer.get_extra_info("cipher")[0] == cipher
            writer.close()


@needs_openssl
@pytest.mark.parametrize(
    ("group", "accepted"),
    [
        ("X25519", True),
        ("P-256", True),
        ("P-384", True),
        ("X448", False),
        ("P-521", False),
        ("ffdhe2048", False),  # a TLS 1.3 group in OpenSSL's default list, not the profile's
    ],
)
async def test_tls13_key_exchange_groups_are_the_profiles(
    pki: TestPKI, group: str, accepted: bool
) -> None:
    async with (
        AutonomousOrigin() as origin,
        running_proxy(profile_config(pki, f"http://{origin.address}")) as proxy,
    ):
        # Both the context a handshake starts with and the one SNI switches to.
        for host in (DEFAULT_HOST, RSA_HOST):
            options = ["-tls1_3", "-groups", group]
            established, facts = await s_client(proxy.ports[0], host, options)
            assert established is accepted, (host, facts)


def test_a_refused_group_list_leaves_the_context_usable(caplog: pytest.LogCaptureFixture) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with caplog.at_level(logging.WARNING, logger="bastion.net.tls_groups"):
        assert set_groups(context, ("X25519", "no-such-group")) is False
    assert "OpenSSL" in caplog.text
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")  # no stale OpenSSL error surfaces
    assert set_groups(context) is True


def test_a_pointer_that_does_not_check_out_is_never_written_through(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    written: list[bytes] = []

    def ctrl(pointer: int, command: int, larg: int, parg: bytes) -> int:
        written.append(parg)
        return 1

    fake = tls_groups._LibSSL(
        ctrl=ctrl,
        get_options=lambda pointer: -1,  # never the context's options
        clear_error=lambda: None,
    )
    monkeypatch.setattr(tls_groups, "_libssl", lambda: fake)
    with caplog.at_level(logging.WARNING, logger="bastion.net.tls_groups"):
        assert set_groups(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) is False
    assert written == []
    assert "did not check out" in caplog.text


def test_a_public_group_setting_is_preferred() -> None:
    class NewerContext(ssl.SSLContext):
        groups: str | None = None

        def set_groups(self, groups: str) -> None:
            self.groups = groups

    context = NewerContext(ssl.PROTOCOL_TLS_SERVER)
    assert set_groups(context) is True
    assert context.groups == "X25519:P-256:P-384"


# -- the ffdhe2048 prime (RFC 7919, appendix A.1) ---------------------------------------


def e_scaled_by_rationals(bits: int) -> int:
    """floor(2^bits * e) from the exact rational sum of 1/k! for k < K, K! far above 2^bits:
    sum(K!/k!) / K!, one integer division."""
    last = bits // 2 + 100
    numerator = sum(factorial(last) // factorial(k) for k in range(last))
    return (numerator << bits) // factorial(last)


@pytest.mark.parametrize("bits", [0, 1, 10, 64, 200, 1918])
def test_bits_of_e_match_an_independent_rational_computation(bits: int) -> None:
    assert floor_e_scaled(bits) == e_scaled_by_rationals(bits)


def test_computed_prime_has_the_known_facts_of_ffdhe2048() -> None:
    p = ffdhe2048_prime()
    assert p.bit_length() == 2048
    assert f"{p:X}".startswith("FFFFFFFFFFFFFFFFADF85458A2BB4A9A")
    assert f"{p:X}".endswith("FFFFFFFFFFFFFFFF")
    assert is_probable_prime(p, (2, 3, 5, 7))
    assert is_probable_prime((p - 1) // 2, (2, 3, 5, 7))
    check_ffdhe2048(p)  # the check made before first use


def test_the_check_refuses_a_wrong_prime() -> None:
    p = ffdhe2048_prime()
    with pytest.raises(RuntimeError, match="Miller-Rabin"):
        check_ffdhe2048(p - 2**64)  # same leading and trailing bits, composite
    with pytest.raises(RuntimeError, match="trailing"):
        check_ffdhe2048(p - 2)


def test_miller_rabin_tells_primes_from_composites() -> None:
    assert [n for n in range(2, 40) if is_probable_prime(n)] == [
        2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37,
    ]  # fmt: skip
    assert not is_probable_prime(561)  # a Carmichael number: Fermat's test would pass it
    assert is_probable_prime(2047)  # 23 * 89, a strong pseudoprime to base 2 ...
    assert not is_probable_prime(2047, (2, 3))  # ... caught by base 3


def test_pem_holds_the_prime_and_generator_2() -> None:
    der = base64.b64decode(b"".join(ffdhe2048_pem().splitlines()[1:-1]))
    assert der[:4] == b"\x30\x82\x01\x08"  # SEQUENCE of 264 bytes
    assert der[4:8] == b"\x02\x82\x01\x01" and der[8] == 0  # INTEGER p, 257 bytes, positive
    assert int.from_bytes(der[8:265], "big") == ffdhe2048_prime()
    assert der[265:] == b"\x02\x01\x02"  # INTEGER g = 2


@needs_openssl
def test_openssl_reads_the_pem_as_its_ffdhe2048_group(tmp_path: Path) -> None:
    pem = tmp_path / "dh.pem"
    pem.write_bytes(ffdhe2048_pem())
    argv = ["openssl", "pkeyparam", "-in", str(pem), "-text", "-noout"]
    shown = subprocess.run(argv, capture_output=True, check=True, timeout=10, text=True).stdout
    assert "DH Parameters: (2048 bit)" in shown
    assert "GROUP: ffdhe2048" in shown
