"""Turning wrk results into per-scenario tables (plain text or markdown) and describing the host.

Knows medians, units, the column layout and how to ask tools for their versions; knows nothing
about starting targets or running wrk.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version

from wrk_output import WrkResult

MIB = 1024 * 1024
HEADERS = (
    "target",
    "req/s",
    "MiB/s",
    "p50",
    "p99",
    "errors",
    "CPU µs/req",
    "CPU busy",
    "req/s vs nginx",
)


@dataclass(frozen=True)
class Measurement:
    """One measured wrk run, with the CPU time the target's own processes used meanwhile."""

    wrk: WrkResult
    target_cpu_seconds: float
    wall_seconds: float
    foreign_load: float

    @property
    def cpu_per_request(self) -> float:
        """Target CPU-seconds per request (for a proxy: the proxy alone, not the origin)."""
        return self.target_cpu_seconds / max(1, self.wrk.requests)

    @property
    def cpu_busy(self) -> float:
        """Target CPU time over wall time: 1.0 means one core fully used."""
        return self.target_cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass(frozen=True)
class Summary:
    """Medians over the rounds of one target in one scenario."""

    target: str
    rounds: int
    requests_per_sec: float
    mib_per_sec: float
    p50_seconds: float
    p99_seconds: float
    errors: int
    cpu_per_request: float
    cpu_busy: float


def summarise(target: str, runs: Sequence[Measurement]) -> Summary:
    """Median of each figure over the rounds (each median taken separately); errors summed."""
    return Summary(
        target=target,
        rounds=len(runs),
        requests_per_sec=statistics.median(r.wrk.requests_per_sec for r in runs),
        mib_per_sec=statistics.median(r.wrk.bytes_per_sec for r in runs) / MIB,
        p50_seconds=statistics.median(r.wrk.p50_seconds for r in runs),
        p99_seconds=statistics.median(r.wrk.p99_seconds for r in runs),
        errors=sum(r.wrk.errors for r in runs),
        cpu_per_request=statistics.median(r.cpu_per_request for r in runs),
        cpu_busy=statistics.median(r.cpu_busy for r in runs),
    )


def format_latency(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table_rows(summaries: Sequence[Summary]) -> list[tuple[str, ...]]:
    """One row of strings per target; the last column divides its req/s by nginx's."""
    nginx = next((s for s in summaries if s.target == "nginx"), None)
    rows: list[tuple[str, ...]] = []
    for s in summaries:
        ratio = f"{s.requests_per_sec / nginx.requests_per_sec:.2f}x" if nginx else "-"
        rows.append(
            (
                s.target,
                f"{s.requests_per_sec:,.0f}",
                f"{s.mib_per_sec:,.1f}",
                format_latency(s.p50_seconds),
                format_latency(s.p99_seconds),
                str(s.errors),
                f"{s.cpu_per_request * 1e6:,.0f}",
                f"{s.cpu_busy:.0%}",
                ratio,
            )
        )
    return rows


def render_table(summaries: Sequence[Summary], markdown: bool) -> str:
    rows = [HEADERS, *table_rows(summaries)]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(1, "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bastion_ratio(summaries: Sequence[Summary]) -> float | None:
    by_name = {s.target: s for s in summaries}
    if "bastion" not in by_name or "nginx" not in by_name:
        return None
    return by_name["bastion"].requests_per_sec / by_name["nginx"].requests_per_sec


def _command_output(
    argv: Sequence[str], env: Mapping[str, str] | None = None, must_succeed: bool = False
) -> str:
    """First line a tool prints about itself (stdout or stderr), or why it could not run.

    `wrk -v` exits with status 1 after printing its version, hence `must_succeed` is opt-in.
    """
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False, env=full_env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if must_succeed and done.returncode != 0:
        return f"not runnable ({text[-1] if text else f'exit status {done.returncode}'})"
    return text[0] if text else "unknown"


def tool_version(argv: Sequence[str]) -> str:
    """What a tool says about its version (first line), or why it could not run."""
    return _command_output(argv)


def _memory() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"{kib / 1024 / 1024:.1f} GiB"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(
    bastion_version_argv: Sequence[str], bastion_env: Mapping[str, str] | None, checkout: str
) -> Mapping[str, str]:
    """What the figures depend on: host, kernel, every tool's version, the checkout's commit."""
    git = ["git", "-C", checkout, "describe", "--always", "--dirty"]
    return {
        "cpu": f"{_cpu_model()}, {os.cpu_count()} logical CPUs",
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "uvloop / httptools": f"{version('uvloop')} / {version('httptools')}",
        "nginx": _command_output(["nginx", "-v"]),
        "wrk": _command_output(["wrk", "-v"]).split(" [")[0],
        "bastion": _command_output(bastion_version_argv, bastion_env, must_succeed=True),
        "checkout": "git " + _command_output(git, must_succeed=True),
    }


def render_environment(env: Mapping[str, str], markdown: bool) -> str:
    if markdown:
        return "\n".join(f"- **{key}**: {value}" for key, value in env.items())
    width = max(len(key) for key in env)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in env.items())
