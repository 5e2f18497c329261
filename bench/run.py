"""Benchmark bastion against nginx and against the origin alone, with wrk (and h2load for h2).

Usage: python bench/run.py [--duration 10] [--rounds 3] [--only small,1m,https,h2] [--markdown]

Starts bench/origin.py, nginx and bastion (each on a free 127.0.0.1 port, each in its own process
group; with the https scenario the proxies also get a TLS listener, with the h2 scenario a TLS
listener offering HTTP/2, all with one shared throw-away certificate), waits until each serves
the expected bodies, then runs wrk (h2load for h2) against every target, rounds interleaved
(round 1: origin, nginx, bastion; round 2: ...), and prints one table per scenario with the
median figures. A target that fails to start is reported and skipped. Every process is stopped
on exit, including on Ctrl-C or SIGTERM. See bench/README.md.

This module holds the command line and the order of runs; process handling lives in targets.py,
wrk parsing in wrk_output.py, h2load runs in h2load_runner.py (parsing in h2load_output.py),
tables in report.py, certificates in tls_material.py, the scenarios themselves in scenarios.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import cpu_load
import h2load_runner
import report
import targets
import tls_material
from h2load_runner import H2loadRun, H2loadRunError
from report import Measurement
from scenarios import SCENARIOS, Scenario
from targets import LaunchSpec, Target, TargetStartError, TLSListener
from wrk_output import WrkOutputError, parse_wrk_output

TARGET_NAMES = ("origin", "nginx", "bastion")
WRK_THREADS = 2


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the proxy under test and the load side (wrk + origin) may use; None = any."""

    proxy: frozenset[int] | None
    load: frozenset[int] | None

    @staticmethod
    def choose(mode: str) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if mode == "none" or len(cpus) < 2:
            return Pinning(None, None)
        return Pinning(frozenset(cpus[:1]), frozenset(cpus[1:]))

    def describe(self) -> str:
        if self.proxy is None or self.load is None:
            return "no pinning (the scheduler places wrk, origin and proxy on any CPU)"
        return f"proxy on CPU {_cpus(self.proxy)}; wrk and origin on CPU {_cpus(self.load)}"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark origin, nginx and bastion with wrk (HTTP/2: h2load)."
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="scenarios: " + ",".join(SCENARIOS)
    )
    parser.add_argument("--targets", default=",".join(TARGET_NAMES), help="targets to run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first")
    parser.add_argument("--pin", choices=("split", "none"), default="split", help="CPU pinning")
    parser.add_argument("--origin-workers", type=int, default=1, help="origin processes")
    parser.add_argument("--markdown", action="store_true", help="print tables in markdown")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.15,
        help="re-measure a run if other processes used more than this share of the machine",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-measurements per run")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="max seconds to wait for a quiet machine"
    )
    args = parser.parse_args(argv)
    args.scenarios = [_known(parser, n, SCENARIOS, "scenario") for n in _split(args.only)]
    args.target_names = [_known(parser, n, TARGET_NAMES, "target") for n in _split(args.targets)]
    return args


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _known(
    parser: argparse.ArgumentParser,
    name: str,
    known: Sequence[str] | dict[str, Scenario],
    kind: str,
) -> str:
    if name not in known:
        parser.error(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return name


def start_targets(
    args: argparse.Namespace, workdir: Path, pinning: Pinning, stack: contextlib.ExitStack
) -> dict[str, Target]:
    """Start the origin (always: the proxies need it), then each proxy asked for.

    A proxy that fails is reported with its stderr tail and left out; if the origin fails,
    nothing can be measured and TargetStartError propagates. When the https (h2) scenario is
    asked for, both proxies also listen with TLS (with TLS and HTTP/2), serving the same
    certificate.
    """
    origin_port = targets.free_port()
    specs = [targets.origin_spec(origin_port, pinning.load, args.origin_workers)]
    names = args.target_names
    asked = [SCENARIOS[name] for name in args.scenarios]
    certificate = None
    if any(scenario.tls for scenario in asked):
        certificate = tls_material.write_certificate(workdir)

    def tls_listener(h2: bool) -> TLSListener | None:
        wanted = any(scenario.tls and scenario.h2 == h2 for scenario in asked)
        return TLSListener(targets.free_port(), certificate) if certificate and wanted else None

    port, cpus = targets.free_port, pinning.proxy
    for name, make_spec in (("nginx", targets.nginx_spec), ("bastion", targets.bastion_spec)):
        if name in names:
            tls, h2 = tls_listener(h2=False), tls_listener(h2=True)
            specs.append(make_spec(workdir, port(), origin_port, cpus, tls, h2))
    running: dict[str, Target] = {}
    for spec in specs:
        target = launch(spec, workdir, stack)
        if target is not None:
            running[spec.name] = target
        elif spec.name == "origin":
            raise TargetStartError("the origin did not start; nothing to measure")
    return running


def launch(spec: LaunchSpec, workdir: Path, stack: contextlib.ExitStack) -> Target | None:
    """Spawn one target and wait until it answers; on failure print why and stop it."""
    tls = f" (TLS on {spec.tls_port})" if spec.tls_port is not None else ""
    tls += f" (HTTP/2 + TLS on {spec.h2_port})" if spec.h2_port is not None else ""
    log(f"starting {spec.name} on 127.0.0.1:{spec.port}{tls}: {targets.describe(spec.argv)}")
    try:
        target = targets.spawn(spec, workdir)
    except OSError as exc:
        log(f"  {spec.name} could not be started: {exc}; skipping it")
        return None
    stack.callback(targets.stop, target)
    try:
        targets.wait_ready(target, spec.ready_timeout)
    except TargetStartError as exc:
        log(f"  {exc}; skipping it. stderr tail:")
        log(_indent(targets.tail(target.stderr_path)))
        targets.stop(target)
        return None
    log(f"  {spec.name} ready (pid {target.process.pid})")
    return target


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())


