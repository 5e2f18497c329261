"""One h2load run against one target, measured: the h2 scenario's load generator.

Knows h2load's command line (HTTP/2 over TLS, timing-based, with its own warm-up and a
per-request log), and samples the target's CPU time and the machine's foreign load from the
line h2load prints when its measured phase starts to the one it prints when that phase ends,
so that neither its warm-up nor its connection set-up is counted. Output and log parsing live
in h2load_output.py. Knows nothing about scenarios, rounds or which targets exist.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import cpu_load
import h2load_output
from h2load_output import H2loadOutputError
from report import Measurement

THREADS = 1
WARM_UP_SECONDS = 1  # h2load's own warm-up at the start of every run: load, not measured
CPUSample = tuple[float, cpu_load.LoadSnapshot]  # the target's CPU-seconds, the machine's load


class H2loadRunError(Exception):
    """h2load failed, did not speak h2, or printed something unexpected; `output` says what."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class H2loadRun:
    """What to run: `connections` x `streams` concurrent requests to `url` for `duration` s."""

    url: str
    connections: int
    streams: int
    duration: int
    log_file: Path  # per-request log, overwritten

    def argv(self) -> list[str]:
        return [
            "h2load",
            f"-c{self.connections}",
            f"-m{self.streams}",
            f"-t{THREADS}",
            f"-D{self.duration}",
            f"--warm-up-time={WARM_UP_SECONDS}",
            f"--log-file={self.log_file}",
            self.url,
        ]


def describe(path: str, connections: int, streams: int, duration: int) -> str:
    """The h2load command line of a run, with placeholders for port and log, for the header."""
    url = f"https://127.0.0.1:PORT{path}"
    run = H2loadRun(url, connections, streams, duration, Path("FILE"))
    return " ".join(run.argv())


def measure(
    run: H2loadRun,
    target_pgid: int,
    benchmark_pgids: list[int],
    cpus: frozenset[int] | None,
) -> tuple[Measurement, str]:
    """Run h2load (on `cpus` if given) and measure the target's CPU over its measured phase.

    `benchmark_pgids` are the process groups whose CPU time is the benchmark's own (all
    targets); h2load runs in a group of its own, added to them. Returns the measurement and
    what the connections negotiated (TLS version, cipher, ALPN protocol, as h2load prints
    them); raises H2loadRunError if the run cannot be read.
    """
    run.log_file.unlink(missing_ok=True)  # h2load appends to an existing file
    output, window = _run_sampled(run, target_pgid, benchmark_pgids, cpus)
    try:
        if window is None:
            raise H2loadOutputError("no start and end of the measured phase in its output")
        latencies = h2load_output.read_latencies(run.log_file)
        result = h2load_output.parse_h2load_output(output, latencies)
    except (H2loadOutputError, OSError) as exc:
        raise H2loadRunError(str(exc), output) from exc
    (cpu_before, before), (cpu_after, after) = window
    foreign = cpu_load.foreign_load(before, after)
    measurement = Measurement(result.figures, cpu_after - cpu_before, after.at - before.at, foreign)
    return measurement, result.negotiated


def _run_sampled(
    run: H2loadRun, target_pgid: int, benchmark_pgids: list[int], cpus: frozenset[int] | None
) -> tuple[str, tuple[CPUSample, CPUSample] | None]:
    """h2load's output (stdout and stderr) and a CPU sample at each of its phase lines.

    The window is None if either line never came. h2load is killed if it outlives the run by
    a minute, and on any exception here (Ctrl-C included).
    """
    process = subprocess.Popen(
        run.argv(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,  # its CPU time is then counted as the benchmark's, not as foreign
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    pgids = [*benchmark_pgids, process.pid]

    def sample() -> CPUSample:
        return cpu_load.group_cpu_seconds([target_pgid]), cpu_load.LoadSnapshot.take(pgids)

    markers = [h2load_output.MAIN_PHASE_STARTED, h2load_output.MAIN_PHASE_OVER]
    lines: list[str] = []
    samples: list[CPUSample] = []
    watchdog = threading.Timer(WARM_UP_SECONDS + run.duration + 60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if len(samples) < len(markers) and line.startswith(markers[len(samples)]):
                samples.append(sample())
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    window = (samples[0], samples[1]) if len(samples) == len(markers) else None
    return "".join(lines), window
