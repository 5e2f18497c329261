"""Parsing h2load's text report and its per-request log (nghttp2 1.52) into numbers.

h2load prints min/max/mean/sd of request times but no percentiles, so p50 and p99 come from
the file written with `--log-file` (one tab-separated line per request of the measured phase:
start time in µs since the epoch, status, µs until the end of the response; status -1 for a
failed stream). The figures are returned as a WrkResult, the shape every table of run.py
shows. Also knows the lines h2load prints when its measured phase starts and ends, so that
the caller can sample CPU time over exactly that phase. Knows nothing about processes,
targets or tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wrk_output import WrkResult

MAIN_PHASE_STARTED = "Main benchmark duration is started"
MAIN_PHASE_OVER = "Main benchmark duration is over"

_REQUESTS_PER_SEC = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s,", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_TRAFFIC = re.compile(r"^traffic: \S+ \((\d+)\) total", re.MULTILINE)
_TLS_PROTOCOL = re.compile(r"^TLS Protocol: (\S+)", re.MULTILINE)
_CIPHER = re.compile(r"^Cipher: (\S+)", re.MULTILINE)
_APPLICATION_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.MULTILINE)


class H2loadOutputError(ValueError):
    """h2load's report lacked a line we need, or it did not speak HTTP/2."""


@dataclass(frozen=True)
class H2loadResult:
    """One h2load run: the table's figures and what the connection negotiated."""

    figures: WrkResult
    negotiated: str  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384, h2"


def parse_h2load_output(text: str, latencies: Sequence[float]) -> H2loadResult:
    """Read an h2load report and the latencies (seconds) of its log file.

    Raises H2loadOutputError if a summary line is missing, if the connections did not
    negotiate h2 (h2load would fall back to HTTP/1.1), or if no request completed.
    """
    rps, requests, traffic = (rx.search(text) for rx in (_REQUESTS_PER_SEC, _REQUESTS, _TRAFFIC))
    if rps is None or requests is None or traffic is None:
        raise H2loadOutputError("no finished, requests or traffic line in h2load output")
    protocol = _APPLICATION_PROTOCOL.search(text)
    if protocol is None or protocol[1] != "h2":
        raise H2loadOutputError(f"h2 not negotiated (got {protocol[1] if protocol else None})")
    if not latencies:
        raise H2loadOutputError("no completed request in h2load's log file")
    done, succeeded, failed, errored = (int(requests[i]) for i in (3, 4, 5, 6))
    requests_per_sec = float(rps[1])
    duration = succeeded / requests_per_sec if requests_per_sec > 0 else 0.0
    ordered = sorted(latencies)
    figures = WrkResult(
        requests_per_sec=requests_per_sec,
        bytes_per_sec=int(traffic[1]) / duration if duration > 0 else 0.0,
        p50_seconds=percentile(ordered, 50),
        p99_seconds=percentile(ordered, 99),
        requests=done,
        socket_errors=errored,  # connection and stream failures, timeouts included
        non_2xx=failed - errored,  # "failed" counts both: errored plus 4xx/5xx answers
    )
    return H2loadResult(figures, _negotiated(text, protocol[1]))


def _negotiated(text: str, application_protocol: str) -> str:
    tls, cipher = _TLS_PROTOCOL.search(text), _CIPHER.search(text)
    if tls is None or cipher is None:
        return application_protocol
    return f"{tls[1]} {cipher[1]}, {application_protocol}"


def read_latencies(log_file: Path) -> list[float]:
    """Seconds from start to end of each completed request in an h2load `--log-file`."""
    latencies = []
    with log_file.open() as lines:
        for line in lines:
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] != "-1":
                latencies.append(int(fields[2]) / 1e6)
    return latencies


def percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of values sorted in ascending order (not empty)."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]
