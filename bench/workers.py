"""Requests/s with more worker processes: bastion `workers = 1` vs `2`, nginx 1 vs 2 workers.

Usage: python bench/workers.py [--duration 5] [--rounds 3] [--connections 50] [--markdown]

Starts bench/origin.py (`--origin-workers` processes), then one target at a time — nginx
with `worker_processes` 1 and 2, bastion with `server.workers` 1 and 2 — and loads each with
wrk (`/small`, keep-alive), rounds interleaved, and prints the medians. Nothing is pinned:
on a 2-core machine the proxy's workers, wrk and the origin share both cores, so the table
also says how much CPU the load side (wrk + origin) took: when it takes a core, a second
worker cannot double req/s. Reuses run.py's helpers (targets, wrk parsing, tables).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import cpu_load
import report
import targets
from report import Measurement
from run import WRK_THREADS, launch, log
from targets import LaunchSpec, Target
from wrk_output import WrkOutputError, parse_wrk_output

SpecMaker = Callable[[Path, int, int], LaunchSpec]


def proxies() -> dict[str, SpecMaker]:
    """Target name → how to start it, given (workdir, port, origin port)."""
    made: dict[str, SpecMaker] = {}
    for workers in (1, 2):
        made[f"nginx-{workers}w"] = partial(_spec, targets.nginx_spec, "nginx", workers)
        made[f"bastion-{workers}w"] = partial(_spec, targets.bastion_spec, "bastion", workers)
    return made


def _spec(
    make: Callable[..., LaunchSpec], kind: str, workers: int, workdir: Path, port: int, origin: int
) -> LaunchSpec:
    name = f"{kind}-{workers}w"
    directory = workdir / name
    directory.mkdir()
    spec = make(directory, port, origin, None, workers=workers)
    return LaunchSpec(name, spec.argv, spec.port, spec.cpus, spec.env, spec.ready_timeout)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--origin-workers", type=int, default=2, help="origin processes")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait for an idle machine before each run",
    )
    parser.add_argument("--markdown", action="store_true", help="tables in Markdown")
    return parser.parse_args(argv)


def run_wrk(target: Target, origin: Target, connections: int, duration: int) -> Measurement | None:
    """One wrk run; logs the CPU the load side (wrk + origin) took meanwhile."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{duration}s"]
    argv += ["--latency", target.url("/small")]
    pgids = [target.process.pid, origin.process.pid]
    target_before = cpu_load.group_cpu_seconds([target.process.pid])
    origin_before = cpu_load.group_cpu_seconds([origin.process.pid])
    wrk_before = cpu_load.children_cpu_seconds()
    before = cpu_load.LoadSnapshot.take(pgids)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = cpu_load.LoadSnapshot.take(pgids)
    target_cpu = cpu_load.group_cpu_seconds([target.process.pid]) - target_before
    load_cpu = cpu_load.group_cpu_seconds([origin.process.pid]) - origin_before
    load_cpu += cpu_load.children_cpu_seconds() - wrk_before
    try:
        result = parse_wrk_output(done.stdout)
    except WrkOutputError as exc:
        log(f"  wrk against {target.name} failed ({exc})")
        return None
    wall = after.at - before.at
    foreign = cpu_load.foreign_load(before, after)
    log(
        f"  {target.name:11} {result.requests_per_sec:9.0f} req/s"
        f"  proxy CPU {target_cpu / wall:.2f} cores, wrk+origin {load_cpu / wall:.2f} cores,"
        f" others {foreign:.0%} of the machine"
    )
    return Measurement(result, target_cpu, wall, foreign)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix="bastion-workers-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        origin_port = targets.free_port()
        origin = launch(targets.origin_spec(origin_port, None, args.origin_workers), workdir, stack)
        if origin is None:
            return 1
        running: dict[str, Target] = {}
        for name, make in proxies().items():
            target = launch(make(workdir, targets.free_port(), origin_port), workdir, stack)
            if target is not None:
                running[name] = target
        runs: dict[str, list[Measurement]] = {name: [] for name in running}
        for name, target in running.items():
            log(f"warm-up {name}")
            run_wrk(target, origin, args.connections, 1)
        for round_number in range(1, args.rounds + 1):
            log(f"round {round_number}/{args.rounds}")
            for name, target in running.items():
                cpu_load.wait_for_quiet(0.85, args.quiet_wait)
                run = run_wrk(target, origin, args.connections, args.duration)
                if run is not None:
                    runs[name].append(run)
        summaries = [report.summarise(name, rs) for name, rs in runs.items() if rs]
        print(report.render_table(summaries, args.markdown))
        return 0


if __name__ == "__main__":
    sys.exit(main())
