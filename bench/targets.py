"""Starting, checking and stopping the processes under test: the origin, nginx and bastion.

Knows each target's command line and generated config file (with optional TLS listeners next
to the plain one: one for HTTP/1.1, one offering HTTP/2 by ALPN), free-port picking, CPU
pinning, readiness checks and process-group cleanup. Knows nothing about wrk, h2load, rounds or
result tables.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tls_material import INTERMEDIATE_TLS12_CIPHERS, CertificateFiles

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SMALL_BODY = b"hello, world\n"
LARGE_BODY_SIZE = 1024 * 1024
STOP_GRACE_SECONDS = 5.0


class TargetStartError(Exception):
    """A target exited, or never answered correctly, before its deadline."""


@dataclass
class Target:
    """One running process under test, in its own process group, listening on 127.0.0.1."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path
    tls_port: int | None = None
    h2_port: int | None = None  # TLS listener offering h2 by ALPN (the h2 scenario)

    def url(self, path: str, tls: bool = False, h2: bool = False) -> str:
        if h2:
            return f"https://127.0.0.1:{self.h2_port}{path}"
        if tls:
            return f"https://127.0.0.1:{self.tls_port}{path}"
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass(frozen=True)
class TLSListener:
    """A second, TLS-terminating listener of a proxy: its port and the certificate it serves."""

    port: int
    certificate: CertificateFiles


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one target: its command line, extra environment and allowed CPUs."""

    name: str
    argv: list[str]
    port: int
    cpus: frozenset[int] | None
    env: dict[str, str] | None = None
    ready_timeout: float = 15.0
    tls_port: int | None = None
    h2_port: int | None = None


def free_port() -> int:
    """A port the kernel has just handed out on 127.0.0.1 (free now, not reserved)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that it is empty."""
    try:
        text = path.read_text(errors="replace").rstrip()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) if text else "(empty)"


def spawn(spec: LaunchSpec, workdir: Path) -> Target:
    """Start a target in a new session (so its whole group can be stopped), pinned if asked."""
    stdout_path = workdir / f"{spec.name}.stdout"
    stderr_path = workdir / f"{spec.name}.stderr"
    env = {**os.environ, **(spec.env or {})}
    cpus = spec.cpus
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    return Target(spec.name, spec.port, process, stderr_path, spec.tls_port, spec.h2_port)


def stop(target: Target) -> None:
    """SIGTERM the target's process group, then SIGKILL it if anything in it lingers."""
    for signum, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(target.process.pid, signum)  # start_new_session: pid is the group id
        except ProcessLookupError:
            break
        if _group_exited(target, grace):
            break
    if target.process.poll() is None:
        target.process.kill()
        target.process.wait()


def _group_exited(target: Target, timeout: float) -> bool:
    """Wait up to `timeout` for the leader to be reaped and the rest of its group to vanish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            try:
                os.killpg(target.process.pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    return False


def probe(port: int, tls: bool = False) -> str | None:
    """None if the server answers /small and /1m with the expected bodies, else the problem.

    With `tls`, over HTTPS without verifying the certificate (as wrk does).
    """
    for path, check in (("/small", _is_small_body), ("/1m", _is_large_body)):
        conn = _connection(port, tls)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"GET {path}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if response.status != 200 or not check(body):
            return f"GET {path}: status {response.status}, {len(body)} body bytes"
    return None


def _connection(port: int, tls: bool) -> http.client.HTTPConnection:
    if not tls:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=3.0)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=3.0, context=context)


def negotiated_tls(port: int) -> str:
    """The version and cipher suite a default OpenSSL client gets from a TLS port (as wrk)."""
    try:
        version, cipher, _ = _handshake(port, alpn=())
    except OSError as exc:
        return f"unknown ({type(exc).__name__}: {exc})"
    return f"{version} {cipher}"


def negotiated_alpn(port: int) -> str | None:
    """The protocol a TLS port selects when a client offers `h2` and `http/1.1` (as h2load)."""
    return _handshake(port, alpn=("h2", "http/1.1"))[2]


def _handshake(port: int, alpn: Sequence[str]) -> tuple[str, str, str | None]:
    """TLS version, cipher suite and ALPN protocol of one handshake, certificate unchecked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            cipher = tls.cipher()
            protocol = tls.selected_alpn_protocol()
            return tls.version() or "?", cipher[0] if cipher else "?", protocol


def _is_small_body(body: bytes) -> bool:
    return body == SMALL_BODY


def _is_large_body(body: bytes) -> bool:
    return len(body) == LARGE_BODY_SIZE


def wait_ready(target: Target, timeout: float) -> None:
    """Poll until the target answers correctly; raise TargetStartError if it dies or times out."""
    deadline = time.monotonic() + timeout
    problem = "never probed"
    while time.monotonic() < deadline:
        code = target.process.poll()
        if code is not None:
            raise TargetStartError(f"{target.name} exited with status {code}")
        found = probe(target.port)
        if found is None and target.tls_port is not None:
            tls_problem = probe(target.tls_port, tls=True)
            found = None if tls_problem is None else f"over TLS: {tls_problem}"
        if found is None and target.h2_port is not None:
            found = _h2_listener_problem(target.h2_port)
        if found is None:
            return
        problem = found
        time.sleep(0.2)
    raise TargetStartError(f"{target.name} not ready after {timeout:.0f}s: {problem}")


