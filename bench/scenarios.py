"""The benchmark's scenarios: what each loads (path, connections, protocol) and through which
listener of a target.

Knows nothing about starting targets, running load generators or tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from targets import Target


@dataclass(frozen=True)
class Scenario:
    """One kind of load: wrk over HTTP/1.1 (plain or TLS), or h2load over HTTP/2 + TLS."""

    name: str
    path: str
    connections: int
    description: str
    tls: bool = False  # over the proxies' TLS listeners (the origin has none: not measured)
    h2_streams: int = 0  # > 0: HTTP/2 by ALPN with h2load, this many streams per connection

    @property
    def h2(self) -> bool:
        return self.h2_streams > 0

    def port_of(self, target: Target) -> int | None:
        """The target's port this scenario loads, None if it has no such listener."""
        if self.h2:
            return target.h2_port
        return target.tls_port if self.tls else target.port


SCENARIOS = {
    "small": Scenario("small", "/small", 50, "13-byte bodies, keep-alive, 50 connections"),
    "1m": Scenario("1m", "/1m", 10, "1 MiB bodies, keep-alive, 10 connections"),
    "https": Scenario(
        "https", "/small", 50, "13-byte bodies over TLS, keep-alive, 50 connections", tls=True
    ),
    "h2": Scenario(
        "h2",
        "/small",
        10,
        "13-byte bodies over HTTP/2 + TLS, 10 connections x 10 streams",
        tls=True,
        h2_streams=10,
    ),
}
