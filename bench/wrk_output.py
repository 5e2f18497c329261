"""Parsing wrk's text report (wrk 4.x, run with `--latency`) into numbers.

Knows the shape of wrk's output and its unit suffixes (latency `us/ms/s/m/h`, sizes `B/KB/MB/GB`
in powers of 1024); knows nothing about processes, targets or tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

_REQUESTS_PER_SEC = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TRANSFER_PER_SEC = re.compile(r"^Transfer/sec:\s+([\d.]+)([KMGT]?B)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTALS = re.compile(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


class WrkOutputError(ValueError):
    """wrk's report lacked a line we need (wrk failed, or its format changed)."""


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run; times in seconds, throughput in bytes per second."""

    requests_per_sec: float
    bytes_per_sec: float
    p50_seconds: float
    p99_seconds: float
    requests: int
    socket_errors: int
    non_2xx: int

    @property
    def errors(self) -> int:
        """Everything that was not a good response: socket errors plus non-2xx/3xx answers."""
        return self.socket_errors + self.non_2xx


def parse_wrk_output(text: str) -> WrkResult:
    """Read a wrk report; raise WrkOutputError if a required line is missing."""
    rps = _REQUESTS_PER_SEC.search(text)
    transfer = _TRANSFER_PER_SEC.search(text)
    totals = _TOTALS.search(text)
    if rps is None or transfer is None or totals is None:
        raise WrkOutputError("no Requests/sec, Transfer/sec or totals line in wrk output")
    percentiles = {m[1]: float(m[2]) * _TIME_UNITS[m[3]] for m in _PERCENTILE.finditer(text)}
    if "50" not in percentiles or "99" not in percentiles:
        raise WrkOutputError("no latency distribution in wrk output (was --latency given?)")
    socket_errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests_per_sec=float(rps[1]),
        bytes_per_sec=float(transfer[1]) * _SIZE_UNITS[transfer[2]],
        p50_seconds=percentiles["50"],
        p99_seconds=percentiles["99"],
        requests=int(totals[1]),
        socket_errors=sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )
