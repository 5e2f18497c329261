"""What rewriting response bodies costs, and that it streams.

A script, not a test: `python bench/rewrite_cost.py [--only engine,proxy] [--markdown]`.

engine — `bastion.rewrite` alone, no sockets: a realistic ~1 MB HTML page (links, images with
srcset, inline scripts with JSON-escaped URLs, paragraphs; about 1 line in 16 names the
internal origin, 1 in 8 is a root-relative link) fed in 64 KiB reads, as the proxy would.
Rows: a pass-through loop (what moving the reads costs), rewriting without and with a prefix,
gzip/br/zstd (decode, rewrite, encode again, flushed per read), and gzip where nothing is
internal (the cost of the coding alone). CPU time of the fastest of several rounds.

proxy — bastion between wrk and an origin (bench/rewrite_page.py) serving the page:
route `/plain` passes it, route `/rw` has `rewrite = { body = true }`; both `strip_prefix`.
wrk measures requests/s per path (bastion on one CPU, wrk and origin on the other, when there
are two); bastion's CPU time per request is read from /proc. Then a timed client asks for
`/slow` (the origin sends the page in 16 slices, 20 ms apart): time to the first body byte vs
the last, plain and gzip — the rewritten body reaches the client long before the origin has
sent its last byte.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import brotli
import cpu_load
import targets
import zstandard
from rewrite_page import SLICE_PAUSE, SLICES, page
from wrk_output import WrkOutputError, parse_wrk_output

from bastion.rewrite import Origin, UrlMap, body_rewriter

READ = 64 * 1024
ROUNDS = 5
ORIGIN_SCRIPT = Path(__file__).with_name("rewrite_page.py")
# --- engine -------------------------------------------------------------------------------


def encode(coding: str, data: bytes) -> bytes:
    return {
        "identity": lambda d: d,
        "gzip": lambda d: gzip.compress(d, 6),
        "br": lambda d: brotli.compress(d, quality=5),
        "zstd": zstandard.ZstdCompressor(level=3).compress,
    }[coding](data)


def engine_rows() -> list[tuple[str, float, float, int]]:
    """(case, ms per page, MB/s of the uncompressed page, bytes out)."""
    internal = "10.0.0.5:8080"
    body = page(internal)
    cases: list[tuple[str, str, bytes | None, str | None]] = [
        ("pass-through (no rewrite)", "identity", b"/legacy", None),
        ("rewrite, no prefix", "identity", None, internal),
        ("rewrite, prefix /legacy", "identity", b"/legacy", internal),
        ("gzip pass-through", "gzip", b"/legacy", None),
        ("gzip, nothing internal", "gzip", None, "10.9.9.9:1"),
        ("gzip rewrite, prefix", "gzip", b"/legacy", internal),
        ("br rewrite, prefix", "br", b"/legacy", internal),
        ("zstd rewrite, prefix", "zstd", b"/legacy", internal),
    ]
    rows = []
    for label, coding, prefix, authority in cases:
        data = encode(coding, body)
        reads = [data[at : at + READ] for at in range(0, len(data), READ)]
        if authority is None:
            run = functools.partial(pass_through, reads)
        else:
            url_map = UrlMap([Origin.parse("http://" + authority)], b"https", b"h.example", prefix)
            header = None if coding == "identity" else coding.encode()
            run = functools.partial(rewrite, reads, url_map, header)
        seconds, size = fastest(run)
        rows.append((label, seconds * 1000, len(body) / seconds / 1e6, size))
    return rows


def pass_through(reads: list[bytes]) -> int:
    """What the proxy does with a body it does not rewrite: hands each read on."""
    out: list[bytes] = []
    for read in reads:
        out.append(read)
    return sum(map(len, out))


def rewrite(reads: list[bytes], url_map: UrlMap, coding: bytes | None) -> int:
    rewriter = body_rewriter(url_map, b"text/html; charset=utf-8", coding)
    assert rewriter is not None
    out = [rewriter.feed(read) for read in reads]
    out.append(rewriter.end())
    return sum(map(len, out))


def fastest(run: Callable[[], int]) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(ROUNDS):
        start = time.process_time()
        size = run()
        best = min(best, time.process_time() - start)
    return max(best, 1e-9), size


# --- proxy --------------------------------------------------------------------------------

BASTION_TOML = """
[log]
access = "off"

[admin]
listen = "off"

[server]
workers = 1  # figures per process, comparable with bench/run.py's

[[listen]]
address = "127.0.0.1:{port}"

