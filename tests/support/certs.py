"""Test certificates (trustme) written to files, as an operator's configuration names them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    certificate: Path  # the leaf followed by its chain
    key: Path


class TestPKI:
    """A server CA and a client CA, issuing certificates into a directory."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server_ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.server_ca_file = directory / "server-ca.pem"
        self.client_ca_file = directory / "client-ca.pem"
        self.server_ca.cert_pem.write_to_path(self.server_ca_file)
        self.client_ca.cert_pem.write_to_path(self.client_ca_file)

    def server_cert(self, *names: str) -> CertFiles:
        issued = self.server_ca.issue_cert(*names)
        return self._write(issued, names[0].replace("*", "star"))

    def client_cert(self, name: str, ca: trustme.CA | None = None) -> CertFiles:
        issued = (ca or self.client_ca).issue_cert(name)
        return self._write(issued, "client-" + name.replace("@", "-"))

    def _write(self, issued: trustme.LeafCert, stem: str) -> CertFiles:
        certificate = self.directory / f"{stem}.crt"
        key = self.directory / f"{stem}.key"
        certificate.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(key)
        return CertFiles(certificate, key)

    def client_context(self, cert: CertFiles | None = None) -> ssl.SSLContext:
        """A client context trusting the server CA, presenting `cert` if given."""
        context = ssl.create_default_context(cafile=str(self.server_ca_file))
        if cert is not None:
            context.load_cert_chain(cert.certificate, cert.key)
        return context

    def server_context(self, cert: CertFiles) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.certificate, cert.key)
        return context
