"""Certificate files for the configuration tests, made once per module with trustme."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

GARBAGE_CERTIFICATE = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of PEM files, by name:

    site.pem / site.key  a certificate for a.test and its key; other.key: another cert's key
    ca.pem               the CA that issued them (also good as a client CA bundle)
    chain.pem / chain.key  a leaf from an intermediate CA, followed by the intermediate
    combined.pem         site.key and site.pem's certificate in one file
    encrypted.key        a private key protected by a passphrase
    garbage.pem          a CERTIFICATE block that is not a certificate; empty.pem: nothing
    """
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    site = ca.issue_cert("a.test")
    site.cert_chain_pems[0].write_to_path(str(directory / "site.pem"))
    site.private_key_pem.write_to_path(str(directory / "site.key"))
    site.private_key_and_cert_chain_pem.write_to_path(str(directory / "combined.pem"))
    ca.issue_cert("b.test").private_key_pem.write_to_path(str(directory / "other.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    chained = ca.create_child_ca().issue_cert("c.test")
    (directory / "chain.pem").write_bytes(b"".join(pem.bytes() for pem in chained.cert_chain_pems))
    chained.private_key_pem.write_to_path(str(directory / "chain.key"))
    key = serialization.load_pem_private_key(site.private_key_pem.bytes(), password=None)
    (directory / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    (directory / "garbage.pem").write_text(GARBAGE_CERTIFICATE)
    (directory / "empty.pem").write_text("")
    return directory
