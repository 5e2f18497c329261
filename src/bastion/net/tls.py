"""TLS contexts: server contexts per listener (SNI picks the site's certificate) and client
contexts for origins.

Server side follows Mozilla's "intermediate" profile: TLS 1.2 and 1.3, forward-secret AEAD
ciphers only (ECDHE, and DHE-RSA with the RFC 7919 ffdhe2048 group: `tls_dh`), the key-exchange
groups X25519, P-256 and P-384 (`tls_groups`), no compression, session tickets on
(resumption). The context of a TLS listener is the default site's; its SNI callback switches
to the site the client named.

Client certificates: OpenSSL decides whether to ask for a client certificate from the
context the connection started with, and Python's SNI callback cannot change that per site.
So a listener asks every client for a certificate (optionally) as soon as one of its sites
uses `client_auth`, trusts the union of the sites' client CAs at the TLS layer, and the proxy
enforces each site's own policy per request (`bastion.filters.client_cert`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.net.tls_dh import load_ffdhe2048
from bastion.net.tls_groups import PROFILE_GROUPS, set_groups

log = logging.getLogger(__name__)

# Mozilla server-side TLS, "intermediate" configuration: its TLS 1.2 ciphers in its order
# (TLS 1.3 suites are OpenSSL's defaults, all of which the profile allows). The DHE-RSA
# suites use the ffdhe2048 group every server context loads (bench/tls_profile.py checks
# the listener against the profile).
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_NEGOTIATED = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class SiteCertificate:
    """What a TLS listener needs to know of one site."""

    hosts: tuple[str, ...]
    certificate: Path
    key: Path
    min_version: str
    client_auth: str  # "off" | "optional" | "required"
    client_ca: Path | None


def server_context(
    site: SiteCertificate, client_cas: Sequence[Path], alpn: Sequence[str] = ("http/1.1",)
) -> ssl.SSLContext:
    """The context serving one site's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[site.min_version]
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    load_ffdhe2048(context)
    set_groups(context, PROFILE_GROUPS)
    context.options |= ssl.OP_NO_COMPRESSION
    # The profile lets the client choose among these (all strong) ciphers.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(site.certificate, site.key)
    context.set_alpn_protocols(list(alpn))
    for ca in client_cas:
        context.load_verify_locations(cafile=str(ca))
    if client_cas:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class ListenerTLS:
    """The TLS side of one listener: a context per site and the SNI choice between them."""

    def __init__(
        self, sites: Sequence[SiteCertificate], alpn: Sequence[str] = ("http/1.1",)
    ) -> None:
        if not sites:
            raise ValueError("a TLS listener needs at least one site with a certificate")
        client_cas = sorted({s.client_ca for s in sites if s.client_ca and s.client_auth != "off"})
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wildcards: dict[str, ssl.SSLContext] = {}
        self._minimum: dict[int, ssl.TLSVersion] = {}  # by id of a site's context
        default = sites[0]
        contexts = {}
        for site in sites:
            context = contexts[site] = server_context(site, client_cas, alpn)
            self._minimum[id(context)] = _VERSIONS[site.min_version]
            for host in site.hosts:
                if host == "*":
                    default = site
                elif host.startswith("*."):
                    self._wildcards.setdefault(host[1:], context)
                else:
                    self._exact.setdefault(host, context)
        # The context a handshake starts with: the catch-all site's certificate (else the
        # first site's) for clients that send no SNI or a name no site has.
        self.context = contexts[default]
        self.context.sni_callback = self._choose

    def _choose(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        if name is None:
            return  # no SNI: the default certificate
        name = name.lower().rstrip(".")
        # Python keeps no record of the SNI on the server side; remember it on the object
        # the connection's transport hands out later (`server_name_of`).
        setattr(connection, _SNI_ATTRIBUTE, name)
        context = self.context_for(name)
        if context is not None:
            connection.context = context

    def version_allowed(self, ssl_object: ssl.SSLObject) -> bool:
        """Whether the negotiated version meets the chosen site's `min_version`.

        OpenSSL settles the version before the SNI callback switches contexts, so a site's
        minimum is enforced here, right after the handshake (the connection is then closed).
        """
        minimum = self._minimum.get(id(ssl_object.context), ssl.TLSVersion.TLSv1_2)
        return _NEGOTIATED.get(ssl_object.version() or "", ssl.TLSVersion.TLSv1_2) >= minimum

    def context_for(self, name: str) -> ssl.SSLContext | None:
        context = self._exact.get(name)
        if context is not None:
            return context
        labels = name.split(".")
        for start in range(1, len(labels)):
            context = self._wildcards.get("." + ".".join(labels[start:]))
            if context is not None:
                return context
        return None


_SNI_ATTRIBUTE = "bastion_server_name"


def server_name_of(ssl_object: ssl.SSLObject) -> str | None:
    """The SNI the client sent on this connection (None when it sent none)."""
    name = getattr(ssl_object, _SNI_ATTRIBUTE, None)
    return name if isinstance(name, str) else None


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """DER of every certificate the client sent, its own first; () when it sent none.

    Python 3.13 makes this `SSLObject.get_unverified_chain()`; 3.11 and 3.12 have the same
    call on the private `_sslobj` (OpenSSL's SSL_get_peer_cert_chain). Where neither exists,
    the chain is unknown and () is returned.
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain_of = public if callable(public) else private
    if not callable(chain_of):
        return ()
    chain = chain_of() or []
    return tuple(_der(certificate) for certificate in chain)


def _der(certificate: object) -> bytes:
    if isinstance(certificate, bytes):
        return certificate  # 3.13's public call already gives DER
    public_bytes = getattr(certificate, "public_bytes")  # noqa: B009 (an untyped _ssl object)
    der = public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
    return der if isinstance(der, bytes) else b""


def origin_context(
    *,
    verify: bool,
    ca: Path | None,
    certificate: Path | None,
    key: Path | None,
) -> ssl.SSLContext:
    """A client context for connections to https origins."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certificate is not None and key is not None:
        context.load_cert_chain(certificate, key)
    context.set_alpn_protocols(["http/1.1"])
    return context
