"""TLS material shared by run.py (the https scenario) and tls_profile.py: throw-away
certificates made with trustme, and Mozilla's "intermediate" TLS 1.2 cipher list.

Writes PEM files (the leaf certificate followed by its chain, the unencrypted private key, and
the issuing CA for clients that verify) into a directory the caller owns. Knows nothing about
nginx, bastion or the checks made with the files.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

NAMES = ("localhost", "127.0.0.1")
LIFETIME = datetime.timedelta(days=90)  # like a real leaf (Mozilla: at most 366 days)
DEFAULT_KEY_TYPE = trustme.KeyType.ECDSA
KEY_TYPE_NAMES = {trustme.KeyType.ECDSA: "ECDSA P-256", trustme.KeyType.RSA: "RSA 2048"}

# Mozilla server-side TLS, "intermediate" configuration (guidelines 5.x): the TLS 1.2 suites, in
# OpenSSL's names. TLS 1.3 suites are not listed: all of OpenSSL's defaults are allowed.
# bastion's own copy is bastion.net.tls.INTERMEDIATE_CIPHERS; this one is the reference the
# bench configures nginx with and checks bastion against.
INTERMEDIATE_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
)


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one server certificate: chain (leaf first), key, and the CA that issued it."""

    chain: Path
    key: Path
    ca: Path
    key_type: str


def write_certificate(
    directory: Path,
    stem: str = "server",
    key_type: trustme.KeyType = DEFAULT_KEY_TYPE,
    names: Sequence[str] = NAMES,
) -> CertificateFiles:
    """A fresh CA and a leaf for `names` (localhost and 127.0.0.1 by default), valid from a
    day ago for LIFETIME, written as `<stem>-chain.pem`, `<stem>-key.pem`, `<stem>-ca.pem`.

    ECDSA (P-256) by default; RSA (2048 bits) with `key_type=trustme.KeyType.RSA`.
    """
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    ca = trustme.CA(key_type=key_type)
    leaf = ca.issue_cert(
        *names,
        not_before=now - datetime.timedelta(days=1),
        not_after=now + LIFETIME,
        key_type=key_type,
    )
    files = CertificateFiles(
        chain=directory / f"{stem}-chain.pem",
        key=directory / f"{stem}-key.pem",
        ca=directory / f"{stem}-ca.pem",
        key_type=KEY_TYPE_NAMES[key_type],
    )
    files.chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files
