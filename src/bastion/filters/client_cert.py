"""Client certificates for applications behind the proxy (the mTLS trap).

Plugs into `request_headers` (enforce the site's `client_auth`) and `upstream_request` (send
the certificate and the verdict as X-Client-Cert-* and RFC 9440 Client-Cert headers). The
same headers arriving from a client are removed by the core on every route. The verdict and
the headers depend only on the connection, so they are computed once per connection.

TLS already verified the certificate against the client CAs of every site of the listener
(see `bastion.net.tls`); here each site additionally requires that its own CA issued it,
directly or through intermediates the client sent.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from bastion.http.client_cert import CertificateHeaderCache, ClientCertificate
from bastion.http.events import Headers
from bastion.proxy.context import RequestContext
from bastion.proxy.phases import Filter, LocalReply


class _ConnectionVerdict:
    """What one connection's certificate means for one site."""

    __slots__ = ("certificate", "headers", "verify")

    def __init__(self, certificate: ClientCertificate | None, verify: str) -> None:
        self.certificate = certificate
        self.verify = verify
        self.headers = CertificateHeaderCache()


class ClientCertificates(Filter):
    name = "client_cert"

    def __init__(self, mode: str, client_ca: Path | None, send_headers: bool) -> None:
        self.mode = mode
        self.send_headers = send_headers
        self._issuers: tuple[x509.Certificate, ...] = ()
        if client_ca is not None:
            self._issuers = tuple(x509.load_pem_x509_certificates(client_ca.read_bytes()))

    def request_headers(self, ctx: RequestContext) -> LocalReply | None:
        verdict = self._verdict(ctx)
        if self.mode == "required" and verdict.verify != "SUCCESS":
            reason = (
                b"no client certificate was sent"
                if verdict.verify == "NONE"
                else b"the client certificate is not accepted here"
            )
            body = b"400 Bad Request: " + reason + b"\n"
            return LocalReply(400, [], body, "client_certificate_refused")
        return None

    def upstream_request(self, ctx: RequestContext, headers: Headers) -> None:
        if self.send_headers:
            verdict = self._verdict(ctx)
            headers.extend(verdict.headers.headers(verdict.certificate, verdict.verify))

    def _verdict(self, ctx: RequestContext) -> _ConnectionVerdict:
        state = ctx.client.filter_state
        verdict = state.get(self)
        if not isinstance(verdict, _ConnectionVerdict):
            tls = ctx.client.tls
            der = tls.peer_certificate if tls is not None else None
            if der is None:
                verdict = _ConnectionVerdict(None, "NONE")
            elif self._issued_here(der, tls.chain if tls else ()):
                verdict = _ConnectionVerdict(
                    ClientCertificate(der, tls.chain if tls else ()), "SUCCESS"
                )
            else:
                verdict = _ConnectionVerdict(None, "FAILED:not issued by this site's client_ca")
            state[self] = verdict
        return verdict

    def _issued_here(self, der: bytes, chain: tuple[bytes, ...]) -> bool:
        """Whether this site's CA issued the certificate, directly or through the
        intermediates the client sent (TLS has verified the path to one of the listener's
        CAs; this finds out whether the path ends at one of this site's)."""
        certificate = x509.load_der_x509_certificate(der)
        intermediates = [x509.load_der_x509_certificate(c) for c in chain if c != der]
        for _ in range(len(intermediates) + 1):
            if any(_issued_by(certificate, issuer) for issuer in self._issuers):
                return True
            parent = next((c for c in intermediates if _issued_by(certificate, c)), None)
            if parent is None:
                return False
            intermediates.remove(parent)
            certificate = parent
        return False


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
