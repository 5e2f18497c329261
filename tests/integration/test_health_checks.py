"""Server health over real sockets: active checks (fall/rise, flapping, refused checks),
passive ejection (502s, refused connections) with probation, and slow start after recovery.

Checks run every 50 ms with a 200 ms timeout so a state change takes a few tenths of a second.
Each test watches both what clients get (who served them) and the log line the upstream
runtime writes for every state change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.pool import (
    HealthLog,
    PoolOrigin,
    client,
    eventually,
    origin_pool,
    pool_config,
    tally,
)
from tests.support.proxy import running_proxy


def checks(rise: int, fall: int, interval: str = "50ms") -> str:
    return (
        f'health = {{ path = "/healthz", interval = "{interval}", timeout = "200ms", '
        f"rise = {rise}, fall = {fall} }}"
    )


def level_of(caplog: pytest.LogCaptureFixture, line: str) -> int:
    return next(record.levelno for record in caplog.records if record.getMessage() == line)


# -- active checks ----------------------------------------------------------------------------


async def test_failing_health_check_takes_a_server_down_after_fall_and_up_after_rise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        async with running_proxy(pool_config([a, b], checks(rise=2, fall=3))) as proxy:
            async with client(proxy.ports[0]) as http:
                assert await eventually(lambda: len(a.checks) >= 2)
                a.set_health(503)
                failing_from = len(a.checks)
                down = await events.wait(a, "down")
                failed = a.checks[failing_from:]
                assert 3 <= len(failed) <= 4, failed  # the fall-th one (a next may be underway)
                assert await tally(http, 20) == {"b": 20}
                served_while_down = a.hits

                a.set_health(200)
                passing_from = len(a.checks)
                up = await events.wait(a, "up")
                assert 2 <= len(a.checks) - passing_from <= 3
                back = await tally(http, 20)
    assert served_while_down == 0
    assert back == {"a": 10, "b": 10}
    assert "3 health checks in a row failed; it takes no requests" in down
    assert "(check: status 503, expected 200-399)" in down
    assert "2 health checks in a row passed; it takes requests (check: status 200)" in up
    assert level_of(caplog, down) == logging.WARNING and level_of(caplog, up) == logging.INFO
    assert a.check_agents == {"bastion-health-check"}


async def test_check_of_a_stopped_server_fails_and_it_returns_when_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        async with running_proxy(pool_config([a, b], checks(rise=2, fall=2))) as proxy:
            async with client(proxy.ports[0]) as http:
                await a.stop()
                down = await events.wait(a, "down")
                assert await tally(http, 10) == {"b": 10}  # no client request fails
                await a.start()
                await events.wait(a, "up")
                assert await tally(http, 10) == {"a": 5, "b": 5}
    assert "2 health checks in a row failed" in down


async def test_flapping_server_does_not_change_state_on_every_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """rise = fall = 2 and a health endpoint alternating pass/fail: an up server stays up and
    a down one stays down, however long it flaps."""
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        async with running_proxy(pool_config([a, b], checks(rise=2, fall=2))) as proxy:
            async with client(proxy.ports[0]) as http:
                a.flap([503, 200])
                flapping_from = len(a.checks)
                assert await eventually(lambda: len(a.checks) - flapping_from >= 10)
                assert events.about(a, "down") == []
                assert set(await tally(http, 10)) == {"a", "b"}

                a.set_health(503)
                await events.wait(a, "down")  # the same checks do see a real failure
                a.flap([200, 503])
                flapping_from = len(a.checks)
                assert await eventually(lambda: len(a.checks) - flapping_from >= 10)
                assert events.about(a, "up") == []
                assert await tally(http, 10) == {"b": 10}
    assert len(events.about(a, "down")) == 1


FAILED_CHECKS: dict[str, tuple[Callable[[PoolOrigin], None], str]] = {
    "too slow": (lambda origin: setattr(origin, "health_delay", 0.5), "no answer within 0.2s"),
    "hangs up": (lambda origin: origin.set_health(0), "(check: "),
    "redirects": (lambda origin: origin.set_health(302), "(check: status 302, expected 200-299)"),
}


@pytest.mark.parametrize("failure", list(FAILED_CHECKS))
async def test_every_kind_of_failed_check_counts_and_checking_goes_on(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = HealthLog(caplog)
    break_it, seen = FAILED_CHECKS[failure]
    upstream = checks(rise=1, fall=2).replace("}", ', expect_status = "200-299" }')
    async with origin_pool("a", "b") as (a, b):
        async with running_proxy(pool_config([a, b], upstream)) as proxy:
            async with client(proxy.ports[0]) as http:
                break_it(a)
                down = await events.wait(a, "down")
                assert await tally(http, 6) == {"b": 6}
                a.health_delay = 0.0
                a.set_health(200)
                await events.wait(a, "up")  # the checker survived the failure
                assert await tally(http, 6) == {"a": 3, "b": 3}
    assert seen in down


async def test_checks_stop_with_the_proxy_and_a_reload_does_not_double_them(
    tmp_path: Path,
) -> None:
    async with origin_pool("a") as (a,):
        config = pool_config([a], checks(rise=1, fall=1, interval="20ms"))
        (tmp_path / "bastion.toml").write_text(config)
        async with running_proxy(config) as proxy:
            await asyncio.sleep(0.05)  # past the random offset of the first check
            counted = len(a.checks)
            await asyncio.sleep(0.3)
            before = len(a.checks) - counted
            assert proxy.reload(tmp_path / "bastion.toml")
            counted = len(a.checks)
            await asyncio.sleep(0.3)
            after = len(a.checks) - counted
        stopped = len(a.checks)
        await asyncio.sleep(0.1)
    assert before >= 5 and 0.5 * before <= after <= 1.5 * before, (before, after)
    assert len(a.checks) == stopped


async def test_a_reload_keeps_a_down_server_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The new configuration's runtime inherits the health verdicts: a server the checks took
    down gets no request after the reload (it would until its checks failed again)."""
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        config = pool_config([a, b], checks(rise=2, fall=2, interval="1s"))
        (tmp_path / "bastion.toml").write_text(config)
        async with running_proxy(pool_config([a, b], checks(rise=2, fall=2))) as proxy:
            async with client(proxy.ports[0]) as http:
                a.set_health(503)
                await events.wait(a, "down")
                assert proxy.reload(tmp_path / "bastion.toml")  # checks now only every second
                served = await tally(http, 10)
    assert served == {"b": 10}


