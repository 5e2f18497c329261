"""Checks that the certificate, key and CA files a configuration names are usable for TLS.

Each file is read and loaded with the stdlib `ssl` module, as the listeners and the
upstream connector will load it, so a configuration that passes here does not fail later
for a file that was there at load time. Problems come back as messages for people, keyed by
the name of the `tls` key they are about (`certificate`, `key`); OpenSSL's terse errors are
narrowed down first (which file, what is missing) so the message says what to fix.

This module opens files but never sockets; it knows nothing of TOML, tables or pydantic.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from bastion.units import describe_value

_CERTIFICATE_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)
_PRIVATE_KEY_RE = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY-----")
_ENCRYPTED_KEY_RE = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED")
_KEY_MISMATCH = "KEY_VALUES_MISMATCH"


class _UnusableFileError(Exception):
    """A file that cannot be used; its one argument is the message for people."""


class _PassphraseNeededError(Exception):
    """OpenSSL asked for a passphrase: the key is encrypted."""


def key_pair_problems(certificate: Path, key: Path) -> list[tuple[str, str]]:
    """Problems with a certificate chain file and its private key, as (key name, message)."""
    problems: list[tuple[str, str]] = []
    for name, check, path in (
        ("certificate", _check_certificates, certificate),
        ("key", _check_private_key, key),
    ):
        try:
            check(path)
        except _UnusableFileError as problem:
            problems.append((name, str(problem)))
    if problems:
        return problems
    try:
        _load_pair(certificate, key)
    except _UnusableFileError as problem:
        return [("key", str(problem))]
    return []


def ca_bundle_problem(bundle: Path) -> str | None:
    """What is wrong with a PEM bundle of CA certificates, or None when it loads."""
    try:
        _check_certificates(bundle)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=bundle)
    except _UnusableFileError as problem:
        return str(problem)
    except ssl.SSLError as error:
        return f"cannot load the CA bundle {_name(bundle)}: {_reason(error)}"
    except OSError as error:
        return _cannot_read(bundle, error)
    return None


def _check_certificates(path: Path) -> None:
    """The file holds at least one PEM certificate, and every one of them parses."""
    blocks = _CERTIFICATE_RE.findall(_read(path))
    if not blocks:
        raise _UnusableFileError(f"no PEM certificate in {_name(path)}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=b"\n".join(blocks).decode("ascii")
        )
    except ssl.SSLError as error:
        raise _UnusableFileError(
            f"cannot load the certificate in {_name(path)}: {_reason(error)}"
        ) from None


def _check_private_key(path: Path) -> None:
    data = _read(path)
    if _PRIVATE_KEY_RE.search(data) is None:
        raise _UnusableFileError(f"no PEM private key in {_name(path)}")
    if _ENCRYPTED_KEY_RE.search(data) is not None:
        raise _UnusableFileError(_encrypted(path))


def _load_pair(certificate: Path, key: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key, password=_refuse_passphrase)
    except _PassphraseNeededError:
        raise _UnusableFileError(_encrypted(key)) from None
    except ssl.SSLError as error:
        if error.reason == _KEY_MISMATCH:
            raise _UnusableFileError("certificate and key do not match") from None
        raise _UnusableFileError(
            f"cannot load the private key in {_name(key)}: {_reason(error)}"
        ) from None
    except OSError as error:
        raise _UnusableFileError(_cannot_read(key, error)) from None


def _refuse_passphrase() -> bytes:
    """Stands in for OpenSSL's interactive passphrase prompt, which must never appear."""
    raise _PassphraseNeededError


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise _UnusableFileError(_cannot_read(path, error)) from None


def _cannot_read(path: Path, error: OSError) -> str:
    return f"cannot read {_name(path)}: {error.strerror or error}"


def _encrypted(path: Path) -> str:
    return f"the private key in {_name(path)} is encrypted; bastion needs an unencrypted key"


def _reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason code in words ("no certificate or crl found"), or a general one."""
    reason = error.reason
    return reason.replace("_", " ").lower() if reason else "invalid PEM data"


def _name(path: Path) -> str:
    return describe_value(str(path))
