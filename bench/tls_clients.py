"""Handshake attempts against a TLS server on 127.0.0.1, for tls_profile.py: with the stdlib
ssl module (a client offering exactly one version or a few suites, even weak ones) and with
`openssl s_client -brief`.

Each attempt ends as "accepted", "refused" (the server sent an alert or hung up: bastion, on
uvloop, closes without an alert) or "untestable" (the client could not even offer what was
asked, so the attempt says nothing about the server). Knows nothing about profiles or bastion.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

OPENSSL = "/usr/bin/openssl"
TIMEOUT = 5.0
# Client-side reasons: the attempt never reached the server, so it says nothing about it.
_CLIENT_CANNOT = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_CIPHER_MATCH")


@dataclass(frozen=True)
class Attempt:
    """What one connection attempt showed: "accepted", "refused" or "untestable"."""

    outcome: str
    detail: str


def client_context(
    version: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    """A client that offers exactly `version` and `ciphers` (security level 0: even weak ones
    are offered, so that refusing them is the server's doing), without verifying."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1 are
            context.maximum_version = version
            context.minimum_version = version
    context.set_ciphers(f"{ciphers or 'ALL'}:@SECLEVEL=0")
    return context


@contextlib.contextmanager
def tls_connection(port: int, host: str, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            yield tls


def python_attempt(
    port: int, host: str, version: ssl.TLSVersion, ciphers: str | None = None
) -> Attempt:
    """One handshake with the stdlib client; "untestable" if it cannot offer what is asked."""
    try:
        context = client_context(version, ciphers)
    except ssl.SSLError:
        return Attempt("untestable", f"this OpenSSL cannot offer {ciphers}")
    try:
        with tls_connection(port, host, context) as tls:
            cipher = tls.cipher()
            return Attempt("accepted", f"{tls.version()} {cipher[0] if cipher else '?'}")
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        if reason in _CLIENT_CANNOT:
            return Attempt("untestable", f"the stdlib client cannot offer it ({reason})")
        return Attempt("refused", reason)
    except OSError as exc:  # the server hung up on the hello
        return Attempt("refused", f"{type(exc).__name__}: {exc}")


def s_client(port: int, host: str, options: Sequence[str]) -> tuple[Attempt, dict[str, str]]:
    """One `openssl s_client -brief` handshake; its summary lines ("Protocol version", ...)."""
    argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host, "-brief"]
    try:
        done = subprocess.run(
            [*argv, *options], input="", capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Attempt("untestable", f"openssl s_client: {exc}"), {}
    output = done.stdout + done.stderr
    facts = dict(re.findall(r"^([A-Za-z][\w ]+?): *(.+)$", done.stderr, re.MULTILINE))
    if "CONNECTION ESTABLISHED" in output:
        got = facts.get("Ciphersuite", "?")
        return Attempt("accepted", f"{facts.get('Protocol version', '?')} {got}"), facts
    if "alert" in output.lower() or "unexpected eof" in output.lower():
        return Attempt("refused", _openssl_reason(output)), facts
    reason = _openssl_reason(output)
    return Attempt("untestable", f"no client here can offer it (s_client: {reason})"), facts


def _openssl_reason(output: str) -> str:
    errors = re.findall(r":error:[0-9A-F]+:[^:]*:[^:]*:([^:\n]+)", output)
    return errors[0] if errors else (output.strip().splitlines() or ["no output"])[-1]


def legacy_s_client(port: int, host: str, cipher: str) -> Attempt:
    """TLS 1.2 with one suite, OpenSSL's legacy provider loaded (RC4 lives there)."""
    options = ["-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0"]
    attempt, _ = s_client(port, host, [*options, "-provider", "legacy", "-provider", "default"])
    return attempt
