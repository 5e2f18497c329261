"""Active health checks: an HTTP GET to every server of an upstream, every `interval`.

Each check opens a fresh connection through the same connector (and so the same TLS settings)
as proxied requests, sends `GET path` with the server's host name, and passes when the
status is in the expected range within `timeout`. Results go to a `CheckResults` sink (the
upstream's runtime), which applies rise/fall and logs state changes. One task per server,
started with a random offset so that checks of many servers do not come in bursts; when DNS
changes the upstream's servers, tasks start for the new ones and stop for those that left.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bastion.errors import ProxyError
from bastion.http.events import Headers, ResponseHead

if TYPE_CHECKING:
    from bastion.proxy.plan import CheckSpec, ServerPlan, UpstreamPlan
    from bastion.proxy.ports import Connector

log = logging.getLogger(__name__)

USER_AGENT = b"bastion-health-check"


class CheckResults(Protocol):
    def report_check(self, index: int, passed: bool, detail: str) -> None: ...


class _StatusListener:
    """Receives the check's response head; the rest of the response is not read."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_response_head(self, head: ResponseHead) -> None:
        if not self.status.done() and head.status >= 200:
            self.status.set_result(head.status)

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, trailers: Headers) -> None:
        pass

    def on_upstream_failed(self, error: ProxyError) -> None:
        if not self.status.done():
            self.status.set_exception(error)

    def on_switched(self, data: bytes) -> None:
        if not self.status.done():
            self.status.set_result(101)

    def on_upstream_write_paused(self, paused: bool) -> None:
        pass

    def flush(self) -> None:
        pass


class HealthChecker:
    """Checks every server of one upstream until stopped."""

    def __init__(
        self,
        upstream: UpstreamPlan,
        spec: CheckSpec,
        connector: Connector,
        results: CheckResults,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._upstream = upstream
        self._spec = spec
        self._connector = connector
        self._results = results
        self._jitter = jitter
        self._tasks: dict[int, asyncio.Task[None]] = {}  # by server id

    def start(self) -> None:
        """Check every server, and follow changes of the set."""
        self._upstream.runtime.listeners.append(self.sync)
        self.sync()

    def sync(self) -> None:
        """Start checking new servers, stop checking those that left the set."""
        loop = asyncio.get_running_loop()
        runtime = self._upstream.runtime
        current = {state.index: state for state in runtime.states}
        for index in [index for index in self._tasks if index not in current]:
            self._tasks.pop(index).cancel()
        for index, state in current.items():
            if index not in self._tasks:
                delay = self._jitter() * min(self._spec.interval, 1.0)
                server = runtime.server_plan(state)
                self._tasks[index] = loop.create_task(self._run(index, server, delay))

    def stop(self) -> None:
        listeners = self._upstream.runtime.listeners
        if self.sync in listeners:
            listeners.remove(self.sync)
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _run(self, index: int, server: ServerPlan, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            passed, detail = await self.check_once(server)
            self._results.report_check(index, passed, detail)
            await asyncio.sleep(self._spec.interval)

    async def check_once(self, server: ServerPlan) -> tuple[bool, str]:
        """One check: whether it passed, and what was seen (for the log)."""
        spec = self._spec
        try:
            async with asyncio.timeout(spec.timeout):
                status = await self._status_of(server)
        except TimeoutError:
            return False, f"no answer within {spec.timeout:g}s"
        except ProxyError as error:
            return False, str(error)
        if spec.low <= status <= spec.high:
            return True, f"status {status}"
        return False, f"status {status}, expected {spec.low}-{spec.high}"

    async def _status_of(self, server: ServerPlan) -> int:
        link = await self._connector.connect(self._upstream, server)
        try:
            listener = _StatusListener()
            link.start(listener, b"GET")
            link.write(_check_request(self._spec.path, server))
            return await listener.status
        finally:
            link.close()


def _check_request(path: str, server: ServerPlan) -> bytes:
    name = server.tls_name or server.host
    name = f"[{name}]" if ":" in name else name
    host = name if server.port in (80, 443) else f"{name}:{server.port}"
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
        + b"User-Agent: "
        + USER_AGENT
        + b"\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
