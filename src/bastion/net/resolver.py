"""DNS for upstream servers: resolve host names and SRV names, and watch the answer change.

`resolve_target` turns one `DnsTarget` into servers: a host name through `loop.getaddrinfo`
(so /etc/hosts and nsswitch apply, as operators expect), an SRV name through dnspython's
asyncio resolver (the SRV targets' A/AAAA through the same resolver). Every distinct address
is a server. `ServerSetWatcher` re-resolves its targets every `interval`, reports the whole set
when it changes, and keeps a target's last good answer when resolving it fails or comes back
empty. What this module must not know: balancing, health or the config model; the runtime maps
`ResolvedServer`s onto its pools.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdtypes.IN.SRV
import dns.resolver

from bastion.units import is_ip_literal

log = logging.getLogger(__name__)

Scheme = Literal["http", "https"]
_T = TypeVar("_T")
_DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}


class ResolveError(OSError):
    """A name could not be resolved now (unknown, timed out, server failure); says which."""


@dataclass(frozen=True, slots=True)
class DnsTarget:
    """A name to resolve: a server URL's host name with its port, or an SRV name (`srv`)."""

    scheme: Scheme
    name: str
    port: int = 0  # 0 for SRV names: every SRV record carries its own port
    srv: bool = False

    def __post_init__(self) -> None:
        for wrong, problem in (
            (self.scheme not in _DEFAULT_PORTS, f"scheme must be http or https: {self.scheme!r}"),
            (not self.name, "empty name"),
            (self.srv and self.port != 0, f"an SRV name has no port, got {self.port}"),
            (not self.srv and not 0 < self.port < 65536, f"port must be 1-65535: {self.port}"),
            (
                not self.srv and is_ip_literal(self.name),
                f"{self.name} is an IP address, not a name",
            ),
        ):
            if wrong:
                raise ValueError(problem)

    @classmethod
    def from_url(cls, url: str) -> DnsTarget | None:
        """The target for `http[s]://name[:port]`; None when the host is an IP literal."""
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        if scheme not in _DEFAULT_PORTS or not host:
            raise ValueError(f"expected http[s]://host[:port], got {url!r}")
        if is_ip_literal(host):
            return None
        port = parts.port or _DEFAULT_PORTS[scheme]
        return cls("https" if scheme == "https" else "http", host, port)

    @classmethod
    def for_srv(cls, name: str, scheme: Scheme) -> DnsTarget:
        """The target for an SRV name such as `_http._tcp.app.internal`."""
        return cls(scheme, name, srv=True)

    def __str__(self) -> str:
        return f"SRV {self.name}" if self.srv else f"{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class ResolvedServer:
    """One address to connect to; `host_name` is for Host, SNI and certificate checks."""

    scheme: Scheme
    address: str
    port: int
    host_name: str
    weight: int = 1  # the SRV weight (may be 0), else 1
    priority: int = 0  # the SRV priority (lower is preferred), else 0

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port} ({self.host_name})"


Resolve = Callable[[DnsTarget], Awaitable[list[ResolvedServer]]]
OnChange = Callable[[list[ResolvedServer]], None]


def make_srv_resolver(
    nameserver: str | None = None, port: int = 53, *, timeout: float = 5.0
) -> dns.asyncresolver.Resolver:
    """A resolver asking `nameserver`:`port`, or the system's (/etc/resolv.conf) when None."""
    try:
        resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    except dns.exception.DNSException as exc:
        raise ResolveError(f"no DNS configuration for SRV lookups: {exc}") from exc
    if nameserver is not None:
        resolver.nameservers = [nameserver]
        resolver.port = port
    resolver.lifetime = timeout
    return resolver


async def resolve_target(
    target: DnsTarget,
    *,
    srv_resolver: dns.asyncresolver.Resolver | None = None,
    timeout: float = 5.0,
) -> list[ResolvedServer]:
    """Every server `target` names now, sorted (priority, IPv4 before IPv6, address, port).

    SRV answers keep every priority group: the caller treats the lowest as primaries and the
    others as backups. An SRV target that does not exist or has no address is skipped (the
    zone says it is gone); [] is an empty answer, which the watcher treats as a failure.
    Raises `ResolveError` (unknown name, server failure, no answer within `timeout`).
    """
    try:
        async with asyncio.timeout(timeout):
            if target.srv:
                resolver = srv_resolver or make_srv_resolver(timeout=timeout)
                servers = await _resolve_srv(target, resolver)
            else:
                servers = await _resolve_host(target)
    except TimeoutError as exc:
        raise ResolveError(f"{target}: no answer within {timeout:g} s") from exc
    return sorted(set(servers), key=_order)


async def _resolve_host(target: DnsTarget) -> list[ResolvedServer]:
    loop, name, port = asyncio.get_running_loop(), target.name, target.port
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"{name}: {exc.strerror}") from exc
    return [
        ResolvedServer(target.scheme, str(info[4][0]), port, name)
        for info in infos
        if info[0] in (socket.AF_INET, socket.AF_INET6)
    ]


