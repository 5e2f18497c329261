"""Check bastion's TLS listener against Mozilla's "intermediate" server-side TLS profile.

Usage: python bench/tls_profile.py [--sslyze PYTHON]

Starts bench/origin.py and bastion (`bastion run -c FILE`, free 127.0.0.1 ports) with one TLS
listener serving two sites: the catch-all with an ECDSA certificate (localhost) and
rsa.localhost with an RSA one, both throw-away certificates from trustme, so that the ECDSA
and the RSA cipher suites can all be tried. Then, as a client:

- stdlib ssl: each protocol version (TLS 1.0 and 1.1 refused, 1.2 and 1.3 accepted), every
  TLS 1.2 suite of the profile (accepted) and a list of weak ones (refused), the certificate
  chain and name, compression, ALPN and one HTTPS request;
- `openssl s_client`: the TLS 1.3 suites, the key-exchange groups, the size of DHE parameters,
  attempts the stdlib client cannot make (with OpenSSL's legacy provider; this Debian OpenSSL
  has no RC4 or 3DES suites at all, so those are SKIPs here and sslyze, which brings its own
  OpenSSL, covers them), and a summary of one connection per certificate;
- sslyze's Mozilla "intermediate" check, when an interpreter with sslyze is at hand (this one,
  or --sslyze PYTHON); sslyze is not a dependency of bastion.

Prints one line per check: PASS, FAIL, or SKIP when no client here can make the attempt. Exits
1 if a check failed, 2 if bastion did not start. A script, not a test: see bench/README.md.
This module knows the checks and their expectations; the handshakes are tls_clients.py's,
processes come from targets.py and certificates from tls_material.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import targets
import tls_material
import trustme
from targets import LaunchSpec, Target, TargetStartError
from tls_clients import Attempt, legacy_s_client, python_attempt, s_client, tls_connection
from tls_material import INTERMEDIATE_TLS12_CIPHERS, CertificateFiles

ECDSA_HOST = "localhost"  # the catch-all site: ECDSA certificate
RSA_HOST = "rsa.localhost"  # chosen by SNI: RSA certificate

PROTOCOLS = (  # (name, stdlib version, s_client option, must be accepted)
    ("TLS 1.0", ssl.TLSVersion.TLSv1, "-tls1", False),
    ("TLS 1.1", ssl.TLSVersion.TLSv1_1, "-tls1_1", False),
    ("TLS 1.2", ssl.TLSVersion.TLSv1_2, "-tls1_2", True),
    ("TLS 1.3", ssl.TLSVersion.TLSv1_3, "-tls1_3", True),
)
WEAK_TLS12_CIPHERS = (  # (OpenSSL name, site to try it on, why it must be refused)
    ("ECDHE-RSA-RC4-SHA", RSA_HOST, "RC4"),
    ("ECDHE-ECDSA-RC4-SHA", ECDSA_HOST, "RC4"),
    ("RC4-SHA", RSA_HOST, "RC4, RSA key exchange"),
    ("ECDHE-RSA-DES-CBC3-SHA", RSA_HOST, "3DES"),
    ("DES-CBC3-SHA", RSA_HOST, "3DES, RSA key exchange"),
    ("ECDHE-ECDSA-AES128-SHA", ECDSA_HOST, "CBC with SHA-1"),
    ("ECDHE-RSA-AES256-SHA", RSA_HOST, "CBC with SHA-1"),
    ("DHE-RSA-AES128-SHA", RSA_HOST, "CBC with SHA-1"),
    ("ECDHE-ECDSA-AES128-SHA256", ECDSA_HOST, "CBC, not in the profile"),
    ("ECDHE-RSA-AES256-SHA384", RSA_HOST, "CBC, not in the profile"),
    ("AES128-SHA", RSA_HOST, "RSA key exchange: no forward secrecy"),
    ("AES128-GCM-SHA256", RSA_HOST, "RSA key exchange: no forward secrecy"),
    ("AES256-GCM-SHA384", RSA_HOST, "RSA key exchange: no forward secrecy"),
    ("AECDH-AES128-SHA", ECDSA_HOST, "anonymous: no authentication"),
    ("ADH-AES256-GCM-SHA384", RSA_HOST, "anonymous: no authentication"),
    ("ECDHE-ECDSA-NULL-SHA", ECDSA_HOST, "no encryption"),
    ("NULL-SHA256", RSA_HOST, "no encryption"),
)
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
GROUPS = ("X25519", "prime256v1", "secp384r1")
# Groups outside the profile, to be refused on TLS 1.3: OpenSSL's default list has them all.
# ffdhe2048 is the profile's group for the TLS 1.2 DHE suites only, not a TLS 1.3 key share.
OTHER_GROUPS = ("X448", "secp521r1", "ffdhe2048")
MIN_DH_BITS = 2048


@dataclass(frozen=True)
class Check:
    group: str
    name: str
    status: str  # "PASS", "FAIL" or "SKIP"
    detail: str


def judge(group: str, name: str, must_accept: bool, attempt: Attempt) -> Check:
    if attempt.outcome == "untestable":
        return Check(group, name, "SKIP", attempt.detail)
    expected = "accepted" if must_accept else "refused"
    status = "PASS" if attempt.outcome == expected else "FAIL"
    return Check(group, name, status, f"{attempt.outcome}: {attempt.detail}")


def protocol_checks(port: int) -> list[Check]:
    checks = []
    for name, version, option, must_accept in PROTOCOLS:
        attempt = python_attempt(port, ECDSA_HOST, version)
        if attempt.outcome == "untestable":
            attempt, _ = s_client(port, ECDSA_HOST, [option, "-cipher", "ALL:@SECLEVEL=0"])
        checks.append(judge("protocols", name, must_accept, attempt))
    return checks


def cipher_checks(port: int) -> list[Check]:
    """The profile's TLS 1.2 suites must be accepted (each on the certificate type it needs),
    the weak ones refused; TLS 1.3 suites through s_client (the stdlib cannot pick them)."""
    checks = []
    for cipher in INTERMEDIATE_TLS12_CIPHERS:
        host = ECDSA_HOST if "-ECDSA-" in cipher else RSA_HOST
        attempt = python_attempt(port, host, ssl.TLSVersion.TLSv1_2, cipher)
        checks.append(judge("TLS 1.2 suites of the profile", cipher, True, attempt))
    for cipher, host, why in WEAK_TLS12_CIPHERS:
        attempt = python_attempt(port, host, ssl.TLSVersion.TLSv1_2, cipher)
        if attempt.outcome == "untestable":
            attempt = legacy_s_client(port, host, cipher)
        checks.append(judge("weak TLS 1.2 suites", f"{cipher} ({why})", False, attempt))
    for suite in TLS13_SUITES:
        attempt, _ = s_client(port, ECDSA_HOST, ["-tls1_3", "-ciphersuites", suite])
        checks.append(judge("TLS 1.3 suites", suite, True, attempt))
    return checks


def key_exchange_checks(port: int) -> list[Check]:
    """The profile's groups (X25519, P-256, P-384) accepted on TLS 1.3 and no others, and
    DHE parameters of at least 2048 bits (ffdhe2048 in the profile) on TLS 1.2."""
    checks = []
    for group in (*GROUPS, *OTHER_GROUPS):
        attempt, facts = s_client(port, ECDSA_HOST, ["-tls1_3", "-groups", group])
        key = facts.get("Server Temp Key", "")
        if attempt.outcome == "accepted":
            attempt = Attempt("accepted", f"{attempt.detail}, server temp key {key}")
        checks.append(judge("key exchange", f"group {group}", group in GROUPS, attempt))
    options = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
    attempt, facts = s_client(port, RSA_HOST, options)
    name = f"DHE parameters >= {MIN_DH_BITS} bits"
    if attempt.outcome != "accepted":
        detail = f"DHE not negotiated ({attempt.detail}); see the DHE suites above"
        checks.append(Check("key exchange", name, "SKIP", detail))
        return checks
    key = facts.get("Server Temp Key", "?")
    bits = re.search(r"(\d+) bits", key)
    good = bits is not None and int(bits[1]) >= MIN_DH_BITS
    checks.append(Check("key exchange", name, "PASS" if good else "FAIL", f"server temp key {key}"))
    return checks


def preference_check(port: int) -> Check:
    """The profile lets the client choose among its suites (all are strong, and clients
    without AES hardware prefer ChaCha20): offer ChaCha20 first, see what the server takes."""
    offer = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256"
    attempt = python_attempt(port, ECDSA_HOST, ssl.TLSVersion.TLSv1_2, offer)
    chosen = attempt.detail.split()[-1] if attempt.outcome == "accepted" else None
    name = "TLS 1.2 suite chosen by the client's preference"
    if chosen is None:
        return Check("cipher preference", name, "FAIL", attempt.detail)
    ok = chosen == offer.split(":")[0]
    return Check("cipher preference", name, "PASS" if ok else "FAIL", f"server chose {chosen}")


def verified_context(ca: Path, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(list(alpn))
    return context


def connection_checks(port: int, certificates: dict[str, CertificateFiles]) -> list[Check]:
    """Per site: a verifying client (chain and name), compression, ALPN, and a GET /small."""
    checks = []
    for host, files in certificates.items():
        label = f"{host} ({files.key_type})"
        try:
            with tls_connection(port, host, verified_context(files.ca)) as tls:
                compression, alpn = tls.compression(), tls.selected_alpn_protocol()
            # The request itself is HTTP/1.1, so this connection offers only that by ALPN.
            with tls_connection(port, host, verified_context(files.ca, ("http/1.1",))) as tls:
                tls.sendall(
                    f"GET /small HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                answer = _read_all(tls)
        except (OSError, ssl.SSLError) as exc:
            checks.append(Check("connection", f"{label}: verified handshake", "FAIL", str(exc)))
            continue
        ok_answer = answer.startswith(b"HTTP/1.1 200") and answer.endswith(targets.SMALL_BODY)
        checks += [
            Check("connection", f"{label}: chain and name verify", "PASS", "with the test CA"),
            _expect(
                "connection", f"{label}: no TLS compression", compression is None, str(compression)
            ),
            _expect("connection", f"{label}: ALPN", alpn in ("http/1.1", "h2"), f"selected {alpn}"),
            _expect("connection", f"{label}: GET /small", ok_answer, answer[:15].decode("latin-1")),
        ]
    return checks


def _expect(group: str, name: str, ok: bool, detail: str) -> Check:
    return Check(group, name, "PASS" if ok else "FAIL", detail)


def _read_all(tls: ssl.SSLSocket) -> bytes:
    chunks = []
    while chunk := tls.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def s_client_summary(port: int, certificates: dict[str, CertificateFiles]) -> str:
    """What `openssl s_client -brief` reports for a default connection to each site."""
    lines = []
    for host, files in certificates.items():
        attempt, facts = s_client(port, host, ["-CAfile", str(files.ca), "-verify_return_error"])
        lines.append(f"  {host} ({files.key_type}): {attempt.outcome}")
        lines += [f"    {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)


def sslyze_checks(python: str | None, port: int) -> list[Check]:
    """sslyze's `--mozilla_config=intermediate` on both sites: one check per problem it lists.

    Path validation is bound to fail with a test CA that no trust store holds (and trustme
    marks subjectAltName critical, which strict validators refuse): a SKIP, not a FAIL.
    """
    if python is None:
        detail = "no interpreter with sslyze (pip install sslyze into a venv, then --sslyze)"
        return [Check("sslyze", "Mozilla intermediate", "SKIP", detail)]
    checks = []
    for host in (ECDSA_HOST, RSA_HOST):
        label = f"{host}: Mozilla intermediate"
        argv = [python, "-m", "sslyze", "--mozilla_config=intermediate"]
        try:
            done = subprocess.run(
                [*argv, f"{host}:{port}{{127.0.0.1}}"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            checks.append(Check("sslyze", label, "FAIL", str(exc)))
            continue
        checks += _sslyze_findings(label, done.returncode, done.stdout)
    return checks


def _sslyze_findings(label: str, returncode: int, output: str) -> list[Check]:
    if returncode == 0:
        return [Check("sslyze", label, "PASS", "compliant")]
    section = output.rpartition("COMPLIANCE AGAINST")[2]
    problems = re.findall(r"^\s*\* (\w+): (.+)$", section, re.MULTILINE)
    if not problems:
        tail = " | ".join(output.strip().splitlines()[-5:])
        return [Check("sslyze", label, "FAIL", f"exit status {returncode}: {tail}")]
    return [
        Check(
            "sslyze",
            f"{label}: {rule}",
            "SKIP" if rule == "certificate_path_validation" else "FAIL",
            f"{message} (test certificate)" if rule == "certificate_path_validation" else message,
        )
        for rule, message in problems
    ]


def find_sslyze(given: str | None) -> str | None:
    if given is not None:
        return given
    found = subprocess.run(
        [sys.executable, "-c", "import sslyze"], capture_output=True, check=False
    )
    return sys.executable if found.returncode == 0 else None


def start(workdir: Path, stack: contextlib.ExitStack) -> tuple[Target, dict[str, CertificateFiles]]:
    """Start the origin and bastion (two sites on one TLS listener); stopped by `stack`."""
    certificates = {
        ECDSA_HOST: tls_material.write_certificate(workdir, "ecdsa"),
        RSA_HOST: tls_material.write_certificate(
            workdir, "rsa", trustme.KeyType.RSA, names=[RSA_HOST]
        ),
    }
    origin_port, port, tls_port = (targets.free_port() for _ in range(3))
    _launch(targets.origin_spec(origin_port, None, 1), workdir, stack)
    conf = workdir / "bastion.toml"
    paths = {
        f"{kind}_{part}": json.dumps(str(getattr(certificates[host], part)))
        for kind, host in (("ecdsa", ECDSA_HOST), ("rsa", RSA_HOST))
        for part in ("chain", "key")
    }
    values = {"port": port, "tls_port": tls_port, "origin_port": origin_port}
    targets.render("tls-profile.toml.template", conf, rsa_host=RSA_HOST, **paths, **values)
    argv = [*targets.bastion_command(), "run", "-c", str(conf)]
    spec = LaunchSpec("bastion", argv, port, None, targets.bastion_env(), 30.0, tls_port)
    return _launch(spec, workdir, stack), certificates


def _launch(spec: LaunchSpec, workdir: Path, stack: contextlib.ExitStack) -> Target:
    target = targets.spawn(spec, workdir)
    stack.callback(targets.stop, target)
    try:
        targets.wait_ready(target, spec.ready_timeout)
    except TargetStartError as exc:
        raise TargetStartError(f"{exc}; stderr:\n{targets.tail(target.stderr_path)}") from exc
    return target


def report(checks: Sequence[Check]) -> None:
    group = None
    for check in checks:
        if check.group != group:
            group = check.group
            print(f"\n{group}")
        print(f"  {check.status:4}  {check.name}: {check.detail}")
    counts = {
        status: sum(c.status == status for c in checks) for status in ("PASS", "FAIL", "SKIP")
    }
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check bastion against Mozilla intermediate.")
    parser.add_argument("--sslyze", metavar="PYTHON", help="interpreter that has sslyze")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bastion-tls-")))
        try:
            target, certificates = start(workdir, stack)
        except (TargetStartError, OSError) as exc:
            print(f"error: bastion did not start: {exc}", file=sys.stderr)
            return 2
        port = target.tls_port
        assert port is not None
        print(f"bastion TLS listener on 127.0.0.1:{port}; openssl s_client -brief:")
        print(s_client_summary(port, certificates))
        checks = protocol_checks(port) + cipher_checks(port) + [preference_check(port)]
        checks += key_exchange_checks(port)
        checks += connection_checks(port, certificates)
        checks += sslyze_checks(find_sslyze(args.sslyze), port)
    report(checks)
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
