"""What choosing a server costs: CPU µs per pick of each balancer, and to build one.

A script, not a test: `python bench/balance_cost.py` (add `--markdown` for docs/performance.md).
Each balancer picks over pools of 3 and 100 servers in a steady, loaded state — a few requests
in flight on each server and measured latencies, so least_conn sees a spread rather than a
tie, and ewma reads real estimates — and over 100 servers of which 10 are down (the skipping
paths). `hash` picks with a different client address each time (its realistic key: the
`ip` hash key); `hash (cookie)` with a 32-character session id. The figure is the fastest of
several rounds (the least disturbed by other processes on a shared machine), divided by the
picks in a round. Knows nothing of the proxy: it drives `bastion.balance` only.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bastion.balance.balancer import Balancer
from bastion.balance.select import RoundRobin, build_balancer
from bastion.balance.server import ServerState

PICKS = 20_000  # per round
ROUNDS = 7
CASES = (
    ("round_robin", "round_robin", "ip"),
    ("least_conn", "least_conn", "ip"),
    ("random_two", "random_two", "ip"),
    ("ewma", "ewma", "ip"),
    ("hash (ip)", "hash", "ip"),
    ("hash (cookie)", "hash", "cookie"),
)
HEADERS = ("balancer", "3 servers", "100 servers", "100, 10 down", "build 100 (ms)")


@dataclass(frozen=True)
class Row:
    """One balancer's figures: µs per pick for each pool, ms to build over 100 servers."""

    label: str
    per_pick: tuple[float, float, float]
    build_ms: float


def make_pool(count: int, down: int, seed: int, *, weighted: bool = True) -> list[ServerState]:
    """`count` servers with weights 1-3 (or all 1), 0-3 requests in flight, latencies of
    2-50 ms; the first `down` are unusable."""
    rng = random.Random(seed)
    servers = []
    for index in range(count):
        weight = rng.randint(1, 3) if weighted else 1
        server = ServerState(index, f"10.0.{index // 256}.{index % 256}:8080", weight=weight)
        server.in_flight = rng.randint(0, 3)
        server.observe_latency(rng.uniform(0.002, 0.050), now=time.monotonic())
        server.usable = index >= down
        servers.append(server)
    return servers


def make_keys(kind: str, count: int, seed: int) -> list[bytes]:
    """Client addresses or session cookie values, as the proxy would hand them over."""
    rng = random.Random(seed)
    if kind == "cookie":
        return [rng.randbytes(16).hex().encode() for _ in range(count)]
    return [f"203.0.{rng.randrange(256)}.{rng.randrange(256)}".encode() for _ in range(count)]


def per_pick_us(pick: Callable[[bytes | None], object], keys: Sequence[bytes]) -> float:
    """The fastest of ROUNDS rounds of one pick per key, in µs per pick."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for key in keys:
            pick(key)
        best = min(best, time.perf_counter() - started)
    empty = float("inf")
    for _ in range(ROUNDS):  # the loop's own cost, taken off
        started = time.perf_counter()
        for key in keys:
            _nothing(key)
        empty = min(empty, time.perf_counter() - started)
    return max(best - empty, 0.0) / len(keys) * 1e6


def _nothing(key: bytes | None) -> None:
    return None


def measure(label: str, name: str, key_kind: str, *, weighted: bool = True) -> Row:
    keys = make_keys(key_kind, PICKS, seed=1)
    figures = []
    for count, down in ((3, 0), (100, 0), (100, 10)):
        pool_of = make_pool(count, down, seed=count + down, weighted=weighted)
        balancer: Balancer = build_balancer(name, pool_of)
        figures.append(per_pick_us(balancer.pick, keys))
    pool = make_pool(100, 0, seed=100)
    started = time.perf_counter()
    build_balancer(name, pool)
    build_ms = (time.perf_counter() - started) * 1e3
    return Row(label, (figures[0], figures[1], figures[2]), build_ms)


def baseline() -> Row:
    """The index rotation the proxy used before (no server state read), for scale."""
    keys = make_keys("ip", PICKS, seed=1)
    small, large = RoundRobin(3), RoundRobin(100)
    return Row(
        "(plain index rotation)",
        (
            per_pick_us(lambda key: small.pick(), keys),
            per_pick_us(lambda key: large.pick(), keys),
            float("nan"),
        ),
        float("nan"),
    )


def render(rows: Sequence[Row], markdown: bool) -> str:
    cells = [
        [row.label, *(_number(value, "µs") for value in row.per_pick), _number(row.build_ms, "")]
        for row in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(line) + " |" for line in cells]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in [list(HEADERS), *cells]) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [list(HEADERS), *cells]
    )


def _number(value: float, unit: str) -> str:
    if value != value:  # NaN: not measured
        return "—"
    return f"{value:.2f} {unit}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    arguments = parser.parse_args()
    rows = [baseline(), *(measure(*case) for case in CASES)]
    rows.insert(3, measure("least_conn (equal weights)", "least_conn", "ip", weighted=False))
    print(render(rows, arguments.markdown))


if __name__ == "__main__":
    main()
