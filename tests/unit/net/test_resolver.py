"""DNS targets and the server-set watcher, driven by a fake resolver (no sockets).

The watcher re-resolves every 10 ms here; a test waits for the fake to be asked again, which
proves the round before it finished (its `on_change` included).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from bastion.net.resolver import DnsTarget, ResolvedServer, ResolveError, ServerSetWatcher

APP = DnsTarget("http", "app.internal", 8080)
API = DnsTarget.for_srv("_https._tcp.api.internal", "https")
INTERVAL = 0.01


def server(address: str, target: DnsTarget = APP) -> ResolvedServer:
    return ResolvedServer(target.scheme, address, target.port or 443, target.name)


class FakeDns:
    """Answers each target from `answers`: a server list, or an exception to raise."""

    def __init__(self, answers: dict[DnsTarget, list[ResolvedServer] | Exception]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(self, target: DnsTarget) -> list[ResolvedServer]:
        self.calls += 1
        answer = self.answers[target]
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    async def next_round(self, rounds: int = 1, targets: int = 1) -> None:
        """Wait until `rounds` more rounds finished (the one after them has begun)."""
        goal = self.calls + (rounds + 1) * targets
        async with asyncio.timeout(2.0):
            while self.calls < goal:
                await asyncio.sleep(0.002)


class Changes(list[list[ResolvedServer]]):
    """An `on_change` that records every set it was given."""

    def __call__(self, servers: list[ResolvedServer]) -> None:
        self.append(servers)


async def watching(fake: FakeDns, *targets: DnsTarget) -> tuple[ServerSetWatcher, Changes]:
    changes = Changes()
    watcher = ServerSetWatcher(targets or (APP,), INTERVAL, changes, resolve=fake.resolve)
    assert await watcher.start() == {}
    return watcher, changes


def test_a_url_with_a_host_name_is_a_target_and_an_ip_literal_is_not() -> None:
    assert DnsTarget.from_url("https://app.internal") == DnsTarget("https", "app.internal", 443)
    assert DnsTarget.from_url("http://App.Internal:8080/x") == APP
    assert DnsTarget.from_url("http://10.0.0.1:8080") is None
    assert DnsTarget.from_url("https://[fd00::1]:8443") is None
    with pytest.raises(ValueError, match="http"):
        DnsTarget.from_url("ftp://app.internal")


@pytest.mark.parametrize(
    ("scheme", "name", "port", "srv"),
    [("http", "10.0.0.1", 80, False), ("http", "a", 0, False), ("http", "_x._tcp.a", 80, True),
     ("gopher", "a", 70, False), ("http", "", 80, False)],
)  # fmt: skip
def test_inconsistent_targets_are_refused(scheme: str, name: str, port: int, srv: bool) -> None:
    with pytest.raises(ValueError):
        DnsTarget(scheme, name, port, srv)  # type: ignore[arg-type]


def test_a_server_reads_as_a_url_with_its_name() -> None:
    assert str(server("fd00::1")) == "http://[fd00::1]:8080 (app.internal)"
    assert str(server("10.0.0.1")) == "http://10.0.0.1:8080 (app.internal)"


async def test_start_resolves_at_once_and_reports_the_first_set() -> None:
    fake = FakeDns({APP: [server("10.0.0.1"), server("10.0.0.2")]})
    watcher, changes = await watching(fake)
    assert changes == [[server("10.0.0.1"), server("10.0.0.2")]]
    assert watcher.servers == changes[0]
    await watcher.stop()


async def test_start_returns_what_failed_and_reports_nothing() -> None:
    changes = Changes()
    fake = FakeDns({APP: ResolveError("app.internal: Name or service not known")})
    watcher = ServerSetWatcher([APP], INTERVAL, changes, resolve=fake.resolve)
    assert await watcher.start() == {APP: "app.internal: Name or service not known"}
    assert changes == []
    fake.answers[APP] = [server("10.0.0.1")]  # resolution keeps trying
    await fake.next_round()
    assert changes == [[server("10.0.0.1")]]
    await watcher.stop()


async def test_a_changed_answer_reports_the_new_set_and_logs_the_difference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDns({APP: [server("10.0.0.1"), server("10.0.0.2")]})
    watcher, changes = await watching(fake)
    caplog.set_level(logging.INFO, "bastion.net.resolver")
    fake.answers[APP] = [server("10.0.0.2"), server("10.0.0.3")]
    await fake.next_round()
    assert changes[1:] == [[server("10.0.0.2"), server("10.0.0.3")]]
    assert "added [http://10.0.0.3:8080 (app.internal)]" in caplog.text
    assert "removed [http://10.0.0.1:8080 (app.internal)]" in caplog.text
    await watcher.stop()


async def test_an_unchanged_answer_reports_nothing() -> None:
    fake = FakeDns({APP: [server("10.0.0.1")]})
    watcher, changes = await watching(fake)
    await fake.next_round(3)
    assert len(changes) == 1
    await watcher.stop()


@pytest.mark.parametrize("failure", [ResolveError("SERVFAIL"), [], RuntimeError("bug")])
async def test_a_failed_or_empty_answer_keeps_the_last_good_set(
    failure: list[ResolvedServer] | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bastion.net.resolver")
    fake = FakeDns({APP: [server("10.0.0.1")]})
    watcher, changes = await watching(fake)
    fake.answers[APP] = failure
    await fake.next_round(3)
    assert changes == [[server("10.0.0.1")]]
    assert watcher.servers == [server("10.0.0.1")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per cause, not once per round
    assert "keeping 1 last known servers" in warnings[0].getMessage()
    fake.answers[APP] = [server("10.0.0.1")]
    await fake.next_round()
    assert "resolves again" in caplog.text
    await watcher.stop()


async def test_one_failing_target_keeps_its_servers_while_another_changes() -> None:
    fake = FakeDns({APP: [server("10.0.0.1")], API: [server("10.0.1.1", API)]})
    watcher, changes = await watching(fake, APP, API)
    fake.answers[APP] = ResolveError("timeout")
    fake.answers[API] = [server("10.0.1.2", API)]
    await fake.next_round(targets=2)
    assert changes[-1] == [server("10.0.0.1"), server("10.0.1.2", API)]
    await watcher.stop()


async def test_a_failing_on_change_is_logged_and_watching_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeDns({APP: [server("10.0.0.1")]})
    seen: list[list[ResolvedServer]] = []

    def on_change(servers: list[ResolvedServer]) -> None:
        seen.append(servers)
        raise RuntimeError("pool refused")

    watcher = ServerSetWatcher([APP], INTERVAL, on_change, resolve=fake.resolve)
    await watcher.start()
    fake.answers[APP] = [server("10.0.0.2")]
    await fake.next_round()
    assert seen == [[server("10.0.0.1")], [server("10.0.0.2")]]
    assert "applying the new DNS server set failed" in caplog.text
    await watcher.stop()


async def test_stop_cancels_re_resolution() -> None:
    fake = FakeDns({APP: [server("10.0.0.1")]})
    watcher, _ = await watching(fake)
    await fake.next_round()
    await watcher.stop()
    calls = fake.calls
    await asyncio.sleep(INTERVAL * 5)
    assert fake.calls == calls
    await watcher.stop()  # a second stop is harmless
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dns-watch")]