[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/rw"
  upstream = "origin"
  strip_prefix = true
  rewrite = {{ body = true }}
  [[site.route]]
  path = "/plain"
  upstream = "origin"
  strip_prefix = true

[upstream.origin]
servers = ["http://127.0.0.1:{origin_port}"]
"""


def start(
    name: str,
    argv: list[str],
    port: int,
    cpus: frozenset[int] | None,
    workdir: Path,
    env: dict[str, str] | None = None,
) -> targets.Target:
    spec = targets.LaunchSpec(name, argv, port, cpus, env)
    target = targets.spawn(spec, workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return target
        except OSError:
            time.sleep(0.1)
    targets.stop(target)
    raise SystemExit(f"{name} did not start:\n{targets.tail(target.stderr_path)}")


def fetch(port: int, path: str, gzip_ok: bool = False) -> tuple[float, float, bytes, bytes]:
    """GET over a fresh connection: (seconds to the first body byte, to the last, head, body)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    request += "Accept-Encoding: gzip\r\n\r\n" if gzip_ok else "\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        began = time.perf_counter()
        sock.sendall(request.encode())
        data, first = b"", 0.0
        while chunk := sock.recv(READ):
            data += chunk
            if not first and b"\r\n\r\n" in data and data.index(b"\r\n\r\n") + 4 < len(data):
                first = time.perf_counter() - began
        last = time.perf_counter() - began
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return first, last, head, body


def dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        line_end = data.index(b"\r\n", at)
        size = int(data[at:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[line_end + 2 : line_end + 2 + size])
        at = line_end + 4 + size


def check_rewritten(port: int, origin_port: int) -> None:
    """The proxied page must name only the public address, under /rw."""
    for path, gzip_ok in (("/rw/page", False), ("/rw/page.gz", True)):
        body = fetch(port, path, gzip_ok)[3]
        text = gzip.decompress(body) if gzip_ok else body
        leaked = f"127.0.0.1:{origin_port}".encode()
        assert leaked not in text, f"{path}: internal address left in the body"
        assert f'href="http://127.0.0.1:{port}/rw/orders/'.encode() in text, path
        assert b'href="/rw/orders/' in text, path


def wrk(
    port: int,
    path: str,
    duration: int,
    gzip_ok: bool,
    cpus: frozenset[int] | None,
    bastion_pid: int,
) -> tuple[float, float, float, int]:
    """(requests/s, MiB/s, p50 ms, bastion CPU µs per request) of one wrk run."""
    argv = ["wrk", "-t1", "-c4", f"-d{duration}s", "--latency"]
    if gzip_ok:
        argv += ["-H", "Accept-Encoding: gzip"]
    before = cpu_load.group_cpu_seconds([bastion_pid])
    done = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    used = cpu_load.group_cpu_seconds([bastion_pid]) - before
    try:
        result = parse_wrk_output(done.stdout)
    except WrkOutputError as exc:
        raise SystemExit(f"wrk failed ({exc}):\n{done.stdout}{done.stderr}") from exc
    if result.errors:
        raise SystemExit(f"wrk saw {result.errors} errors on {path}")
    per_request = used / max(result.requests, 1) * 1e6
    return (
        result.requests_per_sec,
        result.bytes_per_sec / (1 << 20),
        result.p50_seconds * 1e3,
        round(per_request),
    )


def proxy_rows(duration: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    cpus = sorted(os.sched_getaffinity(0))
    proxy_cpu, load_cpu = (
        (frozenset(cpus[:1]), frozenset(cpus[1:])) if len(cpus) > 1 else (None, None)
    )
    origin_port, port = targets.free_port(), targets.free_port()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "bastion.toml").write_text(
            BASTION_TOML.format(port=port, origin_port=origin_port)
        )
        origin = start(
            "origin",
            [
                sys.executable,
                str(Path(__file__).with_name("rewrite_page.py")),
                "--port",
                str(origin_port),
            ],
            origin_port,
            load_cpu,
            workdir,
        )
        argv = [*targets.bastion_command(), "run", "-c", str(workdir / "bastion.toml")]
        bastion = start("bastion", argv, port, proxy_cpu, workdir, targets.bastion_env())
        try:
            check_rewritten(port, origin_port)
            load = []
            for path, gzip_ok in (
                ("/plain/page", False),
                ("/rw/page", False),
                ("/plain/page.gz", True),
                ("/rw/page.gz", True),
            ):
                wrk(port, path, 1, gzip_ok, load_cpu, bastion.process.pid)  # warm up
                load.append(
                    (path, *wrk(port, path, duration, gzip_ok, load_cpu, bastion.process.pid))
                )
            timing = []
            for path, gzip_ok in (
                ("/plain/slow", False),
                ("/rw/slow", False),
                ("/rw/slow.gz", True),
            ):
                runs = [fetch(port, path, gzip_ok)[:2] for _ in range(5)]
                first, last = sorted(runs)[2]
                timing.append((path, round(first * 1e3, 1), round(last * 1e3, 1)))
        finally:
            targets.stop(bastion)
            targets.stop(origin)
    return load, timing


# --- output -------------------------------------------------------------------------------


def table(headers: tuple[str, ...], rows: list[tuple[object, ...]], markdown: bool) -> str:
    cells = [[str(c) for c in headers]] + [[_cell(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in headers) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def _cell(value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if value >= 1000 else f"{value:.2f}" if value < 1 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The cost of body rewriting.")
    parser.add_argument("--only", default="engine,proxy", help="engine, proxy or both")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--markdown", action="store_true", help="tables in markdown")
    args = parser.parse_args(argv)
    parts = args.only.split(",")
    if "engine" in parts:
        rows = [(label, ms, mbs, size) for label, ms, mbs, size in engine_rows()]
        print(
            table(
                ("case (1 MB page, 64 KiB reads)", "ms/page", "MB/s", "bytes out"),
                rows,
                args.markdown,
            )
        )
        print()
    if "proxy" in parts:
        load, timing = proxy_rows(args.duration)
        print(
            table(("path", "req/s", "MiB/s", "p50 ms", "bastion CPU µs/req"), load, args.markdown)
        )
        print()
        span = (SLICES - 1) * SLICE_PAUSE * 1e3
        print(
            table(
                (f"path (origin sends for ~{span:.0f} ms)", "first byte ms", "last byte ms"),
                timing,
                args.markdown,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
