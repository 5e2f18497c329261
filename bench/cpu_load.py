"""How busy the machine was, and how much of that was not the benchmark's own processes.

The figures of a 2-core benchmark are only as good as the machine is quiet: this module reads
/proc/stat (all CPU time) and /proc/<pid>/stat (the time of the process groups under test) so that
run.py can report "foreign" load — CPU time used by anything else during a wrk run. Linux only.
Knows nothing about wrk, nginx or bastion.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Collection
from dataclasses import dataclass

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _cpu_times() -> list[int]:
    """The aggregate /proc/stat line: user nice system idle iowait irq softirq steal (ticks)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:9]]


def machine_busy_seconds() -> float:
    """CPU-seconds spent in processes (user, nice, system) or stolen by the hypervisor.

    Interrupt time is left out: during a run it is mostly the benchmark's own loopback traffic
    (softirq), which no process is charged for and which must not count as someone else's load.
    """
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = _cpu_times()
    return (user + nice + system + steal) / TICKS_PER_SECOND


def group_cpu_seconds(pgids: Collection[int]) -> float:
    """User + system CPU-seconds of the live processes whose process group is in `pgids`."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[2]) in pgids:  # fields[2] is pgrp; 11 and 12 are utime and stime
            total += int(fields[11]) + int(fields[12])
    return total / TICKS_PER_SECOND


def children_cpu_seconds() -> float:
    """CPU-seconds of this process's reaped children (wrk, once each run has finished)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class LoadSnapshot:
    at: float
    machine: float
    ours: float

    @staticmethod
    def take(pgids: Collection[int]) -> LoadSnapshot:
        ours = group_cpu_seconds(pgids) + children_cpu_seconds()
        return LoadSnapshot(time.monotonic(), machine_busy_seconds(), ours)


def foreign_load(before: LoadSnapshot, after: LoadSnapshot) -> float:
    """Share of the machine (0..1, all CPUs) used by processes other than ours in between.

    Kernel work not charged to any process (softirq) is excluded on both sides; the rest of
    the kernel's work for the benchmark is charged to its processes as system time.
    """
    elapsed = after.at - before.at
    cpus = os.cpu_count() or 1
    if elapsed <= 0:
        return 0.0
    foreign = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, foreign / (elapsed * cpus))


def idle_share(seconds: float = 1.0) -> float:
    """Share of the machine (0..1) idle over the next `seconds`: is it quiet enough to measure?"""
    before = _cpu_times()
    time.sleep(seconds)
    delta = [b - a for a, b in zip(before, _cpu_times(), strict=True)]
    total = sum(delta)
    return (delta[3] + delta[4]) / total if total > 0 else 1.0


def wait_for_quiet(min_idle: float, max_wait: float, sample: float = 0.5) -> float:
    """Sample until at least `min_idle` of the machine is idle or `max_wait` seconds pass.

    Returns the last idle share seen, so the caller can warn when it gave up waiting.
    """
    deadline = time.monotonic() + max_wait
    while True:
        idle = idle_share(sample)
        if idle >= min_idle or time.monotonic() >= deadline:
            return idle
