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


def machine_busy_seconds() -> float:
    """CPU-seconds spent not idle (user, nice, system, irq, softirq, steal) on all CPUs."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND


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

    Kernel time the benchmark causes but that is not charged to a process (softirq work on
    loopback) counts as foreign, so a few percent is normal even on a quiet machine.
    """
    elapsed = after.at - before.at
    cpus = os.cpu_count() or 1
    if elapsed <= 0:
        return 0.0
    foreign = (after.machine - before.machine) - (after.ours - before.ours)
    return max(0.0, foreign / (elapsed * cpus))


def idle_share(seconds: float = 1.0) -> float:
    """Share of the machine (0..1) idle over the next `seconds`: is it quiet enough to measure?"""
    start_busy, start = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    busy = machine_busy_seconds() - start_busy
    elapsed = time.monotonic() - start
    return max(0.0, 1.0 - busy / (elapsed * (os.cpu_count() or 1)))


def wait_for_quiet(min_idle: float, max_wait: float, sample: float = 0.5) -> float:
    """Sample until at least `min_idle` of the machine is idle or `max_wait` seconds pass.

    Returns the last idle share seen, so the caller can warn when it gave up waiting.
    """
    deadline = time.monotonic() + max_wait
    while True:
        idle = idle_share(sample)
        if idle >= min_idle or time.monotonic() >= deadline:
            return idle