# -- passive ejection --------------------------------------------------------------------------

PASSIVE = 'passive = { failures = 3, window = "10s", eject = "400ms" }'


async def test_server_answering_502_is_ejected_then_put_on_probation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GETs that get a 502 from `a` are retried on `b`, so clients see only 200s. After three
    502s `a` is left out for 400 ms; then one request tries it again (probation), fails, and it
    is out for twice as long."""
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        a.status = 502
        async with running_proxy(pool_config([a, b], PASSIVE)) as proxy:
            async with client(proxy.ports[0]) as http:
                assert await tally(http, 6) == {"b": 6}
                ejected = await events.wait(a, "ejected", timeout=0.1)
                assert a.hits == 3
                assert await tally(http, 10) == {"b": 10}
                assert a.hits == 3  # no traffic while ejected
                await asyncio.sleep(0.45)
                assert await tally(http, 4) == {"b": 4}
                assert a.hits == 4  # exactly one request on probation
                probation = await events.wait(a, "probation", timeout=0.1)
                again = [line for line in events.about(a, "ejected") if line != ejected]
    assert "ejected: 3 failures within 10s; out for 0.4s; it takes no requests" in ejected
    assert "ejection time over; one failure ejects it again; it takes requests" in probation
    assert again and "a request failed on probation; out for 0.8s" in again[0]
    assert level_of(caplog, ejected) == logging.WARNING


async def test_server_refusing_connections_is_ejected_and_recovers_on_probation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = HealthLog(caplog)
    caplog.set_level(logging.INFO, logger="bastion.proxy.pipeline")
    async with origin_pool("a", "b") as (a, b):
        async with running_proxy(pool_config([a, b], PASSIVE)) as proxy:
            async with client(proxy.ports[0]) as http:
                await a.stop()
                assert await tally(http, 6) == {"b": 6}  # refused, retried on b
                ejected = await events.wait(a, "ejected", timeout=0.1)
                retried = _retries(caplog)
                assert await tally(http, 10) == {"b": 10}
                assert _retries(caplog) == retried, "no connection tried while ejected"
                await a.start()
                await asyncio.sleep(0.45)
                assert set(await tally(http, 4)) == {"a", "b"}
                await events.wait(a, "recovered", timeout=0.1)
    assert retried == 3
    assert "3 failures within 10s" in ejected


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    """How many attempts the pipeline moved to another server."""
    return sum("trying another server" in record.getMessage() for record in caplog.records)


# -- slow start ----------------------------------------------------------------------------


async def test_slow_start_ramps_a_recovered_server(caplog: pytest.LogCaptureFixture) -> None:
    """slow_start = 1s over two servers: from the start both take half. Right after `a`
    recovers its picks are accepted with probability 0.1 rising to about 0.3, so it serves
    5-15% of the next 40 requests (at most 12 allowed); a second later, half (20 of 60 at least)."""
    events = HealthLog(caplog)
    async with origin_pool("a", "b") as (a, b):
        upstream = f'{checks(rise=1, fall=1)}\nslow_start = "1s"'
        async with running_proxy(pool_config([a, b], upstream)) as proxy:
            async with client(proxy.ports[0]) as http:
                at_start = await tally(http, 40)
                a.set_health(503)
                await events.wait(a, "down")
                a.set_health(200)
                await events.wait(a, "up")
                ramping = await tally(http, 40)
                await asyncio.sleep(1.0)
                ramped = await tally(http, 60)
    assert at_start == {"a": 20, "b": 20}  # servers usable from the start do not ramp
    assert ramping["a"] <= 12, ramping
    assert ramped["a"] >= 20, ramped


async def test_lone_ramping_server_takes_everything(caplog: pytest.LogCaptureFixture) -> None:
    events = HealthLog(caplog)
    async with origin_pool("a") as (a,):
        upstream = f'{checks(rise=1, fall=1)}\nslow_start = "10s"'
        async with running_proxy(pool_config([a], upstream)) as proxy:
            async with client(proxy.ports[0]) as http:
                a.set_health(503)
                await events.wait(a, "down")
                a.set_health(200)
                await events.wait(a, "up")
                assert await tally(http, 10) == {"a": 10}
