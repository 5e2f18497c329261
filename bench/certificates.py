"""Throw-away TLS certificates for the benchmark and the TLS profile check, made with trustme.

Writes PEM files (the leaf certificate followed by its chain, the unencrypted private key, and
the issuing CA for clients that verify) into a directory the caller owns. Knows nothing about
nginx, bastion or the checks made with the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertificateFiles:
    """PEM files of one server certificate: chain (leaf first), key, and the CA that issued it."""

    chain: Path
    key: Path
    ca: Path
    key_type: str


def write_certificate(
    directory: Path, stem: str = "server", key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> CertificateFiles:
    """A fresh CA and a leaf for localhost and 127.0.0.1, written as `<stem>-*.pem` files.

    ECDSA (P-256) by default; RSA (2048 bits) with `key_type=trustme.KeyType.RSA`.
    """
    ca = trustme.CA(key_type=key_type)
    leaf = ca.issue_cert(*NAMES, key_type=key_type)
    files = CertificateFiles(
        chain=directory / f"{stem}-chain.pem",
        key=directory / f"{stem}-key.pem",
        ca=directory / f"{stem}-ca.pem",
        key_type="ECDSA P-256" if key_type is trustme.KeyType.ECDSA else "RSA 2048",
    )
    files.chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files