def _h2_listener_problem(port: int) -> str | None:
    """None if the h2 listener serves the bodies (HTTP/1.1 without ALPN) and selects h2."""
    problem = probe(port, tls=True)
    if problem is not None:
        return f"h2 listener over TLS: {problem}"
    try:
        protocol = negotiated_alpn(port)
    except OSError as exc:
        return f"h2 listener: {type(exc).__name__}: {exc}"
    return None if protocol == "h2" else f"h2 listener selects ALPN {protocol!r}, not 'h2'"


def origin_spec(port: int, cpus: frozenset[int] | None, workers: int) -> LaunchSpec:
    argv = [sys.executable, str(BENCH_DIR / "origin.py"), "--port", str(port)]
    return LaunchSpec("origin", [*argv, "--workers", str(workers)], port, cpus)


def nginx_spec(
    workdir: Path,
    port: int,
    origin_port: int,
    cpus: frozenset[int] | None,
    tls: TLSListener | None = None,
    h2: TLSListener | None = None,
    workers: int = 1,
) -> LaunchSpec:
    """Write nginx.conf into workdir (from nginx.conf.template) and describe the nginx command.

    With `tls`, the server also listens with `ssl` on tls.port (nginx-tls.conf.template); with
    `h2`, a second server listens with `ssl http2` on h2.port (nginx-h2.conf.template), with
    the same TLS settings.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = workdir / "nginx.conf"
    tls_lines = _nginx_tls_lines(tls, "ssl")
    h2_server = ""
    if h2 is not None:
        h2_server = _substitute("nginx-h2.conf.template", tls=_nginx_tls_lines(h2, "ssl http2"))
    values = {"workdir": workdir, "port": port, "origin_port": origin_port, "workers": workers}
    render("nginx.conf.template", conf, tls=tls_lines, h2_server=h2_server, **values)
    workdir.chmod(0o755)  # nginx workers run as an unprivileged user when started as root
    argv = [nginx, "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf)]
    return LaunchSpec("nginx", argv, port, cpus, tls_port=_port_of(tls), h2_port=_port_of(h2))


def _nginx_tls_lines(listener: TLSListener | None, listen_flags: str) -> str:
    """A `listen` line with `listen_flags` and the TLS settings (nginx-tls.conf.template)."""
    if listener is None:
        return ""
    return _substitute(
        "nginx-tls.conf.template",
        listen=f"listen 127.0.0.1:{listener.port} {listen_flags};",
        chain=listener.certificate.chain,
        key=listener.certificate.key,
        ciphers=":".join(INTERMEDIATE_TLS12_CIPHERS),
    )


def bastion_spec(
    workdir: Path,
    port: int,
    origin_port: int,
    cpus: frozenset[int] | None,
    tls: TLSListener | None = None,
    h2: TLSListener | None = None,
    workers: int = 1,
) -> LaunchSpec:
    """Write bastion.toml and describe `bastion run -c FILE` (or `python -m bastion.cli`).

    With `tls`, a second `[[listen]]` with `tls = true` on tls.port; with `h2`, one with
    `tls = true` and `http2 = true` on h2.port; the site gets the certificate as its `tls` table.
    """
    conf = workdir / "bastion.toml"
    tls_listen = site_tls = ""
    if tls is not None:
        tls_listen = f'[[listen]]\naddress = "127.0.0.1:{tls.port}"\ntls = true\n'
    if h2 is not None:
        tls_listen += f'[[listen]]\naddress = "127.0.0.1:{h2.port}"\ntls = true\nhttp2 = true\n'
    certificate = next((lsn.certificate for lsn in (tls, h2) if lsn is not None), None)
    if certificate is not None:
        chain, key = (json.dumps(str(p)) for p in (certificate.chain, certificate.key))
        site_tls = f"tls = {{ certificate = {chain}, key = {key} }}\n"
    values = {"port": port, "origin_port": origin_port, "workers": workers}
    render("bastion.toml.template", conf, tls_listen=tls_listen, site_tls=site_tls, **values)
    argv = [*bastion_command(), "run", "-c", str(conf)]
    return LaunchSpec(
        "bastion",
        argv,
        port,
        cpus,
        bastion_env(),
        ready_timeout=30.0,
        tls_port=_port_of(tls),
        h2_port=_port_of(h2),
    )


def _port_of(listener: TLSListener | None) -> int | None:
    return listener.port if listener is not None else None


def bastion_command() -> list[str]:
    """The installed `bastion` console script if on PATH, else the module from this checkout."""
    script = shutil.which("bastion")
    return [script] if script else [sys.executable, "-m", "bastion.cli"]


def bastion_env() -> dict[str, str]:
    """This checkout's src/ first on PYTHONPATH: the package is not pip-installed."""
    src = str(REPO_DIR / "src")
    return {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def render(template_name: str, destination: Path, **values: object) -> None:
    """Fill a template of bench/ (string.Template placeholders) and write it to destination."""
    destination.write_text(_substitute(template_name, **values))


def _substitute(template_name: str, **values: object) -> str:
    template = Template((BENCH_DIR / template_name).read_text())
    return template.substitute({k: str(v) for k, v in values.items()})


def describe(argv: Sequence[str]) -> str:
    """A command line as one shell-like string, for logs and docs."""
    return " ".join(argv)