async def _resolve_srv(
    target: DnsTarget, resolver: dns.asyncresolver.Resolver
) -> list[ResolvedServer]:
    records = [
        r
        for r in await _query(resolver, target.name, "SRV")
        if isinstance(r, dns.rdtypes.IN.SRV.SRV) and r.target != dns.name.root  # "." = no service
    ]
    names = sorted({r.target.to_text(omit_final_dot=True) for r in records})
    found = await _all(*(_srv_host_addresses(resolver, n) for n in names))
    addresses = dict(zip(names, found, strict=True))
    servers = []
    for r in records:
        host = r.target.to_text(omit_final_dot=True)
        servers += [
            ResolvedServer(target.scheme, a, r.port, host, r.weight, r.priority)
            for a in addresses[host]
        ]
    return servers


async def _srv_host_addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    """An SRV target's addresses; [] (and a warning) when it has none: it is skipped."""
    if is_ip_literal(name):
        return [name]
    v4, v6 = await _all(_query(resolver, name, "A", True), _query(resolver, name, "AAAA", True))
    if not v4 and not v6:
        log.debug("SRV target %s has no address; skipped", name)
    return [rdata.to_text() for rdata in (*v4, *v6)]


async def _query(
    resolver: dns.asyncresolver.Resolver, name: str, rdtype: str, missing_ok: bool = False
) -> list[dns.rdata.Rdata]:
    """The records of one type; [] for an empty answer (and for NXDOMAIN when `missing_ok`)."""
    try:
        answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN as exc:
        if missing_ok:
            return []
        raise ResolveError(f"{name} {rdtype}: no such name") from exc
    except dns.exception.DNSException as exc:
        raise ResolveError(f"{name} {rdtype}: {exc}") from exc
    return list(answer.rrset) if answer.rrset is not None else []


async def _all(*aws: Awaitable[_T]) -> list[_T]:
    """Await all together, then raise the first failure (so no query is left running)."""
    done: list[_T] = []
    for result in await asyncio.gather(*aws, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done


def _order(server: ResolvedServer) -> tuple[int, int, int, int, str]:
    ip = ipaddress.ip_address(server.address)
    return (server.priority, ip.version, int(ip), server.port, server.host_name)


class ServerSetWatcher:
    """Keeps the servers of `targets` current, calling `on_change` with each new whole set.

    The set is every target's servers, in target order, without duplicates. A target whose
    resolution fails or comes back empty keeps its last good servers (warned once per cause,
    info when it recovers); additions and removals are logged at info.
    """

    def __init__(
        self,
        targets: Sequence[DnsTarget],
        interval: float,
        on_change: OnChange,
        *,
        resolve: Resolve = resolve_target,
        label: str = "upstream",
    ) -> None:
        self._targets = tuple(dict.fromkeys(targets))
        self._interval = interval
        self._on_change = on_change
        self._resolve = resolve
        self._label = label
        self._last_good: dict[DnsTarget, list[ResolvedServer]] = {}
        self._failing: dict[DnsTarget, str] = {}
        self._servers: list[ResolvedServer] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def servers(self) -> list[ResolvedServer]:
        """The current set (empty until a resolution succeeded)."""
        return list(self._servers)

    async def start(self) -> dict[DnsTarget, str]:
        """Resolve once now (calling `on_change` if anything resolved), then every `interval`.

        Returns the targets that failed this first round, with why; the caller decides whether
        to serve without them. Re-resolution keeps trying them.
        """
        if self._task is not None:
            raise RuntimeError("watcher already started")
        failures = await self.refresh()
        self._task = asyncio.create_task(self._run(), name=f"dns-watch {self._label}")
        self._task.add_done_callback(self._task_done)
        return failures

    async def stop(self) -> None:
        """Cancel re-resolution and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    async def refresh(self) -> dict[DnsTarget, str]:
        """One resolution round: update the set, notify on change; the failures, with why."""
        results = await asyncio.gather(*(self._resolve_one(t) for t in self._targets))
        failures = {t: r for t, r in zip(self._targets, results, strict=True) if isinstance(r, str)}
        servers = list(dict.fromkeys(s for t in self._targets for s in self._last_good.get(t, [])))
        if servers != self._servers:
            self._log_change(servers)
            self._servers = servers
            try:
                self._on_change(list(servers))
            except Exception:
                log.exception("%s: applying the new DNS server set failed", self._label)
        return failures

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.refresh()

    async def _resolve_one(self, target: DnsTarget) -> list[ResolvedServer] | str:
        try:
            servers = await self._resolve(target)
        except Exception as exc:  # any failure keeps the last good set; it is logged below
            if not isinstance(exc, OSError):
                log.error("%s: resolving %s failed", self._label, target, exc_info=exc)
            reason = str(exc) or type(exc).__name__
        else:
            if servers:
                self._last_good[target] = servers
                if self._failing.pop(target, None) is not None:
                    log.info("%s: %s resolves again", self._label, target)
                return servers
            reason = "empty answer"
        kept, label = len(self._last_good.get(target, [])), self._label
        if self._failing.get(target) != reason:  # warn once per cause, not every round
            log.warning("%s: %s: %s; keeping %d last known servers", label, target, reason, kept)
        else:
            log.debug("%s: %s still fails: %s", label, target, reason)
        self._failing[target] = reason
        return reason

    def _log_change(self, servers: list[ResolvedServer]) -> None:
        added = ", ".join(str(s) for s in servers if s not in self._servers)
        removed = ", ".join(str(s) for s in self._servers if s not in servers)
        log.info("%s: DNS set changed: added [%s], removed [%s]", self._label, added, removed)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: DNS watcher stopped", self._label, exc_info=task.exception())