@dataclass
class Bench:
    """One benchmark session: options, CPU plan, running targets, and the foreign-load samples."""

    args: argparse.Namespace
    pinning: Pinning
    running: dict[str, Target]
    workdir: Path
    foreign_loads: list[float] = field(default_factory=list)
    tls_setup: str | None = None  # what the TLS scenario compared, asked while targets run
    h2_negotiated: dict[str, str] = field(default_factory=dict)  # as h2load reported, per target

    def run_load(self, scenario: Scenario, target: Target, duration: int) -> Measurement | None:
        """One run of the scenario's load generator: h2load for HTTP/2, else wrk."""
        if scenario.h2:
            return self.run_h2load(scenario, target, duration)
        return self.run_wrk(scenario, target, duration)

    def run_wrk(self, scenario: Scenario, target: Target, duration: int) -> Measurement | None:
        """One wrk run; None (after saying why) if wrk failed or printed something unexpected.

        Also measures the target's own CPU time and how much CPU other processes took.
        """
        argv = ["wrk", f"-t{WRK_THREADS}", f"-c{scenario.connections}", f"-d{duration}s"]
        argv += ["--latency", target.url(scenario.path, tls=scenario.tls)]
        cpus = self.pinning.load
        pgids = [t.process.pid for t in self.running.values()]
        target_before = cpu_load.group_cpu_seconds([target.process.pid])
        before = cpu_load.LoadSnapshot.take(pgids)
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        after = cpu_load.LoadSnapshot.take(pgids)
        target_cpu = cpu_load.group_cpu_seconds([target.process.pid]) - target_before
        try:
            result = parse_wrk_output(done.stdout)
        except WrkOutputError as exc:
            log(f"  wrk against {target.name} failed ({exc}); exit {done.returncode}")
            log(_indent((done.stdout + done.stderr).strip() or "(no output)"))
            return None
        foreign = cpu_load.foreign_load(before, after)
        return Measurement(result, target_cpu, after.at - before.at, foreign)

    def run_h2load(self, scenario: Scenario, target: Target, duration: int) -> Measurement | None:
        """One h2load run; None (after saying why) if it failed or did not speak h2."""
        url = target.url(scenario.path, h2=True)
        log_file = self.workdir / "h2load-requests.log"
        run = H2loadRun(url, scenario.connections, scenario.h2_streams, duration, log_file)
        pgids = [t.process.pid for t in self.running.values()]
        try:
            measured, negotiated = h2load_runner.measure(
                run, target.process.pid, pgids, self.pinning.load
            )
        except H2loadRunError as exc:
            log(f"  h2load against {target.name} failed ({exc})")
            log(_indent(exc.output.strip() or "(no output)"))
            return None
        except OSError as exc:
            log(f"  h2load could not be started ({exc}); is nghttp2-client installed?")
            return None
        self.h2_negotiated.setdefault(target.name, negotiated)
        return measured

    def measure(self, scenario: Scenario, target: Target) -> Measurement | None:
        """A measured run, waiting for a quiet machine first and measuring again (up to
        --retries times) when other processes took more than --max-foreign of it meanwhile."""
        args = self.args
        for attempt in range(args.retries + 1):
            idle = cpu_load.wait_for_quiet(1.0 - args.max_foreign, args.quiet_wait)
            if idle < 1.0 - args.max_foreign:
                log(f"  the machine is still only {idle:.0%} idle; measuring anyway")
            run = self.run_load(scenario, target, args.duration)
            if run is None:
                return None
            if run.foreign_load <= args.max_foreign or attempt == args.retries:
                self.foreign_loads.append(run.foreign_load)
                return run
            log(f"  {target.name}: other processes took {run.foreign_load:.0%}; measuring again")
        return None

    def scenario(self, scenario: Scenario) -> list[report.Summary]:
        """Warm every target up, then run the interleaved rounds; medians per target."""
        order = [n for n in TARGET_NAMES if n in self.running and n in self.args.target_names]
        log(f"\n== {scenario.name}: {scenario.description} ==")
        if scenario.tls:
            plain = [n for n in order if scenario.port_of(self.running[n]) is None]
            order = [n for n in order if n not in plain]
            kind = "HTTP/2 + TLS" if scenario.h2 else "TLS"
            for name in plain:
                log(f"  {name} has no {kind} listener; not measured in this scenario")
            tls_ports = {n: scenario.port_of(self.running[n]) for n in order}
            self.tls_setup = tls_description(tls_ports)
            log(f"  {self.tls_setup}")
        for name in order if self.args.warmup > 0 else []:
            log(f"  warm-up {name} ({self.args.warmup}s)")
            self.run_load(scenario, self.running[name], self.args.warmup)
        runs: dict[str, list[Measurement]] = {name: [] for name in order}
        for round_number in range(1, self.args.rounds + 1):
            for name in order:
                run = self.measure(scenario, self.running[name])
                if run is not None:
                    runs[name].append(run)
                    log(f"  round {round_number}/{self.args.rounds} {name:8} {_describe(run)}")
        if scenario.h2:
            got = "; ".join(f"{n}: {how}" for n, how in self.h2_negotiated.items())
            log(f"  h2load negotiated {got}")
        return [report.summarise(name, rs) for name, rs in runs.items() if rs]

    def print_results(self, tables: list[tuple[Scenario, list[report.Summary]]]) -> None:
        args = self.args
        bastion_version = [*targets.bastion_command(), "version"]
        env = dict(
            report.environment(bastion_version, targets.bastion_env(), str(targets.REPO_DIR))
        )
        env["pinning"] = self.pinning.describe()
        wrk = f"wrk -t{WRK_THREADS} -d{args.duration}s --latency, "
        env["run"] = (
            f"{wrk if not all(SCENARIOS[n].h2 for n in args.scenarios) else ''}{args.rounds} "
            f"round(s) interleaved, {args.warmup}s warm-up per target, medians over rounds"
        )
        if any(SCENARIOS[name].h2 for name in args.scenarios):
            h2 = SCENARIOS["h2"]
            env["h2load"] = report.tool_version(["h2load", "--version"])
            command = h2load_runner.describe(h2.path, h2.connections, h2.h2_streams, args.duration)
            env["h2 run"] = (
                f"{command}; CPU sampled over h2load's measured phase only, "
                "p50/p99 from its per-request log"
            )
            if self.h2_negotiated:
                got = "; ".join(f"{n}: {how}" for n, how in self.h2_negotiated.items())
                env["h2 negotiated"] = f"as h2load reports it: {got}"
        if self.tls_setup is not None:
            env["tls"] = self.tls_setup
        if self.foreign_loads:
            env["foreign CPU load"] = (
                f"median {statistics.median(self.foreign_loads):.0%}, "
                f"max {max(self.foreign_loads):.0%} of the machine during measured runs"
            )
        heading = "###" if args.markdown else "=="
        print(report.render_environment(env, args.markdown))
        for scenario, summaries in tables:
            print(f"\n{heading} {scenario.name}: {scenario.description}\n")
            print(report.render_table(summaries, args.markdown) if summaries else "(no results)")
            ratio = report.bastion_ratio(summaries)
            if ratio is not None:
                print(f"\nbastion/nginx req/s: {ratio:.2f}")


