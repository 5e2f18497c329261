"""Client-certificate headers for the origin, and stripping the ones clients send."""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import ssl
from urllib.parse import unquote_to_bytes

import h11
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http.client_cert import (
    CLIENT_CERT_HEADERS,
    CertificateHeaderCache,
    ClientCertificate,
    certificate_headers,
    strip_client_cert_headers,
)

Headers = list[tuple[bytes, bytes]]

ALL_NAMES = [
    b"x-client-cert",
    b"x-client-cert-subject",
    b"x-client-cert-issuer",
    b"x-client-cert-serial",
    b"x-client-cert-fingerprint",
    b"x-client-cert-not-after",
    b"x-client-cert-verify",
    b"client-cert",
    b"client-cert-chain",
]
SPOOFABLE_SPELLINGS = [
    b"ssl-client-cert",
    b"x-ssl-client-cert",
    b"x-ssl-client-verify",
    b"x-ssl-client-s-dn",
    b"x-ssl-client-i-dn",
]
NOT_AFTER = datetime.datetime(2027, 11, 27, 3, 17, 50, tzinfo=datetime.UTC)
SERIAL = 0x1F2E3D4C5B6A
PRINTABLE_ASCII = re.compile(rb"[\x20-\x7e]*")
KEY = ec.generate_private_key(ec.SECP256R1())


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


def built_cert_der(subject: x509.Name, issuer: x509.Name | None = None) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(KEY.public_key())
        .serial_number(SERIAL)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(NOT_AFTER)
    )
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def common_name(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def rfc4514_unescape(value: bytes) -> bytes:
    """Undo RFC 4514 escapes: `\\HH` is a byte, `\\c` is the character c."""
    pair = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)
    return pair.sub(lambda m: bytes.fromhex(m[1].decode()) if len(m[1]) == 2 else m[1], value)


def as_dict(headers: Headers) -> dict[bytes, bytes]:
    names = [name for name, _ in headers]
    assert len(names) == len(set(names))
    return dict(headers)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("client.example", common_name="client.example")


