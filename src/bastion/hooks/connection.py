"""What a hook can learn about the client's TLS connection: `TLSSession` and
`ClientCertificate`.

Both describe the connection, not the request, so they are made at most once per client
connection, and only when a hook asks (`Request.tls`, `Request.client_certificate`).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509


@dataclass(frozen=True, slots=True)
class TLSSession:
    """The client connection's TLS session."""

    version: str  # "TLSv1.3", "TLSv1.2"
    cipher: str  # the OpenSSL name of the cipher suite
    alpn: str | None  # "h2", "http/1.1", or None
    server_name: str | None  # the SNI the client sent


class ClientCertificate:
    """The certificate the client presented, already verified by the TLS handshake against
    the `client_ca` of the listener's sites (a `client_auth = "required"` site has also
    refused certificates its own CA did not issue before its route hooks run)."""

    __slots__ = ("certificate", "der", "fingerprint")

    def __init__(self, der: bytes) -> None:
        self.der = der
        """The certificate as DER bytes."""
        self.certificate = x509.load_der_x509_certificate(der)
        """The parsed certificate (`cryptography.x509.Certificate`), for anything else."""
        self.fingerprint = hashlib.sha256(der).hexdigest()
        """SHA-256 of the DER, lowercase hex."""

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string, e.g. `"CN=alice,O=Example"`."""
        return self.certificate.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        """The issuer as an RFC 4514 string."""
        return self.certificate.issuer.rfc4514_string()

    @property
    def serial(self) -> str:
        """The serial number, uppercase hex."""
        return f"{self.certificate.serial_number:X}"

    @property
    def not_after(self) -> datetime.datetime:
        """When it expires (UTC)."""
        return self.certificate.not_valid_after_utc

    def __repr__(self) -> str:
        return f"ClientCertificate(subject={self.subject!r}, fingerprint={self.fingerprint!r})"