def tls_description(tls_ports: dict[str, int | None]) -> str:
    """The TLS setup of the https scenario, with what a default OpenSSL client negotiates."""
    got = "; ".join(
        f"{name}: {targets.negotiated_tls(port)}"
        for name, port in tls_ports.items()
        if port is not None
    )
    key = tls_material.KEY_TYPE_NAMES[tls_material.DEFAULT_KEY_TYPE]
    return (
        f"one trustme certificate ({key}) for both proxies, "
        f"TLS 1.2 + 1.3, Mozilla intermediate TLS 1.2 ciphers; a default OpenSSL client (like wrk) "
        f"negotiates {got}"
    )


def _describe(run: Measurement) -> str:
    return (
        f"{run.wrk.requests_per_sec:>10,.0f} req/s"
        f"  p50 {report.format_latency(run.wrk.p50_seconds):>9}"
        f"  p99 {report.format_latency(run.wrk.p99_seconds):>9}"
        f"  errors {run.wrk.errors}  CPU {run.cpu_per_request * 1e6:,.0f} µs/req"
        f" ({run.cpu_busy:.0%} busy)  foreign {run.foreign_load:.0%}"
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    pinning = Pinning.choose(args.pin)
    tables: list[tuple[Scenario, list[report.Summary]]] = []
    with contextlib.ExitStack() as stack:
        try:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bastion-bench-"))
            )
            bench = Bench(args, pinning, start_targets(args, workdir, pinning, stack), workdir)
            for name in args.scenarios:
                tables.append((SCENARIOS[name], bench.scenario(SCENARIOS[name])))
        except TargetStartError as exc:
            log(f"error: {exc}")
            return 1
        except KeyboardInterrupt:
            log("\ninterrupted; stopping every process")
            return 130
        except SystemExit:
            log("\nterminated; stopping every process")
            raise
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup below finish
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench.print_results(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