def test_headers_come_in_the_documented_order(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    headers = certificate_headers(ClientCertificate(der), "SUCCESS")
    assert [name for name, _ in headers] == ALL_NAMES[:-1]  # no chain given, no chain header


def test_x_client_cert_is_the_url_encoded_pem(leaf: trustme.LeafCert) -> None:
    pem = leaf.cert_chain_pems[0].bytes()
    value = as_dict(certificate_headers(ClientCertificate(pem_to_der(pem)), "SUCCESS"))[
        b"x-client-cert"
    ]
    assert unquote_to_bytes(value) == pem
    # Only unreserved characters stay literal; everything else is %XX.
    assert re.fullmatch(rb"([A-Za-z0-9_.~-]|%[0-9A-F]{2})+", value)
    assert b"%0A" in value and b"-----BEGIN%20CERTIFICATE-----" in value


def test_fingerprint_is_sha256_of_the_der(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    value = as_dict(certificate_headers(ClientCertificate(der), "SUCCESS"))[
        b"x-client-cert-fingerprint"
    ]
    assert value == hashlib.sha256(der).hexdigest().encode()


def test_client_cert_is_an_rfc9440_byte_sequence_of_the_der(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    value = as_dict(certificate_headers(ClientCertificate(der), "SUCCESS"))[b"client-cert"]
    assert value.startswith(b":") and value.endswith(b":")
    assert base64.b64decode(value[1:-1], validate=True) == der


def test_subject_issuer_serial_and_not_after_of_a_known_certificate() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Client CA")])
    values = as_dict(
        certificate_headers(ClientCertificate(built_cert_der(subject, issuer)), "SUCCESS")
    )
    assert values[b"x-client-cert-subject"] == b"CN=alice,O=Example\\, Inc,C=FR"
    assert values[b"x-client-cert-issuer"] == b"CN=Example Client CA"
    assert values[b"x-client-cert-serial"] == b"1F2E3D4C5B6A"
    assert values[b"x-client-cert-not-after"] == b"2027-11-27T03:17:50Z"
    assert values[b"x-client-cert-verify"] == b"SUCCESS"


def test_trustme_subject_and_issuer_are_rfc4514(ca: trustme.CA, leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    values = as_dict(certificate_headers(ClientCertificate(der), "SUCCESS"))
    assert values[b"x-client-cert-subject"].startswith(b"CN=client.example")
    ca_subject = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    assert values[b"x-client-cert-issuer"] == ca_subject.rfc4514_string().encode()


@pytest.mark.parametrize("verify", ["NONE", "FAILED:no certificate returned", "SUCCESS"])
def test_without_a_certificate_only_the_verdict_is_sent(verify: str) -> None:
    assert certificate_headers(None, verify) == [(b"x-client-cert-verify", verify.encode())]


def test_a_failed_verification_still_describes_the_certificate(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    headers = certificate_headers(ClientCertificate(der), "FAILED:unable to get local issuer")
    assert [name for name, _ in headers] == ALL_NAMES[:-1]
    assert as_dict(headers)[b"x-client-cert-verify"] == b"FAILED:unable to get local issuer"


@pytest.mark.parametrize("verify", ["", "OK", "success", "FAILED", "failed:x"])
def test_an_unknown_verdict_is_a_programming_error(verify: str) -> None:
    with pytest.raises(ValueError, match="SUCCESS, NONE or FAILED"):
        certificate_headers(None, verify)


def test_a_failure_reason_cannot_break_the_header() -> None:
    [(_, value)] = certificate_headers(None, "FAILED:bad\r\nX-Injected: 1")
    assert value == b"FAILED:bad\\0D\\0AX-Injected: 1"


def test_the_chain_is_a_list_of_byte_sequences_without_the_leaf(ca: trustme.CA) -> None:
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("client.example")
    leaf_der, intermediate_der = (pem_to_der(blob.bytes()) for blob in leaf.cert_chain_pems)
    root_der = pem_to_der(ca.cert_pem.bytes())
    cert = ClientCertificate(leaf_der, (leaf_der, intermediate_der, root_der))
    headers = certificate_headers(cert, "SUCCESS")
    assert [name for name, _ in headers] == ALL_NAMES
    members = as_dict(headers)[b"client-cert-chain"].split(b", ")
    assert all(m.startswith(b":") and m.endswith(b":") for m in members)
    decoded = [base64.b64decode(m[1:-1], validate=True) for m in members]
    assert decoded == [intermediate_der, root_der]


def test_a_chain_of_only_the_leaf_sends_no_chain_header(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    names = [name for name, _ in certificate_headers(ClientCertificate(der, (der,)), "SUCCESS")]
    assert b"client-cert-chain" not in names


HOSTILE_CN = "evil\r\nX-Injected: 1\x00\x7f é\\,"


def test_a_hostile_subject_cannot_inject_headers() -> None:
    der = built_cert_der(common_name(HOSTILE_CN))
    headers = certificate_headers(ClientCertificate(der), "SUCCESS")
    for _, value in headers:
        assert PRINTABLE_ASCII.fullmatch(value)
    values = as_dict(headers)
    expected = b"CN=evil\\0D\\0AX-Injected: 1\\00\\7F \\C3\\A9\\\\\\,"
    assert values[b"x-client-cert-subject"] == expected
    assert values[b"x-client-cert-issuer"] == expected
    # Still RFC 4514: unescaping gives back the exact name.
    assert rfc4514_unescape(values[b"x-client-cert-subject"]) == b"CN=" + HOSTILE_CN.encode()
    # An independent HTTP implementation accepts every field as one header, and no other.
    request = h11.Request(method="GET", target="/", headers=[(b"host", b"origin"), *headers])
    assert [name for name, _ in request.headers] == [b"host", *ALL_NAMES[:-1]]


@settings(max_examples=60, deadline=None)
@given(
    st.text(min_size=1, max_size=64).filter(lambda cn: len(cn.encode()) <= 64)
)  # X.509 ub-common-name
def test_any_common_name_gives_a_printable_reversible_subject(cn: str) -> None:
    headers = certificate_headers(ClientCertificate(built_cert_der(common_name(cn))), "NONE")
    subject = as_dict(headers)[b"x-client-cert-subject"]
    assert PRINTABLE_ASCII.fullmatch(subject)
    assert rfc4514_unescape(subject) == b"CN=" + cn.encode()


def test_unparseable_der_still_sends_the_raw_certificate() -> None:
    der = b"\x30\x03\x02\x01\x01"  # a DER SEQUENCE, not a certificate
    values = as_dict(certificate_headers(ClientCertificate(der), "FAILED:bad certificate"))
    assert list(values) == [
        b"x-client-cert",
        b"x-client-cert-fingerprint",
        b"x-client-cert-verify",
        b"client-cert",
    ]
    assert values[b"client-cert"] == b":" + base64.b64encode(der) + b":"


def test_the_cache_returns_the_same_list(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    cache = CertificateHeaderCache()
    first = cache.headers(ClientCertificate(der), "SUCCESS")
    assert first == certificate_headers(ClientCertificate(der), "SUCCESS")
    assert cache.headers(ClientCertificate(der), "SUCCESS") is first
    assert cache.headers(ClientCertificate(der), "SUCCESS") is first


def test_the_cache_recomputes_when_the_arguments_change(leaf: trustme.LeafCert) -> None:
    der = pem_to_der(leaf.cert_chain_pems[0].bytes())
    cache = CertificateHeaderCache()
    none = cache.headers(None, "NONE")
    assert cache.headers(None, "NONE") is none
    failed = cache.headers(ClientCertificate(der), "FAILED:expired")
    assert as_dict(failed)[b"x-client-cert-verify"] == b"FAILED:expired"
    assert cache.headers(ClientCertificate(der), "FAILED:expired") is failed


def test_every_emitted_name_is_stripped_from_clients() -> None:
    assert set(ALL_NAMES) | set(SPOOFABLE_SPELLINGS) == CLIENT_CERT_HEADERS


@pytest.mark.parametrize("name", sorted(CLIENT_CERT_HEADERS))
@pytest.mark.parametrize("position", [0, 1, 2])
def test_strip_removes_each_name_in_any_position(name: bytes, position: int) -> None:
    kept: Headers = [(b"host", b"a"), (b"accept", b"*/*")]
    headers = list(kept)
    headers.insert(position, (name, b"SUCCESS"))
    stripped = strip_client_cert_headers(headers)
    assert stripped == kept
    assert len(headers) == 3  # the input is left alone


def test_strip_removes_repeated_and_mixed_spoofs() -> None:
    spoofed = [(name, b"CN=admin") for name in sorted(CLIENT_CERT_HEADERS)]
    headers = [*spoofed, (b"x-client-certificate", b"kept"), *spoofed, (b"host", b"a")]
    assert strip_client_cert_headers(headers) == [
        (b"x-client-certificate", b"kept"),
        (b"host", b"a"),
    ]
