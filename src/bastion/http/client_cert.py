"""The headers that tell the origin about the client's TLS certificate.

When bastion terminates TLS, an origin that used to check client certificates itself can no
longer see them (the "mTLS trap"). `certificate_headers` turns the certificate the client
presented, and the verification result, into request headers in two vocabularies: nginx-style
`X-Client-Cert*` fields and RFC 9440 `Client-Cert` / `Client-Cert-Chain`. Every name bastion may
set here, and the other spellings origins commonly read, is in `CLIENT_CERT_HEADERS` and must be
stripped from every client request (`strip_client_cert_headers`): a client must never be able to
claim a certificate it did not present.

Header values are always printable ASCII (0x20-0x7E), whatever the certificate holds. Subject and
issuer come from `cryptography`'s RFC 4514 string; any control byte, DEL or non-ASCII character
left in it is written as RFC 4514 hex pairs of its UTF-8 bytes (`\\0D\\0A`, `é` -> `\\C3\\A9`),
so the value stays a valid RFC 4514 string naming the same DN.

This module knows DER bytes, `cryptography` and header bytes only: no sockets, no `ssl`, no
asyncio, no configuration. The TLS layer hands in the certificate and the verdict.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote_from_bytes

from cryptography import x509

from bastion.http.events import Headers

CLIENT_CERT_HEADERS: frozenset[bytes] = frozenset(
    {
        b"x-client-cert",
        b"x-client-cert-subject",
        b"x-client-cert-issuer",
        b"x-client-cert-serial",
        b"x-client-cert-fingerprint",
        b"x-client-cert-not-after",
        b"x-client-cert-verify",
        # RFC 9440.
        b"client-cert",
        b"client-cert-chain",
        # Spellings that apps behind other proxies read (Apache mod_ssl via headers, nginx
        # setups): bastion never sets them, but a client could, so they never reach the origin.
        b"ssl-client-cert",
        b"x-ssl-client-cert",
        b"x-ssl-client-verify",
        b"x-ssl-client-s-dn",
        b"x-ssl-client-i-dn",
    }
)

VERIFY_SUCCESS = "SUCCESS"
VERIFY_NONE = "NONE"
VERIFY_FAILED_PREFIX = "FAILED:"

# Anything that is not printable ASCII; such bytes become `\HH` in header values.
_UNSAFE_BYTE = re.compile(rb"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The certificate a client presented: its DER, and the intermediates it sent, if known."""

    der: bytes
    chain_der: tuple[bytes, ...] = ()


def certificate_headers(cert: ClientCertificate | None, verify: str) -> Headers:
    """Headers describing `cert` and the verdict `verify`, in a fixed order.

    `verify` is "SUCCESS", "NONE" (no certificate) or "FAILED:<reason>"; anything else is a
    programming error (ValueError). With `cert` None only `x-client-cert-verify` is emitted. If
    `cryptography` cannot parse the DER, the subject, issuer, serial and not-after headers are
    left out; the raw certificate, fingerprint and verdict are still sent.
    """
    verify_value = _verify_value(verify)
    if cert is None:
        return [(b"x-client-cert-verify", verify_value)]
    fingerprint = hashlib.sha256(cert.der).hexdigest().encode()
    headers: Headers = [(b"x-client-cert", _url_encoded_pem(cert.der))]
    parsed = _parsed_fields(cert.der)
    if parsed is None:
        headers.append((b"x-client-cert-fingerprint", fingerprint))
    else:
        subject, issuer, serial, not_after = parsed
        headers += [
            (b"x-client-cert-subject", subject),
            (b"x-client-cert-issuer", issuer),
            (b"x-client-cert-serial", serial),
            (b"x-client-cert-fingerprint", fingerprint),
            (b"x-client-cert-not-after", not_after),
        ]
    headers.append((b"x-client-cert-verify", verify_value))
    headers.append((b"client-cert", _byte_sequence(cert.der)))
    chain = [der for der in cert.chain_der if der != cert.der]  # RFC 9440: never the leaf
    if chain:
        headers.append((b"client-cert-chain", b", ".join(_byte_sequence(der) for der in chain)))
    return headers


class CertificateHeaderCache:
    """The certificate headers of one TLS connection, computed on its first request.

    `headers` returns the very same list on every call with the same arguments: callers must
    copy it (e.g. `head.headers.extend(...)`) and never mutate it. Different arguments (which
    a connection should not produce) recompute and replace the cached list.
    """

    __slots__ = ("_cert", "_headers", "_verify")

    def __init__(self) -> None:
        self._cert: ClientCertificate | None = None
        self._verify = ""
        self._headers: Headers | None = None

    def headers(self, cert: ClientCertificate | None, verify: str) -> Headers:
        cached = self._headers
        if (
            cached is not None
            and verify == self._verify
            and (cert is self._cert or cert == self._cert)
        ):
            return cached
        computed = certificate_headers(cert, verify)
        self._cert, self._verify, self._headers = cert, verify, computed
        return computed


def strip_client_cert_headers(headers: Headers) -> Headers:
    """A new list of `headers` without any name in CLIENT_CERT_HEADERS (names are lowercase)."""
    return [pair for pair in headers if pair[0] not in CLIENT_CERT_HEADERS]


def _verify_value(verify: str) -> bytes:
    if verify in (VERIFY_SUCCESS, VERIFY_NONE) or verify.startswith(VERIFY_FAILED_PREFIX):
        return _printable(verify)
    raise ValueError(f"verify must be SUCCESS, NONE or FAILED:<reason>, got {verify!r}")


def _parsed_fields(der: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """Subject, issuer, serial and not-after values, or None when the DER does not parse."""
    try:
        cert = x509.load_der_x509_certificate(der)
        return (
            _printable(cert.subject.rfc4514_string()),
            _printable(cert.issuer.rfc4514_string()),
            b"%X" % cert.serial_number,
            cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ").encode(),
        )
    except ValueError:
        return None


def _printable(text: str) -> bytes:
    """`text` as printable ASCII: other bytes of its UTF-8 become `\\HH` (RFC 4514 hex pairs)."""
    raw = text.encode("utf-8", "backslashreplace")
    return _UNSAFE_BYTE.sub(lambda match: b"\\%02X" % match[0][0], raw)


def _url_encoded_pem(der: bytes) -> bytes:
    """The PEM of `der`, percent-encoded except unreserved characters (nginx's escaped cert)."""
    encoded = base64.b64encode(der)
    lines = [encoded[start : start + 64] for start in range(0, len(encoded), 64)]
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
    return quote_from_bytes(pem, safe="").encode("ascii")


def _byte_sequence(der: bytes) -> bytes:
    """An RFC 8941 Byte Sequence: base64 between colons."""
    return b":" + base64.b64encode(der) + b":"
